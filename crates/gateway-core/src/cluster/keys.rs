//! Where the cluster keeps its state in Redis, and the scripts that change it in one
//! step. Every key starts with the `keyPrefix`, so clusters can share one server.
//!
//! API keys are secrets: they never appear in Redis, in key names or in values. An
//! API key stands there as its digest (`Keys::digest`, the one place that turns an
//! API key into what Redis sees): an HMAC-SHA-256 with `cluster.secret`, or without
//! one a SHA-256, in hex.
//!
//! - `node:<id>`: a process's lease (its random token, expiring after `leaseMs`); a
//!   second live process with the same id cannot take it.
//! - `nodes`: sorted set of node ids by lease expiry (Redis's clock): who is alive.
//! - `counts`: hash node id -> its session count, for `getHealth().activeSessions`.
//! - `sessions:<digest>`: hash session id -> the session's listing (JSON, with `nodeId`).
//! - `keys`: set of the digests of API keys with listed sessions, for `getAllSessions`.
//! - `listed:<nodeId>`: hash session id -> digest of one process's listings, so that
//!   the survivors can remove them when its lease runs out.
//! - `inbox:<nodeId>`: stream of commands and outcomes for one process; made by its
//!   owner's lease renewal, written only while it exists (`NOMKSTREAM`), so that a
//!   gone process's inbox is not made again by a late writer.
//! - `once:<digest>:<idempotencyKey>`: hash of the record of the call that holds an
//!   `idempotencyKey` (docs/delivery-records.md): `requestId`, `owner` (its node id) and
//!   `token` (that node's lease token), `state` (`pending`, then the settled state),
//!   `placed` (`1` once its command may be written), `fp` (the message's fingerprint)
//!   and `record` (the record's JSON, without the API key). Kept `idempotencyTtl`.
//! - `seen:<digest>:<messageId>`: an incoming message seen lately.
//!
//! No leftovers (README "Deploying"): when a lease runs out, the next renewal of any
//! other process deletes the gone process's inbox, listings and count. Every key
//! expires by itself too (3 leases after the last renewal that touched it), for when
//! no process survives.

use std::fmt::Write as _;

use redis::Script;
use ring::{digest, hmac};

pub struct Keys {
    prefix: String,
    secret: Option<hmac::Key>,
}

impl Keys {
    pub fn new(prefix: &str, secret: Option<&str>) -> Self {
        Self {
            prefix: prefix.to_string(),
            secret: secret.map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes())),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What stands for `api_key` in Redis: HMAC-SHA-256 with the cluster's secret,
    /// else SHA-256, as 64 hex digits.
    pub fn digest(&self, api_key: &str) -> String {
        let mut hex = String::with_capacity(64);
        let mut put = |bytes: &[u8]| {
            for b in bytes {
                let _ = write!(hex, "{b:02x}");
            }
        };
        match &self.secret {
            Some(key) => put(hmac::sign(key, api_key.as_bytes()).as_ref()),
            None => put(digest::digest(&digest::SHA256, api_key.as_bytes()).as_ref()),
        }
        hex
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

    /// The listings of the API key whose digest is `digest`.
    pub fn sessions(&self, digest: &str) -> String {
        format!("{}sessions:{digest}", self.prefix)
    }

    pub fn api_keys(&self) -> String {
        format!("{}keys", self.prefix)
    }

    pub fn listed(&self, node_id: &str) -> String {
        format!("{}listed:{node_id}", self.prefix)
    }

    pub fn idempotency(&self, api_key: &str, key: &str) -> String {
        format!("{}once:{}:{key}", self.prefix, self.digest(api_key))
    }

    pub fn seen_incoming(&self, api_key: &str, message_id: &str) -> String {
        format!("{}seen:{}:{message_id}", self.prefix, self.digest(api_key))
    }

    pub fn inbox(&self, node_id: &str) -> String {
        format!("{}inbox:{node_id}", self.prefix)
    }

    /// A key for `start()`'s check of the commands the gateway needs.
    pub fn probe(&self, token: &str) -> String {
        format!("{}probe:{token}", self.prefix)
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

/// Lua: `extend(key, ms)` makes `key` live at least `ms` more (a key several
/// processes share keeps the longest of their wishes).
macro_rules! lua_extend {
    () => {
        r"
local function extend(key, ms)
  local left = redis.call('PTTL', key)
  if left ~= -2 and left < ms then redis.call('PEXPIRE', key, ms) end
end
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

/// Takes or renews this process's lease, makes its inbox if Redis lost it, removes
/// what processes whose lease ran out left behind, and lists the live nodes.
/// KEYS: node, nodes, counts, keys, inbox, listed (this process's).
/// ARGV: token, lease ms, node id, session count, key prefix, whether to extend the
/// life of every key listing this process's sessions ('1' or '0').
/// Returns `{claim, live nodes...}` (see `lua_live_nodes`): claim 1 renewed, 0 taken
/// afresh (Redis lost it: republish), -1 held by another live process with the same id.
pub fn claim_lease() -> Script {
    Script::new(concat!(
        lua_now!(),
        lua_extend!(),
        r"
local lease = tonumber(ARGV[2])
local keep = 3 * lease
local prefix = ARGV[5]
local held = redis.call('GET', KEYS[1])
local claim = 1
if held and held ~= ARGV[1] then
  claim = -1
else
  if not held then claim = 0 end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', lease)
  redis.call('ZADD', KEYS[2], now + lease, ARGV[3])
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
  if redis.call('EXISTS', KEYS[5]) == 0 then
    redis.call('XADD', KEYS[5], 'MAXLEN', '0', '*', 'm', '')
  end
  redis.call('PEXPIRE', KEYS[5], keep)
  extend(KEYS[2], keep)
  extend(KEYS[3], keep)
  extend(KEYS[4], keep)
  if redis.call('EXISTS', KEYS[6]) == 1 then
    redis.call('PEXPIRE', KEYS[6], keep)
    if ARGV[6] == '1' then
      local done = {}
      for _, digest in ipairs(redis.call('HVALS', KEYS[6])) do
        if not done[digest] then
          done[digest] = true
          extend(prefix .. 'sessions:' .. digest, keep)
        end
      end
    end
  end
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(gone) do
  local listed = prefix .. 'listed:' .. id
  local entries = redis.call('HGETALL', listed)
  for i = 1, #entries, 2 do
    local sessions = prefix .. 'sessions:' .. entries[i + 1]
    redis.call('HDEL', sessions, entries[i])
    if redis.call('EXISTS', sessions) == 0 then redis.call('SREM', KEYS[4], entries[i + 1]) end
  end
  redis.call('DEL', listed, prefix .. 'inbox:' .. id)
  redis.call('HDEL', KEYS[3], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local nodes_key, counts_key, out = KEYS[2], KEYS[3], { claim }
",
        lua_live_nodes!(),
    ))
}

/// Lists a session unless its key already has `max` sessions on live nodes; forgets
/// the listings of dead nodes on the way. KEYS: sessions of the key, nodes, keys,
/// listed (this process's). ARGV: session id, listing, max, digest, lease ms.
/// Returns 1 if listed, 0 if full.
pub fn admit_session() -> Script {
    Script::new(concat!(
        lua_now!(),
        lua_extend!(),
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
local keep = 3 * tonumber(ARGV[5])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
extend(KEYS[1], keep)
extend(KEYS[3], keep)
extend(KEYS[4], keep)
return 1
",
    ))
}

/// Writes a session's listing again (its status changed, or Redis lost it).
/// KEYS: sessions of the key, keys, listed. ARGV: session id, listing, digest, lease ms.
pub const LIST_SESSION: &str = concat!(
    lua_extend!(),
    r"
local keep = 3 * tonumber(ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
extend(KEYS[1], keep)
extend(KEYS[2], keep)
extend(KEYS[3], keep)
return 1
",
);

/// A session left: its listing goes, and so does its key's hash with the last one.
/// KEYS: sessions of the key, keys, listed. ARGV: session id, digest.
pub const UNLIST_SESSION: &str = r"
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return 1
";

/// The live nodes (see `lua_live_nodes`). KEYS: nodes, counts.
pub const LIVE_NODES: &str = concat!(
    lua_now!(),
    r"
local nodes_key, counts_key, out = KEYS[1], KEYS[2], {}
",
    lua_live_nodes!(),
);

/// Leaves the cluster: drops the lease if it is still this process's, with its
/// inbox and what is left of its listings. Returns the inbox entries after ARGV[4]
/// (none if it is empty): written after the owner's last read.
/// KEYS: node, nodes, counts, keys, inbox, listed. ARGV: token, node id, key prefix,
/// last entry read.
pub fn release_lease() -> Script {
    Script::new(
        r"
local rest = {}
if ARGV[4] ~= '' then rest = redis.call('XRANGE', KEYS[5], '(' .. ARGV[4], '+') end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local entries = redis.call('HGETALL', KEYS[6])
  for i = 1, #entries, 2 do
    local sessions = ARGV[3] .. 'sessions:' .. entries[i + 1]
    redis.call('HDEL', sessions, entries[i])
    if redis.call('EXISTS', sessions) == 0 then redis.call('SREM', KEYS[4], entries[i + 1]) end
  end
  redis.call('DEL', KEYS[1], KEYS[5], KEYS[6])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
end
return rest
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

/// Uses, on keys of its own, every command the gateway's scripts run, so that an ACL
/// user missing one is found at `start()`. KEYS: three probe keys.
pub const PROBE_SCRIPTS: &str = concat!(
    lua_now!(),
    lua_extend!(),
    r"
redis.call('SET', KEYS[1], now, 'PX', 5000)
redis.call('GET', KEYS[1])
redis.call('ZADD', KEYS[2], now, 'p')
redis.call('ZSCORE', KEYS[2], 'p')
redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '+inf', 'WITHSCORES')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '+inf')
redis.call('ZREM', KEYS[2], 'p')
redis.call('HSET', KEYS[3], 'p', '1')
redis.call('HGET', KEYS[3], 'p')
redis.call('HMGET', KEYS[3], 'p')
redis.call('HGETALL', KEYS[3])
redis.call('HVALS', KEYS[3])
redis.call('HDEL', KEYS[3], 'p')
redis.call('SADD', KEYS[2], 'p')
redis.call('SREM', KEYS[2], 'p')
redis.call('XADD', KEYS[3], 'MAXLEN', '0', '*', 'm', '')
extend(KEYS[3], 5000)
redis.call('EXISTS', KEYS[3])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_key_stands_in_redis_as_its_digest_only() {
        let plain = Keys::new("wa-gw:", None);
        let secret = Keys::new("wa-gw:", Some("s3cret"));
        let key = "live-key-0123456789";
        // SHA-256 and HMAC-SHA-256 (RFC 4231 style) of known inputs.
        assert_eq!(
            plain.digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Keys::new("", Some("key")).digest("The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert_ne!(plain.digest(key), secret.digest(key));
        for name in [
            plain.sessions(&plain.digest(key)),
            plain.idempotency(key, "order-1"),
            plain.seen_incoming(key, "m1"),
            secret.idempotency(key, "order-1"),
        ] {
            assert!(!name.contains(key), "{name}");
        }
        assert_eq!(plain.digest(key).len(), 64);
    }
}
