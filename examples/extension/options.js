// Settings are kept in chrome.storage.local; the service worker reconnects when they
// change and reports its connection in chrome.storage.session, shown here.
'use strict';

const form = document.querySelector('#settings');

chrome.storage.local.get(['gatewayUrl', 'apiKey']).then(({ gatewayUrl, apiKey }) => {
  form.elements.gatewayUrl.value = gatewayUrl ?? '';
  form.elements.apiKey.value = apiKey ?? '';
});

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  await chrome.storage.local.set({
    gatewayUrl: form.elements.gatewayUrl.value.trim(),
    apiKey: form.elements.apiKey.value.trim(),
  });
  document.querySelector('#saved').textContent = 'Saved';
});

function show(connection) {
  document.querySelector('#state').textContent = connection?.state ?? 'unknown';
  document.querySelector('#detail').textContent = connection?.detail ?? '';
}

chrome.storage.session.get('connection').then(({ connection }) => show(connection));
chrome.storage.onChanged.addListener((changes, area) => {
  if (area === 'session' && changes.connection) show(changes.connection.newValue);
});
