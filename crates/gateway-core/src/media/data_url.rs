//! `data:` URLs: their structure is checked and they are passed on unchanged, never
//! decoded.
//!
//! Only base64 data URLs are accepted: the extension side expects base64 and the URL is
//! passed on as given, so a percent-encoded one is refused rather than rewritten. The
//! payload must use the base64 alphabet; a trailing "..." is tolerated because the
//! guide's own examples cut their payloads short that way and must run unchanged (the
//! extension is the one that decodes).

use super::mime::is_mime_type;
use super::{offload, preview, too_large, Media, MediaKind, MediaText};
use crate::error::GatewayError;

/// `source` is the whole trimmed data URL.
pub(super) async fn load(
    kind: MediaKind,
    source: MediaText,
    max_bytes: usize,
) -> Result<Media, GatewayError> {
    let rest = &source[5..];
    let invalid = |message: String| GatewayError::validation("dataUrl", &preview(&source), message);
    let (header, payload) = rest
        .split_once(',')
        .ok_or_else(|| invalid("Data URL has no ',' before its data".into()))?;
    let mut params = header.split(';');
    let mime_type = params.next().unwrap_or("").trim().to_ascii_lowercase();
    if !is_mime_type(&mime_type) {
        return Err(invalid(format!(
            "Data URL must start with a MIME type such as image/png, got '{mime_type}'"
        )));
    }
    if !params
        .next_back()
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("base64"))
    {
        return Err(invalid(
            "Data URL must be base64-encoded (data:<mime>;base64,<data>)".into(),
        ));
    }
    if !kind.fits(&mime_type) {
        let (title, _, _) = kind.label();
        let wanted = if kind == MediaKind::Image {
            "an image/*"
        } else {
            "a video/*"
        };
        return Err(invalid(format!(
            "{title} data URL must have {wanted} MIME type, got {mime_type}"
        )));
    }
    let size = decoded_len(payload);
    if size == 0 {
        return Err(invalid("Data URL has no data".into()));
    }
    if size > max_bytes {
        return Err(too_large(&preview(&source), max_bytes));
    }
    let (start, payload_len) = (source.len() - payload.len(), payload.len());
    let data_url = source;
    let (data_url, alphabet_ok) = offload(payload_len, move || {
        let ok = is_base64_text(&data_url[start..]);
        (data_url, ok)
    })
    .await?;
    if !alphabet_ok {
        let message = "Data URL data is not base64".to_string();
        return Err(GatewayError::validation(
            "dataUrl",
            &preview(&data_url),
            message,
        ));
    }
    Ok(Media {
        data_url,
        mime_type,
        file_name: None,
    })
}

/// Standard base64 characters, then at most two '=' of padding, then optionally a
/// documentation-style "..." placeholder.
fn is_base64_text(payload: &str) -> bool {
    let text = payload.trim_end_matches('.');
    let data = text.trim_end_matches('=');
    // Branch-free per byte, in chunks, so that megabytes are checked at vector speed.
    let all_base64 = data
        .as_bytes()
        .chunks(64)
        .all(|chunk| chunk.iter().fold(true, |ok, &b| ok & is_base64_byte(b)));
    text.len() - data.len() <= 2 && all_base64
}

fn is_base64_byte(b: u8) -> bool {
    // `| 0x20` folds upper case onto lower case; no other byte lands in a..=z.
    ((b | 0x20).wrapping_sub(b'a') < 26) | (b.wrapping_sub(b'0') < 10) | (b == b'+') | (b == b'/')
}

/// Bytes that base64 text decodes to: three per four characters, less padding.
fn decoded_len(text: &str) -> usize {
    let data = text.trim_end_matches('=');
    data.len() / 4 * 3 + (data.len() % 4).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::media::test_loader;

    const PNG: &str = "data:image/png;base64,iVBORw0KGgo=";

    #[tokio::test]
    async fn valid_data_url_is_passed_on_as_given() {
        let loader = test_loader(false, 1024, vec![]);
        let media = loader.load(MediaKind::Image, PNG).await.unwrap();
        assert_eq!(
            media,
            Media {
                data_url: PNG.into(),
                mime_type: "image/png".into(),
                file_name: None
            }
        );
        let doc = "DATA:Application/PDF;name=a.pdf;base64,JVBERi0";
        let media = loader.load(MediaKind::Document, doc).await.unwrap();
        assert_eq!(
            (media.data_url.as_str(), media.mime_type.as_str()),
            (doc, "application/pdf")
        );
    }

    #[tokio::test]
    async fn wrong_or_broken_data_urls_are_validation_errors() {
        let loader = test_loader(false, 1024, vec![]);
        let cases = [
            (
                MediaKind::Image,
                "data:application/pdf;base64,JVBERi0=",
                "Image data URL must have an image/* MIME type, got application/pdf",
            ),
            (
                MediaKind::Video,
                "data:image/png;base64,iVBORw0KGgo=",
                "must have a video/* MIME type",
            ),
            (MediaKind::Image, "data:image/png;base64", "no ','"),
            (MediaKind::Image, "data:;base64,iVBO", "MIME type"),
            (MediaKind::Image, "data:png;base64,iVBO", "MIME type"),
            (MediaKind::Image, "data:image/png,%89PNG", "base64-encoded"),
            (MediaKind::Image, "data:image/png;base64,", "no data"),
            (MediaKind::Image, "data:image/png;base64,@@@", "not base64"),
            (
                MediaKind::Image,
                "data:image/png;base64,iVB*Rw0K",
                "not base64",
            ),
            (
                MediaKind::Image,
                "data:image/png;base64,AA===",
                "not base64",
            ),
        ];
        for (kind, url, expected) in cases {
            let err = loader.load(kind, url).await.unwrap_err();
            assert_eq!(err.code, ErrorCode::ValidationError, "{url}");
            assert!(err.message.contains(expected), "{url}: {}", err.message);
            assert_eq!(err.details["field"], "dataUrl");
            assert_eq!(err.details["value"], url);
        }
        let long = format!("data:text/plain;base64,{}", "A".repeat(100));
        let err = loader.load(MediaKind::Image, &long).await.unwrap_err();
        assert_eq!(err.details["value"], format!("{}...", &long[..64]));
    }

    #[tokio::test]
    async fn decoded_size_is_limited() {
        let loader = test_loader(false, 6, vec![]);
        assert!(loader
            .load(MediaKind::Image, "data:image/png;base64,AAAAAAAA")
            .await
            .is_ok());
        let over = "data:image/png;base64,AAAAAAAAAA==";
        let err = loader.load(MediaKind::Image, over).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::FileTooLarge);
        assert_eq!(
            err.details,
            serde_json::json!({ "url": over, "maxSize": 6 })
        );
        let big = format!("data:image/png;base64,{}", "A".repeat(400 * 1024));
        let err = test_loader(false, 1000, vec![])
            .load(MediaKind::Image, &big)
            .await
            .unwrap_err();
        assert_eq!(
            (err.code, err.details["url"].as_str().unwrap().len()),
            (ErrorCode::FileTooLarge, 67)
        );
        let ok = test_loader(false, 400 * 1024, vec![])
            .load(MediaKind::Image, &big)
            .await
            .unwrap();
        assert_eq!(ok.data_url.len(), big.len());
    }

    #[tokio::test]
    async fn payloads_are_passed_through_unchecked() {
        // The guide's own examples cut their payloads short with "...".
        let guide = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg...";
        let media = test_loader(false, 1024, vec![])
            .load(MediaKind::Image, guide)
            .await
            .unwrap();
        assert_eq!(media.data_url, guide);
    }

    #[test]
    fn base64_alphabet() {
        let valid: Vec<u8> = (0..=255u8).filter(|&b| is_base64_byte(b)).collect();
        assert_eq!(
            valid,
            b"+/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        );
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(decoded_len("AAAA"), 3);
        assert_eq!(decoded_len("AA=="), 1);
        assert_eq!(decoded_len("AAA="), 2);
        assert_eq!(decoded_len("AA"), 1);
        assert_eq!(decoded_len("AAAAAAAA"), 6);
    }
}
