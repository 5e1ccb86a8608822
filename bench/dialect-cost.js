'use strict';
// What the 'compat' dialect costs for media: 20 sends of a 4 MiB image, one at a
// time, to one simulated extension on loopback, per dialect (twice each, interleaved).
// Usage: node bench/dialect-cost.js
const crypto = require('node:crypto');
const { startGateway, FakeExtension, GOOD_KEY } = require('../__test__/helpers');

async function measure(dialect, image) {
  const { gateway, url } = await startGateway({ dialect });
  const ext = await new FakeExtension(url, { dialect: dialect === 'doc' ? 'doc' : 'v1' }).connectReady(gateway);
  let bytes = 0;
  ext.ws.on('message', (data) => {
    bytes += data.length;
  });
  const sends = 20;
  const started = process.hrtime.bigint();
  for (let i = 0; i < sends; i++) await gateway.sendImage(GOOD_KEY, { phoneNumber: '+1234567890', dataUrl: image });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  ext.ws.terminate();
  await gateway.stop();
  return { dialect, frameMB: +(bytes / sends / 1e6).toFixed(2), msPerSend: +(ms / sends).toFixed(1) };
}

(async () => {
  const image = `data:image/png;base64,${crypto.randomBytes(4 << 20).toString('base64')}`;
  for (const dialect of ['compat', 'v1', 'doc', 'compat', 'v1', 'doc']) console.log(await measure(dialect, image));
})();
