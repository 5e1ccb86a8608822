//! `file://` media, readable only inside `mediaFileRoots`.
//!
//! The check that counts is made on the file actually opened: the path is resolved and
//! checked first (so that nothing outside the roots is opened in the ordinary case),
//! then opened without following into a FIFO or terminal, and then the kernel is asked
//! where the opened descriptor really lives (`/proc/self/fd`). A symlink swapped between
//! the first check and the open therefore cannot smuggle in an outside file. Where
//! `/proc` is missing, the opened file must be the very inode (device and number) found
//! at a path inside the roots after opening.
//!
//! A path outside the roots is refused the same way whether or not it exists: a missing
//! file is reported as missing only when its nearest existing directory is inside a root.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde_json::json;

use super::{
    encode_media, fetch_error, invalid_url, mime, not_allowed, not_media, too_large, Media,
    MediaKind, MediaPolicy,
};
use crate::error::{ErrorCode, GatewayError};

const OUTSIDE: &str = "the file is outside mediaFileRoots";

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
    if policy.file_roots.is_empty() {
        return Err(refuse(
            source,
            "mediaFileRoots is empty, so no file:// media may be read",
        ));
    }
    let roots = policy.file_roots.clone();
    let max_bytes = policy.max_bytes;
    let read =
        tokio::task::spawn_blocking(move || read_inside_roots(&roots, &path, max_bytes)).await;
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(Refusal::Outside)) => return Err(refuse(source, OUTSIDE)),
        Ok(Err(Refusal::NotAFile)) => {
            return Err(fetch_error(
                source,
                format!("Failed to read {source}: not a regular file"),
                None,
            ))
        }
        Ok(Err(Refusal::TooLarge)) => return Err(too_large(source, max_bytes)),
        Ok(Err(Refusal::Unreadable(e))) => return Err(read_error(source, &e)),
        Err(e) => {
            let message = format!("Reading {source} failed: {e}");
            return Err(GatewayError::new(
                ErrorCode::ServerError,
                message,
                json!({ "url": source }),
            ));
        }
    };
    let file_name = super::file_name_from_url(url);
    let candidates = [
        file_name.as_deref().and_then(mime::from_file_name),
        mime::sniff(&body),
    ];
    let mime_type = mime::pick(kind, &candidates).ok_or_else(|| not_media(kind, source, None))?;
    encode_media(body, mime_type, file_name).await
}

fn refuse(source: &str, reason: &str) -> GatewayError {
    let message = format!(
        "Refusing to read {source}: {reason}; add its directory to mediaFileRoots to allow it"
    );
    not_allowed(source, message, reason)
}

#[derive(Debug)]
enum Refusal {
    Outside,
    NotAFile,
    TooLarge,
    Unreadable(io::Error),
}

/// Blocking: reads `path` if the file it opens is inside one of `roots`.
fn read_inside_roots(roots: &[PathBuf], path: &Path, max_bytes: usize) -> Result<Vec<u8>, Refusal> {
    let roots: Vec<PathBuf> = roots
        .iter()
        .filter_map(|root| std::fs::canonicalize(root).ok())
        .collect();
    let inside = |p: &Path| roots.iter().any(|root| p.starts_with(root));
    let missing_or_outside = |e: io::Error| {
        // Only a directory inside the roots may say what it does not contain.
        let parent = path
            .ancestors()
            .skip(1)
            .find_map(|dir| std::fs::canonicalize(dir).ok());
        if parent.is_some_and(|dir| inside(&dir)) {
            Refusal::Unreadable(e)
        } else {
            Refusal::Outside
        }
    };
    match std::fs::canonicalize(path) {
        Ok(target) if inside(&target) => {}
        Ok(_) => return Err(Refusal::Outside),
        Err(e) => return Err(missing_or_outside(e)),
    }
    // Non-blocking and no controlling terminal: if a swap makes this open a FIFO or a
    // device, the open itself must neither hang nor have effects.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(missing_or_outside)?;
    let meta = file.metadata().map_err(Refusal::Unreadable)?;
    if !opened_inside(&file, &meta, path, inside) {
        return Err(Refusal::Outside);
    }
    if !meta.is_file() {
        return Err(Refusal::NotAFile);
    }
    if meta.len() > max_bytes as u64 {
        return Err(Refusal::TooLarge);
    }
    let limit = max_bytes as u64 + 1;
    let mut body = Vec::with_capacity(meta.len().min(limit) as usize);
    file.take(limit)
        .read_to_end(&mut body)
        .map_err(Refusal::Unreadable)?;
    // The file may have grown since it was measured.
    if body.len() > max_bytes {
        return Err(Refusal::TooLarge);
    }
    Ok(body)
}

/// Whether the open file `file` lives inside the roots, by where the kernel says the
/// descriptor points, else by its identity with what `path` resolves to now.
fn opened_inside(
    file: &File,
    meta: &Metadata,
    path: &Path,
    inside: impl Fn(&Path) -> bool,
) -> bool {
    use std::os::fd::AsRawFd;
    if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        return real.is_absolute() && inside(&real);
    }
    let Ok(target) = std::fs::canonicalize(path) else {
        return false;
    };
    let same = std::fs::metadata(&target)
        .is_ok_and(|now| now.dev() == meta.dev() && now.ino() == meta.ino());
    same && inside(&target)
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
            // Missing behind a symlink that leads out: refused like an existing file there.
            sb.url("root/link/missing.png"),
            sb.url("root/link/no/such/dir/x.png"),
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

    /// Issue 9: with the check made before the open, a directory swapped for a symlink
    /// in between let the outside file through a few times in a thousand.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_directory_swapped_for_a_symlink_never_leaks_the_outside_file() {
        const TRIES: usize = 10000;
        let sb = Sandbox::new();
        let loader = test_loader(false, 1024, vec![sb.0.join("root")]);
        std::fs::create_dir(sb.0.join("root/d")).unwrap();
        sb.write("root/d/photo.png", &[PNG, b"inside"].concat());
        sb.write("outside/photo.png", &[PNG, b"SECRET"].concat());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let (stop, dir) = (stop.clone(), sb.0.clone());
            // Flips root/d between the real directory and a symlink to outside/.
            std::thread::spawn(move || {
                let (d, parked, staged) = (
                    dir.join("root/d"),
                    dir.join("root/parked"),
                    dir.join("root/staged"),
                );
                // Each state held for a varying while, so that some loads straddle a flip.
                let hold = |i: u64| {
                    let until =
                        std::time::Instant::now() + std::time::Duration::from_micros(i * 7 % 97);
                    while std::time::Instant::now() < until {}
                };
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::fs::rename(&d, &parked).unwrap();
                    std::os::unix::fs::symlink(dir.join("outside"), &staged).unwrap();
                    std::fs::rename(&staged, &d).unwrap();
                    hold(i);
                    std::fs::remove_file(&d).unwrap();
                    std::fs::rename(&parked, &d).unwrap();
                    hold(i + 5);
                    i += 1;
                }
            })
        };
        let url = sb.url("root/d/photo.png");
        let secret = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            [PNG, b"SECRET"].concat(),
        );
        let mut leaked = 0;
        for _ in 0..TRIES {
            match loader.load(MediaKind::Image, &url).await {
                Ok(media) => leaked += usize::from(media.data_url.contains(&secret)),
                Err(err) => assert!(
                    [ErrorCode::MediaNotAllowed, ErrorCode::FetchError].contains(&err.code),
                    "{:?}: {}",
                    err.code,
                    err.message
                ),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flipper.join().unwrap();
        assert_eq!(
            leaked, 0,
            "the outside file was read {leaked} times in {TRIES}"
        );
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
