'use strict';
// Attaching to the user's http.Server or https.Server: the gateway takes upgrade
// requests on its path and hands their connections to the Rust core, leaving every
// other request and upgrade to the server.
const net = require('node:net');
const { debug } = require('./debug');

const BAD_REQUEST = 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n';
const NOT_FOUND = 'HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n';

function pathnameOf(url) {
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}

/** The debug log's line for an upgrade refused here, as the core writes it for its own. */
function debugRefused(status, pathname, socket) {
  const shown = pathname.length > 100 ? `${pathname.slice(0, 100)}...` : pathname;
  debug('upgrade refused with HTTP %d (path %s, from %s)', status, shown.replace(/[^\x21-\x7e]/g, '?'), socket.remoteAddress);
}

/**
 * Relays a TLS socket's decrypted bytes to the core through a local socket pair,
 * with backpressure both ways.
 */
function relay(socket, fd) {
  const pipe = new net.Socket({ fd, readable: true, writable: true });
  const { write, end, destroy } = socket;
  // The other upgrade listeners run right after this one, on this same socket: a ws
  // server given its own `path` answers every other path with a 400, the pattern in
  // ws's README destroys it. Until they have run, the socket ignores them.
  socket.write = () => true;
  socket.end = () => socket;
  socket.destroy = () => socket;
  process.nextTick(() => {
    delete socket.write;
    delete socket.end;
    delete socket.destroy;
  });
  socket.on('data', (chunk) => {
    if (!pipe.write(chunk)) socket.pause();
  });
  pipe.on('drain', () => socket.resume());
  pipe.on('data', (chunk) => {
    if (!write.call(socket, chunk)) pipe.pause();
  });
  socket.on('drain', () => pipe.resume());
  pipe.on('end', () => end.call(socket));
  socket.on('end', () => pipe.end());
  const teardown = () => {
    pipe.destroy();
    destroy.call(socket);
  };
  for (const side of [pipe, socket]) {
    side.on('close', teardown);
    side.on('error', teardown);
  }
}

/**
 * Starts handing `server`'s upgrades on `path` to `native`; returns a function that
 * detaches again. `onClosing` runs when the server's close() is called, `onClosed` once
 * the server has closed.
 * @param {import('../native').NativeGateway} native
 */
function attach(server, native, path, onClosing, onClosed) {
  const onUpgrade = (req, socket, head) => {
    const pathname = pathnameOf(req.url);
    if (pathname !== path) {
      // Without us Node would close it; with only us listening, nobody would answer,
      // and the open socket would also hold up server.close().
      if (server.listenerCount('upgrade') === 1) {
        debugRefused(404, pathname, socket);
        socket.end(NOT_FOUND, () => socket.destroy());
      }
      return;
    }
    const request = {
      method: req.method,
      url: req.url,
      rawHeaders: req.rawHeaders,
      remoteAddress: socket.remoteAddress ?? '',
      head,
    };
    try {
      // A plain TCP socket goes to the core whole; with TLS, Node keeps the socket
      // and relays the decrypted bytes.
      const fd = socket.encrypted ? undefined : socket._handle?.fd;
      if (Number.isInteger(fd) && fd >= 0) {
        native.adoptSocket(fd, request);
        socket.destroy();
      } else {
        relay(socket, native.adoptRelayed(request));
      }
    } catch {
      debugRefused(400, pathname, socket);
      socket.end(BAD_REQUEST);
    }
  };
  // First in line, so that the connection is the gateway's before any other listener
  // can answer it.
  server.prependListener('upgrade', onUpgrade);

  // Node emits 'close' only after every connection has ended, and relayed sockets
  // count as connections: the sessions have to end when close() is called.
  const hadOwnClose = Object.prototype.hasOwnProperty.call(server, 'close');
  const close = server.close;
  const closeWithSessions = function (...args) {
    onClosing();
    return close.apply(this, args);
  };
  server.close = closeWithSessions;
  server.on('close', onClosed);

  return function detach() {
    server.removeListener('upgrade', onUpgrade);
    server.removeListener('close', onClosed);
    if (server.close === closeWithSessions) {
      if (hadOwnClose) server.close = close;
      else delete server.close;
    }
  };
}

module.exports = { attach };
