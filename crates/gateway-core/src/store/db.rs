//! The store's file: an SQLite database in WAL mode, its tables (README "Durable mode"
//! documents each column), one transaction per batch, and reading it back at start.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use base64::Engine;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, ToSql};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_128;

use crate::config::{StoreConfig, Strategy};
use crate::error::{ErrorCode, GatewayError};
use crate::media::Media;
use crate::state::journal::QueuedSend;
use crate::state::link::lock;
use crate::state::records::StoredRecord;

/// Bumped when a table changes shape; a file of another version is refused.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
  seq             INTEGER PRIMARY KEY,
  request_id      TEXT NOT NULL,
  api_key         TEXT NOT NULL,
  idempotency_key TEXT,
  kind            TEXT NOT NULL,
  phone_number    TEXT NOT NULL,
  fingerprint     TEXT,
  state           TEXT NOT NULL,
  written         INTEGER NOT NULL,
  ack             TEXT,
  message_id      TEXT,
  timestamp       REAL NOT NULL,
  device          TEXT,
  metadata        TEXT,
  error           TEXT,
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL,
  settled_at      INTEGER,
  data            TEXT
);
CREATE INDEX IF NOT EXISTS records_by_key ON records (api_key, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_by_settled ON records (settled_at);
CREATE TABLE IF NOT EXISTS media (
  digest    TEXT PRIMARY KEY,
  header    TEXT NOT NULL,
  mime_type TEXT NOT NULL,
  file_name TEXT,
  bytes     BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS queued (
  seq           INTEGER PRIMARY KEY AUTOINCREMENT,
  request_id    TEXT NOT NULL,
  api_key       TEXT NOT NULL,
  kind          TEXT NOT NULL,
  phone_number  TEXT NOT NULL,
  text          TEXT NOT NULL,
  document_name TEXT,
  strategy      TEXT,
  deadline_at   INTEGER NOT NULL,
  media         TEXT REFERENCES media (digest)
);
CREATE INDEX IF NOT EXISTS queued_by_media ON queued (media) WHERE media IS NOT NULL;
CREATE TABLE IF NOT EXISTS incoming (
  api_key    TEXT NOT NULL,
  message_id TEXT NOT NULL,
  seen_at    INTEGER NOT NULL,
  PRIMARY KEY (api_key, message_id)
);
CREATE INDEX IF NOT EXISTS incoming_by_time ON incoming (seen_at);
";

/// What one batch writes, in one transaction.
#[derive(Default)]
pub struct Batch {
    pub records: Vec<(std::sync::Arc<str>, StoredRecord)>,
    pub queued: Vec<QueuedSend>,
    pub incoming: Vec<(String, String, u64)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.queued.is_empty() && self.incoming.is_empty()
    }
}

/// A queued send read back, in its order.
pub struct Recovered {
    pub send: QueuedSend,
}

/// What a start finds in the store.
#[derive(Default)]
pub struct Contents {
    pub records: Vec<(String, StoredRecord)>,
    pub queued: Vec<Recovered>,
    pub incoming: Vec<(String, String, u64)>,
}

pub struct Db {
    /// First: stopped before `conn` closes (the last connection checkpoints the rest).
    _checkpoints: Option<Checkpoints>,
    conn: Connection,
    /// Each record's row by request id. Rows are found by `seq`, which grows: a request
    /// id is random, and as a key it put each write on another page of the file (a
    /// third of the store's cost per send).
    records: HashMap<u128, i64>,
    /// The same for the rows of `queued`: a settled or written record deletes its row.
    queued: HashMap<u128, i64>,
    /// Holds the lock that keeps a second process out (closed with the store).
    _lock: File,
    path: PathBuf,
}

fn store_error(path: &Path, what: &str, error: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(
        ErrorCode::ServerError,
        format!("Cannot {what} the store {}: {error}", path.display()),
        serde_json::json!({ "store": path.display().to_string() }),
    )
}

fn text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn parsed<T: DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_value(Value::String(text.to_string())).ok()
}

fn json_text<T: Serialize>(value: &Option<T>) -> Option<String> {
    value
        .as_ref()
        .and_then(|v| serde_json::to_string(v).ok())
        .filter(|t| t != "null")
}

fn json_of<T: DeserializeOwned>(text: Option<String>) -> Option<T> {
    serde_json::from_str(&text?).ok()
}

impl Db {
    /// Opens (or creates) the store; `STORE_LOCKED` when another process has it open.
    pub fn open(config: &StoreConfig) -> Result<Self, GatewayError> {
        let path = config.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| store_error(&path, "create the folder of", e))?;
        }
        // A lock of our own beside the database: SQLite's locks do not say "another
        // gateway has this", and this one ends with its process, however it ends.
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| store_error(&path, "open the lock of", e))?;
        // SAFETY: flock on a descriptor `lock` owns and keeps open.
        let taken = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !taken {
            return Err(GatewayError::new(
                ErrorCode::StoreLocked,
                format!(
                    "The store {} is open in another gateway (process or object); one store serves one gateway at a time",
                    path.display()
                ),
                serde_json::json!({ "store": path.display().to_string() }),
            ));
        }
        let conn = Connection::open(&path).map_err(|e| store_error(&path, "open", e))?;
        let sync = if config.full_sync { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000;"
        ))
        .and_then(|()| conn.execute_batch(SCHEMA))
        .map_err(|e| store_error(&path, "prepare", e))?;
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| store_error(&path, "read", e))?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(|e| store_error(&path, "write", e))?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(store_error(
                    &path,
                    "use",
                    format!("it has schema version {v}, this gateway writes {SCHEMA_VERSION}"),
                ))
            }
        }
        let checkpoints = Checkpoints::start(&path);
        if checkpoints.is_some() {
            conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
                .map_err(|e| store_error(&path, "prepare", e))?;
        }
        let mut db = Self {
            _checkpoints: checkpoints,
            conn,
            records: HashMap::new(),
            queued: HashMap::new(),
            _lock: lock,
            path,
        };
        // A send whose record left or settled is never taken up again, whatever order
        // its rows were written in; media no queued send needs goes with it.
        db.conn
            .execute_batch(
                "DELETE FROM queued WHERE request_id IN (SELECT request_id FROM records WHERE written = 1 OR settled_at IS NOT NULL);
                 DELETE FROM media WHERE digest NOT IN (SELECT media FROM queued WHERE media IS NOT NULL);",
            )
            .map_err(|e| db.error("prepare", e))?;
        db.records = db.rows("SELECT request_id, seq FROM records")?;
        db.queued = db.rows("SELECT request_id, seq FROM queued")?;
        Ok(db)
    }

    /// `request_id -> seq` of a table's rows.
    fn rows(&self, query: &str) -> Result<HashMap<u128, i64>, GatewayError> {
        let mut statement = self
            .conn
            .prepare(query)
            .map_err(|e| self.error("read", e))?;
        let rows = statement
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.error("read", e))?;
        Ok(rows
            .filter_map(Result::ok)
            .filter_map(|(id, seq)| Some((uuid::Uuid::try_parse(&id).ok()?.as_u128(), seq)))
            .collect())
    }

    pub fn error(&self, what: &str, error: impl std::fmt::Display) -> GatewayError {
        store_error(&self.path, what, error)
    }

    /// Writes one batch in one transaction.
    pub fn write(&mut self, batch: &Batch) -> Result<(), GatewayError> {
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| store_error(&path, "write", e);
        // Rows made or deleted: the maps take them once the transaction commits.
        let mut made_records = Vec::new();
        let mut made_queued = Vec::new();
        let mut unqueued = Vec::new();
        let tx = self.conn.transaction().map_err(fail)?;
        {
            let mut media = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO media (digest, header, mime_type, file_name, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(fail)?;
            let mut queued = tx
                .prepare_cached(
                    "INSERT INTO queued (request_id, api_key, kind, phone_number, text, document_name, strategy, deadline_at, media)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(fail)?;
            // A send that left or settled in this same batch needs no row: most sends
            // are kept and leave within one commit.
            let done: std::collections::HashSet<u128> = batch
                .records
                .iter()
                .filter(|(_, r)| r.written || r.settled_at.is_some())
                .filter_map(|(_, r)| uuid::Uuid::try_parse(&r.request_id).ok())
                .map(|id| id.as_u128())
                .collect();
            for send in &batch.queued {
                if done.contains(&send.request_id)
                    || self.queued.contains_key(&send.request_id)
                    || made_queued.iter().any(|(id, _)| *id == send.request_id)
                {
                    continue;
                }
                let request_id = uuid::Uuid::from_u128(send.request_id).to_string();
                let digest = match &send.media {
                    Some(m) => {
                        let (header, bytes) = split_data_url(&m.data_url);
                        let digest = format!("{:032x}", xxh3_128(m.data_url.as_bytes()));
                        media
                            .execute(params![digest, header, m.mime_type, m.file_name, bytes])
                            .map_err(fail)?;
                        Some(digest)
                    }
                    None => None,
                };
                queued
                    .execute(params![
                        request_id,
                        send.api_key,
                        text(&send.kind),
                        send.phone_number,
                        send.text,
                        send.document_name,
                        send.strategy.map(strategy_name),
                        send.deadline_at as i64,
                        digest,
                    ])
                    .map_err(fail)?;
                made_queued.push((send.request_id, tx.last_insert_rowid()));
            }
            // A record's columns in two parts: first what its later changes can touch (the
            // update's ?1-?10, the insert's too), then the call's own (key, recipient,
            // metadata...), which never change once written and are neither made again
            // nor rewritten.
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO records (state, written, ack, message_id, timestamp, device, error, updated_at,
                       settled_at, data, request_id, api_key, idempotency_key, kind, phone_number, fingerprint,
                       metadata, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                )
                .map_err(fail)?;
            let mut update = tx
                .prepare_cached(
                    "UPDATE records SET state = ?1, written = ?2, ack = ?3, message_id = ?4, timestamp = ?5, device = ?6,
                       error = ?7, updated_at = ?8, settled_at = ?9, data = ?10
                     WHERE seq = ?11",
                )
                .map_err(fail)?;
            let mut unqueue = tx
                .prepare_cached("DELETE FROM queued WHERE seq = ?1 RETURNING media")
                .map_err(fail)?;
            let mut orphan = tx
                .prepare_cached(
                    "DELETE FROM media WHERE digest = ?1 AND NOT EXISTS (SELECT 1 FROM queued WHERE media = ?1)",
                )
                .map_err(fail)?;
            for (api_key, r) in &batch.records {
                let Ok(id) = uuid::Uuid::try_parse(&r.request_id).map(|u| u.as_u128()) else {
                    continue;
                };
                let ack = r.ack.map(|a| a.as_str());
                let (message_id, device) = (json_text(&Some(&r.message_id)), json_text(&r.device));
                let (error, data) = (json_text(&r.error), json_text(&r.data));
                let (updated_at, settled_at) =
                    (r.updated_at as i64, r.settled_at.map(|t| t as i64));
                let changing: [&dyn ToSql; 10] = [
                    &r.state.as_str(),
                    &r.written,
                    &ack,
                    &message_id,
                    &r.timestamp,
                    &device,
                    &error,
                    &updated_at,
                    &settled_at,
                    &data,
                ];
                match self.records.get(&id) {
                    Some(seq) => {
                        let seq: [&dyn ToSql; 1] = [seq];
                        update
                            .execute(params_from_iter(changing.into_iter().chain(seq)))
                            .map_err(fail)?;
                    }
                    None => {
                        let kind = text(&r.kind);
                        let metadata = json_text(&Some(&r.metadata));
                        let created_at = r.created_at as i64;
                        let api_key: &str = api_key;
                        let own: [&dyn ToSql; 8] = [
                            &r.request_id,
                            &api_key,
                            &r.idempotency_key,
                            &kind,
                            &r.phone_number,
                            &r.fingerprint,
                            &metadata,
                            &created_at,
                        ];
                        insert
                            .execute(params_from_iter(changing.into_iter().chain(own)))
                            .map_err(fail)?;
                        made_records.push((id, tx.last_insert_rowid()));
                    }
                }
                // Gone from the queue once it left or settled.
                let done = r.written || r.settled_at.is_some();
                let row = self.queued.get(&id).copied().or_else(|| {
                    made_queued
                        .iter()
                        .find(|(queued, _)| *queued == id)
                        .map(|(_, seq)| *seq)
                });
                if let Some(seq) = row.filter(|_| done) {
                    let media: Option<Option<String>> = unqueue
                        .query_row([seq], |row| row.get(0))
                        .optional()
                        .map_err(fail)?;
                    unqueued.push(id);
                    if let Some(Some(digest)) = media {
                        orphan.execute([digest]).map_err(fail)?;
                    }
                }
            }
            let mut seen = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO incoming (api_key, message_id, seen_at) VALUES (?1, ?2, ?3)",
                )
                .map_err(fail)?;
            for (api_key, message_id, at) in &batch.incoming {
                seen.execute(params![api_key, message_id, *at as i64])
                    .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)?;
        self.records.extend(made_records);
        self.queued.extend(made_queued);
        for id in unqueued {
            self.queued.remove(&id);
        }
        Ok(())
    }

    /// Forgets what no start would read back: settled records past `ttl_ms` or beyond
    /// the newest `capacity`, and incoming ids past their window.
    pub fn prune(
        &mut self,
        now: u64,
        ttl_ms: u64,
        capacity: usize,
        incoming_ms: u64,
    ) -> Result<(), GatewayError> {
        let older = now.saturating_sub(ttl_ms) as i64;
        let seen = now.saturating_sub(incoming_ms) as i64;
        let mut gone = Vec::new();
        for (query, bound) in [
            (
                "DELETE FROM records WHERE settled_at IS NOT NULL AND settled_at < ?1 RETURNING request_id",
                older,
            ),
            (
                "DELETE FROM records WHERE seq IN (SELECT seq FROM records WHERE settled_at IS NOT NULL
                   ORDER BY settled_at DESC LIMIT -1 OFFSET ?1) RETURNING request_id",
                capacity as i64,
            ),
        ] {
            let mut statement = self
                .conn
                .prepare_cached(query)
                .map_err(|e| self.error("prune", e))?;
            let ids = statement
                .query_map([bound], |r| r.get::<_, String>(0))
                .map_err(|e| self.error("prune", e))?;
            gone.extend(ids.filter_map(Result::ok));
        }
        for id in gone {
            if let Ok(id) = uuid::Uuid::try_parse(&id) {
                self.records.remove(&id.as_u128());
            }
        }
        self.conn
            .execute("DELETE FROM incoming WHERE seen_at < ?1", [seen])
            .map(|_| ())
            .map_err(|e| self.error("prune", e))
    }

    /// Everything a start takes up again: records (oldest change first), queued sends
    /// in their order, incoming ids of the window.
    pub fn contents(
        &self,
        now: u64,
        ttl_ms: u64,
        incoming_ms: u64,
    ) -> Result<Contents, GatewayError> {
        let fail = |e: rusqlite::Error| self.error("read", e);
        let mut contents = Contents::default();
        let older = now.saturating_sub(ttl_ms) as i64;
        let mut statement = self
            .conn
            .prepare(
                "SELECT request_id, api_key, idempotency_key, kind, phone_number, fingerprint, state, written, ack,
                   message_id, timestamp, device, metadata, error, created_at, updated_at, settled_at, data
                 FROM records WHERE settled_at IS NULL OR settled_at >= ?1 ORDER BY updated_at, rowid",
            )
            .map_err(fail)?;
        let rows = statement
            .query_map([older], |row| {
                let record = (|| {
                    Some(StoredRecord {
                        request_id: row.get(0).ok()?,
                        idempotency_key: row.get(2).ok()?,
                        kind: parsed(&row.get::<_, String>(3).ok()?)?,
                        phone_number: row.get(4).ok()?,
                        fingerprint: row.get(5).ok()?,
                        state: parsed(&row.get::<_, String>(6).ok()?)?,
                        written: row.get(7).ok()?,
                        ack: row
                            .get::<_, Option<String>>(8)
                            .ok()?
                            .and_then(|a| parsed(&a)),
                        message_id: json_of(row.get(9).ok()?).unwrap_or(Value::Null),
                        timestamp: row.get(10).ok()?,
                        device: json_of(row.get(11).ok()?),
                        metadata: json_of(row.get(12).ok()?).unwrap_or(Value::Null),
                        error: json_of(row.get(13).ok()?),
                        created_at: row.get::<_, i64>(14).ok()? as u64,
                        updated_at: row.get::<_, i64>(15).ok()? as u64,
                        settled_at: row.get::<_, Option<i64>>(16).ok()?.map(|t| t as u64),
                        data: json_of(row.get(17).ok()?),
                    })
                })();
                Ok(record.zip(row.get::<_, String>(1).ok()))
            })
            .map_err(fail)?;
        for row in rows {
            if let Some((record, api_key)) = row.map_err(fail)? {
                contents.records.push((api_key, record));
            }
        }
        let mut statement = self
            .conn
            .prepare(
                "SELECT q.request_id, q.api_key, q.kind, q.phone_number, q.text, q.document_name, q.strategy, q.deadline_at,
                   m.header, m.mime_type, m.file_name, m.bytes
                 FROM queued q LEFT JOIN media m ON m.digest = q.media ORDER BY q.seq",
            )
            .map_err(fail)?;
        let rows = statement
            .query_map([], |row| {
                let send = (|| {
                    let request_id = uuid::Uuid::try_parse(&row.get::<_, String>(0).ok()?).ok()?;
                    let media = match row.get::<_, Option<String>>(8).ok()? {
                        Some(header) => {
                            let bytes: Vec<u8> = row.get(11).ok()?;
                            Some(Media {
                                data_url: join_data_url(&header, &bytes).into(),
                                mime_type: row.get(9).ok()?,
                                file_name: row.get(10).ok()?,
                            })
                        }
                        None => None,
                    };
                    Some(QueuedSend {
                        request_id: request_id.as_u128(),
                        api_key: row.get(1).ok()?,
                        kind: parsed(&row.get::<_, String>(2).ok()?)?,
                        phone_number: row.get(3).ok()?,
                        text: row.get(4).ok()?,
                        document_name: row.get(5).ok()?,
                        strategy: row
                            .get::<_, Option<String>>(6)
                            .ok()?
                            .and_then(|s| strategy_of(&s)),
                        deadline_at: row.get::<_, i64>(7).ok()? as u64,
                        media,
                    })
                })();
                Ok(send)
            })
            .map_err(fail)?;
        for row in rows {
            if let Some(send) = row.map_err(fail)? {
                contents.queued.push(Recovered { send });
            }
        }
        let since = now.saturating_sub(incoming_ms) as i64;
        let mut statement = self
            .conn
            .prepare("SELECT api_key, message_id, seen_at FROM incoming WHERE seen_at >= ?1 ORDER BY seen_at")
            .map_err(fail)?;
        let rows = statement
            .query_map([since], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as u64))
            })
            .map_err(fail)?;
        for row in rows {
            contents.incoming.push(row.map_err(fail)?);
        }
        Ok(contents)
    }
}

/// Copies the WAL into the database file from a thread and connection of their own.
/// SQLite's automatic checkpoint (every 1000 pages) runs in the commit that passes the
/// mark and waits for the disk: every send waited with it, 10-20 ms at a time. A passive
/// checkpoint here blocks no commit.
struct Checkpoints {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

impl Checkpoints {
    /// None if its connection cannot be opened: SQLite's own checkpoints then stay.
    fn start(path: &Path) -> Option<Self> {
        let conn = Connection::open(path).ok()?;
        conn.busy_timeout(Duration::from_secs(5)).ok()?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wa-gateway-store-checkpoint".into())
            .spawn(move || {
                let (stopped, wake) = &*flag;
                let mut stopped = lock(stopped);
                while !*stopped {
                    stopped = wake
                        .wait_timeout(stopped, CHECKPOINT_EVERY)
                        .map(|(s, _)| s)
                        .unwrap_or_else(|p| p.into_inner().0);
                    if !*stopped {
                        // Failing (busy, disk trouble) leaves the WAL longer: the next
                        // round tries again, and the writer reports what fails for it.
                        let _ = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);");
                    }
                }
            })
            .ok()?;
        Some(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn strategy_of(name: &str) -> Option<Strategy> {
    [Strategy::RoundRobin, Strategy::Random, Strategy::LeastBusy]
        .into_iter()
        .find(|s| strategy_name(*s) == name)
}

fn strategy_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::RoundRobin => "round-robin",
        Strategy::Random => "random",
        Strategy::LeastBusy => "least-busy",
    }
}

/// A data URL as the store keeps it: its header (up to the comma) and its payload,
/// decoded when base64 (media kept once, as bytes).
fn split_data_url(data_url: &str) -> (&str, Vec<u8>) {
    let Some(comma) = data_url.find(',') else {
        return (data_url, Vec::new());
    };
    let (header, payload) = (&data_url[..=comma], &data_url[comma + 1..]);
    if header.ends_with(";base64,") {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(payload) {
            return (header, bytes);
        }
    }
    // Kept as given: marked by a header without the base64 ending.
    (header, payload.as_bytes().to_vec())
}

fn join_data_url(header: &str, bytes: &[u8]) -> String {
    if header.ends_with(";base64,") {
        let mut url = String::with_capacity(header.len() + bytes.len() * 4 / 3 + 4);
        url.push_str(header);
        base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut url);
        url
    } else {
        format!("{header}{}", String::from_utf8_lossy(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SendKind;
    use crate::state::records::State;

    fn config(dir: &Path) -> StoreConfig {
        StoreConfig {
            path: dir.join("g.db"),
            full_sync: false,
        }
    }

    fn record(id: u128, state: State, written: bool, settled: bool) -> StoredRecord {
        let mut r = StoredRecord::pending(id, SendKind::Message, "+1555", None, state);
        r.written = written;
        r.idempotency_key = Some("k1".into());
        r.metadata = serde_json::json!({ "n": 1 });
        r.settled_at = settled.then_some(r.updated_at);
        r
    }

    fn queued(id: u128) -> QueuedSend {
        QueuedSend {
            request_id: id,
            api_key: "key".into(),
            kind: SendKind::Image,
            phone_number: "+1555".into(),
            text: "caption".into(),
            document_name: None,
            strategy: Some(Strategy::LeastBusy),
            deadline_at: 42,
            media: Some(Media {
                data_url: "data:image/png;base64,AAEC".into(),
                mime_type: "image/png".into(),
                file_name: None,
            }),
        }
    }

    #[test]
    fn a_second_open_is_store_locked_until_the_first_closes() {
        let dir = std::env::temp_dir().join(format!("wa-db-{}", uuid::Uuid::new_v4()));
        let first = Db::open(&config(&dir)).unwrap();
        let second = Db::open(&config(&dir)).err().unwrap();
        assert_eq!(second.code, ErrorCode::StoreLocked);
        drop(first);
        Db::open(&config(&dir)).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn queued_sends_and_records_come_back_and_leave_the_queue_once_written() {
        let dir = std::env::temp_dir().join(format!("wa-db-{}", uuid::Uuid::new_v4()));
        let mut db = Db::open(&config(&dir)).unwrap();
        let key: std::sync::Arc<str> = "key".into();
        let batch = Batch {
            records: vec![(key.clone(), record(1, State::Queued, false, false))],
            queued: vec![queued(1), queued(2)],
            incoming: vec![("key".into(), "in-1".into(), now())],
        };
        db.write(&batch).unwrap();
        let contents = db.contents(now(), 60_000, 60_000).unwrap();
        assert_eq!(contents.records.len(), 1);
        assert_eq!(contents.records[0].1, batch.records[0].1);
        let ids: Vec<u128> = contents.queued.iter().map(|q| q.send.request_id).collect();
        assert_eq!(ids, [1, 2], "in order");
        let media = contents.queued[0].send.media.as_ref().unwrap();
        assert_eq!(media.data_url, "data:image/png;base64,AAEC");
        assert_eq!(contents.queued[0].send.strategy, Some(Strategy::LeastBusy));
        assert_eq!(contents.incoming.len(), 1);

        let left = Batch {
            records: vec![(key, record(1, State::InFlight, true, false))],
            ..Batch::default()
        };
        db.write(&left).unwrap();
        drop(db);
        let db = Db::open(&config(&dir)).unwrap();
        let contents = db.contents(now(), 60_000, 60_000).unwrap();
        let ids: Vec<u128> = contents.queued.iter().map(|q| q.send.request_id).collect();
        assert_eq!(ids, [2]);
        assert!(contents.records[0].1.written);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn now() -> u64 {
        crate::clock::now_ms()
    }

    #[test]
    fn a_record_written_again_reads_back_as_its_last_version() {
        let dir = std::env::temp_dir().join(format!("wa-db-{}", uuid::Uuid::new_v4()));
        let mut db = Db::open(&config(&dir)).unwrap();
        let key: std::sync::Arc<str> = "key".into();
        let first = record(7, State::InFlight, true, false);
        db.write(&Batch {
            records: vec![(key.clone(), first.clone())],
            ..Batch::default()
        })
        .unwrap();
        // Its outcome: every column a later change can touch, changed.
        let mut last = first.clone();
        last.state = State::Sent;
        last.ack = Some(crate::protocol::delivery::Ack::Sent);
        last.message_id = serde_json::json!("wamid-1");
        last.timestamp = 1234.5;
        last.device = Some(crate::state::records::StoredDevice {
            session_id: "s-1".into(),
            extension_version: "1.0.0".into(),
            browser: "Chrome".into(),
            user_id: serde_json::json!("u-1"),
        });
        last.error = Some(GatewayError::new(
            ErrorCode::ExtensionError,
            "no",
            serde_json::json!({ "sent": true }),
        ));
        last.data = Some(serde_json::json!({ "ok": 1 }));
        last.updated_at = first.updated_at + 5;
        last.settled_at = Some(first.updated_at + 5);
        db.write(&Batch {
            records: vec![(key, last.clone())],
            ..Batch::default()
        })
        .unwrap();
        drop(db);
        let db = Db::open(&config(&dir)).unwrap();
        let contents = db.contents(now(), 60_000, 60_000).unwrap();
        assert_eq!(contents.records.len(), 1);
        assert_eq!(contents.records[0].0, "key");
        assert_eq!(contents.records[0].1, last);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_queued_row_written_after_its_record_left_is_never_taken_up() {
        let dir = std::env::temp_dir().join(format!("wa-db-{}", uuid::Uuid::new_v4()));
        let mut db = Db::open(&config(&dir)).unwrap();
        let key: std::sync::Arc<str> = "key".into();
        let left = Batch {
            records: vec![(key.clone(), record(1, State::InFlight, true, false))],
            ..Batch::default()
        };
        db.write(&left).unwrap();
        let late = Batch {
            queued: vec![queued(1), queued(2)],
            ..Batch::default()
        };
        db.write(&late).unwrap();
        drop(db);
        let mut db = Db::open(&config(&dir)).unwrap();
        db.prune(now(), 60_000, 100, 60_000).unwrap();
        let contents = db.contents(now(), 60_000, 60_000).unwrap();
        let ids: Vec<u128> = contents.queued.iter().map(|q| q.send.request_id).collect();
        assert_eq!(ids, [2], "the one that left is not sent again");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_file_is_in_wal_mode_and_store_sync_sets_how_commits_reach_the_disk() {
        let dir = std::env::temp_dir().join(format!("wa-db-{}", uuid::Uuid::new_v4()));
        for (full_sync, expected) in [(false, 1), (true, 2)] {
            let db = Db::open(&StoreConfig {
                full_sync,
                ..config(&dir)
            })
            .unwrap();
            let pragma = |name: &str| -> String {
                db.conn
                    .query_row(&format!("PRAGMA {name}"), [], |r| {
                        r.get::<_, rusqlite::types::Value>(0)
                    })
                    .map(|v| match v {
                        rusqlite::types::Value::Integer(n) => n.to_string(),
                        rusqlite::types::Value::Text(t) => t,
                        other => format!("{other:?}"),
                    })
                    .unwrap()
            };
            assert_eq!(pragma("journal_mode"), "wal");
            // 1 is NORMAL, 2 is FULL.
            assert_eq!(
                pragma("synchronous"),
                expected.to_string(),
                "full_sync {full_sync}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn commits_reach_the_database_file_from_the_checkpoint_thread() {
        let dir = std::env::temp_dir().join(format!("wa-db-{}", uuid::Uuid::new_v4()));
        let mut db = Db::open(&config(&dir)).unwrap();
        let size = || std::fs::metadata(dir.join("g.db")).unwrap().len();
        let before = size();
        let key: std::sync::Arc<str> = "key".into();
        for n in 0..20u128 {
            let records = (0..64)
                .map(|i| {
                    (
                        key.clone(),
                        record(n * 64 + i, State::InFlight, true, false),
                    )
                })
                .collect();
            db.write(&Batch {
                records,
                ..Batch::default()
            })
            .unwrap();
        }
        // Commits go to the WAL; the thread copies them into the file while it is open.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while size() <= before && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(size() > before, "checkpointed while open");
        drop(db);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn data_urls_come_back_as_given() {
        for url in [
            "data:image/png;base64,iVBORw0KGgo=",
            "data:text/plain,hello%20world",
            "data:image/png;name=a.png;base64,AAEC",
        ] {
            let (header, bytes) = split_data_url(url);
            assert_eq!(join_data_url(header, &bytes), url);
        }
        let (_, bytes) = split_data_url("data:image/png;base64,AAEC");
        assert_eq!(bytes, [0, 1, 2], "kept decoded");
    }
}
