'use strict';
// The client SDK in a real browser page (headless Debian Chromium, through playwright-core),
// where a refused upgrade shows only as an `error` event and close 1006: a wrong path is
// reported as CONNECTION_FAILED after three failed connects in a row, and the right URL
// connects without a word. Needs `chromium` (.ci/run installs it).
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { startGateway, waitFor, GOOD_KEY } = require('./helpers');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CLIENT = path.resolve(__dirname, '..', 'client', 'gateway-client.mjs');

/** Serves an empty page and the client module, on 127.0.0.1. */
async function servePage(t) {
  const server = http.createServer((req, res) => {
    if (req.url === '/gateway-client.mjs') {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(fs.readFileSync(CLIENT));
    } else {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>client</title>');
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });
  return `http://127.0.0.1:${server.address().port}/`;
}

test('in Chromium, a wrong path is reported as CONNECTION_FAILED after three failed connects; the right path connects', { timeout: 60_000 }, async (t) => {
  assert.ok(
    fs.existsSync(CHROMIUM),
    `Chromium not found at ${CHROMIUM}: install it (Debian: apt-get install -y --no-install-recommends chromium; .ci/run does this) or set CHROMIUM_PATH`,
  );
  const { chromium } = require('playwright-core');
  const { gateway, url } = await startGateway();
  t.after(() => gateway.stop());
  const pageUrl = await servePage(t);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  t.after(() => browser.close());
  const page = await browser.newPage();
  await page.goto(pageUrl);

  const start = (target) =>
    page.evaluate(
      async ({ target, apiKey }) => {
        const { GatewayClient } = await import('/gateway-client.mjs');
        const log = { open: 0, authenticated: 0, closes: [], errors: [] };
        const client = new GatewayClient({ url: target, apiKey, reconnectBaseDelay: 20, maxReconnectDelay: 100 });
        client.on('open', () => log.open++);
        client.on('authenticated', () => log.authenticated++);
        client.on('close', (event) => log.closes.push(event));
        client.on('error', (error) =>
          log.errors.push({
            code: error.code,
            message: error.message,
            status: error.status,
            failedConnects: error.failedConnects,
            closes: log.closes.length,
          }),
        );
        (globalThis.clients ??= []).push({ client, log });
        client.connect();
        return globalThis.clients.length - 1;
      },
      { target, apiKey: GOOD_KEY },
    );
  const logOf = (index) => page.evaluate((i) => globalThis.clients[i].log, index);

  const wrong = await start(url.replace('/wa-ext-ws', '/wrong-path'));
  let log;
  const until = Date.now() + 20_000;
  while (!(log = await logOf(wrong)).errors.length && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  assert.ok(log.errors.length > 0, `an error in the page: ${JSON.stringify(log)}`);
  const [error] = log.errors;
  assert.equal(error.code, 'CONNECTION_FAILED');
  assert.equal(error.status, null, 'a browser does not show the status');
  assert.equal(error.failedConnects, 3);
  assert.equal(error.closes, 3, 'reported with the third failed connect');
  assert.match(error.message, /404 for a wrong path/);
  assert.equal(log.open, 0);
  assert.ok(log.closes.every((c) => c.code === 1006 && c.willReconnect), JSON.stringify(log.closes));

  const right = await start(url);
  await waitFor(() => gateway.getActiveSessions(GOOD_KEY).length === 1, 10_000, 'the page to connect');
  const good = await logOf(right);
  assert.equal(good.errors.length, 0);
  await page.evaluate(() => Promise.all(globalThis.clients.map(({ client }) => client.close())));
});
