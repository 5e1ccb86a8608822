//! Where the cluster keeps its state in Redis, and the scripts that change it in one
//! step. Every key starts with the `keyPrefix`, so clusters can share one server.
//!
//! - `node:<id>`: a process's lease (its random token, expiring after `leaseMs`); a
//!   second live process with the same id cannot take it.
//! - `nodes`: sorted set of node ids by lease expiry (Redis's clock): who is alive.
//! - `counts`: hash node id -> its session count, for `getHealth().activeSessions`.
//! - `sessions:<apiKey>`: hash session id -> the session's listing (JSON, with `nodeId`).
//! - `keys`: set of API keys with listed sessions, for `getAllSessions`.
//! - `inbox:<nodeId>`: stream of commands and outcomes for one process.
//! - `once:<length of apiKey>:<apiKey><idempotencyKey>`: hash of the record of the call
//!   that holds an `idempotencyKey` (docs/delivery-records.md): `requestId`, `owner`
//!   (its node id) and `token` (that node's lease token), `state` (`pending`, then the
//!   settled state), `placed` (`1` once its command may be written), `fp` (the message's
//!   fingerprint) and `record` (the record's JSON). Kept `idempotencyTtl`.
//! - `seen:<length of apiKey>:<apiKey><messageId>`: an incoming message seen lately.

use redis::Script;

pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn node(&self, node_id: &str) -> String {
        format!("{}node:{node_id}", self.prefix)
    }

    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    pub fn counts(&self) -> String {
        format!("{}counts", self.prefix)
    }

    pub fn sessions(&self, api_key: &str) -> String {
        format!("{}sessions:{api_key}", self.prefix)
    }

    pub fn api_keys(&self) -> String {
        format!("{}keys", self.prefix)
    }

    pub fn idempotency(&self, api_key: &str, key: &str) -> String {
        format!("{}once:{}:{api_key}{key}", self.prefix, api_key.len())
    }

    pub fn seen_incoming(&self, api_key: &str, message_id: &str) -> String {
        format!(
            "{}seen:{}:{api_key}{message_id}",
            self.prefix,
            api_key.len()
        )
    }

    /// The record of one send by its request id, written by its calling process, so
    /// that any process answers `getMessageStatus` for it, even once that one is gone.
    pub fn status(&self, request_id: &str) -> String {
        format!("{}status:{request_id}", self.prefix)
    }

    pub fn inbox(&self, node_id: &str) -> String {
        format!("{}inbox:{node_id}", self.prefix)
    }
}

/// Lua: `now`, in ms by Redis's clock (one clock for every process).
macro_rules! lua_now {
    () => {
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"
    };
}

/// Lua: returns `out` with, for each node whose lease (in `nodes_key`) runs past
/// `now`: its id, the ms its lease has left and its session count (`counts_key`).
macro_rules! lua_live_nodes {
    () => {
        r"
local live = redis.call('ZRANGEBYSCORE', nodes_key, '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = tonumber(live[i + 1]) - now
  out[#out + 1] = tonumber(redis.call('HGET', counts_key, live[i]) or 0)
end
return out
"
    };
}

/// Takes or renews this process's lease and lists the live nodes.
/// KEYS: node, nodes, counts. ARGV: token, lease ms, node id, session count.
/// Returns `{claim, live nodes...}` (see `lua_live_nodes`): claim 1 renewed, 0 taken
/// afresh (Redis lost it: republish), -1 held by another live process with the same id.
pub fn claim_lease() -> Script {
    Script::new(concat!(
        lua_now!(),
        r"
local held = redis.call('GET', KEYS[1])
local claim = 1
if held and held ~= ARGV[1] then
  claim = -1
else
  if not held then claim = 0 end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(gone) do redis.call('HDEL', KEYS[3], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local nodes_key, counts_key, out = KEYS[2], KEYS[3], { claim }
",
        lua_live_nodes!(),
    ))
}

/// Lists a session unless its key already has `max` sessions on live nodes; forgets
/// the listings of dead nodes on the way. KEYS: sessions of the key, nodes, keys.
/// ARGV: session id, listing, max, API key. Returns 1 if listed, 0 if full.
pub fn admit_session() -> Script {
    Script::new(concat!(
        lua_now!(),
        r"
local listed = redis.call('HGETALL', KEYS[1])
local count = 0
for i = 1, #listed, 2 do
  local ok, entry = pcall(cjson.decode, listed[i + 1])
  local expiry = ok and redis.call('ZSCORE', KEYS[2], entry.nodeId)
  if not expiry or tonumber(expiry) < now then
    redis.call('HDEL', KEYS[1], listed[i])
  elseif listed[i] ~= ARGV[1] then
    count = count + 1
  end
end
if count >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
return 1
",
    ))
}

/// The live nodes (see `lua_live_nodes`). KEYS: nodes, counts.
pub const LIVE_NODES: &str = concat!(
    lua_now!(),
    r"
local nodes_key, counts_key, out = KEYS[1], KEYS[2], {}
",
    lua_live_nodes!(),
);

/// Leaves the cluster: drops the lease if it is still this process's.
/// KEYS: node, nodes, counts. ARGV: token, node id.
pub fn release_lease() -> Script {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
end
return 1
",
    )
}

/// Claims an `idempotencyKey` for a call. KEYS: once, nodes. ARGV: request id, node
/// id, lease token, fingerprint, record JSON, ttl ms, prefix of node lease keys.
/// Returns `{'first'}` (this call holds it now), `{'reused', requestId}`,
/// `{'settled', record}`, `{'wait', owner, record}` (its owner's lease runs) or
/// `{'gone', record}` (its owner's lease ran out after its command was placed).
pub fn take_idempotency() -> Script {
    Script::new(concat!(
        lua_now!(),
        r"
local h = redis.call('HMGET', KEYS[1], 'requestId', 'owner', 'token', 'state', 'placed', 'fp', 'record')
local function take()
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'requestId', ARGV[1], 'owner', ARGV[2], 'token', ARGV[3],
    'state', 'pending', 'placed', '0', 'fp', ARGV[4], 'record', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  return { 'first' }
end
if not h[1] then return take() end
if h[6] ~= ARGV[4] then return { 'reused', h[1] } end
if h[4] ~= 'pending' then return { 'settled', h[7] } end
local lease = redis.call('ZSCORE', KEYS[2], h[2])
local alive = lease and tonumber(lease) > now and redis.call('GET', ARGV[7] .. h[2]) == h[3]
if alive then return { 'wait', h[2], h[7] } end
if h[5] == '0' then return take() end
return { 'gone', h[7] }
",
    ))
}

/// Marks a claimed key's command as possibly written, if the key is still this call's.
/// KEYS: once. ARGV: request id. Returns 1, or 0 if another call holds the key now.
pub fn place_idempotency() -> Script {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'requestId') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'placed', '1')
return 1
",
    )
}

/// Writes the record of the call holding a key, if it still does: its settled state
/// (the TTL counting from the first settlement), or nothing at all (`state` empty: it
/// failed before writing, the key is free). KEYS: once. ARGV: request id, state,
/// record JSON, ttl ms.
pub const SETTLE_IDEMPOTENCY: &str = r"
if redis.call('HGET', KEYS[1], 'requestId') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  return 1
end
local first = redis.call('HGET', KEYS[1], 'state') == 'pending'
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'record', ARGV[3])
if first then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
";
