//! Connections to Redis as deployed (README "Deploying"): a URL (`redis://`,
//! `rediss://`, with an ACL user) or a master found through Sentinel, over TLS with a
//! private CA, client certificates and the server name to check. Each connection is
//! redis-rs's multiplexed connection over a stream made here: redis-rs 1.8 has
//! Sentinel and TLS with custom roots and client certificates, but its reconnecting
//! manager keeps one address (no new master after a failover), it cannot check a
//! certificate against another name than the host's, and it does not say why a
//! connection failed in the terms a deployment needs: causes that retrying cannot fix
//! (`Cause`) are told apart from a server that is down or a name that does not resolve
//! for now.

use std::ffi::CString;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisConnectionInfo,
    RedisError, ServerErrorKind,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_rustls::rustls;

use crate::config::{ClusterConfig, TlsConfig};
use crate::state::link::lock;

/// A reason Redis cannot be used that retrying will not fix (`details.cause`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Wrong user name or password.
    Auth,
    /// The ACL user may not run a command the gateway needs, or not on its keys.
    Permission,
    /// The server's certificate was rejected, or it rejected ours.
    Tls,
    /// The host name does not exist (NXDOMAIN).
    Dns,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Permission => "permission",
            Self::Tls => "tls",
            Self::Dns => "dns",
        }
    }

    pub fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Why a connection or a command failed; never holds a password.
#[derive(Clone, Debug)]
pub struct Failure {
    pub cause: Option<Cause>,
    pub detail: String,
}

impl Failure {
    fn transient(detail: impl Into<String>) -> Self {
        Self {
            cause: None,
            detail: detail.into(),
        }
    }

    fn fatal(cause: Cause, detail: impl Into<String>) -> Self {
        Self {
            cause: Some(cause),
            detail: detail.into(),
        }
    }

    /// What a Redis reply or error says: a refusal that retrying cannot fix, or not.
    pub fn of(error: &RedisError) -> Self {
        let text = error.to_string();
        let code = error.code().unwrap_or_default();
        let cause = match error.kind() {
            // TLS 1.3: a server that wants a client certificate says so after the
            // handshake, at the first read.
            _ if tls_inside(error) => Some(Cause::Tls),
            ErrorKind::AuthenticationFailed => Some(Cause::Auth),
            ErrorKind::Server(ServerErrorKind::NoPerm) => Some(Cause::Permission),
            _ if matches!(code, "WRONGPASS" | "NOAUTH") => Some(Cause::Auth),
            _ if code == "NOPERM" || text.contains("NOPERM") => Some(Cause::Permission),
            _ => None,
        };
        Self {
            cause,
            detail: text,
        }
    }
}

/// Where Redis is.
enum Place {
    Direct {
        host: String,
        port: u16,
    },
    Sentinel {
        sentinels: Vec<(String, u16)>,
        name: String,
        auth: RedisConnectionInfo,
    },
}

/// How to reach Redis and speak to it.
pub struct Target {
    place: Place,
    redis: RedisConnectionInfo,
    tls: Option<Tls>,
    connect_timeout: Duration,
}

struct Tls {
    config: Arc<rustls::ClientConfig>,
    servername: Option<String>,
}

impl Target {
    /// Checks the settings; the error names what is wrong, never a password.
    pub fn new(config: &ClusterConfig) -> Result<Self, String> {
        let connect_timeout = Duration::from_secs(2);
        let (place, redis, url_tls) = match &config.sentinel {
            Some(s) => {
                let sentinels = s
                    .sentinels
                    .iter()
                    .map(|hp| {
                        host_port(hp).ok_or_else(|| {
                            format!("cluster.redis.sentinels: '{hp}' is not host:port")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let mut redis = RedisConnectionInfo::default().set_db(s.db);
                if let Some(user) = &s.username {
                    redis = redis.set_username(user);
                }
                if let Some(password) = &s.password {
                    redis = redis.set_password(password);
                }
                let mut auth = RedisConnectionInfo::default();
                if let Some(user) = &s.sentinel_username {
                    auth = auth.set_username(user);
                }
                if let Some(password) = &s.sentinel_password {
                    auth = auth.set_password(password);
                }
                let place = Place::Sentinel {
                    sentinels,
                    name: s.name.clone(),
                    auth,
                };
                (place, redis, false)
            }
            None => {
                let info = config.redis_url.as_str().into_connection_info().map_err(|_| {
                    "cluster.redis must be a Redis URL: redis://[user:password@]host:port[/db] or rediss://...".to_string()
                })?;
                let (host, port, tls) = match info.addr() {
                    ConnectionAddr::Tcp(host, port) => (host.clone(), *port, false),
                    ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port, true),
                    _ => return Err("cluster.redis must be a redis:// or rediss:// URL".into()),
                };
                (
                    Place::Direct { host, port },
                    info.redis_settings().clone(),
                    tls,
                )
            }
        };
        let tls = match (&config.tls, url_tls) {
            (Some(tls), _) => Some(tls_settings(tls)?),
            (None, true) => Some(tls_settings(&TlsConfig {
                reject_unauthorized: true,
                ..TlsConfig::default()
            })?),
            (None, false) => None,
        };
        Ok(Self {
            place,
            // The gateway says who it is in CLIENT LIST; a user whose ACL forbids
            // CLIENT SETINFO is then refused nothing.
            redis: redis.set_lib_name("wa-gateway", env!("CARGO_PKG_VERSION")),
            tls,
            connect_timeout,
        })
    }

    /// One connection, ready for commands: the master found (through Sentinel if so),
    /// reached, TLS agreed, the user authenticated and the database chosen.
    pub async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, Failure> {
        match &self.place {
            Place::Direct { host, port } => {
                self.open(host, *port, &self.redis, response_timeout).await
            }
            Place::Sentinel {
                sentinels,
                name,
                auth,
            } => {
                let (host, port) = self.master(sentinels, name, auth).await?;
                let mut con = self
                    .open(&host, port, &self.redis, response_timeout)
                    .await?;
                // Right after a failover a Sentinel may still name the old master, now
                // a replica: only a master takes the gateway's writes.
                let role: Vec<redis::Value> = redis::cmd("ROLE")
                    .query_async(&mut con)
                    .await
                    .map_err(|e| Failure::of(&e))?;
                match role.first() {
                    Some(redis::Value::BulkString(r)) if r == b"master" => Ok(con),
                    _ => Err(Failure::transient(format!(
                        "{host}:{port}, named master by Sentinel, is not a master (yet)"
                    ))),
                }
            }
        }
    }

    /// Asks the Sentinels in turn where the master is.
    async fn master(
        &self,
        sentinels: &[(String, u16)],
        name: &str,
        auth: &RedisConnectionInfo,
    ) -> Result<(String, u16), Failure> {
        let mut last = Failure::transient("no Sentinel was given");
        for (host, port) in sentinels {
            let answer = async {
                let mut con = self.open(host, *port, auth, self.connect_timeout).await?;
                let addr: Option<(String, String)> = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(name)
                    .query_async(&mut con)
                    .await
                    .map_err(|e| Failure::of(&e))?;
                let (ip, port) = addr.ok_or_else(|| {
                    Failure::transient(format!(
                        "Sentinel {host}:{port} knows no master named '{name}'"
                    ))
                })?;
                let port = port
                    .parse()
                    .map_err(|_| Failure::transient("Sentinel gave no port"))?;
                Ok::<_, Failure>((ip, port))
            };
            match answer.await {
                Ok(found) => return Ok(found),
                // A refusal that retrying cannot fix is the deployment's to fix.
                Err(failure) if failure.cause.is_some() => return Err(failure),
                Err(failure) => {
                    last = Failure::transient(format!("Sentinel {host}:{port}: {}", failure.detail))
                }
            }
        }
        Err(last)
    }

    async fn open(
        &self,
        host: &str,
        port: u16,
        info: &RedisConnectionInfo,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, Failure> {
        let addrs = resolve(host, port).await?;
        let tcp = timeout(self.connect_timeout, connect_any(&addrs))
            .await
            .map_err(|_| Failure::transient(format!("{host}:{port}: connection timed out")))?
            .map_err(|e| Failure::transient(format!("{host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let config = AsyncConnectionConfig::new().set_response_timeout(Some(response_timeout));
        match &self.tls {
            None => handshake(info, tcp, config).await,
            Some(tls) => {
                let name = tls.servername.as_deref().unwrap_or(host);
                let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(|_| {
                        Failure::fatal(
                            Cause::Tls,
                            format!("'{name}' is not a valid TLS server name"),
                        )
                    })?;
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let accepted = async {
                    let mut stream = connector.connect(server_name, tcp).await?;
                    first_reply(&mut stream).await?;
                    Ok::<_, std::io::Error>(stream)
                };
                let stream = timeout(self.connect_timeout, accepted)
                    .await
                    .map_err(|_| {
                        Failure::transient(format!("{host}:{port}: TLS handshake timed out"))
                    })?
                    .map_err(|e| tls_failure(host, port, e))?;
                handshake(info, stream, config).await
            }
        }
    }
}

/// One PING and its one-line reply (an error like NOAUTH will do): with TLS 1.3 a
/// server that refuses the client's certificate (or its absence) says so only after
/// the handshake, and then the refusal is seen here, as a TLS error, rather than as a
/// broken connection later.
async fn first_reply<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
    stream.flush().await?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if stream.read(&mut byte).await? == 0 || line.len() > 4096 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        line.push(byte[0]);
    }
    Ok(())
}

/// AUTH, SELECT and the client's name over a stream made here; the connection's
/// driver runs on the runtime until the last clone of the connection is dropped.
async fn handshake<S>(
    info: &RedisConnectionInfo,
    stream: S,
    config: AsyncConnectionConfig,
) -> Result<MultiplexedConnection, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (con, driver) = MultiplexedConnection::new_with_config(info, stream, config)
        .await
        .map_err(|e| Failure::of(&e))?;
    tokio::spawn(driver);
    Ok(con)
}

/// Whether a TLS error (a certificate rejected, by either side) is behind `error`.
fn tls_inside(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(error);
    while let Some(e) = at {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
        }
        at = e.source();
    }
    false
}

fn tls_failure(host: &str, port: u16, error: std::io::Error) -> Failure {
    let rejected = error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    let detail = format!("{host}:{port}: TLS: {error}");
    if rejected {
        Failure::fatal(Cause::Tls, detail)
    } else {
        Failure::transient(detail)
    }
}

async fn connect_any(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// The addresses of `host`. A name that does not exist (`EAI_NONAME`, `EAI_NODATA`)
/// is `Cause::Dns`; a resolver that cannot answer for now (`EAI_AGAIN`: a restarting
/// container, a DNS server away) is worth trying again.
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Failure> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let name = host.to_string();
    let looked_up = tokio::task::spawn_blocking(move || getaddrinfo(&name, port))
        .await
        .map_err(|_| Failure::transient("name resolution did not finish"))?;
    looked_up.map_err(|(code, text)| {
        let detail = format!("{host}: {text}");
        if code == libc::EAI_NONAME || code == libc::EAI_NODATA {
            Failure::fatal(Cause::Dns, detail)
        } else {
            Failure::transient(detail)
        }
    })
}

/// The C resolver, for its error code: the standard library's lookup keeps only the
/// message, which differs between C libraries.
fn getaddrinfo(host: &str, port: u16) -> Result<Vec<SocketAddr>, (i32, String)> {
    let c_host =
        CString::new(host).map_err(|_| (libc::EAI_NONAME, "invalid host name".to_string()))?;
    // SAFETY: an all-zero `addrinfo` is its documented "no hints" value; the fields
    // set after are plain integers.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_family = libc::AF_UNSPEC;
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `c_host` is a NUL-terminated string alive for the call, `hints` a valid
    // addrinfo, `list` a valid place for the result; no service is asked for.
    let code = unsafe { libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut list) };
    if code != 0 {
        // SAFETY: gai_strerror returns a pointer to a static NUL-terminated string.
        let text = unsafe { std::ffi::CStr::from_ptr(libc::gai_strerror(code)) };
        return Err((code, text.to_string_lossy().into_owned()));
    }
    let mut addrs = Vec::new();
    let mut at = list;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getaddrinfo returned, not yet freed; its
        // `ai_addr` points to `ai_addrlen` bytes of the family `ai_family` says.
        let (entry, ip) = unsafe {
            let entry = &*at;
            let ip = match entry.ai_family {
                libc::AF_INET if !entry.ai_addr.is_null() => {
                    let sin = &*(entry.ai_addr as *const libc::sockaddr_in);
                    Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
                }
                libc::AF_INET6 if !entry.ai_addr.is_null() => {
                    let sin6 = &*(entry.ai_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            };
            (entry, ip)
        };
        if let Some(ip) = ip {
            let addr = SocketAddr::new(ip, port);
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        at = entry.ai_next;
    }
    // SAFETY: `list` came from a successful getaddrinfo and is freed once, here.
    unsafe { libc::freeaddrinfo(list) };
    Ok(addrs)
}

fn tls_settings(tls: &TlsConfig) -> Result<Tls, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cluster.tls: {e}"))?;
    let builder = if !tls.reject_unauthorized {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert =
                        cert.map_err(|_| "cluster.tls.ca is not PEM certificates".to_string())?;
                    roots.add(cert).map_err(|e| {
                        format!("cluster.tls.ca holds a certificate that cannot be used: {e}")
                    })?;
                }
                if roots.is_empty() {
                    return Err("cluster.tls.ca holds no PEM certificate".into());
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| "cluster.tls.cert is not PEM certificates".to_string())?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|_| "cluster.tls.key is not a PEM private key".to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("cluster.tls.cert and key cannot be used together: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("cluster.tls needs both cert and key for a client certificate".into()),
    };
    Ok(Tls {
        config: Arc::new(config),
        servername: tls.servername.clone(),
    })
}

/// `rejectUnauthorized: false`: any certificate is taken (signatures still checked).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One connection to Redis that is made again when it breaks: at once the first
/// time, then with a backoff doubling up to `max_backoff` while attempts fail.
pub struct Link {
    target: Arc<Target>,
    response_timeout: Duration,
    max_backoff: Duration,
    current: Mutex<Option<MultiplexedConnection>>,
    /// One attempt at a time; the others wait for its outcome.
    attempt: tokio::sync::Mutex<Backoff>,
}

#[derive(Default)]
struct Backoff {
    next_try: Option<Instant>,
    delay: Duration,
    last: Option<Failure>,
}

impl Link {
    pub fn new(target: Arc<Target>, response_timeout: Duration, max_backoff: Duration) -> Self {
        Self {
            target,
            response_timeout,
            max_backoff,
            current: Mutex::new(None),
            attempt: tokio::sync::Mutex::new(Backoff::default()),
        }
    }

    /// The connection, made now if there is none (unless the backoff says wait: then
    /// the last failure).
    pub async fn get(&self) -> Result<MultiplexedConnection, Failure> {
        if let Some(con) = lock(&self.current).clone() {
            return Ok(con);
        }
        let mut backoff = self.attempt.lock().await;
        if let Some(con) = lock(&self.current).clone() {
            return Ok(con);
        }
        if let (Some(at), Some(last)) = (backoff.next_try, &backoff.last) {
            if Instant::now() < at {
                return Err(last.clone());
            }
        }
        match self.target.connect(self.response_timeout).await {
            Ok(con) => {
                *backoff = Backoff::default();
                *lock(&self.current) = Some(con.clone());
                Ok(con)
            }
            Err(failure) => {
                backoff.delay = (backoff.delay * 2)
                    .max(Duration::from_millis(100))
                    .min(self.max_backoff);
                backoff.next_try = Some(Instant::now() + backoff.delay);
                backoff.last = Some(failure.clone());
                Err(failure)
            }
        }
    }

    /// A command failed: a connection that broke (or, after a failover, one to a
    /// server that is no master any more) is dropped, to be made again.
    pub fn failed(&self, error: &RedisError) {
        let broken = error.is_io_error()
            || error.is_connection_dropped()
            || error.is_timeout()
            || error.is_unrecoverable_error()
            || matches!(
                error.kind(),
                ErrorKind::Server(ServerErrorKind::ReadOnly)
                    | ErrorKind::Server(ServerErrorKind::MasterDown)
            );
        if broken {
            *lock(&self.current) = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_reads_names_ipv4_and_bracketed_ipv6() {
        assert_eq!(
            host_port("sentinel-1:26379"),
            Some(("sentinel-1".into(), 26379))
        );
        assert_eq!(
            host_port("10.0.0.5:26379"),
            Some(("10.0.0.5".into(), 26379))
        );
        assert_eq!(host_port("[::1]:26379"), Some(("::1".into(), 26379)));
        assert_eq!(host_port("no-port"), None);
        assert_eq!(host_port(":26379"), None);
    }

    #[tokio::test]
    async fn a_name_that_does_not_exist_is_a_dns_cause_and_an_ip_needs_no_lookup() {
        let failure = resolve("no-such-host.invalid", 6379).await.unwrap_err();
        assert_eq!(failure.cause, Some(Cause::Dns), "{}", failure.detail);
        assert_eq!(resolve("127.0.0.1", 1).await.unwrap().len(), 1);
        assert!(!resolve("localhost", 1).await.unwrap().is_empty());
    }

    #[test]
    fn refusals_that_retrying_cannot_fix_are_told_apart() {
        let auth = RedisError::from((
            ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert_eq!(Failure::of(&auth).cause, Some(Cause::Auth));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(Failure::of(&io).cause, None);
    }
}
