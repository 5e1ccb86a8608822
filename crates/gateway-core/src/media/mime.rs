//! MIME types from headers, file signatures and file extensions.

use super::MediaKind;

/// Extension table, both directions; the first extension listed for a MIME type is its default.
const EXTENSIONS: &[(&str, &str)] = &[
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("bmp", "image/bmp"),
    ("svg", "image/svg+xml"),
    ("avif", "image/avif"),
    ("heic", "image/heic"),
    ("ico", "image/x-icon"),
    ("tif", "image/tiff"),
    ("tiff", "image/tiff"),
    ("mp4", "video/mp4"),
    ("m4v", "video/x-m4v"),
    ("mov", "video/quicktime"),
    ("webm", "video/webm"),
    ("mkv", "video/x-matroska"),
    ("3gp", "video/3gpp"),
    ("avi", "video/x-msvideo"),
    ("ogv", "video/ogg"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    ("doc", "application/msword"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("xls", "application/vnd.ms-excel"),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("ppt", "application/vnd.ms-powerpoint"),
    (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    ("txt", "text/plain"),
    ("csv", "text/csv"),
    ("json", "application/json"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("wav", "audio/wav"),
    ("m4a", "audio/mp4"),
];

pub(super) fn from_file_name(name: &str) -> Option<&'static str> {
    let (_, ext) = name.rsplit_once('.')?;
    EXTENSIONS
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map(|(_, m)| *m)
}

pub(super) fn extension_for(mime: &str) -> Option<&'static str> {
    EXTENSIONS
        .iter()
        .find(|(_, m)| m.eq_ignore_ascii_case(mime))
        .map(|(e, _)| *e)
}

/// `Content-Type: Image/PNG; charset=x` -> `image/png`. A media server controls this
/// header and its value reaches the command's `mimeType`, so anything but a plain
/// `type/subtype` token is ignored rather than passed on.
pub(super) fn essence(header: &str) -> Option<String> {
    let essence = header
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    is_mime_type(&essence).then_some(essence)
}

/// `type/subtype`, each an RFC 6838 restricted name.
pub(super) fn is_mime_type(value: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    value
        .split_once('/')
        .is_some_and(|(kind, sub)| token(kind) && token(sub))
}

/// MIME type from the first bytes of common media and document formats.
pub(super) fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, sig: &[u8]| bytes.get(offset..offset + sig.len()) == Some(sig);
    let head_has = |needle: &[u8]| {
        bytes[..bytes.len().min(64)]
            .windows(needle.len())
            .any(|w| w == needle)
    };
    if at(0, b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if at(0, b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        Some("image/gif")
    } else if at(0, b"RIFF") {
        [
            (b"WEBP", "image/webp"),
            (b"AVI ", "video/x-msvideo"),
            (b"WAVE", "audio/wav"),
        ]
        .into_iter()
        .find(|(sig, _)| at(8, *sig))
        .map(|(_, mime)| mime)
    } else if at(0, b"BM") && at(6, b"\0\0\0\0") {
        // "BM" alone is too weak; BMP headers have four reserved zero bytes after the size.
        Some("image/bmp")
    } else if at(4, b"ftyp") {
        Some(match bytes.get(8..12) {
            Some(b"avif" | b"avis") => "image/avif",
            Some(b"heic" | b"heix" | b"mif1" | b"msf1") => "image/heic",
            Some(b"qt  ") => "video/quicktime",
            Some(b"M4A ") => "audio/mp4",
            Some([b'3', b'g', ..]) => "video/3gpp",
            _ => "video/mp4",
        })
    } else if at(0, b"\x1a\x45\xdf\xa3") {
        Some(if head_has(b"webm") {
            "video/webm"
        } else {
            "video/x-matroska"
        })
    } else if at(0, b"%PDF-") {
        Some("application/pdf")
    } else if at(0, b"PK\x03\x04") {
        Some("application/zip")
    } else if at(0, b"OggS") {
        Some(if head_has(b"theora") {
            "video/ogg"
        } else {
            "audio/ogg"
        })
    } else {
        None
    }
}

/// First candidate that says something and fits `kind`; documents fall back to octet-stream.
pub(super) fn pick(kind: MediaKind, candidates: &[Option<&str>]) -> Option<String> {
    // A generic type says nothing about the content, so it must not stop the signature check.
    let informative =
        |m: &str| !matches!(m, "" | "application/octet-stream" | "binary/octet-stream");
    let found = candidates
        .iter()
        .flatten()
        .find(|m| informative(m) && kind.fits(m));
    match (found, kind) {
        (Some(mime), _) => Some((*mime).to_owned()),
        (None, MediaKind::Document) => Some("application/octet-stream".to_owned()),
        (None, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_signatures() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x89PNG\r\n\x1a\n....", "image/png"),
            (b"\xff\xd8\xff\xe0", "image/jpeg"),
            (b"GIF89a..", "image/gif"),
            (b"RIFF\0\0\0\0WEBPVP8 ", "image/webp"),
            (b"BM\x10\0\0\0\0\0\0\0", "image/bmp"),
            (b"\0\0\0\x18ftypisom", "video/mp4"),
            (b"\0\0\0\x18ftypqt  ", "video/quicktime"),
            (b"\x1a\x45\xdf\xa3\x9f\x42\x82\x84webm", "video/webm"),
            (
                b"\x1a\x45\xdf\xa3\x9f\x42\x82\x88matroska",
                "video/x-matroska",
            ),
            (b"%PDF-1.7", "application/pdf"),
            (b"PK\x03\x04", "application/zip"),
            (b"OggS\0\x02....\x80theora", "video/ogg"),
            (b"OggS\0\x02....vorbis", "audio/ogg"),
        ];
        for (bytes, mime) in cases {
            assert_eq!(sniff(bytes), Some(*mime), "{mime}");
        }
        assert_eq!(sniff(b"<html>"), None);
        assert_eq!(sniff(b"BMW is a car"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn picks_first_fitting_informative_candidate() {
        use MediaKind::*;
        assert_eq!(
            pick(Image, &[Some("image/png")]).as_deref(),
            Some("image/png")
        );
        assert_eq!(
            pick(Image, &[Some("text/html"), None, Some("image/jpeg")]).as_deref(),
            Some("image/jpeg")
        );
        assert_eq!(
            pick(Image, &[Some("text/html"), Some("application/pdf")]),
            None
        );
        assert_eq!(
            pick(
                Video,
                &[Some("application/octet-stream"), Some("video/mp4")]
            )
            .as_deref(),
            Some("video/mp4")
        );
        assert_eq!(
            pick(
                Document,
                &[Some("application/octet-stream"), Some("application/pdf")]
            )
            .as_deref(),
            Some("application/pdf")
        );
        assert_eq!(
            pick(Document, &[None, None]).as_deref(),
            Some("application/octet-stream")
        );
    }

    #[test]
    fn extensions_and_essence() {
        assert_eq!(from_file_name("a.b.JPG"), Some("image/jpeg"));
        assert_eq!(from_file_name("noext"), None);
        assert_eq!(extension_for("video/mp4"), Some("mp4"));
        assert_eq!(
            essence(" Image/PNG ; charset=binary").as_deref(),
            Some("image/png")
        );
    }

    #[test]
    fn essence_ignores_anything_but_a_type_token() {
        let injected = r#"image/x,","phone\u004eumber":"+19999999999","caption":"injected","x":""#;
        for header in [
            injected,
            "image/png\"",
            "image/",
            "/png",
            "image png",
            "image/p\u{7f}ng",
            "",
            "text/plain/x",
        ] {
            assert_eq!(essence(header), None, "{header:?}");
        }
        assert!(is_mime_type("application/vnd.ms-excel"));
        assert!(is_mime_type("image/svg+xml"));
    }
}
