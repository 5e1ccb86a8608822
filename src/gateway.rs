//! The gateway core: owns the settings, the registry and the running server, and
//! turns send calls into commands and results into deliveries. No napi types here.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixStream};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::clock::now_ms;
use crate::config::{Config, Strategy};
use crate::error::{mask_api_key, ErrorCode, GatewayError};
use crate::events::LogEvent;
use crate::host::{Delivery, Host, Resolved};
use crate::handshake::Upgrade;
use crate::link::{lock, CloseRequest, Enqueued, SessionLink};
use crate::transport::Transport;
use crate::media::{default_document_name, Media, MediaKind, MediaLoader};
use crate::protocol::{media_frame, message_frame, MediaCommand, ResultFrame, SendKind};
use crate::registry::{CallId, Pending, Registry, SessionInfo, Settled};
use crate::{connection, deadlines, heartbeat, listener};

/// How long `stop()` waits for connections to finish their close handshake.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// One send call, validated by the JavaScript side.
#[derive(Debug)]
pub struct SendRequest {
    pub kind: SendKind,
    pub api_key: String,
    pub phone_number: String,
    /// The message of `sendMessage`, the caption of media sends.
    pub text: String,
    pub media_source: Option<String>,
    pub document_name: Option<String>,
    pub strategy: Option<Strategy>,
    pub timeout: Option<Duration>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: &'static str,
    pub active_sessions: usize,
    pub uptime: u64,
    pub timestamp: u64,
    pub connections: usize,
    pub pending_requests: usize,
    pub port: Option<u16>,
}

struct Run {
    shutdown: CancellationToken,
    tasks: TaskTracker,
    started_at: u64,
    /// Where the standalone server listens; `None` when attached to a Node server.
    addr: Option<SocketAddr>,
}

pub struct Shared {
    pub config: Config,
    pub registry: Mutex<Registry>,
    pub host: Arc<dyn Host>,
    media: MediaLoader,
    /// Wakes the deadline task when a request with an earlier deadline arrives.
    pub deadline_changed: Notify,
    /// Open sockets, authenticated or not.
    pub connections: AtomicUsize,
    /// Sessions with commands queued by `send` but not yet woken: `flush()` wakes them
    /// all at once, so that one write carries every command of a JavaScript tick.
    corked: Mutex<Vec<Arc<SessionLink>>>,
    run: Mutex<Option<Run>>,
    rt: Handle,
}

#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    pub fn new(config: Config, host: Arc<dyn Host>, rt: Handle) -> Result<Self, GatewayError> {
        let media = MediaLoader::new(config.media.clone())?;
        let shared = Shared {
            config,
            registry: Mutex::default(),
            host,
            media,
            deadline_changed: Notify::new(),
            connections: AtomicUsize::new(0),
            corked: Mutex::default(),
            run: Mutex::new(None),
            rt,
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// Binds and starts serving. Synchronous so that a taken port is reported to
    /// the caller of `start()` directly.
    pub fn start(&self) -> io::Result<SocketAddr> {
        let shared = &self.shared;
        let mut run = lock(&shared.run);
        if run.is_some() {
            return Err(already_running());
        }
        let _runtime = shared.rt.enter();
        let listener = bind(shared.config.host.as_deref(), shared.config.port)?;
        let addr = listener.local_addr()?;
        let started = self.begin(Some(addr));
        started.tasks.spawn(listener::run(listener, shared.clone(), started.shutdown.clone(), started.tasks.clone()));
        *run = Some(started);
        Ok(addr)
    }

    /// Starts serving connections that a Node server hands over (`adopt_*`).
    pub fn start_attached(&self) -> io::Result<()> {
        let mut run = lock(&self.shared.run);
        if run.is_some() {
            return Err(already_running());
        }
        let _runtime = self.shared.rt.enter();
        *run = Some(self.begin(None));
        Ok(())
    }

    /// The timer tasks every running gateway has.
    fn begin(&self, addr: Option<SocketAddr>) -> Run {
        let shared = &self.shared;
        lock(&shared.registry).reopen();
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(heartbeat::run(shared.clone(), shutdown.clone()));
        tasks.spawn(deadlines::run(shared.clone(), shutdown.clone()));
        Run { shutdown, tasks, started_at: now_ms(), addr }
    }

    /// Serves a TCP connection whose upgrade request Node has parsed.
    pub fn adopt_tcp(&self, stream: std::net::TcpStream, upgrade: Upgrade, peer: IpAddr) -> io::Result<()> {
        let _runtime = self.shared.rt.enter();
        stream.set_nonblocking(true)?;
        let _ = stream.set_nodelay(true);
        let transport = Transport::Tcp(TcpStream::from_std(stream)?);
        self.adopt(transport, upgrade, peer)
    }

    /// Serves a connection whose bytes Node relays (it terminates TLS): returns the
    /// socket Node writes the decrypted bytes to and reads the replies from.
    pub fn adopt_relayed(&self, upgrade: Upgrade, peer: IpAddr) -> io::Result<OwnedFd> {
        let _runtime = self.shared.rt.enter();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        self.adopt(Transport::Pipe(UnixStream::from_std(ours)?), upgrade, peer)?;
        Ok(theirs.into())
    }

    fn adopt(&self, transport: Transport, upgrade: Upgrade, peer: IpAddr) -> io::Result<()> {
        let run = lock(&self.shared.run);
        let Some(run) = run.as_ref() else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "Gateway is not running"));
        };
        let shared = self.shared.clone();
        run.tasks.spawn(connection::serve(transport, upgrade, peer, shared, run.shutdown.clone(), run.tasks.clone()));
        Ok(())
    }

    /// The Node server the gateway is attached to is closing: its sessions end with
    /// it, and their pending sends fail with `CONNECTION_LOST`.
    pub fn close_sessions(&self) {
        lock(&self.shared.registry).close_all(CloseRequest::ServerClosing);
    }

    /// Starts stopping; the host gets `Delivery::Stopped` once the port is free and
    /// every session has closed. Every pending send fails with `GATEWAY_SHUTDOWN`.
    pub fn stop(&self) {
        let shared = self.shared.clone();
        let Some(run) = lock(&shared.run).take() else {
            shared.host.deliver(Delivery::Stopped);
            return;
        };
        run.shutdown.cancel();
        let owed = lock(&shared.registry).shut_down();
        for settled in owed {
            shared.fail(settled, shutdown_error);
        }
        run.tasks.close();
        self.shared.rt.spawn(async move {
            let _ = tokio::time::timeout(STOP_GRACE, run.tasks.wait()).await;
            shared.host.deliver(Delivery::Stopped);
        });
    }

    /// Accepts a send call; its outcome is delivered to the host later, exactly once.
    /// A text command goes out at the next `flush()`.
    pub fn send(&self, call: CallId, mut request: SendRequest) {
        let Some(source) = request.media_source.take() else {
            self.shared.dispatch(call, request, None, Wake::Later);
            return;
        };
        let shared = self.shared.clone();
        let running = lock(&shared.run).as_ref().map(|r| (r.shutdown.clone(), r.tasks.clone()));
        let shutdown = running.as_ref().map(|(token, _)| token.clone());
        let kind = match request.kind {
            SendKind::Video => MediaKind::Video,
            SendKind::Document => MediaKind::Document,
            _ => MediaKind::Image,
        };
        let load = async move {
            let cancelled = async {
                match &shutdown {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                loaded = shared.media.load(kind, source) => match loaded {
                    Ok(media) => shared.dispatch(call, request, Some(media), Wake::Now),
                    Err(error) => shared.host.deliver(Delivery::Rejected { id: call, e: error }),
                },
                _ = cancelled => shared.host.deliver(Delivery::Rejected { id: call, e: shutdown_error("", "") }),
            }
        };
        match running {
            Some((_, tasks)) => drop(tasks.spawn_on(load, &self.shared.rt)),
            None => drop(self.shared.rt.spawn(load)),
        }
    }

    /// Wakes the sessions that `send` queued commands for.
    pub fn flush(&self) {
        let corked = std::mem::take(&mut *lock(&self.shared.corked));
        for link in corked {
            link.wake();
        }
    }

    pub fn sessions(&self, api_key: &str) -> Vec<SessionInfo> {
        lock(&self.shared.registry).sessions_of(api_key)
    }

    pub fn all_sessions(&self) -> Vec<(Arc<str>, SessionInfo)> {
        lock(&self.shared.registry).all_sessions()
    }

    pub fn health(&self) -> Health {
        let run = lock(&self.shared.run);
        let registry = lock(&self.shared.registry);
        Health {
            status: if run.is_some() { "running" } else { "stopped" },
            active_sessions: registry.session_count(),
            uptime: run.as_ref().map_or(0, |r| now_ms().saturating_sub(r.started_at)),
            timestamp: now_ms(),
            connections: self.shared.connections.load(Ordering::Relaxed),
            pending_requests: registry.pending_count(),
            port: run.as_ref().and_then(|r| r.addr).map(|a| a.port()),
        }
    }
}

/// When the session that gets a command is woken to write it.
#[derive(Clone, Copy)]
enum Wake {
    Now,
    /// At the next `Gateway::flush()`.
    Later,
}

fn already_running() -> io::Error {
    io::Error::new(io::ErrorKind::AlreadyExists, "Gateway is already running")
}

/// Without a host, listen on IPv6 and IPv4 alike where the machine has IPv6.
fn bind(host: Option<&str>, port: u16) -> io::Result<TcpListener> {
    let candidates: Vec<SocketAddr> = match host {
        Some(h) => std::net::ToSocketAddrs::to_socket_addrs(&(h, port))?.collect(),
        None => vec![SocketAddr::from(([0u16; 8], port)), SocketAddr::from(([0u8; 4], port))],
    };
    let mut last_error = io::Error::new(io::ErrorKind::AddrNotAvailable, "host resolved to no address");
    for addr in candidates {
        let socket = if addr.is_ipv6() { TcpSocket::new_v6() } else { TcpSocket::new_v4() };
        let attempt = socket.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(1024)
        });
        match attempt {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

impl Shared {
    /// Picks a device, records the request and queues its command.
    fn dispatch(&self, call: CallId, request: SendRequest, media: Option<Media>, wake: Wake) {
        let strategy = request.strategy.unwrap_or(self.config.strategy);
        let selected = lock(&self.registry).select(&request.api_key, strategy);
        let Some((key, identity, link)) = selected else {
            let error = GatewayError::new(
                ErrorCode::NoActiveDevice,
                "No active WhatsApp device connected for this API key",
                json!({ "apiKey": mask_api_key(&request.api_key) }),
            );
            return self.host.deliver(Delivery::Rejected { id: call, e: error });
        };
        let request_id = Uuid::new_v4();
        let mut id_buf = Uuid::encode_buffer();
        let request_id_text: &str = request_id.hyphenated().encode_lower(&mut id_buf);
        let frame = match media {
            None => message_frame(request_id_text, &request.phone_number, &request.text),
            Some(media) => {
                let document_name = match request.kind {
                    SendKind::Document => Some(request.document_name.clone().unwrap_or_else(|| default_document_name(&media))),
                    _ => None,
                };
                let command = MediaCommand {
                    kind: request.kind,
                    request_id: request_id_text,
                    phone_number: &request.phone_number,
                    caption: &request.text,
                    mime_type: &media.mime_type,
                    document_name: document_name.as_deref(),
                };
                media_frame(&command, media.data_url, identity.dialect)
            }
        };
        let timeout = request.timeout.unwrap_or(self.config.request_timeout);
        let pending = Pending::new(call, request.kind, request.phone_number, timeout);
        let inserted = lock(&self.registry).insert_pending(key, request_id.as_u128(), pending);
        match inserted {
            // The session closed between choosing it and recording the request.
            None => {
                let error = connection_lost(request_id_text, &identity.session_id);
                self.host.deliver(Delivery::Rejected { id: call, e: error });
            }
            Some(earliest) => {
                if earliest {
                    self.deadline_changed.notify_one();
                }
                // A closing session fails its requests as it leaves the registry.
                match wake {
                    Wake::Now => drop(link.push(frame)),
                    Wake::Later => {
                        if link.enqueue(frame) == Enqueued::First {
                            lock(&self.corked).push(link);
                        }
                    }
                }
            }
        }
    }

    /// Settles a request with the extension's answer.
    pub fn complete(&self, settled: Settled, result: ResultFrame) {
        if !result.success {
            let request_id = Uuid::from_u128(settled.request_id).to_string();
            let error = GatewayError::new(
                ErrorCode::ExtensionError,
                format!("Extension reported failure: {}", describe(&result.error)),
                json!({ "requestId": request_id, "sessionId": &*settled.identity.session_id, "error": result.error }),
            );
            return self.fail_with(settled, request_id, error);
        }
        self.host.deliver(Delivery::Resolved(Resolved {
            id: settled.pending.call,
            request_id: settled.request_id,
            message_id: result.message_id,
            timestamp: result.timestamp.unwrap_or(now_ms() as f64),
            session: settled.identity,
        }));
    }

    /// Fails a request that had been sent to a device; `error` gets the request and
    /// session ids.
    pub fn fail(&self, settled: Settled, error: impl FnOnce(&str, &str) -> GatewayError) {
        let request_id = Uuid::from_u128(settled.request_id).to_string();
        let error = error(&request_id, &settled.identity.session_id);
        self.fail_with(settled, request_id, error);
    }

    fn fail_with(&self, settled: Settled, request_id: String, error: GatewayError) {
        if self.config.log_events {
            let event = LogEvent::send_failed(&settled, &request_id, &error);
            self.host.deliver(Delivery::Log { e: event });
        }
        self.host.deliver(Delivery::Rejected { id: settled.pending.call, e: error });
    }

    pub fn log(&self, event: impl FnOnce() -> LogEvent) {
        if self.config.log_events {
            self.host.deliver(Delivery::Log { e: event() });
        }
    }

    pub fn report(&self, error: GatewayError) {
        self.host.deliver(Delivery::Error { e: error });
    }

    pub fn debug(&self, line: impl FnOnce() -> String) {
        if self.config.debug_log {
            self.host.deliver(Delivery::Debug { line: line() });
        }
    }
}

fn describe(error: &Value) -> String {
    match error {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.get("message").and_then(Value::as_str).map_or_else(|| error.to_string(), str::to_string),
        Value::Null => "no reason given".to_string(),
        other => other.to_string(),
    }
}

pub fn timeout_error(timeout_ms: u64) -> impl FnOnce(&str, &str) -> GatewayError {
    move |request_id, session_id| {
        GatewayError::new(
            ErrorCode::RequestTimeout,
            format!("Request timed out after {timeout_ms} ms without a result from the extension"),
            json!({ "requestId": request_id, "sessionId": session_id, "timeout": timeout_ms }),
        )
    }
}

pub fn connection_lost(request_id: &str, session_id: &str) -> GatewayError {
    GatewayError::new(
        ErrorCode::ConnectionLost,
        "The extension's connection closed before it reported a result",
        json!({ "requestId": request_id, "sessionId": session_id }),
    )
}

pub fn shutdown_error(request_id: &str, session_id: &str) -> GatewayError {
    let details = if request_id.is_empty() {
        json!({})
    } else {
        json!({ "requestId": request_id, "sessionId": session_id })
    };
    GatewayError::new(ErrorCode::GatewayShutdown, "Gateway is shutting down", details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{AuthAnswer, Validation};
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpStream;
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::Message;

    /// A host that accepts one key and hands every delivery to the test.
    struct TestHost(mpsc::UnboundedSender<Delivery>);

    impl Host for TestHost {
        fn deliver(&self, delivery: Delivery) {
            let _ = self.0.send(delivery);
        }
        fn validate(&self, api_key: String) -> Validation {
            Box::pin(async move { Ok(AuthAnswer { valid: api_key == "good-key-123", ..AuthAnswer::default() }) })
        }
    }

    async fn started() -> (Gateway, SocketAddr, mpsc::UnboundedReceiver<Delivery>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let config = Config { port: 0, host: Some("127.0.0.1".into()), log_events: false, ..Config::default() };
        let gateway = Gateway::new(config, Arc::new(TestHost(tx)), Handle::current()).unwrap();
        let addr = gateway.start().unwrap();
        (gateway, addr, rx)
    }

    type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

    async fn ready_client(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/wa-ext-ws"), tcp).await.unwrap();
        ws.send(Message::text(r#"{"type":"auth","apiKey":"good-key-123"}"#)).await.unwrap();
        ws.send(Message::text(r#"{"type":"status","data":{"whatsappLoggedIn":true,"ready":true}}"#)).await.unwrap();
        next_of(&mut ws, "authenticated").await;
        ws
    }

    async fn next_of(ws: &mut Client, kind: &str) -> Value {
        loop {
            let Some(Ok(Message::Text(text))) = ws.next().await else { panic!("socket ended before {kind}") };
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    fn text(api_key: &str) -> SendRequest {
        SendRequest {
            kind: SendKind::Message,
            api_key: api_key.into(),
            phone_number: "+1234567890".into(),
            text: "hi".into(),
            media_source: None,
            document_name: None,
            strategy: None,
            timeout: None,
        }
    }

    /// Sends until the status frame has made the device active.
    async fn send_when_active(gateway: &Gateway, rx: &mut mpsc::UnboundedReceiver<Delivery>, call: CallId) {
        for _ in 0..100 {
            if gateway.sessions("good-key-123").iter().any(|s| s.device_active) {
                gateway.send(call, text("good-key-123"));
                return gateway.flush();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("device never became active: {:?}", rx.try_recv());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_send_round_trips_through_an_extension() {
        let (gateway, addr, mut rx) = started().await;
        let mut ws = ready_client(addr).await;
        send_when_active(&gateway, &mut rx, 7).await;
        let command = next_of(&mut ws, "send-message").await;
        let request_id = command["requestId"].as_str().unwrap();
        let result = json!({ "type": "message-result", "requestId": request_id, "success": true, "messageId": "m1" });
        ws.send(Message::text(result.to_string())).await.unwrap();
        match rx.recv().await.unwrap() {
            Delivery::Resolved(r) => {
                assert_eq!(r.id, 7);
                assert_eq!(Uuid::from_u128(r.request_id).to_string(), request_id);
                assert_eq!(r.message_id, json!("m1"));
                assert_eq!(r.session.api_key.as_ref(), "good-key-123");
            }
            other => panic!("{other:?}"),
        }
        gateway.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_device_and_lost_connection_fail_the_call() {
        let (gateway, addr, mut rx) = started().await;
        gateway.send(1, text("nobody-key-123"));
        assert!(matches!(rx.recv().await, Some(Delivery::Rejected { id: 1, e }) if e.code == ErrorCode::NoActiveDevice));

        let mut ws = ready_client(addr).await;
        send_when_active(&gateway, &mut rx, 2).await;
        next_of(&mut ws, "send-message").await;
        drop(ws);
        assert!(matches!(rx.recv().await, Some(Delivery::Rejected { id: 2, e }) if e.code == ErrorCode::ConnectionLost));
        gateway.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_fails_pending_sends_and_frees_the_port() {
        let (gateway, addr, mut rx) = started().await;
        let mut ws = ready_client(addr).await;
        send_when_active(&gateway, &mut rx, 3).await;
        next_of(&mut ws, "send-message").await;
        gateway.stop();
        assert!(matches!(rx.recv().await, Some(Delivery::Rejected { id: 3, e }) if e.code == ErrorCode::GatewayShutdown));
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert!(matches!(rx.recv().await, Some(Delivery::Stopped)));
        std::net::TcpListener::bind(addr).expect("port is free after stop");
        assert_eq!(gateway.health().status, "stopped");
    }
}
