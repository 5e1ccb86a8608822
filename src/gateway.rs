//! `NativeGateway`: the class `index.js` drives. Each method converts its arguments
//! and calls the core; outcomes come back in batches (`deliveries`, `js_wake`).

use std::net::IpAddr;
use std::os::fd::{BorrowedFd, IntoRawFd};
use std::sync::{Arc, Mutex, OnceLock};

use napi::bindgen_prelude::{Function, JsValue};
use napi::{Env, Status};
use napi_derive::napi;
use tokio::runtime::Runtime;
use wa_gateway_core::{build_runtime, parsed_request, Config, Gateway, StartError, Upgrade};

use crate::deliveries::NodeHost;
use crate::js_wake::JsWakeOwner;
use crate::types::{
    send_request, CoreMetrics, Health, KeyedSession, NativeConfig, SendKind, SendOptions,
    SessionInfo, StatusSelector, UpgradeRequest,
};
use crate::validations::{Validations, Validator};

fn runtime() -> napi::Result<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = build_runtime()
        .map_err(|e| napi::Error::from_reason(format!("cannot start the gateway runtime: {e}")))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

fn start_error(e: StartError) -> napi::Error<String> {
    napi::Error::new(e.code().to_string(), e.to_string())
}

fn io_error(e: std::io::Error) -> napi::Error {
    napi::Error::from_reason(e.to_string())
}

#[napi]
pub struct NativeGateway {
    core: Gateway,
    /// Declared after `core`: dropped after it.
    wake: JsWakeOwner,
    checks: Arc<Validations>,
}

#[napi]
impl NativeGateway {
    #[napi(constructor)]
    pub fn new(env: Env, config: NativeConfig, deliver: Function<(), ()>) -> napi::Result<Self> {
        let rt = runtime()?;
        let checks = Arc::new(Validations::default());
        let batch = Arc::new(Mutex::new(Vec::new()));
        // Held (with the event loop) only while the gateway runs or sends are pending.
        let (wake, waker) =
            JsWakeOwner::new(env.raw(), deliver.raw(), batch.clone(), checks.clone())?;
        let host = Arc::new(NodeHost {
            validator: Validator::new(waker.clone(), checks.clone()),
            waker,
            batch,
            owed: Default::default(),
        });
        let config = Config::try_from(config)?;
        let core = Gateway::new(config, host, rt.handle().clone())
            .map_err(|e| napi::Error::from_reason(e.message))?;
        Ok(Self { core, wake, checks })
    }

    /// `validateApiKey`'s answer to the check `token` (see `validations`).
    #[napi]
    pub fn validated(
        &self,
        token: u32,
        valid: bool,
        user_id: Option<serde_json::Value>,
        reason: Option<String>,
    ) {
        self.checks.answer_valid(token, valid, user_id, reason);
    }

    /// The check `token` failed: `validateApiKey` threw, rejected or answered nonsense.
    #[napi]
    pub fn validation_failed(&self, token: u32, problem: String) {
        self.checks.answer(token, Err(problem));
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
    pub fn adopt_socket(&self, fd: i32, request: UpgradeRequest) -> napi::Result<()> {
        let (upgrade, peer) = upgrade_of(request)?;
        // SAFETY: Node owns `fd` and keeps it open for the duration of this call; we only
        // duplicate it, so Node closing its own descriptor later leaves ours valid.
        let ours = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        self.core
            .adopt_tcp(std::net::TcpStream::from(ours), upgrade, peer)
            .map_err(io_error)
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

    /// Queues a send (or a custom command, `kind: 'command'`); its outcome arrives in a
    /// batch under the number `call`.
    #[napi]
    pub fn send(
        &self,
        call: u32,
        kind: SendKind,
        api_key: String,
        phone_number: String,
        text: String,
        options: Option<SendOptions>,
    ) -> napi::Result<()> {
        // lib/request-args.js checks these; a frame must never carry anything else.
        if kind == SendKind::Command {
            if !wa_gateway_core::is_custom_type(&phone_number) {
                return Err(napi::Error::new(
                    Status::InvalidArg,
                    "not a custom command type",
                ));
            }
            if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err() {
                return Err(napi::Error::new(
                    Status::InvalidArg,
                    "command data is not JSON",
                ));
            }
        }
        let request = send_request(kind, api_key, phone_number, text, options);
        self.core.send(u64::from(call), request);
        Ok(())
    }

    /// Sends the commands queued by `send` since the last flush.
    #[napi]
    pub fn flush(&self) {
        self.core.flush();
    }

    #[napi]
    pub fn sessions(&self, api_key: String) -> Vec<SessionInfo> {
        self.core
            .sessions(&api_key)
            .into_iter()
            .map(SessionInfo::from)
            .collect()
    }

    /// `getMessageStatus(requestId)`, or `null`.
    #[napi]
    pub fn message_status(&self, request_id: String) -> Option<serde_json::Value> {
        self.core.message_status(&request_id)
    }

    /// `getMessageStatus({ apiKey, idempotencyKey | messageId })`, or `null`.
    #[napi]
    pub fn message_status_by(&self, selector: StatusSelector) -> Option<serde_json::Value> {
        let (api_key, by) = selector.key()?;
        self.core.message_status_by(&api_key, &by)
    }

    /// Cluster mode: takes this process's lease; the answer (null or an error) comes
    /// in a batch under `token`.
    #[napi]
    pub fn join_cluster(&self, token: u32) {
        self.core.join_cluster(token);
    }

    /// Cluster mode: `getActiveSessions` across processes, answered under `token`.
    #[napi]
    pub fn cluster_sessions(&self, token: u32, api_key: String) {
        self.core.cluster_sessions(token, api_key);
    }

    /// Cluster mode: `getAllSessions` across processes, answered under `token`.
    #[napi]
    pub fn cluster_all_sessions(&self, token: u32) {
        self.core.cluster_all_sessions(token);
    }

    /// Cluster mode: `getMessageStatus` across processes, answered under `token`.
    #[napi]
    pub fn cluster_message_status(&self, token: u32, request_id: String) {
        self.core.cluster_message_status(token, request_id);
    }

    /// Cluster mode: `getMessageStatus` by key across processes, answered under `token`.
    #[napi]
    pub fn cluster_message_status_by(&self, token: u32, selector: StatusSelector) {
        self.core.cluster_message_status_by(token, selector.key());
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
    pub fn keep_alive(&self, on: bool) {
        self.wake.set_ref(on);
    }
}

impl Drop for NativeGateway {
    /// Reached only when its JavaScript object is finalized, which a running gateway's
    /// is not (it holds its delivery callback) unless Node tears the environment down,
    /// as when a worker thread ends: serving stops with it and its port is freed.
    fn drop(&mut self) {
        self.core.stop();
    }
}

fn upgrade_of(request: UpgradeRequest) -> napi::Result<(Upgrade, IpAddr)> {
    let parsed = parsed_request(&request.method, &request.url, &request.raw_headers)
        .ok_or_else(|| napi::Error::new(Status::InvalidArg, "unreadable upgrade request"))?;
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
