// The extension's background: one GatewayClient, configured from the options page, that
// hands every command to the content script of the WhatsApp Web tab and reports the result.
import { GatewayClient } from './gateway-client.mjs';

const COMMANDS = ['send-message', 'send-image', 'send-video', 'send-document'];
// A custom command (README: "Beyond the four commands"): the backend calls
// gateway.request(apiKey, 'check-number', { phoneNumber }) and gets { phoneNumber, onWhatsApp }.
const CUSTOM_COMMANDS = ['check-number'];
const NOT_OPEN = { whatsappLoggedIn: false, ready: false, status: 'WhatsApp Web is not open' };

let client = null;
let restarting = Promise.resolve();

// A service worker is stopped after 30 s without events. While connected, the client's
// heartbeat (every 25 s) is WebSocket activity, which keeps it running (Chrome 116+). While
// it waits to reconnect there is none, so this alarm wakes it up again if it was stopped,
// and the top-level restart() below reconnects. 30 s is the shortest period allowed.
chrome.alarms.create('keep-connected', { periodInMinutes: 0.5 });
chrome.alarms.onAlarm.addListener(() => {
  if (!client) restart();
});

chrome.storage.onChanged.addListener((changes, area) => {
  if (area === 'local' && ('gatewayUrl' in changes || 'apiKey' in changes)) restart();
});

chrome.runtime.onMessage.addListener((message, sender) => {
  if (message?.kind !== 'page-status' || !sender.tab) return;
  const status = message.loggedIn
    ? { whatsappLoggedIn: true, ready: true, status: 'WhatsApp Web is logged in' }
    : { whatsappLoggedIn: false, ready: false, status: 'WhatsApp Web is not logged in' };
  // Kept in session storage: the worker may be stopped and started again while the tab stays.
  chrome.storage.session.set({ pageTabId: sender.tab.id, pageStatus: status });
  client?.setStatus(status);
});

chrome.tabs.onRemoved.addListener(async (tabId) => {
  const { pageTabId } = await chrome.storage.session.get('pageTabId');
  if (tabId !== pageTabId) return;
  await chrome.storage.session.set({ pageTabId: null, pageStatus: NOT_OPEN });
  client?.setStatus(NOT_OPEN);
});

restart();

/** (Re)creates the client from the stored settings; calls are serialized. */
function restart() {
  restarting = restarting.then(start, start);
  return restarting;
}

async function start() {
  if (client) {
    const old = client;
    client = null;
    await old.close();
  }
  const { gatewayUrl, apiKey } = await chrome.storage.local.get(['gatewayUrl', 'apiKey']);
  if (!gatewayUrl || !apiKey) {
    await showConnection('not configured');
    return;
  }
  let next;
  try {
    next = new GatewayClient({
      url: gatewayUrl,
      apiKey,
      extensionVersion: chrome.runtime.getManifest().version,
      browser: browserName(),
    });
  } catch (error) {
    await showConnection('invalid settings', error.message);
    return;
  }
  for (const type of COMMANDS) {
    next.handle(type, async (data, context) => ({ messageId: (await executeInPage(type, data, context)).messageId }));
  }
  // Registered before connect(): the client lists them to the gateway when it authenticates.
  for (const type of CUSTOM_COMMANDS) next.handle(type, (data, context) => executeInPage(type, data, context));
  next.on('open', () => showConnection('authenticating'));
  next.on('authenticated', ({ sessionId }) => showConnection('connected', `session ${sessionId}`));
  next.on('close', ({ code, willReconnect, reconnectDelay }) =>
    showConnection(
      willReconnect ? 'reconnecting' : 'closed',
      willReconnect ? `closed (${code}), next try in ${Math.round(reconnectDelay / 1000)} s` : '',
    ),
  );
  next.on('error', (error) => showConnection('error', `${error.code}: ${error.message}`));
  const { pageStatus } = await chrome.storage.session.get('pageStatus');
  next.setStatus(pageStatus ?? NOT_OPEN);
  client = next;
  next.connect();
}

/**
 * Runs one command in the WhatsApp Web tab; the content script answers { ok, result } or
 * { ok: false, error, code }. A failure is thrown with its code, which the gateway reports.
 */
async function executeInPage(type, data, { requestId }) {
  const { pageTabId } = await chrome.storage.session.get('pageTabId');
  if (pageTabId === null || pageTabId === undefined) {
    throw Object.assign(new Error('WhatsApp Web is not open in this browser'), { code: 'LOGGED_OUT' });
  }
  let answer;
  try {
    answer = await chrome.tabs.sendMessage(pageTabId, { kind: 'command', type, data, requestId });
  } catch (error) {
    throw new Error(`The WhatsApp Web tab did not answer: ${error.message}`);
  }
  if (!answer?.ok) {
    throw Object.assign(new Error(answer?.error ?? 'The WhatsApp Web tab did not answer'), { code: answer?.code });
  }
  return answer.result;
}

/** What the options page shows. */
function showConnection(state, detail = '') {
  return chrome.storage.session.set({ connection: { state, detail, at: Date.now() } });
}

function browserName() {
  const brands = navigator.userAgentData?.brands ?? [];
  const named = brands.find(({ brand }) => !/not.?a.?brand/i.test(brand) && brand !== 'Chromium');
  return (named ?? brands.find(({ brand }) => brand === 'Chromium'))?.brand ?? 'Chrome';
}
