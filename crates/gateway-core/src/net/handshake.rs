//! The HTTP upgrade that turns a connection into a WebSocket: path and `Origin`
//! checks, the client's IP, and the 101 answer. The standalone server reads the
//! request itself (a plain HTTP request gets 426); attached to a Node server, Node has
//! parsed it already.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::server::{create_response, write_response, Request};
use tokio_tungstenite::tungstenite::http::{HeaderMap, StatusCode, Version};

use super::socket::Socket;
use super::Transport;
use crate::config::Config;
use crate::state::pending_auth::{AuthSlot, PendingAuth};

/// What the standalone server reads of a request head at a time.
const READ_BUFFER: usize = 256;

/// How the upgrade request reaches the gateway.
pub enum Upgrade {
    /// Nothing read yet: the gateway reads and answers the request itself.
    Unread,
    /// Node parsed the request; `head` holds what the client sent after it.
    Parsed {
        request: Box<Request>,
        head: Vec<u8>,
    },
}

/// Largest request head the standalone server reads; browsers send well under 2 KiB.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// An upgraded connection, not yet authenticated.
pub struct Accepted {
    pub ws: Socket,
    /// The client's address as the API shows it (after `trustProxy`).
    pub ip: String,
    /// Its place among the connections pending auth, held until auth ends.
    pub slot: AuthSlot,
}

/// An upgrade answered with an HTTP error status: what the debug log says of it.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    /// The request's path without its query (which may carry secrets), cut to
    /// `MAX_LOGGED_PATH`; `None` when the request could not be read.
    pub path: Option<String>,
    /// The client's address (after `trustProxy`).
    pub addr: IpAddr,
}

/// Longest part of a refused request's path the debug log shows.
const MAX_LOGGED_PATH: usize = 100;

impl Refused {
    fn of(status: StatusCode, request: Option<&Request>, addr: IpAddr) -> Self {
        let path = request.map(|r| {
            let path = r.uri().path();
            match path.char_indices().nth(MAX_LOGGED_PATH) {
                Some((cut, _)) => format!("{}...", &path[..cut]),
                None => path.to_string(),
            }
        });
        Self {
            status: status.as_u16(),
            path,
            addr,
        }
    }
}

/// Completes the upgrade, or answers the request with a refusal (`Err(Some)`); `Err(None)`
/// when the connection failed or the client left.
pub async fn accept(
    transport: Transport,
    upgrade: Upgrade,
    peer: IpAddr,
    config: &Config,
    pending: &Arc<PendingAuth>,
) -> Result<Accepted, Option<Refused>> {
    let mut transport = transport;
    let (request, head) = match upgrade {
        Upgrade::Parsed { request, head } => (request, head),
        Upgrade::Unread => match read_request(&mut transport).await {
            Ok(Some(read)) => read,
            Ok(None) => return Err(None),
            Err(status) => {
                refuse(transport, status).await;
                return Err(Some(Refused::of(status, None, peer.to_canonical())));
            }
        },
    };
    let addr = client_addr(request.headers(), peer, config.trust_proxy);
    let answer = if wants_websocket(&request) {
        check(config, &request)
            .and_then(|()| create_response(&request).map_err(|_| StatusCode::BAD_REQUEST))
    } else {
        Err(StatusCode::UPGRADE_REQUIRED)
    };
    let response = match answer {
        Ok(response) => response,
        Err(status) => {
            refuse(transport, status).await;
            return Err(Some(Refused::of(status, Some(&request), addr)));
        }
    };
    // Without trustProxy a loopback peer is usually a local reverse proxy speaking for
    // every extension: only the total cap applies to it.
    let per_ip = config.trust_proxy || !addr.is_loopback();
    let slot = match pending.admit(addr, per_ip) {
        Ok(slot) => slot,
        Err(_) => {
            crate::metrics::auth_failed(crate::metrics::AuthFailure::PreAuthLimit);
            let status = StatusCode::SERVICE_UNAVAILABLE;
            refuse(transport, status).await;
            return Err(Some(Refused::of(status, Some(&request), addr)));
        }
    };
    let mut bytes = Vec::with_capacity(256);
    write_response(&mut bytes, &response).map_err(|_| None)?;
    transport.write_all(&bytes).await.map_err(|_| None)?;
    Ok(Accepted {
        ws: Socket::new(transport, head),
        ip: addr.to_string(),
        slot,
    })
}

/// Answers a request the gateway does not take, and closes.
async fn refuse(mut transport: Transport, status: StatusCode) {
    let upgrade = if status == StatusCode::UPGRADE_REQUIRED {
        "Upgrade: websocket\r\n"
    } else {
        ""
    };
    let reply = format!(
        "HTTP/1.1 {} {}\r\n{upgrade}Connection: close\r\nContent-Length: 0\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let _ = transport.write_all(reply.as_bytes()).await;
    let _ = transport.shutdown().await;
}

/// A plain HTTP request (no `Upgrade: websocket`) is told to upgrade rather than dropped.
fn wants_websocket(request: &Request) -> bool {
    let upgrade = request.headers().get_all("upgrade");
    upgrade.iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
    })
}

/// Reads the standalone server's request head; `None` when the client leaves first.
/// The bytes after the head belong to the WebSocket.
async fn read_request(
    transport: &mut Transport,
) -> Result<Option<(Box<Request>, Vec<u8>)>, StatusCode> {
    // Read straight into the Vec (no stack chunk held across the await, which would
    // size every connection's task by it during a connect storm).
    let mut buf = Vec::with_capacity(READ_BUFFER * 2);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(READ_BUFFER * 2);
        }
        match transport.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
        if let Some((request, len)) = parse_request_head(&buf)? {
            return Ok(Some((request, buf[len..].to_vec())));
        }
    }
}

/// The request in `buf` and the length of its head, or None while it is incomplete.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<(Box<Request>, usize)>, StatusCode> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let request = request_of(&parsed).ok_or(StatusCode::BAD_REQUEST)?;
            Ok(Some((request, len)))
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_HEAD => Ok(None),
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        }
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

/// What the gateway would answer to an upgrade request, short of writing it: used by
/// the fuzz targets, which must find no request that makes it panic.
#[cfg(any(test, feature = "fuzzing"))]
pub fn answer(request: &Request, config: &Config) -> Result<(), StatusCode> {
    if !wants_websocket(request) {
        return Err(StatusCode::UPGRADE_REQUIRED);
    }
    check(config, request)?;
    create_response(request)
        .map(drop)
        .map_err(|_| StatusCode::BAD_REQUEST)
}

fn request_of(parsed: &httparse::Request<'_, '_>) -> Option<Box<Request>> {
    let version = if parsed.version? >= 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let mut builder = Request::builder()
        .method(parsed.method?)
        .uri(parsed.path?)
        .version(version);
    for header in parsed.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    builder.body(()).ok().map(Box::new)
}

/// Rebuilds an upgrade request Node parsed, from its method, URL and raw header list
/// (`[name, value, name, value, ...]`, as `req.rawHeaders`).
pub fn parsed_request(method: &str, url: &str, raw_headers: &[String]) -> Option<Box<Request>> {
    let mut builder = Request::builder().method(method).uri(url);
    for pair in raw_headers.chunks_exact(2) {
        builder = builder.header(pair[0].as_str(), pair[1].as_str());
    }
    builder.body(()).ok().map(Box::new)
}

/// The gateway's own rules for an upgrade request: its path and, when configured,
/// its `Origin`.
fn check(config: &Config, request: &Request) -> Result<(), StatusCode> {
    if request.uri().path() != config.path {
        return Err(StatusCode::NOT_FOUND);
    }
    if let Some(allowed) = &config.allowed_origins {
        let origin = request
            .headers()
            .get("origin")
            .and_then(|o| o.to_str().ok());
        if !origin.is_some_and(|o| allowed.iter().any(|a| a == o)) {
            crate::metrics::auth_failed(crate::metrics::AuthFailure::Origin);
            return Err(StatusCode::FORBIDDEN);
        }
    }
    Ok(())
}

/// Proxy headers name the client only when the operator says a trusted proxy sets
/// them; otherwise anyone could claim any address. `X-Real-IP` is set by the proxy
/// itself; of `X-Forwarded-For` only the right-most entry was added by the proxy, the
/// ones before it are whatever the client sent. A value that is not an IP address is
/// skipped for the next source.
pub fn client_addr(headers: &HeaderMap, peer: IpAddr, trust_proxy: bool) -> IpAddr {
    let peer = peer.to_canonical();
    if !trust_proxy {
        return peer;
    }
    let real_ip = headers.get("x-real-ip").and_then(|v| v.to_str().ok());
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok());
    let forwarded_last = forwarded.and_then(|list| list.rsplit(',').next());
    [real_ip, forwarded_last]
        .into_iter()
        .flatten()
        .find_map(ip_of)
        .map_or(peer, |ip| ip.to_canonical())
}

/// An address as proxies write it: bare, or with a port (`203.0.113.9:4711`, `[2001:db8::1]:443`).
fn ip_of(value: &str) -> Option<IpAddr> {
    let value = value.trim();
    value
        .parse()
        .ok()
        .or_else(|| value.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_ip(headers: &HeaderMap, peer: IpAddr, trust_proxy: bool) -> String {
        client_addr(headers, peer, trust_proxy).to_string()
    }
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    #[test]
    fn proxy_headers_count_only_when_trusted() {
        let peer: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(client_ip(&headers, peer, true), "10.0.0.2");
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static(" 203.0.113.9 , 10.0.0.1"),
        );
        assert_eq!(
            client_ip(&headers, peer, true),
            "10.0.0.1",
            "the right-most entry is the proxy's"
        );
        headers.insert("x-real-ip", HeaderValue::from_static("198.51.100.7"));
        assert_eq!(
            client_ip(&headers, peer, true),
            "198.51.100.7",
            "X-Real-IP first"
        );
        assert_eq!(client_ip(&headers, peer, false), "10.0.0.2");
    }

    #[test]
    fn proxy_values_that_are_not_addresses_fall_through() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let headers = |real: Option<&'static str>, forwarded: &[&'static str]| {
            let mut map = HeaderMap::new();
            if let Some(real) = real {
                map.insert("x-real-ip", HeaderValue::from_static(real));
            }
            for value in forwarded {
                map.append("x-forwarded-for", HeaderValue::from_static(value));
            }
            map
        };
        let ip = |h: HeaderMap| client_ip(&h, peer, true);
        assert_eq!(
            ip(headers(
                Some("<img src=x onerror=alert(1)>"),
                &["203.0.113.9"]
            )),
            "203.0.113.9"
        );
        assert_eq!(
            ip(headers(Some("unknown"), &["198.51.100.1, <script>"])),
            "10.0.0.2"
        );
        assert_eq!(
            ip(headers(None, &["1.1.1.1", "2.2.2.2, 3.3.3.3"])),
            "3.3.3.3",
            "the last header's last entry"
        );
        assert_eq!(ip(headers(None, &["203.0.113.9:4711"])), "203.0.113.9");
        assert_eq!(ip(headers(Some("[2001:db8::1]:443"), &[])), "2001:db8::1");
        assert_eq!(ip(headers(Some("::ffff:192.0.2.1"), &[])), "192.0.2.1");
        assert_eq!(ip(headers(Some(""), &[""])), "10.0.0.2");
    }

    #[test]
    fn checks_path_and_origin() {
        let config = Config {
            allowed_origins: Some(vec!["chrome-extension://abc".into()]),
            ..Config::default()
        };
        let request = |path: &str, origin: Option<&str>| {
            let mut builder = Request::builder().uri(path);
            if let Some(o) = origin {
                builder = builder.header("origin", o);
            }
            builder.body(()).unwrap()
        };
        assert_eq!(
            check(
                &config,
                &request("/wa-ext-ws", Some("chrome-extension://abc"))
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &config,
                &request("/wa-ext-ws?v=1", Some("chrome-extension://abc"))
            ),
            Ok(())
        );
        assert_eq!(
            check(&config, &request("/other", Some("chrome-extension://abc"))),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            check(
                &config,
                &request("/wa-ext-ws", Some("https://evil.example"))
            ),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            check(&config, &request("/wa-ext-ws", None)),
            Err(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn a_refused_upgrade_is_logged_without_its_query_and_cut() {
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        let request = |uri: &str| Request::builder().uri(uri).body(()).unwrap();
        let refused = Refused::of(
            StatusCode::NOT_FOUND,
            Some(&request("/wrong?token=secret")),
            addr,
        );
        assert_eq!(refused.status, 404);
        assert_eq!(refused.path.as_deref(), Some("/wrong"));
        assert_eq!(refused.addr, addr);
        let long = format!("/{}", "a".repeat(300));
        let cut = Refused::of(StatusCode::FORBIDDEN, Some(&request(&long)), addr);
        assert_eq!(
            cut.path,
            Some(format!("/{}...", "a".repeat(MAX_LOGGED_PATH - 1)))
        );
        let unreadable = Refused::of(StatusCode::BAD_REQUEST, None, addr);
        assert_eq!(unreadable.path, None);
    }
}
