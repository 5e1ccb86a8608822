//! `file://` media, readable only inside `mediaFileRoots`.

use std::io;
use std::path::{Path, PathBuf};

use reqwest::Url;
use tokio::io::AsyncReadExt;

use super::{
    encode_media, fetch_error, invalid_url, mime, not_allowed, not_media, too_large, Media,
    MediaKind, MediaPolicy,
};
use crate::error::GatewayError;

pub(super) async fn load(
    policy: &MediaPolicy,
    kind: MediaKind,
    url: &Url,
    source: &str,
) -> Result<Media, GatewayError> {
    // The URL parser has already resolved `..` segments and `localhost`; this percent-decodes.
    let path = url.to_file_path().map_err(|()| {
        invalid_url(
            kind,
            source,
            "A file:// URL must have no host (or localhost), e.g. file:///path/to/file".into(),
        )
    })?;
    let path = resolve_inside_roots(&policy.file_roots, &path, source).await?;
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|e| read_error(source, &e))?;
    if !meta.is_file() {
        return Err(fetch_error(
            source,
            format!("Failed to read {source}: not a regular file"),
            None,
        ));
    }
    if meta.len() > policy.max_bytes as u64 {
        return Err(too_large(source, policy.max_bytes));
    }
    let body = read_bounded(&path, policy.max_bytes, meta.len())
        .await
        .map_err(|e| read_error(source, &e))?;
    // The file may have grown since its metadata was read.
    if body.len() > policy.max_bytes {
        return Err(too_large(source, policy.max_bytes));
    }
    let file_name = super::file_name_from_url(url);
    let candidates = [
        file_name.as_deref().and_then(mime::from_file_name),
        mime::sniff(&body),
    ];
    let mime_type = mime::pick(kind, &candidates).ok_or_else(|| not_media(kind, source, None))?;
    encode_media(body, mime_type, file_name).await
}

/// The canonical path of `path` if it lies inside a canonical root (symlinks resolved,
/// compared component-wise so `/data/rootX` is not inside `/data/root`).
async fn resolve_inside_roots(
    roots: &[PathBuf],
    path: &Path,
    source: &str,
) -> Result<PathBuf, GatewayError> {
    let refuse = |reason: &str| {
        let message = format!(
            "Refusing to read {source}: {reason}; add its directory to mediaFileRoots to allow it"
        );
        not_allowed(source, message, reason)
    };
    if roots.is_empty() {
        return Err(refuse(
            "mediaFileRoots is empty, so no file:// media may be read",
        ));
    }
    let mut canonical_roots = Vec::with_capacity(roots.len());
    for root in roots {
        if let Ok(canonical) = tokio::fs::canonicalize(root).await {
            canonical_roots.push(canonical);
        }
    }
    let outside = "the file is outside mediaFileRoots";
    match tokio::fs::canonicalize(path).await {
        Ok(target) if canonical_roots.iter().any(|root| target.starts_with(root)) => Ok(target),
        Ok(_) => Err(refuse(outside)),
        // Report a missing file only inside a root, so callers cannot probe the rest of the disk.
        Err(e)
            if roots
                .iter()
                .chain(&canonical_roots)
                .any(|root| path.starts_with(root)) =>
        {
            Err(read_error(source, &e))
        }
        Err(_) => Err(refuse(outside)),
    }
}

async fn read_bounded(path: &Path, max_bytes: usize, expected_len: u64) -> io::Result<Vec<u8>> {
    let file = tokio::fs::File::open(path).await?;
    let limit = max_bytes as u64 + 1;
    let mut body = Vec::with_capacity(expected_len.min(limit) as usize);
    file.take(limit).read_to_end(&mut body).await?;
    Ok(body)
}

fn read_error(source: &str, err: &io::Error) -> GatewayError {
    let what = if err.kind() == io::ErrorKind::NotFound {
        "file not found".to_owned()
    } else {
        err.to_string()
    };
    fetch_error(source, format!("Failed to read {source}: {what}"), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::media::test_loader;

    /// A unique directory with `root/`, a sibling `rootX/` and `outside/` in it.
    struct Sandbox(PathBuf);

    impl Sandbox {
        fn new() -> Sandbox {
            let dir =
                std::env::temp_dir().join(format!("media-file-test-{}", uuid::Uuid::new_v4()));
            for sub in ["root/sub", "rootX", "outside"] {
                std::fs::create_dir_all(dir.join(sub)).unwrap();
            }
            Sandbox(dir)
        }

        fn write(&self, rel: &str, bytes: &[u8]) -> String {
            std::fs::write(self.0.join(rel), bytes).unwrap();
            self.url(rel)
        }

        fn url(&self, rel: &str) -> String {
            format!("file://{}/{}", self.0.display(), rel.replace(' ', "%20"))
        }
    }

    impl Drop for Sandbox {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[tokio::test]
    async fn reads_files_inside_the_root() {
        let sb = Sandbox::new();
        let loader = test_loader(false, 1024, vec![sb.0.join("root")]);
        let url = sb.write("root/sub/my photo.png", PNG);
        let media = loader.load(MediaKind::Image, &url).await.unwrap();
        assert_eq!(
            media.data_url,
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="
        );
        assert_eq!(media.file_name.as_deref(), Some("my photo.png"));
        // No known extension: the signature decides; file://localhost/ is the same as file:///.
        sb.write("root/noext", PNG);
        let localhost = sb
            .url("root/noext")
            .replacen("file://", "file://localhost", 1);
        assert_eq!(
            loader
                .load(MediaKind::Image, &localhost)
                .await
                .unwrap()
                .mime_type,
            "image/png"
        );
        assert_eq!(
            loader
                .load(MediaKind::Document, &sb.write("root/x", b"hi"))
                .await
                .unwrap()
                .mime_type,
            "application/octet-stream"
        );
        let err = loader
            .load(MediaKind::Video, &sb.url("root/noext"))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationError);
    }

    #[tokio::test]
    async fn escapes_from_the_root_are_refused() {
        let sb = Sandbox::new();
        let loader = test_loader(false, 1024, vec![sb.0.join("root")]);
        sb.write("outside/secret.png", PNG);
        std::os::unix::fs::symlink(sb.0.join("outside"), sb.0.join("root/link")).unwrap();
        let escapes = [
            sb.url("root/../outside/secret.png"),
            sb.url("root/%2E%2E/outside/secret.png"),
            sb.url("root/link/secret.png"),
            sb.write("rootX/secret.png", PNG),
            sb.url("outside/missing.png"),
            "file:///etc/passwd".to_owned(),
        ];
        for url in escapes {
            let err = loader.load(MediaKind::Image, &url).await.unwrap_err();
            assert_eq!(
                err.code,
                ErrorCode::MediaNotAllowed,
                "{url}: {}",
                err.message
            );
            assert_eq!(err.details["url"], url.as_str());
            assert!(err.message.contains("mediaFileRoots"), "{}", err.message);
        }
        let err = test_loader(false, 1024, vec![])
            .load(MediaKind::Image, &sb.url("root/a.png"))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::MediaNotAllowed);
        assert!(err.details["reason"]
            .as_str()
            .unwrap()
            .contains("mediaFileRoots is empty"));
    }

    #[tokio::test]
    async fn missing_directories_large_files_and_foreign_hosts() {
        let sb = Sandbox::new();
        let loader = test_loader(false, 16, vec![sb.0.join("root")]);
        let missing = sb.url("root/missing.png");
        let err = loader.load(MediaKind::Image, &missing).await.unwrap_err();
        assert_eq!(
            (err.code, err.details.clone()),
            (ErrorCode::FetchError, serde_json::json!({ "url": missing }))
        );
        assert!(err.message.contains("file not found"));
        let err = loader
            .load(MediaKind::Image, &sb.url("root/sub"))
            .await
            .unwrap_err();
        assert!(err.code == ErrorCode::FetchError && err.message.contains("not a regular file"));
        let big = sb.write("root/big.png", &[0u8; 17]);
        let err = loader.load(MediaKind::Image, &big).await.unwrap_err();
        assert_eq!(
            (err.code, err.details.clone()),
            (
                ErrorCode::FileTooLarge,
                serde_json::json!({ "url": big, "maxSize": 16 })
            )
        );
        let err = loader
            .load(MediaKind::Image, "file://fileserver/share/a.png")
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationError);
    }

    #[tokio::test]
    async fn large_files_are_encoded_off_the_runtime() {
        let sb = Sandbox::new();
        let bytes: Vec<u8> = (0..400 * 1024).map(|i| (i % 253) as u8).collect();
        let url = sb.write("root/clip.mp4", &bytes);
        let media = test_loader(false, 512 * 1024, vec![sb.0.join("root")])
            .load(MediaKind::Video, &url)
            .await
            .unwrap();
        use base64::Engine as _;
        let expected = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert_eq!(media.data_url, format!("data:video/mp4;base64,{expected}"));
    }
}
