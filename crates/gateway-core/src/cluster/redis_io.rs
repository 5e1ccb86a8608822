//! Every Redis command the cluster sends, over two multiplexed connections on the
//! core's runtime that are made again when they break (`connect::Link`): one for
//! commands, one for the blocking read of this process's inbox (which would hold up
//! the other).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, RedisError, RedisResult, Script, Value};

use super::connect::{Failure, Link, Target};
use super::envelope::Listing;
use super::keys::{self, Keys};
use super::relay::Outgoing;

/// How long one read of the inbox waits for entries.
const READ_BLOCK: Duration = Duration::from_millis(1000);
/// Inbox entries kept at most (roughly): a process that is gone does not read its inbox.
const INBOX_MAX: usize = 10_000;
/// How long a command may wait for its reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

pub type Reply<T> = Result<T, Failure>;

pub struct Redis {
    commands: Link,
    reader: Link,
    pub keys: Arc<Keys>,
    node_id: Arc<str>,
    lease: Duration,
    claim: Script,
    admit: Script,
    release: Script,
    listings_of_key: Script,
    all_listings: Script,
    /// Run in pipelines by hash (`EVALSHA`): loaded when Redis says it lacks it.
    list: Script,
    take_key: Script,
    place_key: Script,
}

impl Redis {
    /// Connects lazily (on first use), so a Redis that is down does not stop `start()`.
    /// Reconnect backoff is capped at half the lease (and a second: a failover is over
    /// in seconds).
    pub fn open(target: Target, keys: Arc<Keys>, node_id: Arc<str>, lease: Duration) -> Self {
        let target = Arc::new(target);
        let max_backoff = (lease / 2).min(Duration::from_secs(1));
        Self {
            commands: Link::new(target.clone(), RESPONSE_TIMEOUT, max_backoff),
            reader: Link::new(target, READ_BLOCK + RESPONSE_TIMEOUT, max_backoff),
            keys,
            node_id,
            lease,
            claim: keys::claim_lease(),
            admit: keys::admit_session(),
            release: keys::release_lease(),
            listings_of_key: Script::new(keys::LISTINGS_OF_KEY),
            all_listings: Script::new(keys::ALL_LISTINGS),
            list: Script::new(keys::LIST_SESSIONS),
            take_key: keys::take_idempotency(),
            place_key: keys::place_idempotency(),
        }
    }

    /// Runs `op` on `link`'s connection; a connection that broke is made again next time.
    async fn on<T, F, Fut>(&self, link: &Link, op: F) -> Reply<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let con = link.get().await?;
        op(con).await.map_err(|e| {
            link.failed(&e);
            Failure::of(&e)
        })
    }

    /// Takes or renews the lease; returns the claim (1, 0 or -1, see `keys`) and the
    /// live nodes with their session counts. `refresh`: extend the life of this
    /// process's keys. `held`: this process held the lease before (finding it gone
    /// may mean that Redis lost the cluster's state).
    pub async fn claim(
        &self,
        token: &str,
        sessions: usize,
        refresh: bool,
        held: bool,
    ) -> Reply<(i64, Vec<LiveNode>)> {
        let keys = &self.keys;
        let node_id = &*self.node_id;
        let mut invocation = self.claim.key(keys.node(node_id));
        invocation
            .key(keys.nodes())
            .key(keys.counts())
            .key(keys.inbox(node_id))
            .key(keys.listings(node_id))
            .key(keys.rebuilding())
            .arg(token)
            .arg(self.lease.as_millis() as u64)
            .arg(node_id)
            .arg(sessions)
            .arg(keys.prefix())
            .arg(if refresh { "1" } else { "0" })
            .arg(if held { "1" } else { "0" });
        let reply: Vec<Value> = self
            .on(&self.commands, |mut con| async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        let mut items = reply.into_iter();
        let claim: i64 = match items.next() {
            Some(v) => redis::from_redis_value(v).map_err(|e| Failure::of(&RedisError::from(e)))?,
            None => -1,
        };
        let nodes = live_nodes(items.collect()).map_err(|e| Failure::of(&e))?;
        Ok((claim, nodes))
    }

    /// Runs every command the gateway needs once, on keys of its own: a user whose
    /// ACL lacks one is refused here, at `start()`, rather than at some later send.
    pub async fn probe(&self, token: &str) -> Reply<()> {
        let keys = &self.keys;
        let (a, b, c) = (
            keys.probe(&format!("{token}:a")),
            keys.probe(&format!("{token}:b")),
            keys.probe(&format!("{token}:c")),
        );
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(keys::PROBE_SCRIPTS)
            .arg(3)
            .arg(&a)
            .arg(&b)
            .arg(&c)
            .ignore();
        for script in [keys::LISTINGS_OF_KEY, keys::ALL_LISTINGS] {
            pipe.cmd("EVAL")
                .arg(script)
                .arg(1)
                .arg(&a)
                .arg(keys.prefix())
                .arg("p")
                .ignore();
        }
        pipe.cmd("XADD")
            .arg(&a)
            .arg("MAXLEN")
            .arg("0")
            .arg("*")
            .arg("m")
            .arg("")
            .ignore();
        pipe.cmd("XADD")
            .arg(&a)
            .arg("NOMKSTREAM")
            .arg("MAXLEN")
            .arg("~")
            .arg(INBOX_MAX)
            .arg("*")
            .arg("m")
            .arg("")
            .ignore();
        pipe.cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&a)
            .arg("0-0")
            .ignore();
        pipe.cmd("XTRIM").arg(&a).arg("MINID").arg("0-1").ignore();
        pipe.hset(&b, "p", "1").ignore().hdel(&b, "p").ignore();
        pipe.cmd("SET")
            .arg(&c)
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(5000)
            .arg("GET")
            .ignore();
        pipe.pset_ex(&c, "1", 5000).ignore();
        pipe.del(&[&a, &b, &c]).ignore();
        self.on(&self.commands, |mut con| async move {
            pipe.query_async::<()>(&mut con).await
        })
        .await
    }

    /// Gives up the lease and the inbox; returns the inbox entries after `after`.
    pub async fn release(&self, token: &str, after: Option<&str>) -> Reply<Vec<(String, Vec<u8>)>> {
        let keys = &self.keys;
        let node_id = &*self.node_id;
        let mut invocation = self.release.key(keys.node(node_id));
        invocation
            .key(keys.nodes())
            .key(keys.counts())
            .key(keys.inbox(node_id))
            .key(keys.listings(node_id))
            .arg(token)
            .arg(node_id)
            .arg(after.unwrap_or_default());
        let rest: Value = self
            .on(&self.commands, |mut con| async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        Ok(stream_entries(rest))
    }

    /// Lists a session unless its key is full cluster-wide.
    pub async fn admit(&self, listing: &Listing, max: usize) -> Reply<bool> {
        let keys = &self.keys;
        let text = serde_json::to_string(&listing.info).unwrap_or_default();
        let mut invocation = self.admit.key(keys.listings(&self.node_id));
        invocation
            .key(keys.nodes())
            .arg(&*listing.info.session_id)
            .arg(text)
            .arg(max)
            .arg(&listing.api_key_digest)
            .arg(self.keep_ms())
            .arg(keys.prefix())
            .arg(&*self.node_id);
        let listed: i64 = self
            .on(&self.commands, |mut con| async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        Ok(listed == 1)
    }

    /// How long this process's keys live if nothing extends them (see `keys`).
    fn keep_ms(&self) -> u64 {
        3 * self.lease.as_millis() as u64
    }

    /// The listings of one API key on live nodes, and the live nodes, in one round trip.
    pub async fn listings(&self, api_key: &str) -> Reply<(Vec<Listing>, Vec<LiveNode>)> {
        let digest = self.keys.digest(api_key);
        let mut invocation = self.listings_of_key.key(self.keys.nodes());
        invocation.arg(self.keys.prefix()).arg(&digest);
        let reply: Vec<Value> = self
            .on(&self.commands, |mut con| async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        let mut live = Vec::new();
        let mut listings = Vec::new();
        for (node, text) in per_node(reply).map_err(|e| Failure::of(&e))? {
            if let Value::BulkString(text) = text {
                listings.extend(parse_listings(&node.id, &digest, &text));
            }
            live.push(node);
        }
        Ok((listings, live))
    }

    /// Every listing on a live node, of every key.
    pub async fn all_listings(&self) -> Reply<Vec<Listing>> {
        let mut invocation = self.all_listings.key(self.keys.nodes());
        invocation.arg(self.keys.prefix());
        let reply: Vec<Value> = self
            .on(&self.commands, |mut con| async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        let mut all = Vec::new();
        for (node, fields) in per_node(reply).map_err(|e| Failure::of(&e))? {
            let Value::Array(fields) = fields else {
                continue;
            };
            let mut fields = fields.into_iter();
            while let (Some(digest), Some(Value::BulkString(text))) = (fields.next(), fields.next())
            {
                let digest: String = redis::from_redis_value(digest)
                    .map_err(|e| Failure::of(&RedisError::from(e)))?;
                all.extend(parse_listings(&node.id, &digest, &text));
            }
        }
        Ok(all)
    }

    /// Writes a batch of outgoing items in one round trip; says, for each item in
    /// order, what became of it (each item is one command, and one refused command does
    /// not hide what became of the others).
    pub async fn write(&self, batch: &[Outgoing]) -> Reply<Vec<Written>> {
        let pipe = self.pipeline(batch.iter());
        let replies = self
            .on(&self.commands, |mut con| async move {
                pipe.query_async::<Vec<Value>>(&mut con).await
            })
            .await?;
        let mut written: Vec<Written> = replies.iter().map(Written::of).collect();
        written.resize(batch.len(), Written::Refused);
        let missing: Vec<usize> = (0..batch.len())
            .filter(|&i| written[i] == Written::NoScript)
            .collect();
        if !missing.is_empty() {
            // A Redis restarted, or a replica promoted, has no scripts: loaded, and the
            // listings written again (they alone run scripts).
            let mut load = redis::pipe();
            load.cmd("SCRIPT")
                .arg("LOAD")
                .arg(keys::LIST_SESSIONS)
                .ignore();
            let pipe = self.pipeline(missing.iter().map(|&i| &batch[i]));
            let again = self
                .on(&self.commands, |mut con| async move {
                    load.query_async::<()>(&mut con).await?;
                    pipe.query_async::<Vec<Value>>(&mut con).await
                })
                .await?;
            for (&i, reply) in missing.iter().zip(&again) {
                written[i] = Written::of(reply);
            }
        }
        Ok(written)
    }

    /// One command per item, none ignored; errors come back as replies.
    fn pipeline<'a>(&self, batch: impl Iterator<Item = &'a Outgoing>) -> redis::Pipeline {
        let keys = &self.keys;
        let keep = self.keep_ms();
        let listings = keys.listings(&self.node_id);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for item in batch {
            match item {
                Outgoing::Envelope { to, envelope, .. } => {
                    let payload = serde_json::to_vec(envelope).unwrap_or_default();
                    pipe.cmd("XADD")
                        .arg(keys.inbox(to))
                        .arg("NOMKSTREAM")
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(INBOX_MAX)
                        .arg("*")
                        .arg("m")
                        .arg(payload);
                }
                Outgoing::Listings {
                    digest, changes, ..
                } => {
                    pipe.cmd("EVALSHA")
                        .arg(self.list.get_hash())
                        .arg(1)
                        .arg(&listings)
                        .arg(keep)
                        .arg(digest);
                    for (session_id, info) in changes {
                        let text = info
                            .as_ref()
                            .map(|info| serde_json::to_string(info).unwrap_or_default());
                        pipe.arg(&**session_id).arg(text.unwrap_or_default());
                    }
                }
                Outgoing::UnlistAll => {
                    pipe.del(&listings);
                }
                Outgoing::Record {
                    key,
                    request_id,
                    state,
                    record,
                    ttl,
                } => {
                    // By its text: rare, and never refused for a missing script.
                    pipe.cmd("EVAL")
                        .arg(keys::SETTLE_IDEMPOTENCY)
                        .arg(1)
                        .arg(key)
                        .arg(request_id)
                        .arg(*state)
                        .arg(record)
                        .arg(ttl.as_millis() as u64);
                }
                Outgoing::Status {
                    request_id,
                    record,
                    ttl,
                } => {
                    pipe.cmd("SET")
                        .arg(self.keys.status(request_id))
                        .arg(record)
                        .arg("PX")
                        .arg(ttl.as_millis() as u64);
                }
                Outgoing::Restore {
                    key,
                    token,
                    state,
                    record,
                    fingerprint,
                    ttl,
                } => {
                    pipe.cmd("EVAL")
                        .arg(keys::RESTORE_IDEMPOTENCY)
                        .arg(1)
                        .arg(key)
                        .arg(&record.request_id)
                        .arg(&*self.node_id)
                        .arg(token)
                        .arg(*state)
                        // Whether its command may have been written: a pending call
                        // counts as if so (a duplicate then never sends it again).
                        .arg("1")
                        .arg(fingerprint)
                        .arg(serde_json::to_string(record).unwrap_or_default())
                        .arg(ttl.as_millis() as u64);
                }
            }
        }
        pipe
    }

    /// Claims an `idempotencyKey`'s record for a call (`keys::take_idempotency`).
    pub async fn take_key(&self, key: &str, claim: &KeyClaim<'_>) -> Reply<Taken> {
        let mut invocation = self.take_key.key(key);
        invocation
            .key(self.keys.nodes())
            .key(self.keys.rebuilding())
            .arg(claim.request_id)
            .arg(&*self.node_id)
            .arg(claim.token)
            .arg(claim.fingerprint)
            .arg(claim.record)
            .arg(claim.ttl.as_millis() as u64)
            .arg(self.keys.node(""));
        let reply: Vec<String> = self
            .on(&self.commands, |mut con| async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        let mut items = reply.into_iter();
        let (kind, first) = (items.next(), items.next());
        Ok(match (kind.as_deref(), first) {
            (Some("first"), _) => Taken::First,
            (Some("reused"), Some(request_id)) => Taken::Reused(request_id),
            (Some("settled"), Some(record)) => Taken::Settled(record),
            (Some("wait"), Some(owner)) => Taken::Wait(owner),
            (Some("gone"), Some(record)) => Taken::Gone(record),
            (Some("rebuilding"), Some(ms)) => {
                Taken::Rebuilding(Duration::from_millis(ms.parse().unwrap_or(100)))
            }
            (Some("lapsed"), _) => Taken::Lapsed,
            _ => Taken::Unreadable,
        })
    }

    /// Marks a claimed key's command as possibly written; false if the key is no
    /// longer this call's.
    pub async fn place_key(&self, key: &str, request_id: &str) -> Reply<bool> {
        let mut invocation = self.place_key.key(key);
        invocation.arg(request_id);
        let placed: i64 = self
            .on(&self.commands, |mut con| async move {
                invocation.invoke_async(&mut con).await
            })
            .await?;
        Ok(placed == 1)
    }

    /// The record JSON of the call holding a key, if any.
    pub async fn key_record(&self, key: &str) -> Reply<Option<String>> {
        let key = key.to_string();
        self.on(&self.commands, |mut con| async move {
            con.hget(key, "record").await
        })
        .await
    }

    /// A send's record (`keys::status`).
    pub async fn status_record(&self, key: &str) -> Reply<Option<String>> {
        let key = key.to_string();
        self.on(&self.commands, |mut con| async move { con.get(key).await })
            .await
    }

    /// Marks `key` seen for `window`; false if it already was.
    pub async fn first_sighting(&self, key: &str, window: Duration) -> Reply<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(window.as_millis() as u64);
        let set: Option<String> = self
            .on(&self.commands, |mut con| async move {
                cmd.query_async(&mut con).await
            })
            .await?;
        Ok(set.is_some())
    }

    /// Entries of this process's inbox after `after`, waiting a while for some.
    pub async fn read_inbox(&self, after: &str) -> Reply<Vec<(String, Vec<u8>)>> {
        let options = StreamReadOptions::default()
            .block(READ_BLOCK.as_millis() as usize)
            .count(256);
        let inbox = self.keys.inbox(&self.node_id);
        let reply: Option<StreamReadReply> = self
            .on(&self.reader, |mut con| async move {
                con.xread_options(&[inbox], &[after], &options).await
            })
            .await?;
        let mut entries = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                let payload = match entry.map.get("m") {
                    Some(Value::BulkString(bytes)) => bytes.clone(),
                    _ => Vec::new(),
                };
                entries.push((entry.id, payload));
            }
        }
        Ok(entries)
    }

    /// Forgets inbox entries before `upto` (read already).
    pub async fn trim_inbox(&self, upto: &str) -> Reply<()> {
        let mut cmd = redis::cmd("XTRIM");
        cmd.arg(self.keys.inbox(&self.node_id))
            .arg("MINID")
            .arg(upto);
        self.on(&self.commands, |mut con| async move {
            cmd.query_async::<Value>(&mut con).await
        })
        .await?;
        Ok(())
    }
}

/// `XRANGE`'s reply as (id, the `m` field), in order.
fn stream_entries(reply: Value) -> Vec<(String, Vec<u8>)> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let Value::Array(parts) = entry else { continue };
        let mut parts = parts.into_iter();
        let (Some(Value::BulkString(id)), Some(Value::Array(fields))) =
            (parts.next(), parts.next())
        else {
            continue;
        };
        let mut fields = fields.into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            if let (Value::BulkString(name), Value::BulkString(value)) = (name, value) {
                if name == b"m" && !value.is_empty() {
                    out.push((String::from_utf8_lossy(&id).into_owned(), value));
                }
            }
        }
    }
    out
}

/// What became of one item written (`Redis::write`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Done,
    /// An inbox that is gone: its process left.
    Gone,
    /// Redis lacks the script (loaded and tried again by `write`).
    NoScript,
    /// Refused (a missing permission, say): not written.
    Refused,
}

impl Written {
    fn of(reply: &Value) -> Self {
        match reply {
            Value::Nil => Self::Gone,
            Value::ServerError(e) if e.code() == "NOSCRIPT" => Self::NoScript,
            Value::ServerError(_) => Self::Refused,
            _ => Self::Done,
        }
    }
}

/// A call's claim of an `idempotencyKey`.
pub struct KeyClaim<'a> {
    pub request_id: &'a str,
    pub token: &'a str,
    pub fingerprint: &'a str,
    /// The record as it reads while the call is pending.
    pub record: &'a str,
    pub ttl: Duration,
}

/// What the record of an `idempotencyKey` in Redis says to a call claiming it.
pub enum Taken {
    First,
    Reused(String),
    Settled(String),
    /// Held by a live process's call (this node id: a call of this process).
    Wait(String),
    /// Held by a call whose process is gone after its command was placed.
    Gone(String),
    /// Redis lost its records lately: the processes are writing theirs again for this
    /// long.
    Rebuilding(Duration),
    /// This process's lease is gone (Redis may have lost everything).
    Lapsed,
    Unreadable,
}

/// A process whose lease has not run out.
pub struct LiveNode {
    pub id: String,
    /// How long its lease has left, by Redis's clock.
    pub lease_left: Duration,
    pub sessions: usize,
}

/// `id, ms its lease has left, sessions, ...` as the lease renewal answers.
fn live_nodes(flat: Vec<Value>) -> RedisResult<Vec<LiveNode>> {
    let mut nodes = Vec::new();
    let mut items = flat.into_iter();
    while let (Some(id), Some(left), Some(sessions)) = (items.next(), items.next(), items.next()) {
        let mut node = live_node(id, left)?;
        node.sessions = redis::from_redis_value(sessions)?;
        nodes.push(node);
    }
    Ok(nodes)
}

fn live_node(id: Value, left: Value) -> RedisResult<LiveNode> {
    let left: i64 = redis::from_redis_value(left)?;
    Ok(LiveNode {
        id: redis::from_redis_value(id)?,
        lease_left: Duration::from_millis(left.max(0) as u64),
        sessions: 0,
    })
}

/// `id, ms its lease has left, what the script read of it, ...` as the listing reads
/// answer.
fn per_node(flat: Vec<Value>) -> RedisResult<Vec<(LiveNode, Value)>> {
    let mut nodes = Vec::new();
    let mut items = flat.into_iter();
    while let (Some(id), Some(left), Some(read)) = (items.next(), items.next(), items.next()) {
        nodes.push((live_node(id, left)?, read));
    }
    Ok(nodes)
}

/// A key's listings on one process, one JSON per line (`keys::LIST_SESSIONS`); a
/// line that does not parse is skipped.
fn parse_listings(node_id: &str, digest: &str, text: &[u8]) -> Vec<Listing> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .map(|info| Listing {
            node_id: node_id.to_string(),
            api_key_digest: digest.to_string(),
            info,
        })
        .collect()
}
