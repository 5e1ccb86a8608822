//! A batch of deliveries as JavaScript gets it: one flat array that `index.js` walks, in
//! the layout below (`batch_layout` tells `index.js` its tags and slots). The outbox
//! (`outbox`) queues the deliveries and hands them over.

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{Array, JsValue, ToNapiValue};
use napi::Env;
use napi_derive::napi;
use serde_json::Value;
use wa_gateway_core::{lock, Delivery, Identity};

use crate::exception::clear_exception;

/// Tags that start each delivery in a batch, followed by its slots:
/// a success by `RESOLVED_FIELDS` (plain values, no object on the hot path), after
/// `SESSION` and `SESSION_FIELDS` for the session it came from (once per run of
/// successes from the same session: its strings are not made again for each),
/// `REJECTED` by the call id and the error, `LOG` by the event (mostly as JSON text),
/// `ERROR` by the error,
/// `STOPPED` by nothing, `DEBUG` by a line of the debug log, `WARNING` by its code and
/// message.
const RESOLVED: u32 = 1;
const REJECTED: u32 = 2;
const LOG: u32 = 3;
const ERROR: u32 = 4;
const STOPPED: u32 = 5;
const DEBUG: u32 = 6;
/// Followed by the query's token, whether it succeeded, and its value or error.
const ANSWER: u32 = 7;
const SESSION: u32 = 8;
/// Followed by a line for the host's logger, as JSON text `{ level, message, fields }`.
const NOTICE: u32 = 9;
/// Followed by the call id and its result (JSON text of an object): a duplicate's success.
const DUPLICATE: u32 = 10;
/// Followed by the warning's code and message, for `process.emitWarning`.
const WARNING: u32 = 11;

/// The slots after `RESOLVED`, in order. Defined here once; `index.js` reads it.
const RESOLVED_FIELDS: [&str; 5] = [
    "call",
    "requestId",
    "messageId",
    "timestamp",
    // One integer: `ACKS` index * 4 + stage. Stage 0: the extension's result (event,
    // resolve); 1: its result while the caller waits for an ack (event only); 2: that
    // ack (resolve only).
    "ackStage",
];

/// The slots after `SESSION`: the session of the successes that follow it.
const SESSION_FIELDS: [&str; 4] = ["sessionId", "extensionVersion", "browser", "userId"];

/// How `index.js` reads a batch.
#[napi(object)]
pub struct BatchLayout {
    pub resolved: u32,
    pub rejected: u32,
    pub log: u32,
    pub error: u32,
    pub stopped: u32,
    pub debug: u32,
    pub answer: u32,
    pub session: u32,
    pub notice: u32,
    pub duplicate: u32,
    pub warning: u32,
    pub resolved_fields: Vec<String>,
    pub session_fields: Vec<String>,
    /// Ack names by index, for `ackStage`.
    pub acks: Vec<String>,
}

#[napi]
pub fn batch_layout() -> BatchLayout {
    BatchLayout {
        resolved: RESOLVED,
        rejected: REJECTED,
        log: LOG,
        error: ERROR,
        stopped: STOPPED,
        debug: DEBUG,
        answer: ANSWER,
        session: SESSION,
        notice: NOTICE,
        duplicate: DUPLICATE,
        warning: WARNING,
        resolved_fields: RESOLVED_FIELDS.iter().map(|f| f.to_string()).collect(),
        session_fields: SESSION_FIELDS.iter().map(|f| f.to_string()).collect(),
        acks: wa_gateway_core::Ack::ALL
            .iter()
            .map(|a| a.as_str().to_string())
            .collect(),
    }
}

pub struct Batch(Vec<Delivery>);

impl Batch {
    pub fn take(queued: &Mutex<Vec<Delivery>>) -> Self {
        Self(std::mem::take(&mut *lock(queued)))
    }
}

impl ToNapiValue for Batch {
    unsafe fn to_napi_value(
        raw_env: napi::sys::napi_env,
        batch: Self,
    ) -> napi::Result<napi::sys::napi_value> {
        let env = Env::from_raw(raw_env);
        let mut items = env.create_array(0)?;
        // Kept alive (not just its address) so that no later identity can be taken for it.
        let mut session: Option<Arc<Identity>> = None;
        for delivery in batch.0 {
            // One delivery that cannot be converted (a value past what napi converts)
            // must not cost the others: it goes in as its fallback, or not at all.
            let fallback = Fallback::of(&delivery);
            let mut staged = Staged::new(raw_env);
            match stage_delivery(&mut staged, delivery, &mut session) {
                Ok(()) => staged.commit(&mut items)?,
                Err(_) => {
                    clear_exception(raw_env);
                    // The session slots may not have gone in: name the session again.
                    session = None;
                    let mut staged = Staged::new(raw_env);
                    if fallback.stage(&mut staged).is_ok() {
                        staged.commit(&mut items)?;
                    } else {
                        clear_exception(raw_env);
                    }
                }
            }
        }
        Ok(items.raw())
    }
}

/// The slots of one delivery, converted before any goes into the batch, so that a
/// delivery whose conversion fails leaves nothing half-written in it.
struct Staged {
    env: napi::sys::napi_env,
    values: [napi::sys::napi_value; 1 + SESSION_FIELDS.len() + 1 + RESOLVED_FIELDS.len()],
    len: usize,
}

impl Staged {
    fn new(env: napi::sys::napi_env) -> Self {
        Self {
            env,
            values: [std::ptr::null_mut(); 1 + SESSION_FIELDS.len() + 1 + RESOLVED_FIELDS.len()],
            len: 0,
        }
    }

    fn insert<T: ToNapiValue>(&mut self, value: T) -> napi::Result<()> {
        let slot = self
            .values
            .get_mut(self.len)
            .ok_or_else(|| napi::Error::from_reason("too many slots for one delivery"))?;
        // SAFETY: on the JavaScript thread, inside the handle scope of `on_wake`.
        *slot = unsafe { T::to_napi_value(self.env, value) }?;
        self.len += 1;
        Ok(())
    }

    // One writer per kind that a fallback may stand in for, so that both write its
    // slots in one order (lib/native.js's readBatch reads them in it).

    fn rejected(&mut self, call: u32, error: Value) -> napi::Result<()> {
        self.insert(REJECTED)?;
        self.insert(call)?;
        self.insert(error)
    }

    fn error(&mut self, error: Value) -> napi::Result<()> {
        self.insert(ERROR)?;
        self.insert(error)
    }

    /// `event`: JSON text, or the event itself where JSON would not give it back.
    fn log<T: ToNapiValue>(&mut self, event: T) -> napi::Result<()> {
        self.insert(LOG)?;
        self.insert(event)
    }

    /// `result`: JSON text.
    fn duplicate(&mut self, call: u32, result: String) -> napi::Result<()> {
        self.insert(DUPLICATE)?;
        self.insert(call)?;
        self.insert(result)
    }

    /// `value`: the answer, or the error when not `ok`.
    fn answer(&mut self, token: u32, ok: bool, value: Value) -> napi::Result<()> {
        self.insert(ANSWER)?;
        self.insert(token)?;
        self.insert(ok)?;
        self.insert(value)
    }

    fn commit(self, items: &mut Array) -> napi::Result<()> {
        for value in &self.values[..self.len] {
            items.insert(*value)?;
        }
        Ok(())
    }
}

/// What stands in for a delivery whose conversion failed: the core bounds every value
/// an extension hands on (see its `protocol`), so this is a last resort, which still
/// settles the call with the plain values it has. (A success cannot fail but for its
/// `messageId`, which falls back to null in place: see `stage_delivery`.)
enum Fallback {
    /// The error without the details that could not be converted.
    Rejected {
        call: u32,
        error: Value,
    },
    Error(Value),
    /// A duplicate's success with its plain fields only, as JSON text.
    Duplicate {
        call: u32,
        result: String,
    },
    /// An event as JSON text, which JavaScript parses.
    Log(String),
    Answer(u32),
    Nothing,
}

impl Fallback {
    fn of(delivery: &Delivery) -> Self {
        match delivery {
            // Not on the hot path: a rejection or an event costs a copy of its plain
            // fields here.
            Delivery::Rejected { call, error } => Self::Rejected {
                call: host_call(*call),
                error: plain_error(error),
            },
            Delivery::Error(error) => Self::Error(plain_error(error)),
            Delivery::Duplicate { call, result } => Self::Duplicate {
                call: host_call(*call),
                result: Value::Object(plain_fields(result)).to_string(),
            },
            Delivery::Log(event) => serde_json::to_string(event).map_or(Self::Nothing, Self::Log),
            Delivery::Answer { token, .. } => Self::Answer(*token),
            Delivery::Resolved(_)
            | Delivery::Debug(_)
            | Delivery::Notice(_)
            | Delivery::Warning { .. }
            | Delivery::Stopped => Self::Nothing,
        }
    }

    fn stage(self, staged: &mut Staged) -> napi::Result<()> {
        match self {
            Self::Rejected { call, error } => staged.rejected(call, error),
            Self::Error(error) => staged.error(error),
            Self::Log(text) => staged.log(text),
            Self::Duplicate { call, result } => staged.duplicate(call, result),
            Self::Answer(token) => {
                let error = wa_gateway_core::GatewayError::new(
                    wa_gateway_core::ErrorCode::ServerError,
                    "The answer could not be handed to JavaScript",
                    Value::Null,
                );
                staged.answer(token, false, plain_error(&error))
            }
            Self::Nothing => Ok(()),
        }
    }
}

/// An error with only the plain (string, number, boolean) fields of its details.
fn plain_error(error: &wa_gateway_core::GatewayError) -> Value {
    let details = plain_fields(&error.details);
    serde_json::json!({ "code": error.code, "message": error.message, "details": details })
}

/// The plain (string, number, boolean, null) fields of an object; none of anything else.
fn plain_fields(value: &Value) -> serde_json::Map<String, Value> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_array() && !v.is_object())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Through `serde_json::Value`, whose conversion keeps millisecond timestamps plain
/// numbers (napi's serializer makes every u64 above 2^32 a BigInt).
fn plain(value: &impl serde::Serialize) -> napi::Result<Value> {
    serde_json::to_value(value).map_err(|e| napi::Error::from_reason(e.to_string()))
}

/// The slots that name the session of the successes that follow, in the order of
/// SESSION_FIELDS.
fn stage_session(staged: &mut Staged, who: &Identity) -> napi::Result<()> {
    staged.insert(SESSION)?;
    staged.insert(&*who.session_id)?;
    staged.insert(who.extension_version.as_str())?;
    staged.insert(who.browser.as_str())?;
    staged.insert(who.user_id.clone())
}

fn stage_delivery(
    items: &mut Staged,
    delivery: Delivery,
    session: &mut Option<Arc<Identity>>,
) -> napi::Result<()> {
    match delivery {
        Delivery::Resolved(r) => {
            if !session.as_ref().is_some_and(|s| Arc::ptr_eq(s, &r.session)) {
                stage_session(items, &r.session)?;
                *session = Some(r.session.clone());
            }
            let mut id_text = [0u8; 36];
            // In the order of RESOLVED_FIELDS.
            items.insert(RESOLVED)?;
            items.insert(host_call(r.id))?;
            items.insert(wa_gateway_core::request_id_text(r.request_id, &mut id_text))?;
            // The extension's value: should it not convert, the success still stands.
            if items.insert(r.message_id).is_err() {
                clear_exception(items.env);
                items.insert(Value::Null)?;
            }
            items.insert(r.timestamp)?;
            items.insert(r.ack.index() * 4 + r.stage.code())?;
        }
        Delivery::Rejected { call, error } => items.rejected(host_call(call), plain(&error)?)?,
        Delivery::Duplicate { call, result } => {
            // As JSON text, which JavaScript parses: its `messageId`, `metadata` or a
            // command's `data` may nest past what napi converts (not a hot path).
            items.duplicate(host_call(call), result.to_string())?;
        }
        Delivery::Log(event) => {
            let event = plain(&event)?;
            // As JSON text, which JavaScript parses: one napi string instead of an object
            // built property by property (a connect storm has two events per session).
            // Unless napi's conversion would differ from JSON.parse (see `same_as_json`).
            if same_as_json(&event, JSON_DEPTH) {
                items.log(event.to_string())?;
            } else {
                items.log(event)?;
            }
        }
        Delivery::Error(error) => items.error(plain(&error)?)?,
        Delivery::Debug(line) => {
            items.insert(DEBUG)?;
            items.insert(line)?;
        }
        Delivery::Stopped => items.insert(STOPPED)?,
        Delivery::Notice(notice) => {
            items.insert(NOTICE)?;
            items.insert(notice.to_string())?;
        }
        Delivery::Warning { code, message } => {
            items.insert(WARNING)?;
            items.insert(code)?;
            items.insert(message)?;
        }
        Delivery::Answer { token, result } => match result {
            Ok(value) => items.answer(token, true, value)?,
            Err(error) => items.answer(token, false, plain(&error)?)?,
        },
    }
    Ok(())
}

/// How deep napi converts a `Value` (deeper fails), from the outermost value.
const JSON_DEPTH: u32 = 128;

/// Whether `JSON.parse` of this value's JSON text gives what napi's conversion of it
/// gives: napi makes integers beyond 2^53 BigInts, sets a `__proto__` key through
/// the setter, and fails past `JSON_DEPTH`.
fn same_as_json(value: &Value, depth: u32) -> bool {
    const MAX_SAFE: u64 = (1 << 53) - 1;
    match value {
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.unsigned_abs() <= MAX_SAFE,
            (None, Some(_)) => false,
            (None, None) => true,
        },
        Value::Array(items) => depth > 0 && items.iter().all(|v| same_as_json(v, depth - 1)),
        Value::Object(map) => {
            depth > 0
                && map
                    .iter()
                    .all(|(k, v)| k != "__proto__" && same_as_json(v, depth - 1))
        }
        _ => true,
    }
}

/// The number JavaScript gave a call: calls reaching this host are its own (calls run
/// for other cluster processes never get here), numbered by a u32.
fn host_call(call: wa_gateway_core::CallId) -> u32 {
    call as u32
}

/// One delivery of every kind, with known values, and what each decodes to (README's
/// terms: `{ kind, ... }`, built from the deliveries themselves, not from the encoder):
/// the fixture of the round trip through this encoder and lib/native.js's decoder
/// (__test__/batch.test.js). index.js never calls it.
fn sample() -> (Vec<Delivery>, Vec<Value>) {
    use serde_json::json;
    use wa_gateway_core::{Ack, ErrorCode, GatewayError, LogEvent, Resolved, Stage};

    let identity = |n: u32| {
        Arc::new(Identity {
            session_id: format!("session-{n}").into(),
            api_key: "sample-key-0123".into(),
            user_id: json!({ "id": n }),
            ip: "127.0.0.1".into(),
            extension_version: format!("2.{n}.0"),
            browser: format!("browser-{n}"),
            dialect: wa_gateway_core::Dialect::Compat,
            commands: Default::default(),
        })
    };
    let session = |who: &Identity| {
        json!({
            "sessionId": &*who.session_id,
            "extensionVersion": who.extension_version,
            "browser": who.browser,
            "userId": who.user_id,
        })
    };
    let (first, second) = (identity(1), identity(2));
    let mut deliveries = Vec::new();
    let mut decoded = Vec::new();
    let resolved = [
        (&first, 11, json!("message-11"), Ack::Sent, Stage::Result),
        (
            &first,
            12,
            json!({ "nested": [1, "two"] }),
            Ack::Delivered,
            Stage::ResultAwaitingAck,
        ),
        (&second, 13, Value::Null, Ack::Read, Stage::Ack),
    ];
    for (who, call, message_id, ack, stage) in resolved {
        let request_id = 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef_u128 + call as u128;
        let mut text = [0u8; 36];
        decoded.push(json!({
            "kind": "resolved",
            "call": call,
            "requestId": wa_gateway_core::request_id_text(request_id, &mut text),
            "messageId": message_id,
            "timestamp": 1_700_000_000_000.0 + call as f64,
            "ack": ack.as_str(),
            "stage": stage.code(),
            "session": session(who),
        }));
        deliveries.push(Delivery::Resolved(Resolved {
            id: call,
            request_id,
            message_id,
            timestamp: 1_700_000_000_000.0 + call as f64,
            session: who.clone(),
            ack,
            stage,
        }));
    }
    let error = |code, n: u32| {
        GatewayError::new(
            code,
            format!("sample error {n}"),
            json!({ "n": n, "sent": false }),
        )
    };
    let plain = |e: &GatewayError| serde_json::to_value(e).unwrap_or(Value::Null);
    let rejected = error(ErrorCode::RequestTimeout, 1);
    decoded.push(json!({ "kind": "rejected", "call": 14, "error": plain(&rejected) }));
    deliveries.push(Delivery::Rejected {
        call: 14,
        error: rejected,
    });
    let result = json!({ "success": true, "duplicate": true, "messageId": { "id": 15 } });
    decoded.push(json!({ "kind": "duplicate", "call": 15, "result": result }));
    deliveries.push(Delivery::Duplicate { call: 15, result });
    let mut event = LogEvent::session_connected(&first);
    event.timestamp = 1_700_000_000_016;
    decoded.push(
        json!({ "kind": "log", "event": serde_json::to_value(&event).unwrap_or(Value::Null) }),
    );
    deliveries.push(Delivery::Log(event));
    let failed = error(ErrorCode::CallbackError, 2);
    decoded.push(json!({ "kind": "error", "error": plain(&failed) }));
    deliveries.push(Delivery::Error(failed));
    decoded.push(json!({ "kind": "debug", "line": "a line of the debug log" }));
    deliveries.push(Delivery::Debug("a line of the debug log".into()));
    decoded
        .push(json!({ "kind": "warning", "code": "PACED_SEND_TIMEOUT", "message": "a warning" }));
    deliveries.push(Delivery::Warning {
        code: "PACED_SEND_TIMEOUT",
        message: "a warning".into(),
    });
    let notice =
        json!({ "level": "info", "message": "a notice", "fields": { "redis": "connected" } });
    decoded.push(json!({ "kind": "notice", "notice": notice }));
    deliveries.push(Delivery::Notice(notice));
    decoded
        .push(json!({ "kind": "answer", "token": 17, "ok": true, "value": [{ "nodeId": "a" }] }));
    deliveries.push(Delivery::Answer {
        token: 17,
        result: Ok(json!([{ "nodeId": "a" }])),
    });
    let refused = error(ErrorCode::ClusterUnavailable, 3);
    decoded.push(json!({ "kind": "answer", "token": 18, "ok": false, "value": plain(&refused) }));
    deliveries.push(Delivery::Answer {
        token: 18,
        result: Err(refused),
    });
    decoded.push(json!({ "kind": "stopped" }));
    deliveries.push(Delivery::Stopped);
    (deliveries, decoded)
}

/// Test hook, not part of the gateway's API (only __test__/batch.test.js calls it):
/// `sample()`'s deliveries, encoded as every batch is. Nothing on the hot path calls it
/// or anything it builds.
#[napi(ts_return_type = "Array<any>")]
pub fn test_sample_batch() -> Batch {
    Batch(sample().0)
}

/// Test hook, not part of the gateway's API (only __test__/batch.test.js calls it): what
/// each of `testSampleBatch()`'s deliveries decodes to.
#[napi]
pub fn test_sample_batch_decoded() -> Vec<Value> {
    sample().1
}
