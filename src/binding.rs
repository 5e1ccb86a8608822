//! The napi layer: converts between JavaScript values and the core's types, owns
//! the tokio runtime, and carries the core's deliveries to JavaScript in batches
//! through one long-lived threadsafe function (the "pump").

use std::net::IpAddr;
use std::os::fd::{BorrowedFd, IntoRawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use napi::bindgen_prelude::{Buffer, Function, JsValue, Promise, ToNapiValue};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use serde_json::Value;
use tokio::runtime::Runtime;
use uuid::Uuid;

use crate::config::{Config, Dialect, Strategy};
use crate::gateway::{Gateway, SendRequest};
use crate::handshake::{parsed_request, Upgrade};
use crate::host::{AuthAnswer, Delivery, Host, Validation};
use crate::link::lock;
use crate::media::MediaPolicy;
use crate::protocol::SendKind;

/// Settings as the JavaScript side passes them, already type-checked there.
#[napi(object)]
pub struct NativeConfig {
    pub port: u32,
    pub host: Option<String>,
    pub path: String,
    pub heartbeat_interval: f64,
    pub heartbeat_timeout: f64,
    pub request_timeout: f64,
    pub max_sessions_per_key: u32,
    pub device_selection_strategy: String,
    pub auth_timeout: f64,
    pub max_payload: f64,
    pub max_media_bytes: f64,
    pub allowed_origins: Option<Vec<String>>,
    pub media_file_roots: Vec<String>,
    pub media_allow_private_hosts: bool,
    pub media_fetch_timeout: f64,
    pub dialect: String,
    pub log_events: bool,
    pub trust_proxy: bool,
}

/// An upgrade request as Node's `http.Server` parsed it.
#[napi(object)]
pub struct UpgradeRequest {
    pub method: String,
    pub url: String,
    /// `req.rawHeaders`: names and values alternating.
    pub raw_headers: Vec<String>,
    /// `req.socket.remoteAddress`.
    pub remote_address: String,
    /// The bytes the client sent after the request (the `head` of Node's `upgrade` event).
    pub head: Buffer,
}

/// What the JavaScript wrapper of `validateApiKey` resolves to.
#[napi(object)]
pub struct AuthReply {
    pub valid: bool,
    /// `userId` as JSON text, so that any JSON value survives the trip.
    pub user_id_json: Option<String>,
    pub reason: Option<String>,
}

type Validator = ThreadsafeFunction<String, Promise<AuthReply>, String, Status, false, true>;
type Pump = ThreadsafeFunction<(), (), Batch, Status, false, true>;

fn runtime() -> napi::Result<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    // Half the cores: the JavaScript thread needs one of them, and on two cores a
    // single worker measured as fast under load and cheaper per call when idle-ish.
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let default_threads = (cores / 2).clamp(1, 4);
    let threads = std::env::var("WA_GATEWAY_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(default_threads).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("wa-gateway")
        .enable_all()
        .build()
        .map_err(|e| napi::Error::from_reason(format!("cannot start the gateway runtime: {e}")))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

struct NodeHost {
    validator: Arc<Validator>,
    pump: Pump,
    /// Deliveries JavaScript has not taken yet.
    batch: Arc<Mutex<Vec<Delivery>>>,
}

impl Host for NodeHost {
    fn deliver(&self, delivery: Delivery) {
        let mut batch = lock(&self.batch);
        batch.push(delivery);
        let first = batch.len() == 1;
        drop(batch);
        // One call per non-empty batch: JavaScript takes everything queued by the
        // time it runs, so batches grow while it is busy.
        if first {
            self.pump.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
    }

    fn validate(&self, api_key: String) -> Validation {
        let validator = self.validator.clone();
        Box::pin(async move {
            let promise = validator.call_async_catch(api_key).await.map_err(|e| e.reason.clone())?;
            let reply = promise.await.map_err(|e| e.reason.clone())?;
            let user_id = reply.user_id_json.and_then(|json| serde_json::from_str(&json).ok()).unwrap_or(Value::Null);
            Ok(AuthAnswer { valid: reply.valid, user_id, reason: reply.reason })
        })
    }
}

/// Deliveries handed to JavaScript in one go, as one flat array that `index.js` walks:
/// `1, id, requestId, messageId, timestamp, sessionId, extensionVersion, browser, userId`
/// for a success (no JSON on the hot path), `2, <JSON of the delivery>` for the rest.
struct Batch(Vec<Delivery>);

const RESOLVED: u32 = 1;
const OTHER: u32 = 2;

impl ToNapiValue for Batch {
    unsafe fn to_napi_value(raw_env: napi::sys::napi_env, batch: Self) -> napi::Result<napi::sys::napi_value> {
        let env = Env::from_raw(raw_env);
        let mut items = env.create_array(0)?;
        for delivery in batch.0 {
            match delivery {
                Delivery::Resolved(r) => {
                    let mut id_text = Uuid::encode_buffer();
                    let request_id: &str = Uuid::from_u128(r.request_id).hyphenated().encode_lower(&mut id_text);
                    let who = &r.session;
                    items.insert(RESOLVED)?;
                    items.insert(r.id)?;
                    items.insert(request_id)?;
                    items.insert(r.message_id)?;
                    items.insert(r.timestamp)?;
                    items.insert(&*who.session_id)?;
                    items.insert(who.extension_version.as_str())?;
                    items.insert(who.browser.as_str())?;
                    items.insert(who.user_id.clone())?;
                }
                other => {
                    items.insert(OTHER)?;
                    items.insert(serde_json::to_string(&other).unwrap_or_default())?;
                }
            }
        }
        Ok(items.raw())
    }
}

fn take_batch(batch: &Mutex<Vec<Delivery>>) -> Batch {
    Batch(std::mem::take(&mut *lock(batch)))
}

#[napi]
pub struct NativeGateway {
    core: Gateway,
    host: Arc<NodeHost>,
}

/// A duration that must be positive, from milliseconds (JavaScript has checked that it
/// is a finite number of at least 1). Never zero: a zero period panics a tokio interval
/// and a zero deadline expires at once. Capped far beyond any real use, so that adding it
/// to an instant cannot overflow.
fn ms(value: f64) -> Duration {
    const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let value = if value.is_nan() { 1.0 } else { value.max(1.0) };
    Duration::try_from_secs_f64(value / 1000.0).map_or(LONGEST, |d| d.min(LONGEST))
}

fn core_config(c: NativeConfig) -> napi::Result<Config> {
    let invalid = |what: &str| napi::Error::new(Status::InvalidArg, format!("invalid {what}"));
    Ok(Config {
        port: u16::try_from(c.port).map_err(|_| invalid("port"))?,
        host: c.host,
        path: c.path,
        heartbeat_interval: ms(c.heartbeat_interval),
        heartbeat_timeout: ms(c.heartbeat_timeout),
        request_timeout: ms(c.request_timeout),
        max_sessions_per_key: c.max_sessions_per_key as usize,
        strategy: Strategy::parse(&c.device_selection_strategy).ok_or_else(|| invalid("deviceSelectionStrategy"))?,
        auth_timeout: ms(c.auth_timeout),
        max_payload: c.max_payload as usize,
        allowed_origins: c.allowed_origins,
        media: MediaPolicy {
            max_bytes: c.max_media_bytes as usize,
            file_roots: c.media_file_roots.into_iter().map(PathBuf::from).collect(),
            allow_private_hosts: c.media_allow_private_hosts,
            fetch_timeout: ms(c.media_fetch_timeout),
        },
        dialect: Dialect::parse(&c.dialect).ok_or_else(|| invalid("dialect"))?,
        log_events: c.log_events,
        trust_proxy: c.trust_proxy,
    })
}

#[napi]
impl NativeGateway {
    #[napi(constructor)]
    pub fn new(
        config: NativeConfig,
        validate: Function<String, Promise<AuthReply>>,
        deliver: Function<String, ()>,
    ) -> napi::Result<Self> {
        let rt = runtime()?;
        let validator = validate
            .build_threadsafe_function::<String>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(|ctx| Ok(ctx.value))?;
        let batch = Arc::new(Mutex::new(Vec::new()));
        let taken = batch.clone();
        // Weak: JavaScript refs it only while the gateway runs or sends are pending.
        let pump = deliver
            .build_threadsafe_function::<()>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(move |_| Ok(take_batch(&taken)))?;
        let host = Arc::new(NodeHost { validator: Arc::new(validator), pump, batch });
        let core = Gateway::new(core_config(config)?, host.clone(), rt.handle().clone())
            .map_err(|e| napi::Error::from_reason(e.message))?;
        Ok(Self { core, host })
    }

    /// Binds and serves; returns the port. Errors carry the errno name as `code`.
    #[napi]
    pub fn start(&self) -> Result<u32, napi::Error<String>> {
        match self.core.start() {
            Ok(addr) => Ok(u32::from(addr.port())),
            Err(e) => Err(napi::Error::new(errno_name(&e), e.to_string())),
        }
    }

    /// Starts serving connections handed over by an attached Node server.
    #[napi]
    pub fn start_attached(&self) -> Result<(), napi::Error<String>> {
        self.core.start_attached().map_err(|e| napi::Error::new(errno_name(&e), e.to_string()))
    }

    /// Takes over a plain TCP connection after its upgrade request: the gateway gets
    /// its own descriptor for the socket, and Node may then destroy its handle.
    #[napi]
    pub fn adopt_socket(&self, fd: i32, request: UpgradeRequest) -> napi::Result<()> {
        let (upgrade, peer) = upgrade_of(request)?;
        // SAFETY: Node owns `fd` and keeps it open for the duration of this call; we only
        // duplicate it, so Node closing its own descriptor later leaves ours valid.
        let ours = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        self.core.adopt_tcp(std::net::TcpStream::from(ours), upgrade, peer).map_err(io_error)
    }

    /// Takes over a connection whose bytes Node relays (TLS ends in Node); returns the
    /// descriptor of the socket Node relays them through.
    #[napi]
    pub fn adopt_relayed(&self, request: UpgradeRequest) -> napi::Result<i32> {
        let (upgrade, peer) = upgrade_of(request)?;
        let theirs = self.core.adopt_relayed(upgrade, peer).map_err(io_error)?;
        Ok(theirs.into_raw_fd())
    }

    /// The attached Node server is closing: end every session with it.
    #[napi]
    pub fn close_sessions(&self) {
        self.core.close_sessions();
    }

    #[napi]
    pub fn stop(&self) {
        self.core.stop();
    }

    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &self,
        call: u32,
        kind: String,
        api_key: String,
        phone_number: String,
        text: String,
        media_source: Option<String>,
        document_name: Option<String>,
        strategy: Option<String>,
        timeout_ms: Option<f64>,
    ) {
        let kind = match kind.as_str() {
            "image" => SendKind::Image,
            "video" => SendKind::Video,
            "document" => SendKind::Document,
            _ => SendKind::Message,
        };
        let request = SendRequest {
            kind,
            api_key,
            phone_number,
            text,
            media_source,
            document_name,
            strategy: strategy.as_deref().and_then(Strategy::parse),
            timeout: timeout_ms.map(ms),
        };
        self.core.send(call, request);
    }

    /// Sends the commands queued by `send` since the last flush.
    #[napi]
    pub fn flush(&self) {
        self.core.flush();
    }

    /// `getActiveSessions` as JSON text.
    #[napi]
    pub fn sessions(&self, api_key: String) -> String {
        serde_json::to_string(&self.core.sessions(&api_key)).unwrap_or_else(|_| "[]".into())
    }

    /// `getHealth` as JSON text.
    #[napi]
    pub fn health(&self) -> String {
        serde_json::to_string(&self.core.health()).unwrap_or_else(|_| "{}".into())
    }

    /// Whether deliveries keep the Node event loop alive (like a listening server).
    #[napi]
    pub fn keep_alive(&self, env: Env, on: bool) -> napi::Result<()> {
        let raw = self.host.pump.raw();
        let status = unsafe {
            if on {
                napi::sys::napi_ref_threadsafe_function(env.raw(), raw)
            } else {
                napi::sys::napi_unref_threadsafe_function(env.raw(), raw)
            }
        };
        if status == napi::sys::Status::napi_ok {
            Ok(())
        } else {
            Err(napi::Error::from_reason("cannot change the gateway's hold on the event loop"))
        }
    }
}

fn io_error(e: std::io::Error) -> napi::Error {
    napi::Error::from_reason(e.to_string())
}

fn upgrade_of(request: UpgradeRequest) -> napi::Result<(Upgrade, IpAddr)> {
    let parsed = parsed_request(&request.method, &request.url, &request.raw_headers)
        .ok_or_else(|| napi::Error::new(Status::InvalidArg, "unreadable upgrade request"))?;
    let peer = request.remote_address.parse().unwrap_or(IpAddr::from([0u8; 4]));
    Ok((Upgrade::Parsed { request: parsed, head: request.head.to_vec() }, peer))
}

fn errno_name(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        AddrInUse => "EADDRINUSE",
        AddrNotAvailable => "EADDRNOTAVAIL",
        PermissionDenied => "EACCES",
        AlreadyExists => "ERR_GATEWAY_RUNNING",
        InvalidInput => "EINVAL",
        _ => "SERVER_ERROR",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_never_zero_nor_truncated() {
        assert_eq!(ms(0.5), Duration::from_millis(1));
        assert_eq!(ms(0.0), Duration::from_millis(1));
        assert_eq!(ms(f64::NAN), Duration::from_millis(1));
        assert_eq!(ms(1.5), Duration::from_micros(1500));
        assert_eq!(ms(30000.0), Duration::from_secs(30));
        let huge = ms(f64::MAX);
        assert!(huge > Duration::from_secs(1 << 30));
        assert!(tokio::time::Instant::now().checked_add(huge).is_some());
        assert_eq!(ms(f64::INFINITY), huge);
    }
}
