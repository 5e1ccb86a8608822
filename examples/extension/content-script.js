// Runs in the WhatsApp Web tab: tells the service worker whether the page is usable, and
// executes its commands by driving the page the way a person would. The driver below fits
// the fake page in fake-whatsapp/ (used by the tests); for web.whatsapp.com, write a driver
// for its DOM with the same shape and add its URL to the manifest's content_scripts.
'use strict';

const SEND_TIMEOUT_MS = 15_000;

const fakeWhatsAppDriver = {
  isLoggedIn() {
    return document.querySelector('#app')?.dataset.loggedIn === 'true';
  },

  /** Fills the compose form, presses send, and waits for the page to list the sent message. */
  async send({ phoneNumber, text, dataUrl, documentName, kind }) {
    const form = document.querySelector('#compose');
    if (!form) throw new Error('The compose form is not on the page');
    const sent = document.querySelector('#sent');
    const error = document.querySelector('#error');
    const before = sent.children.length;
    error.textContent = '';
    form.elements.phone.value = phoneNumber;
    form.elements.text.value = text ?? '';
    form.elements.attachment.value = dataUrl ?? '';
    form.elements.attachmentName.value = documentName ?? '';
    form.elements.kind.value = kind;
    form.elements.send.click();
    const outcome = await waitForChange(() => {
      if (sent.children.length > before) return { item: sent.children[sent.children.length - 1] };
      if (error.textContent) return { error: error.textContent };
      return null;
    }, [sent, error]);
    if (outcome.error) throw new Error(outcome.error);
    return { messageId: outcome.item.dataset.messageId };
  },
};

const driver = fakeWhatsAppDriver;

/** Resolves with check()'s first truthy answer, watching `nodes` for changes. */
function waitForChange(check, nodes) {
  return new Promise((resolve, reject) => {
    const observer = new MutationObserver(() => {
      const value = check();
      if (!value) return;
      finish();
      resolve(value);
    });
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`The page did not confirm the send within ${SEND_TIMEOUT_MS / 1000} s`));
    }, SEND_TIMEOUT_MS);
    function finish() {
      observer.disconnect();
      clearTimeout(timer);
    }
    for (const node of nodes) observer.observe(node, { childList: true, characterData: true, subtree: true });
  });
}

// The page is one compose form: commands go through it one at a time.
let queue = Promise.resolve();

function execute({ type, data }) {
  const kind = type.replace(/^send-/, '');
  const job = () =>
    driver.send({
      kind,
      phoneNumber: data.phoneNumber,
      text: kind === 'message' ? data.message : data.caption,
      dataUrl: data.dataUrl,
      documentName: data.documentName,
    });
  const result = queue.then(job, job);
  queue = result.catch(() => {});
  return result;
}

chrome.runtime.onMessage.addListener((message, _sender, sendResponse) => {
  if (message?.kind !== 'command') return false;
  execute(message).then(
    ({ messageId }) => sendResponse({ ok: true, messageId }),
    (error) => sendResponse({ ok: false, error: error.message }),
  );
  return true; // answers asynchronously
});

chrome.runtime.sendMessage({ kind: 'page-status', loggedIn: driver.isLoggedIn() });
