//! Media sources of the send methods (README "Methods"): a `data:` URL is checked and passed on,
//! `http(s)://` and `file://` URLs are loaded under [`MediaPolicy`] and turned into a
//! base64 data URL. Media URLs often come straight from untrusted HTTP requests, so every
//! path is bounded in size and time and guarded against reaching private hosts or files.

mod address_policy;
mod data_url;
mod fetch;
mod file;
mod mime;

#[cfg(any(test, feature = "fuzzing"))]
pub use address_policy::is_public_ip;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;

use crate::error::{ErrorCode, GatewayError};

/// Which send method the media is for; decides which MIME types are acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Document,
}

impl MediaKind {
    fn fits(self, mime: &str) -> bool {
        match self {
            MediaKind::Image => mime.starts_with("image/"),
            MediaKind::Video => mime.starts_with("video/"),
            MediaKind::Document => true,
        }
    }

    fn label(self) -> (&'static str, &'static str, &'static str) {
        match self {
            MediaKind::Image => ("Image", "an image", "imageUrl"),
            MediaKind::Video => ("Video", "a video", "videoUrl"),
            MediaKind::Document => ("Document", "a document", "documentUrl"),
        }
    }
}

/// The media options of the gateway config (README "new WhatsAppGateway(config)").
#[derive(Clone, Debug)]
pub struct MediaPolicy {
    /// `maxMediaBytes`: largest decoded media.
    pub max_bytes: usize,
    /// `mediaFileRoots`: the only directories `file://` media may come from.
    pub file_roots: Vec<PathBuf>,
    /// `mediaAllowPrivateHosts`: allow http(s) hosts on non-public addresses.
    pub allow_private_hosts: bool,
    /// `mediaFetchTimeout`: one whole fetch, connect, redirects and body included.
    pub fetch_timeout: Duration,
}

/// Text of megabytes that several owners read and none changes: a media source and
/// the data URL made of it. Cloning shares it; nothing copies it (README "Media":
/// sends of one source in flight at once hold it once).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MediaText(Arc<String>);

impl MediaText {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The text itself, copied only if another owner still shares it.
    pub fn into_string(self) -> String {
        Arc::try_unwrap(self.0).unwrap_or_else(|shared| shared.as_str().to_owned())
    }

    /// Whether `other` is this very text, not only an equal one.
    pub fn shares(&self, other: &MediaText) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// A handle that finds the text while someone else still holds it.
    pub fn downgrade(&self) -> WeakMediaText {
        WeakMediaText(Arc::downgrade(&self.0))
    }
}

/// A [`MediaText`] that does not keep it: gone once its last holder (a send whose
/// command is not written yet) is.
#[derive(Clone, Debug, Default)]
pub struct WeakMediaText(std::sync::Weak<String>);

impl WeakMediaText {
    pub fn upgrade(&self) -> Option<MediaText> {
        self.0.upgrade().map(MediaText)
    }
}

impl std::ops::Deref for MediaText {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<[u8]> for MediaText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl From<String> for MediaText {
    fn from(text: String) -> Self {
        Self(Arc::new(text))
    }
}

impl From<&str> for MediaText {
    fn from(text: &str) -> Self {
        Self(Arc::new(text.to_owned()))
    }
}

impl From<&String> for MediaText {
    fn from(text: &String) -> Self {
        Self(Arc::new(text.clone()))
    }
}

impl PartialEq<str> for MediaText {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MediaText {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for MediaText {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

/// Media ready to be sent to an extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    /// `data:<mime>;base64,<payload>`; a given data URL is kept as given (trimmed), in
    /// the caller's own buffer.
    pub data_url: MediaText,
    pub mime_type: String,
    /// Percent-decoded last path segment of an http(s)/file URL, if it has one.
    pub file_name: Option<String>,
}

/// Loads media sources; one per gateway so the HTTP connection pool is shared.
pub struct MediaLoader {
    client: reqwest::Client,
    policy: MediaPolicy,
}

impl MediaLoader {
    pub fn new(policy: MediaPolicy) -> Result<MediaLoader, GatewayError> {
        let client = fetch::build_client(policy.allow_private_hosts)?;
        Ok(MediaLoader { client, policy })
    }

    /// Checks or loads `source` for a send of `kind`. Dropping the future abandons the load.
    /// A data URL comes back in the same allocation: megabytes are not copied.
    pub async fn load(
        &self,
        kind: MediaKind,
        source: impl Into<MediaText>,
    ) -> Result<Media, GatewayError> {
        let source: MediaText = source.into();
        // Match the data: scheme by hand: parsing a multi-megabyte data URL as a URL is wasted work.
        let trimmed = source.trim();
        if trimmed
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("data:"))
        {
            let source = if trimmed.len() == source.len() {
                source
            } else {
                MediaText::from(trimmed)
            };
            return data_url::load(kind, source, self.policy.max_bytes).await;
        }
        let source = trimmed;
        let url = reqwest::Url::parse(source).map_err(|e| {
            invalid_url(
                kind,
                source,
                format!("Media source is neither a data: URL nor a valid URL ({e})"),
            )
        })?;
        match url.scheme() {
            "http" | "https" => {
                let started = std::time::Instant::now();
                let fetched = fetch::load(&self.client, &self.policy, kind, &url, source).await;
                crate::metrics::media_fetched(started.elapsed());
                fetched
            }
            "file" => file::load(&self.policy, kind, &url, source).await,
            other => Err(invalid_url(
                kind,
                source,
                format!("Unsupported media URL scheme '{other}:'; use data:, http://, https:// or file://"),
            )),
        }
    }
}

/// The literal-host and redirect rules on one URL, for the fuzz targets: a host that is
/// a literal address is refused by policy exactly when it is not public.
#[cfg(any(test, feature = "fuzzing"))]
pub fn check_url_for_fuzzing(url: &reqwest::Url) {
    assert!(address_policy::check_literal_host(url, true).is_ok());
    let strict = address_policy::check_literal_host(url, false);
    let literal = url
        .host_str()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
        assert_eq!(strict.is_ok(), address_policy::is_public_ip(ip), "{url}");
    }
    let _ = address_policy::check_redirect(url, 1, false);
}

/// `documentName` default: the URL's file name, else `document.<ext>` from the MIME type.
pub fn default_document_name(media: &Media) -> String {
    match &media.file_name {
        Some(name) if !name.is_empty() => name.clone(),
        _ => format!(
            "document.{}",
            mime::extension_for(&media.mime_type).unwrap_or("bin")
        ),
    }
}

/// The last path segment, percent-decoded; path separators it may decode to are replaced,
/// since the name may be used to save the file.
fn file_name_from_url(url: &reqwest::Url) -> Option<String> {
    let segment = url.path_segments()?.next_back()?;
    let name = percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .replace(['/', '\\'], "_");
    (!name.is_empty()).then_some(name)
}

/// Long values (a data URL can be megabytes) are cut in error details.
fn preview(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((cut, _)) => format!("{}...", &value[..cut]),
        None => value.to_owned(),
    }
}

fn invalid_url(kind: MediaKind, source: &str, message: String) -> GatewayError {
    GatewayError::validation(kind.label().2, &preview(source), message)
}

fn not_media(kind: MediaKind, source: &str, declared: Option<&str>) -> GatewayError {
    let what = declared.map_or_else(
        || "unrecognised content".to_owned(),
        |t| format!("Content-Type {t}"),
    );
    invalid_url(
        kind,
        source,
        format!(
            "Media at {} is not {} ({what})",
            preview(source),
            kind.label().1
        ),
    )
}

fn too_large(url: &str, max_bytes: usize) -> GatewayError {
    GatewayError::new(
        ErrorCode::FileTooLarge,
        format!("Media at {url} is larger than maxMediaBytes ({max_bytes} bytes)"),
        json!({ "url": url, "maxSize": max_bytes }),
    )
}

fn fetch_error(url: &str, message: String, status: Option<u16>) -> GatewayError {
    let details = match status {
        Some(code) => json!({ "url": url, "statusCode": code }),
        None => json!({ "url": url }),
    };
    GatewayError::new(ErrorCode::FetchError, message, details)
}

fn not_allowed(url: &str, message: String, reason: &str) -> GatewayError {
    GatewayError::new(
        ErrorCode::MediaNotAllowed,
        message,
        json!({ "url": url, "reason": reason }),
    )
}

/// Above this size, base64 work moves to the blocking pool so runtime workers stay responsive.
const OFFLOAD_BYTES: usize = 256 * 1024;

async fn offload<T: Send + 'static>(
    size: usize,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, GatewayError> {
    if size <= OFFLOAD_BYTES {
        return Ok(job());
    }
    tokio::task::spawn_blocking(job).await.map_err(|e| {
        GatewayError::new(
            ErrorCode::ServerError,
            format!("Media worker failed: {e}"),
            json!({}),
        )
    })
}

/// Wraps loaded bytes as a data URL, encoded straight into a string of the final size.
async fn encode_media(
    bytes: Vec<u8>,
    mime_type: String,
    file_name: Option<String>,
) -> Result<Media, GatewayError> {
    let mime = mime_type.clone();
    let data_url = offload(bytes.len(), move || {
        let encoded_len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
        let mut out = String::with_capacity("data:;base64,".len() + mime.len() + encoded_len);
        out.push_str("data:");
        out.push_str(&mime);
        out.push_str(";base64,");
        base64::engine::general_purpose::STANDARD.encode_string(&bytes, &mut out);
        out
    })
    .await?;
    Ok(Media {
        data_url: data_url.into(),
        mime_type,
        file_name,
    })
}

#[cfg(test)]
fn test_loader(
    allow_private_hosts: bool,
    max_bytes: usize,
    file_roots: Vec<PathBuf>,
) -> MediaLoader {
    let policy = MediaPolicy {
        max_bytes,
        file_roots,
        allow_private_hosts,
        fetch_timeout: Duration::from_secs(5),
    };
    MediaLoader::new(policy).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn other_schemes_and_garbage_are_validation_errors() {
        let loader = test_loader(true, 1024, vec![]);
        for source in [
            "ftp://example.com/a.png",
            "javascript:alert(1)",
            "not a url",
            "",
        ] {
            let err = loader.load(MediaKind::Image, source).await.unwrap_err();
            assert_eq!(err.code, ErrorCode::ValidationError, "{source}");
            assert_eq!(err.details["field"], "imageUrl");
        }
    }

    #[tokio::test]
    async fn encoding_large_media_gives_exact_base64() {
        let bytes: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
        let media = encode_media(bytes.clone(), "video/mp4".into(), None)
            .await
            .unwrap();
        let expected = format!(
            "data:video/mp4;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        );
        let data_url = media.data_url.into_string();
        assert_eq!(data_url, expected);
        assert_eq!(data_url.capacity(), data_url.len());
    }

    #[test]
    fn default_document_names() {
        let media = |mime: &str, name: Option<&str>| Media {
            data_url: MediaText::default(),
            mime_type: mime.into(),
            file_name: name.map(Into::into),
        };
        assert_eq!(
            default_document_name(&media("application/pdf", Some("report q1.pdf"))),
            "report q1.pdf"
        );
        assert_eq!(
            default_document_name(&media("application/pdf", None)),
            "document.pdf"
        );
        assert_eq!(
            default_document_name(&media("image/jpeg", None)),
            "document.jpg"
        );
        assert_eq!(
            default_document_name(&media("application/x-unknown", None)),
            "document.bin"
        );
    }

    #[test]
    fn file_names_from_urls() {
        let name = |s: &str| file_name_from_url(&reqwest::Url::parse(s).unwrap());
        assert_eq!(
            name("https://x.org/a/b%20c%C3%A9.pdf?q=1#f").as_deref(),
            Some("b cé.pdf")
        );
        assert_eq!(
            name("https://x.org/a/..%2Fetc%2Fpasswd").as_deref(),
            Some(".._etc_passwd")
        );
        assert_eq!(name("https://x.org/a/%zz%4").as_deref(), Some("%zz%4"));
        assert_eq!(name("https://x.org/dir/"), None);
        assert_eq!(name("https://x.org"), None);
    }

    #[test]
    fn previews_cut_at_64_chars() {
        assert_eq!(preview("short"), "short");
        let long = "é".repeat(70);
        assert_eq!(preview(&long), format!("{}...", "é".repeat(64)));
    }

    #[test]
    fn load_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let loader = test_loader(false, 10, vec![]);
        assert_send(&loader.load(MediaKind::Image, "data:,"));
    }
}
