//! `NativeGateway`: the class `index.js` drives. Each method converts its arguments
//! and calls the core; outcomes come back in batches (`outbox`, `deliveries`).

use std::cell::RefCell;
use std::net::IpAddr;
use std::os::fd::{BorrowedFd, IntoRawFd};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use napi::bindgen_prelude::{Function, JsValue};
use napi::Env;
use napi_derive::napi;
use tokio::runtime::Runtime;
use wa_gateway_core::{build_runtime, parsed_request, Config, Gateway, StartError, Upgrade};

use crate::args::{type_error, Arg};
use crate::js_wake::JsWakeOwner;
use crate::media_shares::{MediaShares, Source};
use crate::outbox::{Outbox, Queued};
use crate::types::{
    send_request, CoreMetrics, Health, KeyedSession, NativeConfig, SendKind, SendOptions,
    SessionInfo, StatusSelector, UpgradeRequest,
};
use crate::validations::Validations;

/// The main thread's runtime, turned from its event loop (`inline`), or the threaded
/// one that every other thread shares.
fn runtime(env: &Env) -> napi::Result<&'static Runtime> {
    if let Some(rt) = crate::inline::main_thread_runtime(env.raw()) {
        return Ok(rt);
    }
    static THREADED: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = THREADED.get() {
        return Ok(rt);
    }
    let rt = build_runtime()
        .map_err(|e| napi::Error::from_reason(format!("cannot start the gateway runtime: {e}")))?;
    Ok(THREADED.get_or_init(|| rt))
}

fn start_error(e: StartError) -> napi::Error<String> {
    napi::Error::new(e.code().to_string(), e.to_string())
}

fn io_error(e: std::io::Error) -> napi::Error {
    napi::Error::from_reason(e.to_string())
}

#[napi]
pub struct NativeGateway {
    core: Rc<Gateway>,
    /// Declared after `core`: dropped after it.
    wake: JsWakeOwner,
    checks: Arc<Validations>,
    media: Rc<MediaShares>,
    /// Its place in `SENDERS`, for `sendCall`.
    handle: u32,
}

/// What `sendCall` needs of a gateway.
type Sender = (Rc<Gateway>, Rc<MediaShares>);

thread_local! {
    /// The gateways made on this thread, by handle (`NativeGateway::handle`): `sendCall`
    /// finds its gateway here. A method call on the class cost napi-rs an unwrap of
    /// `this`, a type-tag check and a borrow registration on every send (16% of the
    /// time of `send` at 1024 sends in flight); an index into this thread's list costs
    /// nothing of that. A gateway's entry goes when the gateway is dropped.
    static SENDERS: RefCell<Vec<Option<Sender>>> = const { RefCell::new(Vec::new()) };
}

fn add_sender(sender: Sender) -> u32 {
    SENDERS.with_borrow_mut(|senders| {
        let at = match senders.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                senders.push(None);
                senders.len() - 1
            }
        };
        senders[at] = Some(sender);
        at as u32
    })
}

fn sender(handle: u32) -> Option<Sender> {
    SENDERS.with_borrow(|senders| senders.get(handle as usize).cloned().flatten())
}

fn remove_sender(handle: u32) {
    // `try_with`: at the thread's exit the list may be gone before the gateway.
    let _ = SENDERS.try_with(|senders| {
        if let Some(entry) = senders.borrow_mut().get_mut(handle as usize) {
            *entry = None;
        }
    });
}

#[napi]
impl NativeGateway {
    #[napi(constructor)]
    pub fn new(
        env: Env,
        config: Arg<NativeConfig>,
        // Called with what the outbox drained: the batch's three parts (laid out as
        // `batchLayout()` says) and the key checks, `[token, apiKey, ...]`, when there
        // are any.
        #[napi(
            ts_arg_type = "(numbers: Float64Array | undefined, text: string | undefined, values: Array<any> | undefined, checks: Array<number | string> | undefined) => void"
        )]
        deliver: Arg<Function<(), ()>>,
    ) -> napi::Result<Self> {
        let (Arg(config), Arg(deliver)) = (config, deliver);
        // Checked before anything is set up, so that a bad one leaves nothing behind.
        let config = Config::try_from(config).map_err(|e| type_error(env.raw(), &e.reason))?;
        let rt = runtime(&env)?;
        let queued = Arc::new(Queued::default());
        let checks = queued.checks.clone();
        // Held (with the event loop) only while the gateway runs or sends are pending.
        let (wake, waker) = JsWakeOwner::new(env.raw(), deliver.raw(), queued.clone())?;
        let host = Arc::new(Outbox::new(queued, waker));
        let core = Gateway::new(config, host, rt.handle().clone())
            .map_err(|e| napi::Error::from_reason(e.message))?;
        let (core, media) = (Rc::new(core), Rc::new(MediaShares::default()));
        let handle = add_sender((core.clone(), media.clone()));
        Ok(Self {
            core,
            wake,
            checks,
            media,
            handle,
        })
    }

    /// The number that names this gateway to `sendCall` on this thread.
    #[napi(getter)]
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// `validateApiKey`'s answer to the check `token` (see `validations`).
    #[napi]
    pub fn validated(
        &self,
        token: Arg<u32>,
        valid: Arg<bool>,
        user_id: Arg<Option<serde_json::Value>>,
        reason: Arg<Option<String>>,
    ) {
        self.checks
            .answer_valid(token.0, valid.0, user_id.0, reason.0);
    }

    /// The check `token` failed: `validateApiKey` threw, rejected or answered nonsense.
    #[napi]
    pub fn validation_failed(&self, token: Arg<u32>, problem: Arg<String>) {
        self.checks.answer(token.0, Err(problem.0));
    }

    /// Binds and serves; returns the port. Errors carry the errno name as `code`.
    #[napi]
    pub fn start(&self) -> Result<u32, napi::Error<String>> {
        self.core
            .start()
            .map(|addr| u32::from(addr.port()))
            .map_err(start_error)
    }

    /// Starts serving connections handed over by an attached Node server.
    #[napi]
    pub fn start_attached(&self) -> Result<(), napi::Error<String>> {
        self.core.start_attached().map_err(start_error)
    }

    /// Takes over a plain TCP connection after its upgrade request: the gateway gets
    /// its own descriptor for the socket, and Node may then destroy its handle.
    #[napi]
    pub fn adopt_socket(
        &self,
        env: Env,
        fd: Arg<i32>,
        request: Arg<UpgradeRequest>,
    ) -> napi::Result<()> {
        let fd = tcp_socket(fd.0).map_err(|why| type_error(env.raw(), why))?;
        let (upgrade, peer) = upgrade_of(env, request.0)?;
        // SAFETY: `fd` is an open TCP socket (checked above), which Node owns and keeps
        // open for the duration of this call; we only duplicate it, so Node closing its
        // own descriptor later leaves ours valid.
        let ours = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        self.core
            .adopt_tcp(std::net::TcpStream::from(ours), upgrade, peer)
            .map_err(io_error)
    }

    /// Takes over a connection whose bytes Node relays (TLS ends in Node); returns the
    /// descriptor of the socket Node relays them through.
    #[napi]
    pub fn adopt_relayed(&self, env: Env, request: Arg<UpgradeRequest>) -> napi::Result<i32> {
        let (upgrade, peer) = upgrade_of(env, request.0)?;
        let theirs = self.core.adopt_relayed(upgrade, peer).map_err(io_error)?;
        Ok(theirs.into_raw_fd())
    }

    /// The attached Node server is closing: end every session with it.
    #[napi]
    pub fn close_sessions(&self) {
        self.core.close_sessions();
    }

    /// `stop({ drainMs })`: `drain_ms` lets written sends settle first (README).
    #[napi]
    pub fn stop(&self, drain_ms: Option<f64>) {
        let drain = drain_ms.filter(|ms| *ms > 0.0).map(crate::types::ms);
        self.core.stop_draining(drain);
    }

    /// No call in flight names the media share `share` any more (`media_shares`).
    #[napi]
    pub fn release_media(&self, share: Arg<u32>) {
        self.media.release(share.0);
    }

    #[napi]
    pub fn sessions(&self, api_key: Arg<String>) -> Vec<SessionInfo> {
        self.core
            .sessions(&api_key.0)
            .into_iter()
            .map(SessionInfo::from)
            .collect()
    }

    /// `getMessageStatus(requestId)`, or `null`.
    #[napi]
    pub fn message_status(&self, request_id: Arg<String>) -> Option<serde_json::Value> {
        self.core.message_status(&request_id.0)
    }

    /// `getMessageStatus({ apiKey, idempotencyKey | messageId })`, or `null`.
    #[napi]
    pub fn message_status_by(&self, selector: Arg<StatusSelector>) -> Option<serde_json::Value> {
        let (api_key, by) = selector.0.key()?;
        self.core.message_status_by(&api_key, &by)
    }

    /// Cluster mode: takes this process's lease; the answer (null or an error) comes
    /// in a batch under `token`.
    #[napi]
    pub fn join_cluster(&self, token: Arg<u32>) {
        self.core.join_cluster(token.0);
    }

    /// Cluster mode: `getActiveSessions` across processes, answered under `token`.
    #[napi]
    pub fn cluster_sessions(&self, token: Arg<u32>, api_key: Arg<String>) {
        self.core.cluster_sessions(token.0, api_key.0);
    }

    /// Cluster mode: `getAllSessions` across processes, answered under `token`.
    #[napi]
    pub fn cluster_all_sessions(&self, token: Arg<u32>) {
        self.core.cluster_all_sessions(token.0);
    }

    /// Cluster mode: `getMessageStatus` across processes, answered under `token`.
    #[napi]
    pub fn cluster_message_status(&self, token: Arg<u32>, request_id: Arg<String>) {
        self.core.cluster_message_status(token.0, request_id.0);
    }

    /// Cluster mode: `getMessageStatus` by key across processes, answered under `token`.
    #[napi]
    pub fn cluster_message_status_by(&self, token: Arg<u32>, selector: Arg<StatusSelector>) {
        self.core
            .cluster_message_status_by(token.0, selector.0.key());
    }

    #[napi]
    pub fn all_sessions(&self) -> Vec<KeyedSession> {
        let all = self.core.all_sessions().into_iter();
        all.map(|(api_key, session)| KeyedSession {
            api_key: api_key.to_string(),
            session: session.into(),
        })
        .collect()
    }

    /// What only the core counts (process-wide), for `metrics()`.
    #[napi]
    pub fn core_metrics(&self) -> CoreMetrics {
        wa_gateway_core::metrics_snapshot().into()
    }

    #[napi]
    pub fn health(&self) -> Health {
        self.core.health().into()
    }

    /// Whether deliveries keep the Node event loop alive (like a listening server).
    #[napi]
    pub fn keep_alive(&self, on: Arg<bool>) {
        self.wake.set_ref(on.0);
    }
}

impl Drop for NativeGateway {
    /// Reached only when its JavaScript object is finalized, which a running gateway's
    /// is not (it holds its delivery callback) unless Node tears the environment down,
    /// as when a worker thread ends: serving stops with it and its port is freed.
    fn drop(&mut self) {
        remove_sender(self.handle);
        self.core.stop();
    }
}

/// Sends the commands queued by `sendCall` since the last flush, on the gateway whose
/// `handle` is `gateway` (none: nothing to send). A plain function for the reason
/// `sendCall` is one: a flush follows every tick that sends.
#[napi]
pub fn flush_calls(gateway: Arg<u32>) {
    if let Some((core, _)) = sender(gateway.0) {
        core.flush();
    }
}

/// Queues a send (or a custom command, `kind: 'command'`) on the gateway whose `handle`
/// is `gateway`; its outcome arrives in a batch under the number `call`. False, and
/// nothing queued, when the call names a media share whose text is gone
/// (`media_shares`): call again with the text. A plain function rather than a method,
/// for the hot path (see `SENDERS`); positional, because every property read of an
/// object is a napi call.
#[allow(clippy::too_many_arguments)]
#[napi]
pub fn send_call(
    env: Env,
    gateway: Arg<u32>,
    call: Arg<u32>,
    kind: Arg<SendKind>,
    api_key: Arg<String>,
    phone_number: Arg<String>,
    text: Arg<String>,
    options: Arg<Option<SendOptions>>,
) -> napi::Result<bool> {
    let Some((core, media)) = sender(gateway.0) else {
        return Err(type_error(
            env.raw(),
            "not the handle of a gateway of this thread",
        ));
    };
    // lib/request-args.js checks these; a frame must never carry anything else.
    if kind.0 == SendKind::Command {
        if !wa_gateway_core::is_custom_type(&phone_number.0) {
            return Err(type_error(env.raw(), "not a custom command type"));
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(&text.0).is_err() {
            return Err(type_error(
                env.raw(),
                "a custom command's data is not JSON text",
            ));
        }
    }
    let mut options = options.0;
    let media = match options.as_mut() {
        Some(o) => match media.source(o.media_source.take(), o.media_share) {
            Source::Media(media) => media,
            Source::Gone => return Ok(false),
        },
        None => None,
    };
    let mut request = send_request(kind.0, api_key.0, phone_number.0, text.0, options);
    request.media_source = media;
    core.send(u64::from(call.0), request);
    Ok(true)
}

fn upgrade_of(env: Env, request: UpgradeRequest) -> napi::Result<(Upgrade, IpAddr)> {
    let parsed = parsed_request(&request.method, &request.url, &request.raw_headers)
        .ok_or_else(|| type_error(env.raw(), "unreadable upgrade request"))?;
    let peer = request
        .remote_address
        .parse()
        .unwrap_or(IpAddr::from([0u8; 4]));
    Ok((
        Upgrade::Parsed {
            request: parsed,
            head: request.head.to_vec(),
        },
        peer,
    ))
}

/// `fd` if it is an open TCP socket's descriptor; else why not. Anything else handed to
/// `adoptSocket` (a negative number, a closed descriptor, a file, a Unix socket) would
/// end the process (a descriptor of -1 panics std) or confuse the runtime.
fn tcp_socket(fd: i32) -> Result<i32, &'static str> {
    if fd < 0 {
        return Err("adoptSocket: fd must be a socket's descriptor, a non-negative integer");
    }
    // SAFETY: a zeroed sockaddr_storage is valid, and its size is what is passed; the
    // kernel only writes into it. An fd that is not open or not a socket fails cleanly.
    let family = unsafe {
        let mut address: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getsockname(
            fd,
            (&mut address as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) != 0
        {
            return Err("adoptSocket: fd is not an open socket");
        }
        i32::from(address.ss_family)
    };
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` is a c_int and `len` its size, as SO_TYPE writes.
    let read = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    let tcp = read == 0
        && kind == libc::SOCK_STREAM
        && (family == libc::AF_INET || family == libc::AF_INET6);
    if tcp {
        Ok(fd)
    } else {
        Err("adoptSocket: fd is not a TCP socket")
    }
}
