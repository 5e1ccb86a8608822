//! http(s) media: one bounded GET through the guarded client.

use std::error::Error as StdError;
use std::sync::Arc;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, Url};
use serde_json::json;

use super::address_policy::{check_literal_host, redirect_policy, GuardedResolver, Refusal};
use super::{
    encode_media, fetch_error, mime, not_allowed, not_media, too_large, Media, MediaKind,
    MediaPolicy,
};
use crate::error::{ErrorCode, GatewayError};

pub(super) fn build_client(allow_private: bool) -> Result<Client, GatewayError> {
    Client::builder()
        // An environment proxy would connect on our behalf and bypass the address checks.
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .redirect(redirect_policy(allow_private))
        .user_agent(concat!(
            "whatsapp-ws-extension-gateway/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| {
            GatewayError::new(
                ErrorCode::ServerError,
                format!("Cannot build the media HTTP client: {e}"),
                json!({}),
            )
        })
}

struct Fetched {
    body: Vec<u8>,
    content_type: Option<String>,
}

pub(super) async fn load(
    client: &Client,
    policy: &MediaPolicy,
    kind: MediaKind,
    url: &Url,
    source: &str,
) -> Result<Media, GatewayError> {
    // IP literals never reach the resolver, so the first URL is checked here.
    check_literal_host(url, policy.allow_private_hosts).map_err(|r| refusal_error(source, &r))?;
    let fetched = tokio::time::timeout(
        policy.fetch_timeout,
        fetch(client, url, source, policy.max_bytes),
    )
    .await
    .map_err(|_| {
        let ms = policy.fetch_timeout.as_millis();
        fetch_error(
            source,
            format!("Failed to fetch {source}: timed out after {ms} ms"),
            None,
        )
    })??;
    // The caller's URL names the file, never a redirect target: a media server must not
    // choose the name the extension saves it under (README "Migrating from v1").
    let file_name = super::file_name_from_url(url);
    let declared = fetched.content_type.as_deref();
    let candidates = [
        declared,
        mime::sniff(&fetched.body),
        file_name.as_deref().and_then(mime::from_file_name),
    ];
    let mime_type =
        mime::pick(kind, &candidates).ok_or_else(|| not_media(kind, source, declared))?;
    encode_media(fetched.body, mime_type, file_name).await
}

async fn fetch(
    client: &Client,
    url: &Url,
    source: &str,
    max_bytes: usize,
) -> Result<Fetched, GatewayError> {
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| request_error(source, &e))?;
    let status = response.status();
    if !status.is_success() {
        let code = status.as_u16();
        return Err(fetch_error(
            source,
            format!("Failed to fetch {source}: HTTP {code}"),
            Some(code),
        ));
    }
    let declared_len = response.content_length();
    if declared_len.is_some_and(|n| n > max_bytes as u64) {
        return Err(too_large(source, max_bytes));
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(mime::essence);
    let mut body = Vec::with_capacity(
        declared_len
            .map_or(64 * 1024, |n| n as usize)
            .min(max_bytes),
    );
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| request_error(source, &e))?
    {
        // Checked before appending, so no more than max_bytes is ever held.
        if chunk.len() > max_bytes - body.len() {
            return Err(too_large(source, max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched { body, content_type })
}

/// Our own refusals travel inside reqwest's error; find them by walking the chain.
fn request_error(source: &str, err: &reqwest::Error) -> GatewayError {
    let mut cause: &(dyn StdError + 'static) = err;
    loop {
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return refusal_error(source, refusal);
        }
        match cause.source() {
            Some(next) => cause = next,
            None => break,
        }
    }
    let what = if err.is_timeout() {
        "timed out".to_owned()
    } else {
        cause.to_string()
    };
    fetch_error(source, format!("Failed to fetch {source}: {what}"), None)
}

fn refusal_error(source: &str, refusal: &Refusal) -> GatewayError {
    match refusal {
        Refusal::NotPublic(reason) => not_allowed(
            source,
            format!("Refusing to fetch {source}: {reason}; set mediaAllowPrivateHosts: true to allow it"),
            reason,
        ),
        other => fetch_error(source, format!("Failed to fetch {source}: {other}"), None),
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::media::{test_loader, MediaLoader};

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    /// A one-route-per-request HTTP/1.1 server on 127.0.0.1; `handle` gets the path and the socket.
    async fn serve<F, Fut>(handle: F) -> String
    where
        F: Fn(String, TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = Arc::new(handle);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let path = String::from_utf8_lossy(&request)
                        .split(' ')
                        .nth(1)
                        .unwrap_or("/")
                        .to_owned();
                    handle(path, socket).await;
                });
            }
        });
        base
    }

    async fn reply(mut socket: TcpStream, status: &str, headers: &str, body: &[u8]) {
        let head = format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = socket.write_all(head.as_bytes()).await;
        let _ = socket.write_all(body).await;
    }

    fn loader_with_timeout(ms: u64) -> MediaLoader {
        let policy = MediaPolicy {
            max_bytes: 1024,
            file_roots: vec![],
            allow_private_hosts: true,
            fetch_timeout: Duration::from_millis(ms),
        };
        MediaLoader::new(policy).unwrap()
    }

    #[tokio::test]
    async fn fetches_with_content_type_and_file_name() {
        let base = serve(|_, s| reply(s, "200 OK", "Content-Type: image/png; q=1\r\n", PNG)).await;
        let media = test_loader(true, 1024, vec![])
            .load(MediaKind::Image, &format!("{base}/img/a%20b.png?x=1"))
            .await
            .unwrap();
        assert_eq!(media.mime_type, "image/png");
        assert_eq!(media.file_name.as_deref(), Some("a b.png"));
        assert_eq!(
            media.data_url,
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="
        );
    }

    #[tokio::test]
    async fn mime_falls_back_to_signature_then_extension() {
        let base = serve(|path, s| async move {
            match path.as_str() {
                "/octet.bin" => {
                    reply(
                        s,
                        "200 OK",
                        "Content-Type: application/octet-stream\r\n",
                        PNG,
                    )
                    .await
                }
                "/page.jpg" => reply(s, "200 OK", "", b"no signature").await,
                _ => reply(s, "200 OK", "Content-Type: text/html\r\n", b"<html></html>").await,
            }
        })
        .await;
        let loader = test_loader(true, 1024, vec![]);
        let load = |kind, path: &str| {
            let (loader, url) = (&loader, format!("{base}{path}"));
            async move { loader.load(kind, &url).await }
        };
        assert_eq!(
            load(MediaKind::Image, "/octet.bin")
                .await
                .unwrap()
                .mime_type,
            "image/png"
        );
        assert_eq!(
            load(MediaKind::Image, "/page.jpg").await.unwrap().mime_type,
            "image/jpeg"
        );
        assert_eq!(
            load(MediaKind::Document, "/octet.bin")
                .await
                .unwrap()
                .mime_type,
            "image/png"
        );
        assert_eq!(
            load(MediaKind::Document, "/index.html")
                .await
                .unwrap()
                .mime_type,
            "text/html"
        );
        let err = load(MediaKind::Video, "/index.html").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationError);
        assert!(
            err.message
                .contains("is not a video (Content-Type text/html)"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn non_2xx_is_a_fetch_error_with_status() {
        let base = serve(|_, s| reply(s, "404 Not Found", "", b"nope")).await;
        let url = format!("{base}/missing.png");
        let err = test_loader(true, 1024, vec![])
            .load(MediaKind::Image, &url)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::FetchError);
        assert_eq!(err.message, format!("Failed to fetch {url}: HTTP 404"));
        assert_eq!(err.details, json!({ "url": url, "statusCode": 404 }));
    }

    #[tokio::test]
    async fn too_large_by_content_length_or_by_stream() {
        let base = serve(|path, mut s| async move {
            if path == "/declared" {
                // Declares a huge body but sends none: refused from the header alone.
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n")
                    .await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            } else {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await;
                let chunk = format!("100\r\n{}\r\n", "x".repeat(256));
                while s.write_all(chunk.as_bytes()).await.is_ok() {}
            }
        })
        .await;
        let loader = test_loader(true, 1000, vec![]);
        for path in ["/declared", "/endless"] {
            let url = format!("{base}{path}");
            let err = loader.load(MediaKind::Document, &url).await.unwrap_err();
            assert_eq!(err.code, ErrorCode::FileTooLarge, "{path}");
            assert_eq!(err.details, json!({ "url": url, "maxSize": 1000 }));
        }
    }

    #[tokio::test]
    async fn follows_five_redirects_but_not_six() {
        let base = serve(|path, s| async move {
            let hops: u32 = path.trim_start_matches("/r/").parse().unwrap_or(0);
            if hops == 0 {
                reply(s, "200 OK", "Content-Type: image/png\r\n", PNG).await;
            } else {
                reply(
                    s,
                    "302 Found",
                    &format!("Location: /r/{}\r\n", hops - 1),
                    b"",
                )
                .await;
            }
        })
        .await;
        let loader = test_loader(true, 1024, vec![]);
        let media = loader
            .load(MediaKind::Image, &format!("{base}/r/5"))
            .await
            .unwrap();
        assert_eq!(
            media.file_name.as_deref(),
            Some("5"),
            "the file name comes from the caller's URL, not the redirect target"
        );
        let err = loader
            .load(MediaKind::Image, &format!("{base}/r/6"))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::FetchError);
        assert!(
            err.message.contains("too many redirects"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn whole_fetch_is_bounded_by_the_timeout() {
        let base = serve(|_, s| async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(s);
        })
        .await;
        let started = Instant::now();
        let url = format!("{base}/slow.png");
        let err = loader_with_timeout(300)
            .load(MediaKind::Image, &url)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(err.code, ErrorCode::FetchError);
        assert!(err.message.contains("timed out"), "{}", err.message);
        assert_eq!(err.details, json!({ "url": url }));
    }

    #[tokio::test]
    async fn network_errors_are_fetch_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x.png", listener.local_addr().unwrap());
        drop(listener);
        let err = test_loader(true, 1024, vec![])
            .load(MediaKind::Image, &url)
            .await
            .unwrap_err();
        assert_eq!(
            (err.code, err.details.clone()),
            (ErrorCode::FetchError, json!({ "url": url }))
        );
    }

    #[tokio::test]
    async fn private_hosts_are_refused_by_default() {
        // A live server proves the refusal is the policy, not a failed connection.
        let base = serve(|_, s| reply(s, "200 OK", "Content-Type: image/png\r\n", PNG)).await;
        let port = base.rsplit(':').next().unwrap().to_owned();
        let loader = test_loader(false, 1024, vec![]);
        for host in [
            "127.0.0.1",
            "localhost",
            "[::1]",
            "127.1",
            "[::ffff:127.0.0.1]",
        ] {
            let url = format!("http://{host}:{port}/a.png");
            let err = loader.load(MediaKind::Image, &url).await.unwrap_err();
            assert_eq!(
                err.code,
                ErrorCode::MediaNotAllowed,
                "{host}: {}",
                err.message
            );
            assert_eq!(err.details["url"], url.as_str());
            assert!(err.details["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()));
            assert!(
                err.message.contains("mediaAllowPrivateHosts: true"),
                "{}",
                err.message
            );
        }
        let err = loader
            .load(MediaKind::Image, &format!("http://127.0.0.1:{port}/x"))
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            format!(
                "Refusing to fetch http://127.0.0.1:{port}/x: host resolves to a non-public address (127.0.0.1); \
                 set mediaAllowPrivateHosts: true to allow it"
            )
        );
    }
}
