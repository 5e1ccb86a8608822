//! Every Redis command the cluster sends, over two multiplexed connections on the
//! core's runtime that reconnect by themselves: one for commands, one for the
//! blocking read of this process's inbox (which would hold up the other).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, RedisResult, Script, Value};

use super::envelope::Listing;
use super::keys::{self, Keys};
use super::relay::Outgoing;

/// How long one read of the inbox waits for entries.
const READ_BLOCK: Duration = Duration::from_millis(1000);
/// Inbox entries kept at most (roughly): a process that is gone does not read its inbox.
const INBOX_MAX: usize = 10_000;

pub struct Redis {
    commands: ConnectionManager,
    reader: ConnectionManager,
    pub keys: Keys,
    claim: Script,
    admit: Script,
    release: Script,
    take_key: Script,
    place_key: Script,
}

impl Redis {
    /// Connects lazily (on first use), so a Redis that is down does not stop `start()`.
    /// Needs the runtime's context. Reconnect backoff is capped at half the lease.
    pub fn open(url: &str, prefix: &str, lease: Duration) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_max_delay(lease / 2)
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        let reader = ConnectionManager::new_lazy_with_config(
            client,
            config.set_response_timeout(Some(READ_BLOCK + Duration::from_secs(2))),
        )?;
        Ok(Self {
            commands,
            reader,
            keys: Keys::new(prefix),
            claim: keys::claim_lease(),
            admit: keys::admit_session(),
            release: keys::release_lease(),
            take_key: keys::take_idempotency(),
            place_key: keys::place_idempotency(),
        })
    }

    /// Takes or renews the lease; returns the claim (1, 0 or -1, see `keys`) and the
    /// live nodes with their session counts.
    pub async fn claim(
        &self,
        token: &str,
        lease: Duration,
        node_id: &str,
        sessions: usize,
    ) -> RedisResult<(i64, Vec<LiveNode>)> {
        let keys = &self.keys;
        let reply: Vec<Value> = self
            .claim
            .key(keys.node(node_id))
            .key(keys.nodes())
            .key(keys.counts())
            .arg(token)
            .arg(lease.as_millis() as u64)
            .arg(node_id)
            .arg(sessions)
            .invoke_async(&mut self.commands.clone())
            .await?;
        let mut items = reply.into_iter();
        let claim: i64 = match items.next() {
            Some(v) => redis::from_redis_value(v)?,
            None => -1,
        };
        let nodes = live_nodes(items.collect())?;
        Ok((claim, nodes))
    }

    pub async fn release(&self, token: &str, node_id: &str) -> RedisResult<()> {
        let keys = &self.keys;
        self.release
            .key(keys.node(node_id))
            .key(keys.nodes())
            .key(keys.counts())
            .arg(token)
            .arg(node_id)
            .invoke_async::<Value>(&mut self.commands.clone())
            .await?;
        Ok(())
    }

    /// Adds the live nodes (`keys::LIVE_NODES`) to a round trip.
    fn ask_live_nodes(&self, pipe: &mut redis::Pipeline) {
        pipe.cmd("EVAL")
            .arg(keys::LIVE_NODES)
            .arg(2)
            .arg(self.keys.nodes())
            .arg(self.keys.counts());
    }

    /// Lists a session unless its key is full cluster-wide.
    pub async fn admit(&self, listing: &Listing, max: usize) -> RedisResult<bool> {
        let keys = &self.keys;
        let text = serde_json::to_string(listing).unwrap_or_default();
        let listed: i64 = self
            .admit
            .key(keys.sessions(&listing.api_key))
            .key(keys.nodes())
            .key(keys.api_keys())
            .arg(&*listing.info.session_id)
            .arg(text)
            .arg(max)
            .arg(&listing.api_key)
            .invoke_async(&mut self.commands.clone())
            .await?;
        Ok(listed == 1)
    }

    /// The listings of one API key on live nodes, and the live nodes, in one round trip.
    pub async fn listings(&self, api_key: &str) -> RedisResult<(Vec<Listing>, Vec<LiveNode>)> {
        let mut pipe = redis::pipe();
        pipe.hvals(self.keys.sessions(api_key));
        self.ask_live_nodes(&mut pipe);
        let (raw, live): (Vec<String>, Vec<Value>) =
            pipe.query_async(&mut self.commands.clone()).await?;
        let live = live_nodes(live)?;
        Ok((live_only(parse_listings(raw), &live), live))
    }

    /// Every listing on a live node, of every key.
    pub async fn all_listings(&self) -> RedisResult<Vec<Listing>> {
        let mut con = self.commands.clone();
        let api_keys: Vec<String> = con.smembers(self.keys.api_keys()).await?;
        if api_keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        self.ask_live_nodes(&mut pipe);
        for api_key in &api_keys {
            pipe.hvals(self.keys.sessions(api_key));
        }
        let mut replies: Vec<Value> = pipe.query_async(&mut con).await?;
        if replies.is_empty() {
            return Ok(Vec::new());
        }
        let live = live_nodes(redis::from_redis_value(replies.remove(0))?)?;
        let per_key: Vec<Vec<String>> = replies
            .into_iter()
            .map(|v| redis::from_redis_value(v).map_err(redis::RedisError::from))
            .collect::<RedisResult<_>>()?;
        let empty: Vec<&String> = api_keys
            .iter()
            .zip(&per_key)
            .filter(|(_, l)| l.is_empty())
            .map(|(k, _)| k)
            .collect();
        if !empty.is_empty() {
            let _: RedisResult<Value> = con.srem(self.keys.api_keys(), empty).await;
        }
        let all = per_key.into_iter().flat_map(parse_listings).collect();
        Ok(live_only(all, &live))
    }

    /// Writes a batch of outgoing items in one round trip.
    pub async fn write(&self, batch: &[Outgoing]) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        for item in batch {
            match item {
                Outgoing::Envelope { to, envelope, .. } => {
                    let payload = serde_json::to_vec(envelope).unwrap_or_default();
                    pipe.cmd("XADD")
                        .arg(self.keys.inbox(to))
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(INBOX_MAX)
                        .arg("*")
                        .arg("m")
                        .arg(payload)
                        .ignore();
                }
                Outgoing::List {
                    api_key,
                    session_id,
                    listing,
                } => {
                    let text = serde_json::to_string(listing).unwrap_or_default();
                    pipe.hset(self.keys.sessions(api_key), &**session_id, text)
                        .ignore()
                        .sadd(self.keys.api_keys(), &**api_key)
                        .ignore();
                }
                Outgoing::Record {
                    key,
                    request_id,
                    state,
                    record,
                    ttl,
                } => {
                    pipe.cmd("EVAL")
                        .arg(keys::SETTLE_IDEMPOTENCY)
                        .arg(1)
                        .arg(key)
                        .arg(request_id)
                        .arg(*state)
                        .arg(record)
                        .arg(ttl.as_millis() as u64)
                        .ignore();
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
                        .arg(ttl.as_millis() as u64)
                        .ignore();
                }
                Outgoing::Unlist {
                    api_key,
                    session_id,
                } => {
                    pipe.hdel(self.keys.sessions(api_key), &**session_id)
                        .ignore();
                }
            }
        }
        pipe.query_async::<()>(&mut self.commands.clone()).await
    }

    /// Claims an `idempotencyKey`'s record for a call (`keys::take_idempotency`).
    pub async fn take_key(&self, key: &str, claim: &KeyClaim<'_>) -> RedisResult<Taken> {
        let reply: Vec<String> = self
            .take_key
            .key(key)
            .key(self.keys.nodes())
            .arg(claim.request_id)
            .arg(claim.node_id)
            .arg(claim.token)
            .arg(claim.fingerprint)
            .arg(claim.record)
            .arg(claim.ttl.as_millis() as u64)
            .arg(self.keys.node(""))
            .invoke_async(&mut self.commands.clone())
            .await?;
        let mut items = reply.into_iter();
        let (kind, first, second) = (items.next(), items.next(), items.next());
        Ok(match (kind.as_deref(), first, second) {
            (Some("first"), _, _) => Taken::First,
            (Some("reused"), Some(request_id), _) => Taken::Reused(request_id),
            (Some("settled"), Some(record), _) => Taken::Settled(record),
            (Some("wait"), Some(owner), _) => Taken::Wait(owner),
            (Some("gone"), Some(record), _) => Taken::Gone(record),
            _ => Taken::Unreadable,
        })
    }

    /// Marks a claimed key's command as possibly written; false if the key is no
    /// longer this call's.
    pub async fn place_key(&self, key: &str, request_id: &str) -> RedisResult<bool> {
        let placed: i64 = self
            .place_key
            .key(key)
            .arg(request_id)
            .invoke_async(&mut self.commands.clone())
            .await?;
        Ok(placed == 1)
    }

    /// The record JSON of the call holding a key, if any.
    /// A send's record (`keys::status`).
    pub async fn status_record(&self, key: &str) -> RedisResult<Option<String>> {
        self.commands.clone().get(key).await
    }

    pub async fn key_record(&self, key: &str) -> RedisResult<Option<String>> {
        self.commands.clone().hget(key, "record").await
    }

    /// Marks `key` seen for `window`; false if it already was.
    pub async fn first_sighting(&self, key: &str, window: Duration) -> RedisResult<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(window.as_millis() as u64)
            .query_async(&mut self.commands.clone())
            .await?;
        Ok(set.is_some())
    }

    /// Entries of this process's inbox after `after`, waiting a while for some.
    pub async fn read_inbox(
        &self,
        node_id: &str,
        after: &str,
    ) -> RedisResult<Vec<(String, Vec<u8>)>> {
        let options = StreamReadOptions::default()
            .block(READ_BLOCK.as_millis() as usize)
            .count(256);
        let reply: Option<StreamReadReply> = self
            .reader
            .clone()
            .xread_options(&[self.keys.inbox(node_id)], &[after], &options)
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
    pub async fn trim_inbox(&self, node_id: &str, upto: &str) -> RedisResult<()> {
        redis::cmd("XTRIM")
            .arg(self.keys.inbox(node_id))
            .arg("MINID")
            .arg(upto)
            .query_async::<Value>(&mut self.commands.clone())
            .await?;
        Ok(())
    }
}

/// A call's claim of an `idempotencyKey`.
pub struct KeyClaim<'a> {
    pub request_id: &'a str,
    pub node_id: &'a str,
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
    Unreadable,
}

/// A process whose lease has not run out.
pub struct LiveNode {
    pub id: String,
    /// How long its lease has left, by Redis's clock.
    pub lease_left: Duration,
    pub sessions: usize,
}

/// `id, ms its lease has left, sessions, ...` as the scripts answer.
fn live_nodes(flat: Vec<Value>) -> RedisResult<Vec<LiveNode>> {
    let mut nodes = Vec::new();
    let mut items = flat.into_iter();
    while let (Some(id), Some(left), Some(sessions)) = (items.next(), items.next(), items.next()) {
        let left: i64 = redis::from_redis_value(left)?;
        nodes.push(LiveNode {
            id: redis::from_redis_value(id)?,
            lease_left: Duration::from_millis(left.max(0) as u64),
            sessions: redis::from_redis_value(sessions)?,
        });
    }
    Ok(nodes)
}

fn live_only(listings: Vec<Listing>, live: &[LiveNode]) -> Vec<Listing> {
    listings
        .into_iter()
        .filter(|l| live.iter().any(|n| n.id == l.node_id))
        .collect()
}

fn parse_listings(raw: Vec<String>) -> Vec<Listing> {
    raw.iter()
        .filter_map(|text| serde_json::from_str(text).ok())
        .collect()
}
