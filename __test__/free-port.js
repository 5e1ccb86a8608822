'use strict';
// A loopback port free right now, for tests, benchmarks and chaos runs that start
// servers of their own. (Someone may take it before it is bound: callers that can,
// retry.)
const net = require('node:net');

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

module.exports = { freePort };
