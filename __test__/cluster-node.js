'use strict';
// One gateway in a child process, driven over IPC, for the cluster tests and the cluster
// chaos run (a process that must die by SIGKILL cannot share the test's process).
//
//   const node = await startNodeProcess(t, options)   // in the parent (this module)
//
// In the child (this file, forked):
// `options` are the gateway's (functions cannot cross: every key is valid unless it
// starts with 'bad-'). The child answers { type: 'ready', port, nodeId } once started, or
// { type: 'start-failed', error }. Requests { id, op, ... } get { type: 'reply', id, ok,
// value | error }: op 'send' (kind, apiKey, data), 'burst' (kind, apiKey, data, each:
// several sends in one tick, `data` merged with each item), 'sessions' (apiKey), 'all-sessions',
// 'status' (lookup: a request id or { apiKey, idempotencyKey | messageId }), 'health',
// 'stop', 'start' (a send's reply comes when its promise settles). With
// CLUSTER_NODE_FORWARD=1, events and errors are forwarded as { type: 'event', event }
// and { type: 'gateway-error', error }.
const { fork } = require('node:child_process');

const READY_LIMIT_MS = 15_000;

/**
 * Forks a gateway process with `options` (the gateway's, JSON only) and resolves once it
 * started: { port, nodeId, child, request(op, fields), send(kind, apiKey, data), kill(),
 * exited, events, errors }. With `t`, it is killed after the test. A start that fails
 * rejects with the child's error (its `code` kept).
 */
async function startNodeProcess(t, options, { forward = true } = {}) {
  const child = fork(__filename, [], {
    env: { ...process.env, CLUSTER_NODE_OPTIONS: JSON.stringify(options), CLUSTER_NODE_FORWARD: forward ? '1' : '0' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  t?.after(() => {
    child.kill('SIGKILL');
    return exited;
  });
  const events = [];
  const errors = [];
  const waiting = new Map();
  let nextId = 0;
  let ready;
  const started = new Promise((resolve, reject) => {
    ready = { resolve, reject };
  });
  child.on('message', (message) => {
    if (message.type === 'event') events.push(message.event);
    else if (message.type === 'gateway-error') errors.push(message.error);
    else if (message.type === 'ready') ready.resolve(message);
    else if (message.type === 'start-failed') {
      ready.reject(Object.assign(new Error(message.error.message), message.error));
    } else if (message.type === 'reply') {
      const call = waiting.get(message.id);
      waiting.delete(message.id);
      if (message.ok) call?.resolve(message.value);
      else call?.reject(Object.assign(new Error(message.error.message), message.error));
    }
  });
  exited.then(({ code, signal }) => {
    const gone = new Error(`gateway process exited (code ${code}, signal ${signal})`);
    gone.processExited = true;
    ready.reject(gone);
    for (const call of waiting.values()) call.reject(gone);
    waiting.clear();
  });
  let timer;
  const info = await Promise.race([
    started,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`gateway process not started within ${READY_LIMIT_MS} ms`)), READY_LIMIT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
  const request = (op, fields = {}) =>
    new Promise((resolve, reject) => {
      if (!child.connected) return reject(new Error('gateway process is gone'));
      const id = ++nextId;
      waiting.set(id, { resolve, reject });
      child.send({ id, op, ...fields });
    });
  return {
    ...info,
    child,
    events,
    errors,
    exited,
    request,
    send: (kind, apiKey, data) => request('send', { kind, apiKey, data }),
    kill: () => {
      child.kill('SIGKILL');
      return exited;
    },
  };
}

function runChild() {
  const { WhatsAppGateway } = require('..');

  const options = JSON.parse(process.env.CLUSTER_NODE_OPTIONS ?? '{}');
  const forward = process.env.CLUSTER_NODE_FORWARD === '1';

  const plainError = (error) => ({
    code: error?.code,
    message: error?.message ?? String(error),
    details: error?.details,
  });

  /** IPC may be gone (the parent died or disconnected): then there is no one to tell. */
  function tell(message) {
    if (process.connected) process.send(message, () => {});
  }

  const gateway = new WhatsAppGateway({
    port: '0',
    host: '127.0.0.1',
    validateApiKey: (apiKey) =>
      apiKey.startsWith('bad-') ? { valid: false, reason: 'unknown key' } : { valid: true, userId: `user-${apiKey.slice(0, 4)}` },
    onMessageLog: forward ? (event) => tell({ type: 'event', event }) : undefined,
    onError: forward ? (error) => tell({ type: 'gateway-error', error: plainError(error) }) : undefined,
    ...options,
  });

  const operations = {
    async send({ kind, apiKey, data }) {
      const method = { message: 'sendMessage', image: 'sendImage', video: 'sendVideo', document: 'sendDocument' }[kind ?? 'message'];
      return gateway[method](apiKey, data);
    },
    // Several sends of one payload in one tick, each with its own `each` fields (a
    // burst whose media loads in parallel); replies with their outcomes.
    async burst({ kind, apiKey, data, each }) {
      const method = { message: 'sendMessage', image: 'sendImage', video: 'sendVideo', document: 'sendDocument' }[kind ?? 'message'];
      const outcomes = await Promise.allSettled(each.map((fields) => gateway[method](apiKey, { ...data, ...fields })));
      return outcomes.map((o) => (o.status === 'fulfilled' ? { value: o.value } : { error: plainError(o.reason) }));
    },
    sessions: ({ apiKey }) => gateway.getActiveSessions(apiKey),
    'all-sessions': () => gateway.getAllSessions(),
    status: ({ lookup }) => gateway.getMessageStatus(lookup),
    health: () => gateway.getHealth(),
    stop: ({ drainMs }) => gateway.stop(drainMs === undefined ? undefined : { drainMs }),
    start: () => gateway.start(),
  };

  process.on('message', async (request) => {
    const operation = operations[request.op];
    if (!operation) return tell({ type: 'reply', id: request.id, ok: false, error: { message: `unknown op ${request.op}` } });
    try {
      const value = await operation(request);
      tell({ type: 'reply', id: request.id, ok: true, value });
    } catch (error) {
      tell({ type: 'reply', id: request.id, ok: false, error: plainError(error) });
    }
  });

  // The parent gone means the test is over: leave rather than linger as an orphan.
  process.on('disconnect', () => {
    gateway.stop().finally(() => process.exit(0));
  });

  gateway.start().then(
    () => tell({ type: 'ready', port: gateway.address()?.port, nodeId: gateway.getHealth().cluster?.nodeId }),
    (error) => tell({ type: 'start-failed', error: plainError(error) }),
  );

}

if (require.main === module) runChild();

module.exports = { startNodeProcess };
