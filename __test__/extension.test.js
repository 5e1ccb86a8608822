'use strict';
// The reference extension (examples/extension/) loaded unpacked into headless Chromium:
// configured through its options page, it connects from its service worker to a real
// gateway that accepts only its chrome-extension:// origin; sends travel gateway ->
// service worker -> content script -> fake WhatsApp page -> back, and a restarted gateway
// is reconnected to without help. Its custom command `check-number` goes the same way
// (gateway.request), failures carry the extension's code, and chats are reached by chatId.
// Needs Debian's `chromium` (.ci/run installs it).
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { startGateway, waitFor, GOOD_KEY, PNG_1x1 } = require('./helpers');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const root = path.resolve(__dirname, '..');
const extensionSource = path.join(root, 'examples', 'extension');
const PHONE = '+15551234567';

/** Serves the fake WhatsApp page on 127.0.0.1 (where the content script runs). */
async function serveFakeWhatsApp(cleanups) {
  const html = fs.readFileSync(path.join(extensionSource, 'fake-whatsapp', 'index.html'));
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(html);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => {
    const closed = new Promise((resolve) => server.close(resolve));
    server.closeAllConnections(); // the browser keeps idle connections open
    return closed;
  });
  return `http://127.0.0.1:${server.address().port}/`;
}

test(
  'the reference extension executes sends from a real gateway in Chromium and survives a gateway restart',
  { timeout: 120_000 },
  async (t) => {
    assert.ok(
      fs.existsSync(CHROMIUM),
      `Chromium not found at ${CHROMIUM}: install it (Debian: apt-get install -y --no-install-recommends chromium; .ci/run does this) or set CHROMIUM_PATH`,
    );
    const { chromium } = require('playwright-core');
    // Undone last first: the browser before its profile folder, the gateway before the test ends.
    const cleanups = [];
    t.after(async () => {
      const failures = [];
      for (const cleanup of cleanups.reverse()) {
        try {
          await cleanup();
        } catch (error) {
          failures.push(error);
        }
      }
      if (failures.length) throw failures[0];
    });

    // The extension as an author loads it: its folder plus the client copied in.
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-gw-extension-'));
    cleanups.push(() => fs.rmSync(work, { recursive: true, force: true, maxRetries: 5 }));
    const extension = path.join(work, 'extension');
    fs.cpSync(extensionSource, extension, {
      recursive: true,
      filter: (src) => path.basename(src) !== 'gateway-client.mjs',
    });
    execFileSync(process.execPath, [path.join(extensionSource, 'copy-client.js'), extension]);
    const pageUrl = await serveFakeWhatsApp(cleanups);

    const context = await chromium.launchPersistentContext(path.join(work, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        `--disable-extensions-except=${extension}`,
        `--load-extension=${extension}`,
      ],
    });
    cleanups.push(() => context.close());
    const worker = context.serviceWorkers()[0] ?? (await context.waitForEvent('serviceworker', { timeout: 15_000 }));
    const extensionId = new URL(worker.url()).host;

    const gatewayOptions = { allowedOrigins: [`chrome-extension://${extensionId}`] };
    const first = await startGateway(gatewayOptions);
    let gateway = first.gateway;
    cleanups.push(() => gateway.stop());

    // Configure it the way a user does: the options page.
    const options = await context.newPage();
    await options.goto(`chrome-extension://${extensionId}/options.html`);
    await options.fill('input[name=gatewayUrl]', first.url);
    await options.fill('input[name=apiKey]', GOOD_KEY);
    await options.click('button[type=submit]');
    const session = await waitFor(
      () => gateway.getActiveSessions(GOOD_KEY).find((s) => s.status === 'WhatsApp Web is not open'),
      15_000,
      'the extension to connect and report its status',
    );
    assert.equal(session.extensionVersion, '1.0.0', 'the manifest version is reported');
    assert.deepEqual(session.commands, ['check-number'], 'the client lists its custom command at auth');
    assert.equal(session.deviceActive, false, 'WhatsApp Web is not open yet');
    await options.waitForFunction(() => document.querySelector('#state').textContent === 'connected', null, {
      timeout: 10_000,
    });

    const whatsapp = await context.newPage();
    await whatsapp.goto(pageUrl);
    await waitFor(
      () => gateway.getActiveSessions(GOOD_KEY).find((s) => s.deviceActive),
      15_000,
      'the page to be reported ready',
    );

    const result = await gateway.sendMessage(GOOD_KEY, {
      phoneNumber: PHONE,
      message: 'Hello from Node',
      timeout: 20_000,
    });
    const item = whatsapp.locator('#sent li').last();
    assert.equal(result.messageId, await item.getAttribute('data-message-id'), 'the id the page produced comes back');
    assert.match(result.messageId, /^true_15551234567@c\.us_[0-9A-F]{20}$/);
    assert.equal(await item.textContent(), `${PHONE} [message] Hello from Node`);

    const image = await gateway.sendImage(GOOD_KEY, {
      phoneNumber: PHONE,
      dataUrl: PNG_1x1,
      caption: 'a pixel',
      timeout: 20_000,
    });
    assert.equal(image.messageId, await whatsapp.locator('#sent li').last().getAttribute('data-message-id'));
    assert.equal(await whatsapp.locator('#sent li').last().textContent(), `${PHONE} [image] a pixel`);

    const failed = await gateway
      .sendMessage(GOOD_KEY, { phoneNumber: '+19999999999', message: 'x', timeout: 20_000 })
      .catch((e) => e);
    assert.equal(failed.code, 'EXTENSION_ERROR');
    assert.equal(failed.details.error, 'Phone number +19999999999 is not on WhatsApp');
    assert.equal(failed.details.extensionCode, 'NOT_ON_WHATSAPP', "the handler's error code reaches the backend");
    assert.equal(failed.details.retryable, false);

    // The reference extension's custom command, through the same path.
    const known = await gateway.request(GOOD_KEY, 'check-number', { phoneNumber: PHONE }, { timeout: 20_000 });
    assert.deepEqual(known.data, { phoneNumber: PHONE, onWhatsApp: true });
    assert.equal(known.deviceInfo.sessionId, session.sessionId);
    const unknownNumber = await gateway.request(GOOD_KEY, 'check-number', { phoneNumber: '+19999999999' }, { timeout: 20_000 });
    assert.deepEqual(unknownNumber.data, { phoneNumber: '+19999999999', onWhatsApp: false });
    assert.equal(await whatsapp.locator('#lookup-result').textContent(), '+19999999999 is not on WhatsApp');
    const checked = first.events.filter((e) => e.type === 'command-result');
    assert.deepEqual(
      checked.map((e) => [e.command, e.status, e.requestId]),
      [
        ['check-number', 'success', known.requestId],
        ['check-number', 'success', unknownNumber.requestId],
      ],
    );

    // Restart the gateway on the same port: the extension reconnects by itself.
    const { port } = first;
    await gateway.stop();
    const second = await startGateway({ ...gatewayOptions, port });
    gateway = second.gateway;
    await waitFor(
      () => gateway.getActiveSessions(GOOD_KEY).find((s) => s.deviceActive),
      15_000,
      'the extension to reconnect, ready',
    );
    const again = await gateway.sendMessage(GOOD_KEY, {
      phoneNumber: PHONE,
      message: 'After the restart',
      timeout: 20_000,
    });
    assert.equal(again.messageId, await whatsapp.locator('#sent li').last().getAttribute('data-message-id'));
    assert.equal(await whatsapp.locator('#sent li').count(), 3);

    // A group, by its chat id.
    const group = '120363025246125486@g.us';
    const toGroup = await gateway.sendMessage(GOOD_KEY, { chatId: group, message: 'Hello group', timeout: 20_000 });
    const groupItem = whatsapp.locator('#sent li').last();
    assert.equal(toGroup.messageId, await groupItem.getAttribute('data-message-id'));
    assert.equal(await groupItem.textContent(), `${group} [message] Hello group`);
    const sentToGroup = second.events.find((e) => e.type === 'message-sent' && e.requestId === toGroup.requestId);
    assert.equal(sentToGroup.chatId, group);
    assert.equal(sentToGroup.phoneNumber, undefined);

    // Closing the tab tells the gateway the device is no longer usable.
    await whatsapp.close();
    await waitFor(
      () => gateway.getActiveSessions(GOOD_KEY).find((s) => !s.deviceActive),
      10_000,
      'the device to be reported not ready',
    );
    assert.deepEqual(
      first.errors.concat(second.errors).map((e) => e.code),
      ['EXTENSION_ERROR'],
      'no error but the failed send',
    );
  },
);
