//! The HTTP upgrade that turns a connection into a WebSocket: path and `Origin`
//! checks, the client's IP, and the 101 answer. The standalone server reads the
//! request itself; attached to a Node server, Node has parsed it already.

use std::net::IpAddr;

use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::handshake::server::{
    create_response, write_response, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::http::{HeaderMap, StatusCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::Transport;
use crate::config::Config;

pub type Socket = WebSocketStream<Transport>;

/// Small reads keep idle sessions cheap; larger frames grow the buffer as needed.
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

pub fn websocket_config(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(config.max_payload))
        .max_frame_size(Some(config.max_payload))
}

/// Completes the upgrade; returns the WebSocket and the client's IP, or None when
/// the request was refused (already answered) or the connection failed.
#[allow(clippy::result_large_err)] // the upgrade callback's error type is tungstenite's
pub async fn accept(
    transport: Transport,
    upgrade: Upgrade,
    peer: IpAddr,
    config: &Config,
) -> Option<(Socket, String)> {
    let mut ip = peer.to_canonical().to_string();
    let ws_config = Some(websocket_config(config));
    match upgrade {
        Upgrade::Unread => {
            let gate = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
                check(config, request).map_err(refusal)?;
                ip = client_ip(request.headers(), peer, config.trust_proxy);
                Ok(response)
            };
            let ws = tokio_tungstenite::accept_hdr_async_with_config(transport, gate, ws_config)
                .await
                .ok()?;
            Some((ws, ip))
        }
        Upgrade::Parsed { request, head } => {
            let mut transport = transport;
            let answer = check(config, &request)
                .and_then(|()| create_response(&request).map_err(|_| StatusCode::BAD_REQUEST));
            let response = match answer {
                Ok(response) => response,
                Err(status) => {
                    let reply = format!(
                        "HTTP/1.1 {} {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                        status.as_u16(),
                        status.canonical_reason().unwrap_or("")
                    );
                    let _ = transport.write_all(reply.as_bytes()).await;
                    let _ = transport.shutdown().await;
                    return None;
                }
            };
            let mut bytes = Vec::with_capacity(256);
            write_response(&mut bytes, &response).ok()?;
            transport.write_all(&bytes).await.ok()?;
            ip = client_ip(request.headers(), peer, config.trust_proxy);
            let ws = WebSocketStream::from_partially_read(transport, head, Role::Server, ws_config)
                .await;
            Some((ws, ip))
        }
    }
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

fn refusal(status: StatusCode) -> ErrorResponse {
    let mut reply = ErrorResponse::new(None);
    *reply.status_mut() = status;
    reply
}

/// Proxy headers name the client only when the operator says a trusted proxy sets
/// them; otherwise anyone could claim any address.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trust_proxy: bool) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let forwarded = trust_proxy
        .then(|| {
            header("x-forwarded-for")
                .and_then(|list| list.split(',').next())
                .or_else(|| header("x-real-ip"))
                .map(str::trim)
                .filter(|ip| !ip.is_empty())
        })
        .flatten();
    forwarded.map_or_else(|| peer.to_canonical().to_string(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    #[test]
    fn proxy_headers_count_only_when_trusted() {
        let peer: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(client_ip(&headers, peer, true), "10.0.0.2");
        headers.insert("x-real-ip", HeaderValue::from_static("198.51.100.7"));
        assert_eq!(client_ip(&headers, peer, true), "198.51.100.7");
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static(" 203.0.113.9 , 10.0.0.1"),
        );
        assert_eq!(client_ip(&headers, peer, true), "203.0.113.9");
        assert_eq!(client_ip(&headers, peer, false), "10.0.0.2");
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
}
