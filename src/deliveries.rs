//! A batch of deliveries as JavaScript gets it, in the layout below (`batch_layout` tells
//! lib/native.js its tags and slots). The outbox (`outbox`) queues the deliveries and hands
//! them over.
//!
//! A batch is three arguments: `numbers, text, values`. `numbers` (a Float64Array) holds
//! how many numbers follow, then every delivery in order, each a tag and its numeric
//! slots; all the strings of the successes and their sessions are in `text` (one string),
//! each named in `numbers` by where it starts and its length in UTF-16 units; what is
//! neither (a rare kind's error or event, a message id that is not a string) is one of
//! `values` (an array, or undefined when there is none), named by its index there. A
//! success so costs no napi call at all: a batch of any size is made with a handful (a
//! profile at 1024 calls in flight had one `napi_set_element` per slot growing a JS array
//! as most of the conversion's time). One call at a time, what was left was the batch's
//! own objects: a new ArrayBuffer (with its typed array) and the array holding the parts
//! were two thirds of the conversion. So a gateway reuses one Float64Array from batch to
//! batch (`Reused`), and the parts are arguments.

use std::sync::Arc;

use napi::bindgen_prelude::ToNapiValue;
use napi::{check_status, sys};
use napi_derive::napi;
use serde_json::Value;
use wa_gateway_core::{Delivery, Identity};

use crate::exception::clear_exception;

/// Tags that start each delivery in `numbers`, followed by its slots:
/// a success by `RESOLVED_FIELDS` (no object on the hot path), after `SESSION` and
/// `SESSION_FIELDS` for the session it came from (once per run of successes from the same
/// session: its strings are not written again for each). Every other kind is followed by
/// one slot, the index in `values` of its first value: `REJECTED` has the call id and the
/// error, `LOG` the event (mostly as JSON text), `ERROR` the error, `STOPPED` nothing,
/// `DEBUG` a line of the debug log, `WARNING` its code and message.
const RESOLVED: u32 = 1;
const REJECTED: u32 = 2;
const LOG: u32 = 3;
const ERROR: u32 = 4;
const STOPPED: u32 = 5;
const DEBUG: u32 = 6;
/// Values: the query's token, whether it succeeded, and its value or error.
const ANSWER: u32 = 7;
const SESSION: u32 = 8;
/// Value: a line for the host's logger, as JSON text `{ level, message, fields }`.
const NOTICE: u32 = 9;
/// Values: the call id and its result (JSON text of an object): a duplicate's success.
const DUPLICATE: u32 = 10;
/// Values: the warning's code and message, for `process.emitWarning`.
const WARNING: u32 = 11;

/// The fields after `RESOLVED`, in order. Defined here once; lib/native.js reads it. A
/// field in `TEXT_FIELDS` takes two slots (see `TEXT_FIELDS`), any other one.
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

/// The fields after `SESSION`: the session of the successes that follow it.
const SESSION_FIELDS: [&str; 4] = ["sessionId", "extensionVersion", "browser", "userId"];

/// The fields that take two slots: where the string starts in `text` and its length, or
/// (length `IN_VALUES`) the index of the value in `values`, or (length `NULL`) null.
const TEXT_FIELDS: [&str; 6] = [
    "requestId",
    "messageId",
    "sessionId",
    "extensionVersion",
    "browser",
    "userId",
];
const IN_VALUES: f64 = -1.0;
const NULL: f64 = -2.0;

/// How lib/native.js reads a batch.
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
    pub text_fields: Vec<String>,
    /// The length of a text field whose value is in `values`, at the index its start says.
    pub in_values: f64,
    /// The length of a text field that is null.
    pub null: f64,
    /// Ack names by index, for `ackStage`.
    pub acks: Vec<String>,
}

#[napi]
pub fn batch_layout() -> BatchLayout {
    let names = |fields: &[&str]| fields.iter().map(|f| f.to_string()).collect();
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
        resolved_fields: names(&RESOLVED_FIELDS),
        session_fields: names(&SESSION_FIELDS),
        text_fields: names(&TEXT_FIELDS),
        in_values: IN_VALUES,
        null: NULL,
        acks: wa_gateway_core::Ack::ALL
            .iter()
            .map(|a| a.as_str().to_string())
            .collect(),
    }
}

/// What a gateway's batches reuse, on the JavaScript thread: the encoder's buffers, and
/// the Float64Array handed to JavaScript as `numbers` (which reads it before the next
/// batch can be made: batches are made only by wake-ups from the event loop, never while
/// JavaScript runs). Buffers grown past `KEPT_NUMBERS` by a burst are not kept.
#[derive(Default)]
pub struct Reused {
    numbers: Vec<f64>,
    /// UTF-16, as JavaScript indexes strings.
    text: Vec<u16>,
    /// The Float64Array, held by a strong reference until `release`.
    array: Option<(NumbersRef, usize)>,
}

/// A reference to the reused Float64Array, only ever used on its JavaScript thread.
struct NumbersRef(sys::napi_ref);
// SAFETY: made, read and deleted only on the JavaScript thread that made it (`encode`
// and `release` are called there); other threads only move the `Reused` holding it.
unsafe impl Send for NumbersRef {}

/// The most numbers a kept Float64Array holds (512 KiB); a larger batch gets one of its
/// own.
const KEPT_NUMBERS: usize = 1 << 16;
/// The first Float64Array's length: a few hundred successes.
const FIRST_NUMBERS: usize = 1 << 10;
/// The most UTF-16 units of text whose room is kept (512 KiB).
const KEPT_TEXT: usize = 1 << 18;

impl Reused {
    /// Deletes the reference to the Float64Array.
    ///
    /// # Safety
    /// On the JavaScript thread of the batches, with its live env.
    pub unsafe fn release(&mut self, env: sys::napi_env) {
        if let Some((reference, _)) = self.array.take() {
            sys::napi_delete_reference(env, reference.0);
        }
    }

    /// A Float64Array of at least `len` numbers, and its memory.
    unsafe fn numbers_array(
        &mut self,
        env: sys::napi_env,
        len: usize,
    ) -> napi::Result<(sys::napi_value, *mut f64)> {
        if let Some((reference, kept_len)) = &self.array {
            if *kept_len >= len {
                let mut array = std::ptr::null_mut();
                check_status!(sys::napi_get_reference_value(env, reference.0, &mut array))?;
                // Looked up each time rather than kept: JavaScript could have detached
                // the buffer (it does not; then it holds no numbers and is replaced).
                if let Some(data) = typed_array_data(env, array, len) {
                    return Ok((array, data));
                }
            }
        }
        let capacity = len.max(FIRST_NUMBERS).next_power_of_two();
        let (array, data) = new_numbers_array(env, capacity)?;
        if capacity <= KEPT_NUMBERS {
            let mut reference = std::ptr::null_mut();
            check_status!(sys::napi_create_reference(env, array, 1, &mut reference))?;
            self.release(env);
            self.array = Some((NumbersRef(reference), capacity));
        }
        Ok((array, data))
    }
}

/// The memory of a Float64Array holding at least `len` numbers.
unsafe fn typed_array_data(
    env: sys::napi_env,
    array: sys::napi_value,
    len: usize,
) -> Option<*mut f64> {
    let mut kind = sys::TypedarrayType::int8_array;
    let (mut length, mut data, mut offset) = (0, std::ptr::null_mut(), 0);
    let status = sys::napi_get_typedarray_info(
        env,
        array,
        &mut kind,
        &mut length,
        &mut data,
        std::ptr::null_mut(),
        &mut offset,
    );
    (status == sys::Status::napi_ok
        && kind == sys::TypedarrayType::float64_array
        && length >= len
        && !data.is_null())
    .then_some(data.cast::<f64>())
}

unsafe fn new_numbers_array(
    env: sys::napi_env,
    len: usize,
) -> napi::Result<(sys::napi_value, *mut f64)> {
    let mut data = std::ptr::null_mut();
    let mut buffer = std::ptr::null_mut();
    check_status!(sys::napi_create_arraybuffer(
        env,
        len * std::mem::size_of::<f64>(),
        &mut data,
        &mut buffer
    ))?;
    let mut array = std::ptr::null_mut();
    check_status!(sys::napi_create_typedarray(
        env,
        sys::TypedarrayType::float64_array,
        len,
        buffer,
        0,
        &mut array
    ))?;
    if data.is_null() {
        return Err(napi::Error::from_reason("no memory for a batch"));
    }
    Ok((array, data.cast::<f64>()))
}

/// Encodes `deliveries` (emptied, keeping its capacity) as `[numbers, text, values]`.
///
/// # Safety
/// On the JavaScript thread with its live env, inside a handle scope.
pub unsafe fn encode(
    env: sys::napi_env,
    deliveries: &mut Vec<Delivery>,
    reused: &mut Reused,
) -> napi::Result<[sys::napi_value; 3]> {
    let mut out = Encoder {
        env,
        numbers: std::mem::take(&mut reused.numbers),
        text: std::mem::take(&mut reused.text),
        values: Vec::new(),
    };
    out.numbers.clear();
    out.text.clear();
    // Kept alive (not just its address) so that no later identity can be taken for it.
    let mut session: Option<Arc<Identity>> = None;
    for delivery in deliveries.drain(..) {
        if let Delivery::Resolved(r) = delivery {
            out.resolved(r, &mut session);
            continue;
        }
        // One delivery that cannot be converted (a value past what napi converts)
        // must not cost the others: it goes in as its fallback, or not at all.
        let fallback = Fallback::of(&delivery);
        let mut staged = Staged::new(env);
        match stage_delivery(&mut staged, delivery) {
            Ok(()) => out.commit(staged),
            Err(_) => {
                clear_exception(env);
                let mut staged = Staged::new(env);
                if fallback.stage(&mut staged).is_ok() {
                    out.commit(staged);
                } else {
                    clear_exception(env);
                }
            }
        }
    }
    let encoded = out.finish(reused);
    if out.numbers.capacity() <= KEPT_NUMBERS {
        reused.numbers = out.numbers;
    }
    if out.text.capacity() <= KEPT_TEXT {
        reused.text = out.text;
    }
    encoded
}

/// A batch being written (see the module's comment).
struct Encoder {
    env: sys::napi_env,
    numbers: Vec<f64>,
    /// UTF-16, as JavaScript indexes strings.
    text: Vec<u16>,
    values: Vec<sys::napi_value>,
}

impl Encoder {
    /// A success: no napi call unless its message id (or its session's user id) is not a
    /// string or null.
    fn resolved(&mut self, r: wa_gateway_core::Resolved, session: &mut Option<Arc<Identity>>) {
        if !session.as_ref().is_some_and(|s| Arc::ptr_eq(s, &r.session)) {
            let who = &r.session;
            // In the order of SESSION_FIELDS.
            self.numbers.push(SESSION as f64);
            self.string(who.session_id());
            self.string(who.extension_version());
            self.string(who.browser());
            self.value(&who.user_id);
            *session = Some(r.session.clone());
        }
        let mut id_text = [0u8; 36];
        // In the order of RESOLVED_FIELDS.
        self.numbers.push(RESOLVED as f64);
        self.numbers.push(host_call(r.id) as f64);
        self.string(wa_gateway_core::request_id_text(r.request_id, &mut id_text));
        self.value(&r.message_id);
        self.numbers.push(r.timestamp);
        self.numbers
            .push((r.ack.index() * 4 + r.stage.code()) as f64);
    }

    fn string(&mut self, s: &str) {
        let at = self.text.len();
        self.text.extend(s.encode_utf16());
        self.numbers.push(at as f64);
        self.numbers.push((self.text.len() - at) as f64);
    }

    /// A text field that may hold any value: a string goes in `text`, anything else in
    /// `values` (should it not convert, null: the success still stands).
    fn value(&mut self, value: &Value) {
        match value {
            Value::String(s) => self.string(s),
            Value::Null => self.numbers.extend([0.0, NULL]),
            other => {
                // SAFETY: on the JavaScript thread, inside the handle scope of `on_wake`.
                match unsafe { Value::to_napi_value(self.env, other.clone()) } {
                    Ok(converted) => {
                        self.numbers.extend([self.values.len() as f64, IN_VALUES]);
                        self.values.push(converted);
                    }
                    Err(_) => {
                        clear_exception(self.env);
                        self.numbers.extend([0.0, NULL]);
                    }
                }
            }
        }
    }

    fn commit(&mut self, staged: Staged) {
        if staged.tag == 0 {
            return;
        }
        self.numbers.push(staged.tag as f64);
        self.numbers.push(self.values.len() as f64);
        self.values.extend_from_slice(&staged.values[..staged.len]);
    }

    /// `[numbers, text, values]`: a handful of napi calls, plus one per value.
    unsafe fn finish(&self, reused: &mut Reused) -> napi::Result<[sys::napi_value; 3]> {
        let env = self.env;
        let count = self.numbers.len();
        let (numbers, data) = reused.numbers_array(env, 1 + count)?;
        // SAFETY: `data` is the Float64Array's memory, at least `1 + count` numbers long,
        // which no JavaScript runs to read or write while this thread writes it.
        *data = count as f64;
        std::ptr::copy_nonoverlapping(self.numbers.as_ptr(), data.add(1), count);
        let mut text = std::ptr::null_mut();
        check_status!(sys::napi_create_string_utf16(
            env,
            self.text.as_ptr(),
            self.text.len() as isize,
            &mut text
        ))?;
        let mut values = std::ptr::null_mut();
        if self.values.is_empty() {
            check_status!(sys::napi_get_undefined(env, &mut values))?;
        } else {
            check_status!(sys::napi_create_array_with_length(
                env,
                self.values.len(),
                &mut values
            ))?;
            for (index, value) in self.values.iter().enumerate() {
                check_status!(sys::napi_set_element(env, values, index as u32, *value))?;
            }
        }
        Ok([numbers, text, values])
    }
}

/// The values of one delivery of a rare kind, converted before any goes into the batch,
/// so that a delivery whose conversion fails leaves nothing half-written in it.
struct Staged {
    env: sys::napi_env,
    /// 0 until a writer names the kind.
    tag: u32,
    values: [sys::napi_value; 3],
    len: usize,
}

impl Staged {
    fn new(env: sys::napi_env) -> Self {
        Self {
            env,
            tag: 0,
            values: [std::ptr::null_mut(); 3],
            len: 0,
        }
    }

    fn insert<T: ToNapiValue>(&mut self, value: T) -> napi::Result<()> {
        let slot = self
            .values
            .get_mut(self.len)
            .ok_or_else(|| napi::Error::from_reason("too many values for one delivery"))?;
        // SAFETY: on the JavaScript thread, inside the handle scope of `on_wake`.
        *slot = unsafe { T::to_napi_value(self.env, value) }?;
        self.len += 1;
        Ok(())
    }

    // One writer per kind that a fallback may stand in for, so that both write its
    // values in one order (lib/native.js's readBatch reads them in it).

    fn rejected(&mut self, call: u32, error: Value) -> napi::Result<()> {
        self.tag = REJECTED;
        self.insert(call)?;
        self.insert(error)
    }

    fn error(&mut self, error: Value) -> napi::Result<()> {
        self.tag = ERROR;
        self.insert(error)
    }

    /// `event`: JSON text, or the event itself where JSON would not give it back.
    fn log<T: ToNapiValue>(&mut self, event: T) -> napi::Result<()> {
        self.tag = LOG;
        self.insert(event)
    }

    /// `result`: JSON text.
    fn duplicate(&mut self, call: u32, result: String) -> napi::Result<()> {
        self.tag = DUPLICATE;
        self.insert(call)?;
        self.insert(result)
    }

    /// `value`: the answer, or the error when not `ok`.
    fn answer(&mut self, token: u32, ok: bool, value: Value) -> napi::Result<()> {
        self.tag = ANSWER;
        self.insert(token)?;
        self.insert(ok)?;
        self.insert(value)
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

fn stage_delivery(items: &mut Staged, delivery: Delivery) -> napi::Result<()> {
    match delivery {
        // Written by `Encoder::resolved`, without napi.
        Delivery::Resolved(_) => {}
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
            items.tag = DEBUG;
            items.insert(line)?;
        }
        Delivery::Stopped => items.tag = STOPPED,
        Delivery::Notice(notice) => {
            items.tag = NOTICE;
            items.insert(notice.to_string())?;
        }
        Delivery::Warning { code, message } => {
            items.tag = WARNING;
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
    use wa_gateway_core::{Ack, ErrorCode, GatewayError, LogEvent, Resolved, Stage, Texts};

    let identity = |n: u32| {
        // Strings as an extension may send them: non-ASCII, quotes, an emoji (a
        // surrogate pair in JavaScript), so that every offset into `text` is checked.
        let (session_id, extension_version, browser) = (
            format!("session-{n} \"é\" 😀"),
            format!("2.{n}.0-ü"),
            format!("browser-{n} 'ï' \\ \u{1f310}"),
        );
        let texts = Texts {
            session_id: &session_id,
            ip: "127.0.0.1",
            extension_version: &extension_version,
            browser: &browser,
        };
        let user_id = if n == 1 {
            json!({ "id": n })
        } else {
            json!(format!("user-{n}-ß-🦀"))
        };
        Arc::new(Identity::new(
            "sample-key-0123".into(),
            user_id,
            texts,
            wa_gateway_core::Dialect::Compat,
            Default::default(),
        ))
    };
    let session = |who: &Identity| {
        json!({
            "sessionId": who.session_id(),
            "extensionVersion": who.extension_version(),
            "browser": who.browser(),
            "userId": who.user_id,
        })
    };
    let (first, second) = (identity(1), identity(2));
    let mut deliveries = Vec::new();
    let mut decoded = Vec::new();
    let resolved = [
        (
            &first,
            11,
            json!("message-11 \"ê\" 🎉 \u{ffff}"),
            Ack::Sent,
            Stage::Result,
        ),
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
/// `sample()`'s deliveries twice over, then once, encoded one after the other as a
/// gateway's batches are (reusing one `Reused`): the second batch's numbers are written
/// over the longer first's. Nothing on the hot path calls it or anything it builds.
#[napi(ts_return_type = "Array<[Float64Array, string, Array<any> | undefined]>")]
pub fn test_sample_batches() -> SampleBatches {
    let mut twice = sample().0;
    twice.extend(sample().0);
    SampleBatches([twice, sample().0])
}

pub struct SampleBatches([Vec<Delivery>; 2]);

impl ToNapiValue for SampleBatches {
    unsafe fn to_napi_value(env: sys::napi_env, batches: Self) -> napi::Result<sys::napi_value> {
        let mut reused = Reused::default();
        let mut out = Vec::new();
        for mut deliveries in batches.0 {
            let parts = encode(env, &mut deliveries, &mut reused);
            out.push(parts.map(|parts| parts.to_vec()));
        }
        reused.release(env);
        let mut array = std::ptr::null_mut();
        check_status!(sys::napi_create_array(env, &mut array))?;
        for (index, parts) in out.into_iter().enumerate() {
            let mut batch = std::ptr::null_mut();
            check_status!(sys::napi_create_array(env, &mut batch))?;
            for (slot, part) in parts?.into_iter().enumerate() {
                check_status!(sys::napi_set_element(env, batch, slot as u32, part))?;
            }
            check_status!(sys::napi_set_element(env, array, index as u32, batch))?;
        }
        Ok(array)
    }
}

/// Test hook, not part of the gateway's API (only __test__/batch.test.js calls it): what
/// each of `sample()`'s deliveries decodes to.
#[napi]
pub fn test_sample_batch_decoded() -> Vec<Value> {
    sample().1
}
