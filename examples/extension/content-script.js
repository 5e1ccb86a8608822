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

  /**
   * Fills the compose form, presses send, and waits for the page to list the sent message.
   * `to` is a phone number or a chat id.
   */
  async send({ to, text, dataUrl, documentName, kind }) {
    const form = document.querySelector('#compose');
    if (!form) throw new Error('The compose form is not on the page');
    const sent = document.querySelector('#sent');
    const error = document.querySelector('#error');
    const before = sent.children.length;
    error.textContent = '';
    form.elements.phone.value = to;
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
    if (outcome.error) {
      // Why it failed, in words the backend can act on (README: "Why an extension failed").
      const code = /not on WhatsApp/.test(outcome.error) ? 'NOT_ON_WHATSAPP' : undefined;
      throw Object.assign(new Error(outcome.error), { code });
    }
    return { messageId: outcome.item.dataset.messageId };
  },

  /** The custom command `check-number`: asks the page's lookup form. */
  async checkNumber(phoneNumber) {
    const form = document.querySelector('#lookup');
    if (!form) throw new Error('The lookup form is not on the page');
    const result = document.querySelector('#lookup-result');
    delete result.dataset.phone;
    form.elements.phone.value = phoneNumber;
    form.elements.check.click();
    await waitForChange(() => result.dataset.phone === phoneNumber, [result]);
    return { phoneNumber, onWhatsApp: result.dataset.onWhatsapp === 'true' };
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
      reject(new Error(`The page did not answer within ${SEND_TIMEOUT_MS / 1000} s`));
    }, SEND_TIMEOUT_MS);
    function finish() {
      observer.disconnect();
      clearTimeout(timer);
    }
    for (const node of nodes) {
      observer.observe(node, { childList: true, characterData: true, subtree: true, attributes: true });
    }
  });
}

// The page is one compose form: commands go through it one at a time.
let queue = Promise.resolve();

function execute({ type, data }) {
  const kind = type.replace(/^send-/, '');
  const job =
    type === 'check-number'
      ? () => driver.checkNumber(data?.phoneNumber)
      : () =>
          driver.send({
            kind,
            to: data.chatId ?? data.phoneNumber,
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
    (result) => sendResponse({ ok: true, result }),
    (error) => sendResponse({ ok: false, error: error.message, code: error.code }),
  );
  return true; // answers asynchronously
});

chrome.runtime.sendMessage({ kind: 'page-status', loggedIn: driver.isLoggedIn() });
