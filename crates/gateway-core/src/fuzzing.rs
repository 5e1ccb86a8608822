//! Entry points for the fuzz targets in `fuzz/` (`cargo +nightly fuzz run <target>`):
//! the code that reads what peers and media servers send. Built with the `fuzzing`
//! feature, and for this crate's tests, which run every committed seed of `fuzz/corpus/`
//! and mutations of them through the same functions (`cargo test` on stable, every CI
//! run). Each function takes the fuzzer's raw bytes and panics only when an invariant
//! breaks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use tokio_tungstenite::tungstenite::http::HeaderMap;

use crate::config::{Config, Dialect};
use crate::media::{is_public_ip, MediaKind, MediaLoader, MediaPolicy};
use crate::net::handshake::{answer, client_addr, parse_request_head};
use crate::net::outgoing::Outgoing;
use crate::protocol::{self, media_frame, MediaCommand, SendKind};

/// A fuzz target: what it does with the fuzzer's bytes.
pub type Target = fn(&[u8]);

/// Every target by the name of its file in `fuzz/fuzz_targets/` and corpus folder.
pub const TARGETS: [(&str, Target); 5] = [
    ("inbound_frame", inbound_frame),
    ("frame_reader", frame_reader),
    ("request_head", request_head),
    ("address_policy", address_policy),
    ("data_url", data_url),
];

/// A frame's text as an extension sends it, in any of the three dialects.
/// A result frame read the plain way must read as serde reads it.
pub fn inbound_frame(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = protocol::parse(&text);
    if matches!(parsed, protocol::Inbound::Result(_)) {
        assert_eq!(parsed, protocol::parse_wire(&text, usize::MAX), "{text}");
    }
}

/// Bytes as read from a client's socket, split into reads at the points the input starts
/// with: a 16-bit limit, a count of cuts (0-7), the cuts, then the bytes.
pub fn frame_reader(data: &[u8]) {
    let [high, low, count, rest @ ..] = data else {
        return;
    };
    let (cuts, bytes) = rest.split_at(usize::from(count % 8).min(rest.len()));
    let limit = usize::from(u16::from_be_bytes([*high, *low]));
    let cuts: Vec<usize> = cuts.iter().map(|&c| usize::from(c)).collect();
    let (messages, _) = crate::net::reader::read_all(limit, &cuts, bytes);
    for message in messages {
        if let crate::net::reader::Owned::Text(text) = message {
            // Binary messages come back as lossy text: each invalid byte may become 3.
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

/// An address and a URL: the media address policy. The input is 16 octets, then the URL.
pub fn address_policy(data: &[u8]) {
    let Some((octets, url)) = data.split_first_chunk::<16>() else {
        return;
    };
    let octets = *octets;
    let url = String::from_utf8_lossy(url);
    let v6 = Ipv6Addr::from(octets);
    let v4 = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    // An IPv4 address wrapped in IPv6 gets the verdict of the address itself.
    assert_eq!(
        is_public_ip(IpAddr::V6(v4.to_ipv6_mapped())),
        is_public_ip(IpAddr::V4(v4))
    );
    let _ = is_public_ip(IpAddr::V6(v6));
    if let Ok(url) = reqwest::Url::parse(&url) {
        crate::media::check_url_for_fuzzing(&url);
    }
}

/// A `data:` URL as a caller passes it (the input's first byte picks the kind of send):
/// if accepted, it is passed on unchanged, with a plain `type/subtype` MIME type, and the
/// command carrying it is exactly valid JSON.
pub fn data_url(data: &[u8]) {
    let Some((&kind, source)) = data.split_first() else {
        return;
    };
    let source = String::from_utf8_lossy(source);
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::TARGETS;

    /// How many mutations of each seed every test run tries: enough to leave the seeds'
    /// exact shapes (about 20,000 inputs in all), few enough for a debug build to take
    /// a second or two.
    const MUTATIONS_PER_SEED: usize = 12;

    /// A seed changed the way a fuzzer would: bytes flipped, inserted or removed, the
    /// end cut off, a stretch repeated, or another seed's tail spliced in.
    fn mutate(seed: &[u8], other: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
        let mut out = seed.to_vec();
        for _ in 0..rng.usize(1..=4) {
            let at = rng.usize(..=out.len());
            match rng.u8(..6) {
                0 if at < out.len() => out[at] ^= 1 << rng.u8(..8),
                1 => out.insert(at, rng.u8(..)),
                2 if at < out.len() => {
                    let end = rng.usize(at..=out.len());
                    out.drain(at..end);
                }
                3 => out.truncate(at),
                4 if at < out.len() => {
                    let end = rng.usize(at..=out.len().min(at + 64));
                    let stretch = out[at..end].to_vec();
                    out.splice(at..at, stretch);
                }
                _ => {
                    let from = rng.usize(..=other.len());
                    out.truncate(at);
                    out.extend_from_slice(&other[from..]);
                }
            }
        }
        out
    }

    /// Every committed seed of `fuzz/corpus/<target>/` and mutations of it hold the
    /// target's invariants: the fuzzer's findings stay fixed, and CI checks them on
    /// stable Rust without libFuzzer (fuzz/README.md).
    #[test]
    fn the_corpus_and_its_mutations_hold_every_invariant() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for (name, target) in TARGETS {
            let mut paths: Vec<_> = std::fs::read_dir(corpus.join(name))
                .unwrap_or_else(|error| panic!("fuzz/corpus/{name}: {error}"))
                .map(|entry| entry.expect("a corpus entry").path())
                .collect();
            paths.sort();
            let seeds: Vec<Vec<u8>> = paths
                .iter()
                .map(|path| std::fs::read(path).expect("a seed"))
                .collect();
            assert!(
                seeds.len() >= 10,
                "fuzz/corpus/{name} holds {} seeds",
                seeds.len()
            );
            for (index, seed) in seeds.iter().enumerate() {
                target(seed);
                let other = &seeds[(index + 1) % seeds.len()];
                for _ in 0..MUTATIONS_PER_SEED {
                    target(&mutate(seed, other, &mut rng));
                }
            }
        }
    }
}
