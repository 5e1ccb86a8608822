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
//!   A process's liveness is its lease alone: readers ignore what processes whose
//!   lease ran out listed.
//! - `counts`: hash node id -> its session count, for `getHealth().activeSessions`
//!   (written by the lease renewal when it changed).
//! - `listings:<nodeId>`: one process's sessions: hash digest of an API key -> that
//!   key's sessions on the process, one listing (JSON, `sessionId` first) per
//!   line. Written when a session connects, changes status or leaves, never just to
//!   stay fresh: idle sessions cost Redis nothing, and the key lives with its
//!   process's lease (one expiry for all its sessions, extended by the renewal).
//! - `inbox:<nodeId>`: stream of commands and outcomes for one process; made by its
//!   owner's lease renewal, written only while it exists (`NOMKSTREAM`), so that a
//!   gone process's inbox is not made again by a late writer.
//! - `once:<digest>:<idempotencyKey>`: hash of the record of the call that holds an
//!   `idempotencyKey` (docs/delivery-records.md): `requestId`, `owner` (its node id) and
//!   `token` (that node's lease token), `state` (`pending`, then the settled state),
//!   `placed` (`1` once its command may be written), `fp` (the message's fingerprint)
//!   and `record` (the record's JSON, without the API key). Kept `idempotencyTtl`.
//! - `seen:<digest>:<messageId>`: an incoming message seen lately.
//! - `rebuilding`: Redis lost the cluster's state (restarted empty, flushed) less
//!   than a lease ago: every live process writes its listings and its idempotency
//!   records again within that lease (and its `status:` records, a page per round), and claims of an `idempotencyKey` wait until
//!   this key expires (README "Cluster mode").
//!
//! No leftovers (README "Deploying"): when a lease runs out, the next renewal of any
//! other process deletes the gone process's inbox, listings and count. A process's
//! keys also expire by themselves 3 leases after its last renewal that extended them
//! (every half lease), for when no process survives: within 3 leases of its lease's
//! end.

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

    /// The sessions of process `node_id`, by API key digest.
    pub fn listings(&self, node_id: &str) -> String {
        format!("{}listings:{node_id}", self.prefix)
    }

    pub fn idempotency(&self, api_key: &str, key: &str) -> String {
        format!("{}once:{}:{key}", self.prefix, self.digest(api_key))
    }

    pub fn seen_incoming(&self, api_key: &str, message_id: &str) -> String {
        format!("{}seen:{}:{message_id}", self.prefix, self.digest(api_key))
    }

    pub fn rebuilding(&self) -> String {
        format!("{}rebuilding", self.prefix)
    }

    /// The record of one send by its request id, written by its calling process, so
    /// that any process answers `getMessageStatus` for it, even once that one is gone.
    pub fn status(&self, request_id: &str) -> String {
        format!("{}status:{request_id}", self.prefix)
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

/// Lua: `listing_lines(text, skip)`: the lines of a key's listings on one process
/// (a `listings:<node>` field), but those of the sessions in the table `skip`. A
/// line's session is read from its start: serde writes `sessionId` first, so no
/// JSON is parsed (and none rewritten: a host's `userId` stays as it gave it).
macro_rules! lua_lines {
    () => {
        r#"
local function listing_lines(text, skip)
  local lines = {}
  if not text then return lines end
  for line in string.gmatch(text, '[^\n]+') do
    local sid = string.match(line, '^{"sessionId":"([^"]*)"')
    if not (sid and skip[sid]) then lines[#lines + 1] = line end
  end
  return lines
end
"#
    };
}

/// Takes or renews this process's lease, makes its inbox if Redis lost it, removes
/// what processes whose lease ran out left behind, and lists the live nodes. An
/// idle round costs Redis a handful of commands, whatever the sessions.
/// A process that held the lease before and finds it gone while the live nodes are
/// gone too (or another process found so less than a lease ago) knows that Redis lost
/// the cluster's state: it marks `rebuilding` for a lease.
/// KEYS: node, nodes, counts, inbox, listings (this process's), rebuilding.
/// ARGV: token, lease ms, node id, session count, key prefix, whether to extend the
/// life of this process's keys ('1' or '0'; always when the lease was taken afresh),
/// whether this process held the lease before ('1' or '0').
/// Returns `{claim, (id, ms its lease has left, sessions) per live node...}`: claim 1
/// renewed, 0 taken afresh (Redis lost it: republish), -1 held by another live
/// process with the same id.
pub fn claim_lease() -> Script {
    Script::new(concat!(
        lua_now!(),
        lua_extend!(),
        r"
local lease = tonumber(ARGV[2])
local keep = 3 * lease
local me, prefix = ARGV[3], ARGV[5]
local held = redis.call('GET', KEYS[1])
local claim = 1
if held and held ~= ARGV[1] then
  claim = -1
else
  if not held then
    claim = 0
    local lost = redis.call('EXISTS', KEYS[2]) == 0 or redis.call('EXISTS', KEYS[6]) == 1
    if ARGV[7] == '1' and lost then redis.call('SET', KEYS[6], me, 'PX', lease, 'NX') end
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', lease)
  redis.call('ZADD', KEYS[2], now + lease, me)
  if claim == 0 and redis.call('EXISTS', KEYS[4]) == 0 then
    redis.call('XADD', KEYS[4], 'MAXLEN', '0', '*', 'm', '')
  end
end
local out, ids = { claim }, {}
local all = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #all, 2 do
  local id, expiry = all[i], tonumber(all[i + 1])
  if expiry <= now then
    redis.call('DEL', prefix .. 'listings:' .. id, prefix .. 'inbox:' .. id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('ZREM', KEYS[2], id)
  else
    ids[#ids + 1] = id
    out[#out + 1] = id
    out[#out + 1] = expiry - now
    out[#out + 1] = 0
  end
end
if #ids > 0 then
  local counts = redis.call('HMGET', KEYS[3], unpack(ids))
  for i, id in ipairs(ids) do
    local count = tonumber(counts[i]) or 0
    if id == me and claim ~= -1 and tostring(count) ~= ARGV[4] then
      redis.call('HSET', KEYS[3], me, ARGV[4])
      count = tonumber(ARGV[4])
    end
    out[3 * i + 1] = count
  end
end
if claim ~= -1 and (claim == 0 or ARGV[6] == '1') then
  redis.call('PEXPIRE', KEYS[4], keep)
  redis.call('PEXPIRE', KEYS[5], keep)
  extend(KEYS[2], keep)
  extend(KEYS[3], keep)
end
return out
",
    ))
}

/// Lists a session unless its key already has `max` sessions on live nodes (this
/// process's included, whatever its lease). KEYS: listings (this process's), nodes.
/// ARGV: session id, listing, max, digest, ms to live if the listings are new, key
/// prefix, node id. Returns 1 if listed, 0 if full.
pub fn admit_session() -> Script {
    Script::new(concat!(
        lua_now!(),
        lua_lines!(),
        r"
local digest, prefix, me = ARGV[4], ARGV[6], ARGV[7]
local count = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')) do
  if id ~= me then
    local text = redis.call('HGET', prefix .. 'listings:' .. id, digest)
    if text then count = count + #listing_lines(text, {}) end
  end
end
local mine = listing_lines(redis.call('HGET', KEYS[1], digest), { [ARGV[1]] = true })
if count + #mine >= tonumber(ARGV[3]) then return 0 end
mine[#mine + 1] = ARGV[2]
redis.call('HSET', KEYS[1], digest, table.concat(mine, '\n'))
redis.call('PEXPIRE', KEYS[1], ARGV[5], 'NX')
return 1
",
    ))
}

/// Writes this process's listings of one API key: each session named is listed
/// anew, or unlisted when its listing is empty; the others stay as they are.
/// KEYS: listings (this process's). ARGV: ms to live if the listings are new, digest,
/// then (session id, listing or '') pairs, the last of a session's counting.
pub const LIST_SESSIONS: &str = concat!(
    lua_lines!(),
    r"
local digest = ARGV[2]
local order, latest = {}, {}
for i = 3, #ARGV, 2 do
  if latest[ARGV[i]] == nil then order[#order + 1] = ARGV[i] end
  latest[ARGV[i]] = ARGV[i + 1]
end
local text = redis.call('HGET', KEYS[1], digest)
local lines = listing_lines(text, latest)
for _, sid in ipairs(order) do
  if latest[sid] ~= '' then lines[#lines + 1] = latest[sid] end
end
if #lines == 0 then
  if text then redis.call('HDEL', KEYS[1], digest) end
else
  redis.call('HSET', KEYS[1], digest, table.concat(lines, '\n'))
  redis.call('PEXPIRE', KEYS[1], ARGV[1], 'NX')
end
return #lines
",
);

/// A script that answers `(id, ms its lease has left, what $listings reads)` per live
/// node (KEYS[1]: nodes; ARGV[1]: key prefix). The two listing queries differ only in
/// what they read of a node's listings hash, `listings` in Lua.
macro_rules! lua_live_nodes_with {
    ($listings:literal) => {
        concat!(
            lua_now!(),
            r"
local out = {}
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #live, 2 do
  local listings = ARGV[1] .. 'listings:' .. live[i]
  out[#out + 1] = live[i]
  out[#out + 1] = tonumber(live[i + 1]) - now
  out[#out + 1] = ",
            $listings,
            r"
end
return out
"
        )
    };
}

/// The live nodes, each with its listings of one API key.
/// KEYS: nodes. ARGV: key prefix, digest.
/// Returns `(id, ms its lease has left, listings or '')` per live node.
pub const LISTINGS_OF_KEY: &str =
    lua_live_nodes_with!("redis.call('HGET', listings, ARGV[2]) or ''");

/// The live nodes, each with all its listings. KEYS: nodes. ARGV: key prefix.
/// Returns `(id, ms its lease has left, {digest, listings, ...})` per live node.
pub const ALL_LISTINGS: &str = lua_live_nodes_with!("redis.call('HGETALL', listings)");

/// Leaves the cluster: drops the lease if it is still this process's, with its
/// inbox, its listings and its count. Returns the inbox entries after ARGV[3] (none
/// if it is empty): written after the owner's last read.
/// KEYS: node, nodes, counts, inbox, listings. ARGV: token, node id, last entry read.
pub fn release_lease() -> Script {
    Script::new(
        r"
local rest = {}
if ARGV[3] ~= '' then rest = redis.call('XRANGE', KEYS[4], '(' .. ARGV[3], '+') end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[4], KEYS[5])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
end
return rest
",
    )
}

/// Claims an `idempotencyKey` for a call. KEYS: once, nodes, rebuilding. ARGV:
/// request id, node id, lease token, fingerprint, record JSON, ttl ms, prefix of node
/// lease keys. Returns `{'first'}` (this call holds it now), `{'reused', requestId}`,
/// `{'settled', record}`, `{'wait', owner, record}` (its owner's lease runs),
/// `{'gone', record}` (its owner's lease ran out after its command was placed),
/// `{'rebuilding', ms}` (Redis lost the records lately: the processes are writing
/// theirs again for that long) or `{'lapsed'}` (this process's own lease is gone:
/// Redis may have lost everything; its next lease round finds out).
pub fn take_idempotency() -> Script {
    Script::new(concat!(
        lua_now!(),
        r"
local rebuilding = redis.call('PTTL', KEYS[3])
if rebuilding > 0 then return { 'rebuilding', tostring(rebuilding) } end
if redis.call('GET', ARGV[7] .. ARGV[2]) ~= ARGV[3] then return { 'lapsed' } end
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

/// Writes the record of a call this process holds a key for, unless Redis has one:
/// Redis lost it (restarted empty, flushed), and the process writes its records
/// again. KEYS: once. ARGV: request id, node id, lease token, state, placed ('1' or
/// '0'), fingerprint, record JSON, ttl ms. Returns 1 if written.
pub const RESTORE_IDEMPOTENCY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'requestId', ARGV[1], 'owner', ARGV[2], 'token', ARGV[3],
  'state', ARGV[4], 'placed', ARGV[5], 'fp', ARGV[6], 'record', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
return 1
";

/// Uses, on keys of its own, every command the gateway's scripts run, so that an ACL
/// user missing one is found at `start()`. KEYS: three probe keys.
pub const PROBE_SCRIPTS: &str = concat!(
    lua_now!(),
    lua_extend!(),
    r"
redis.call('SET', KEYS[1], now, 'PX', 5000)
redis.call('SET', KEYS[1], now, 'PX', 5000, 'NX')
redis.call('PTTL', KEYS[1])
redis.call('GET', KEYS[1])
redis.call('ZADD', KEYS[2], now, 'p')
redis.call('ZSCORE', KEYS[2], 'p')
redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '+inf', 'WITHSCORES')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '+inf')
redis.call('ZREM', KEYS[2], 'p')
redis.call('HSET', KEYS[3], 'p', '1')
redis.call('HGET', KEYS[3], 'p')
redis.call('HMGET', KEYS[3], 'p', 'q')
redis.call('HGETALL', KEYS[3])
redis.call('PEXPIRE', KEYS[3], 5000, 'NX')
redis.call('HDEL', KEYS[3], 'p')
redis.call('XADD', KEYS[3], 'MAXLEN', '0', '*', 'm', '')
redis.call('XRANGE', KEYS[3], '-', '+')
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
            plain.listings("node-1"),
            plain.idempotency(key, "order-1"),
            plain.seen_incoming(key, "m1"),
            secret.idempotency(key, "order-1"),
        ] {
            assert!(!name.contains(key), "{name}");
        }
        assert_eq!(plain.digest(key).len(), 64);
    }

    #[test]
    fn a_listing_starts_with_its_session_id_as_the_scripts_read_it() {
        let info = crate::state::registry::SessionInfo {
            session_id: "6f1c2a9e-0000-4000-8000-000000000001".into(),
            status: "line one\nline two".into(),
            ready: true,
            whatsapp_logged_in: true,
            device_active: true,
            connected_at: 1,
            last_heartbeat: 2,
            last_status_update: None,
            extension_version: "1.0.0".into(),
            browser: "Chrome".into(),
            ip: "127.0.0.1".into(),
            user_id: serde_json::json!({ "sessionId": "other", "n": [] }),
            commands: Vec::new(),
        };
        let text = serde_json::to_string(&info).unwrap();
        assert!(
            text.starts_with(r#"{"sessionId":"6f1c2a9e-0000-4000-8000-000000000001""#),
            "{text}"
        );
        // One line per listing: a newline in a value is escaped.
        assert!(!text.contains('\n'));
    }
}
