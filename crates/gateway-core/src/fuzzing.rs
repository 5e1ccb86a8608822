//! Entry points for the fuzz targets in `fuzz/` (`cargo +nightly fuzz run <target>`):
//! the code that reads what peers and media servers send. Built only with the
//! `fuzzing` feature. Each function panics only when an invariant breaks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use tokio_tungstenite::tungstenite::http::HeaderMap;

use crate::config::{Config, Dialect};
use crate::media::{is_public_ip, MediaKind, MediaLoader, MediaPolicy};
use crate::net::handshake::{answer, client_addr, parse_request_head};
use crate::net::outgoing::Outgoing;
use crate::protocol::{self, media_frame, MediaCommand, SendKind};

/// A frame's text as an extension sends it, in any of the three dialects.
pub fn inbound_frame(text: &str) {
    let _ = protocol::parse(text);
}

/// Bytes as read from a client's socket, split into reads at the given points.
pub fn frame_reader(limit: u16, cuts: &[u8], bytes: &[u8]) {
    let limit = usize::from(limit);
    let cuts: Vec<usize> = cuts.iter().map(|&c| usize::from(c)).collect();
    let (messages, _) = crate::net::reader::read_all(limit, &cuts, bytes);
    for message in messages {
        if let crate::net::reader::Owned::Text(text) = message {
            assert!(text.len() <= limit.max(1) * 3, "a message over the limit");
        }
    }
}

/// An HTTP request head as a client sends it to the standalone port.
pub fn request_head(bytes: &[u8]) {
    let config = Config {
        allowed_origins: Some(vec!["chrome-extension://abc".into()]),
        ..Config::default()
    };
    if let Ok(Some((request, len))) = parse_request_head(bytes) {
        assert!(len <= bytes.len());
        let _ = answer(&request, &config);
        let peer = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(client_addr(request.headers(), peer, false), peer);
        let _ = client_addr(request.headers(), peer, true);
    }
    let _ = client_addr(&HeaderMap::new(), IpAddr::V6(Ipv6Addr::LOCALHOST), true);
}

/// An address and a URL: the media address policy.
pub fn address_policy(octets: [u8; 16], url: &str) {
    let v6 = Ipv6Addr::from(octets);
    let v4 = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    // An IPv4 address wrapped in IPv6 gets the verdict of the address itself.
    assert_eq!(
        is_public_ip(IpAddr::V6(v4.to_ipv6_mapped())),
        is_public_ip(IpAddr::V4(v4))
    );
    let _ = is_public_ip(IpAddr::V6(v6));
    if let Ok(url) = reqwest::Url::parse(url) {
        crate::media::check_url_for_fuzzing(&url);
    }
}

/// A `data:` URL as a caller passes it: if accepted, it is passed on unchanged, with a
/// plain `type/subtype` MIME type, and the command carrying it is exactly valid JSON.
pub fn data_url(kind: u8, source: &str) {
    static LOADER: OnceLock<(tokio::runtime::Runtime, MediaLoader)> = OnceLock::new();
    let (rt, loader) = LOADER.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let policy = MediaPolicy {
            max_bytes: 1 << 20,
            file_roots: Vec::new(),
            allow_private_hosts: false,
            fetch_timeout: std::time::Duration::from_millis(1),
        };
        let loader = rt
            .block_on(async { MediaLoader::new(policy) })
            .expect("a loader");
        (rt, loader)
    });
    let (media_kind, send_kind) = match kind % 3 {
        0 => (MediaKind::Image, SendKind::Image),
        1 => (MediaKind::Video, SendKind::Video),
        _ => (MediaKind::Document, SendKind::Document),
    };
    let source = format!("data:{source}");
    let Ok(media) = rt.block_on(loader.load(media_kind, source.as_str())) else {
        return;
    };
    assert_eq!(
        media.data_url,
        source.trim(),
        "a data URL is passed on unchanged"
    );
    let (kind_part, sub) = media.mime_type.split_once('/').expect("type/subtype");
    assert!(
        !kind_part.is_empty() && !sub.is_empty() && !media.mime_type.contains([';', ',', '"', ' '])
    );
    let command = MediaCommand {
        kind: send_kind,
        request_id: "r",
        phone_number: "+1234567890",
        caption: "c",
        mime_type: &media.mime_type,
        document_name: None,
    };
    let mut out = Outgoing::default();
    out.extend([media_frame(
        &command,
        media.data_url.clone(),
        Dialect::Compat,
    )]);
    let wire = out.collect_for_fuzzing();
    let start = match wire[1] {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let parsed: serde_json::Value = serde_json::from_slice(&wire[start..]).expect("valid JSON");
    assert_eq!(parsed["data"]["dataUrl"], media.data_url.as_str());
    assert_eq!(parsed["data"]["mimeType"], media.mime_type.as_str());
    // phoneNumber, caption, mimeType, <kind>DataUrl and dataUrl: nothing more.
    assert_eq!(parsed["data"].as_object().map(|o| o.len()), Some(5));
}
