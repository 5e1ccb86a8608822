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
//! A path outside the roots is refused the same way whether or not it exists: the path is
//! followed a component at a time, symlinks included, and nothing is looked at that is
//! neither inside a root nor on the way to one. A symlink inside a root that leads out is
//! refused at its first step out, so its target's existence changes no answer; a missing
//! file is reported as missing only where the lookup failed inside a root.

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
    let roots = Roots::new(roots);
    if let Some(refusal) = roots.refusal(path) {
        return Err(refusal);
    }
    // Non-blocking and no controlling terminal: if a swap makes this open a FIFO or a
    // device, the open itself must neither hang nor have effects.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match roots.refusal(path) {
            // Changed since it was located: answered by where it leads now.
            Some(Refusal::Outside) => Refusal::Outside,
            _ => Refusal::Unreadable(e),
        })?;
    let meta = file.metadata().map_err(Refusal::Unreadable)?;
    if !opened_inside(&file, &meta, path, |p| roots.inside(p)) {
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

/// `mediaFileRoots`, resolved (symlinks followed) and as configured.
struct Roots {
    real: Vec<PathBuf>,
    given: Vec<PathBuf>,
}

/// Where a path leads.
enum Located {
    /// To an existing entry inside a root.
    Inside,
    /// Out of the roots, or to where nothing may be looked at.
    Outside,
    /// Its lookup failed inside a root (missing, not a directory, a symlink loop).
    Unreadable(io::Error),
}

/// Symlinks followed in one lookup before it is a loop (as Linux's ELOOP).
const MAX_SYMLINKS: usize = 40;

impl Roots {
    fn new(roots: &[PathBuf]) -> Self {
        Self {
            real: roots
                .iter()
                .filter_map(|root| std::fs::canonicalize(root).ok())
                .collect(),
            given: roots.iter().filter(|r| r.is_absolute()).cloned().collect(),
        }
    }

    fn inside(&self, path: &Path) -> bool {
        self.real.iter().any(|root| path.starts_with(root))
    }

    /// Whether the entry at `path` may be looked at: inside a root, or on the way to
    /// one (an ancestor of a root, resolved or as configured). Nothing else is, so
    /// that no answer depends on what exists outside the roots.
    fn may_look_at(&self, path: &Path) -> bool {
        self.inside(path)
            || self
                .real
                .iter()
                .chain(&self.given)
                .any(|r| r.starts_with(path))
    }

    /// Why `path` may not be read, where it leads now; `None` if it may. One answer
    /// for every path outside the roots, whether or not it exists there (nothing
    /// outside is looked at); a lookup that failed inside them is unreadable.
    fn refusal(&self, path: &Path) -> Option<Refusal> {
        match self.locate(path) {
            Located::Inside => None,
            Located::Outside => Some(Refusal::Outside),
            Located::Unreadable(e) => Some(Refusal::Unreadable(e)),
        }
    }

    /// Follows `path` as the kernel would, a component at a time, symlinks included,
    /// looking only at entries `may_look_at` allows: a symlink inside a root that
    /// leads out is refused at the first step out, whether or not its target exists.
    fn locate(&self, path: &Path) -> Located {
        use std::collections::VecDeque;
        use std::ffi::OsString;
        use std::path::Component;
        let mut to_do: VecDeque<OsString> = VecDeque::new();
        let push_front = |to_do: &mut VecDeque<OsString>, path: &Path| {
            for part in path.components().rev() {
                match part {
                    Component::Normal(name) => to_do.push_front(name.to_owned()),
                    Component::ParentDir => to_do.push_front("..".into()),
                    Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                }
            }
        };
        if !path.is_absolute() {
            return Located::Outside;
        }
        push_front(&mut to_do, path);
        let mut at = PathBuf::from("/");
        let mut symlinks = 0;
        while let Some(name) = to_do.pop_front() {
            if name == ".." {
                at.pop();
                continue;
            }
            let next = at.join(&name);
            if !self.may_look_at(&next) {
                return Located::Outside;
            }
            let meta = match std::fs::symlink_metadata(&next) {
                Ok(meta) => meta,
                Err(e) if self.inside(&next) => return Located::Unreadable(e),
                Err(_) => return Located::Outside,
            };
            if !meta.file_type().is_symlink() {
                at = next;
                continue;
            }
            symlinks += 1;
            let target = match std::fs::read_link(&next) {
                Ok(target) if symlinks <= MAX_SYMLINKS => target,
                Ok(_) => {
                    let e = io::Error::other("too many levels of symbolic links");
                    return self.unreadable_if_inside(&next, e);
                }
                Err(e) => return self.unreadable_if_inside(&next, e),
            };
            if target.is_absolute() {
                at = PathBuf::from("/");
            }
            push_front(&mut to_do, &target);
        }
        if self.inside(&at) {
            Located::Inside
        } else {
            Located::Outside
        }
    }

    fn unreadable_if_inside(&self, path: &Path, e: io::Error) -> Located {
        if self.inside(path) {
            Located::Unreadable(e)
        } else {
            Located::Outside
        }
    }
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

    /// A symlink inside a root that leads out gives the same answer whether its target
    /// exists or not: nothing outside the roots is probed.
    #[tokio::test]
    async fn a_symlink_leading_out_answers_alike_whether_its_target_exists() {
        let sb = Sandbox::new();
        let loader = test_loader(false, 1024, vec![sb.0.join("root")]);
        sb.write("outside/there.png", PNG);
        let link = |name: &str, target: &Path| {
            std::os::unix::fs::symlink(target, sb.0.join("root").join(name)).unwrap();
            sb.url(&format!("root/{name}"))
        };
        let out = sb.0.join("outside");
        let cases = [
            link("file-there.png", &out.join("there.png")),
            link("file-missing.png", &out.join("missing.png")),
            link("dir-missing", &out.join("no-such-dir")) + "/x.png",
            link("relative-missing.png", Path::new("../outside/missing.png")),
            link("chain-missing.png", &sb.0.join("root/relative-missing.png")),
        ];
        for url in cases {
            let err = loader.load(MediaKind::Image, &url).await.unwrap_err();
            assert_eq!(
                err.code,
                ErrorCode::MediaNotAllowed,
                "{url}: {}",
                err.message
            );
        }
        // A link that stays inside is followed, and a missing target there is missing.
        sb.write("root/sub/real.png", PNG);
        let inside = link("inside.png", Path::new("sub/real.png"));
        assert!(loader.load(MediaKind::Image, &inside).await.is_ok());
        let dangling = link("dangling.png", Path::new("sub/gone.png"));
        let err = loader.load(MediaKind::Image, &dangling).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::FetchError, "{}", err.message);
        // A loop is an unreadable file inside the roots, not a hang.
        let looped = link("loop.png", Path::new("loop.png"));
        let err = loader.load(MediaKind::Image, &looped).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::FetchError, "{}", err.message);
        // A root configured through a symlink is reached through it too.
        std::os::unix::fs::symlink(sb.0.join("root"), sb.0.join("via")).unwrap();
        let via = test_loader(false, 1024, vec![sb.0.join("via")]);
        assert!(via
            .load(MediaKind::Image, &sb.url("via/sub/real.png"))
            .await
            .is_ok());
        let err = via
            .load(MediaKind::Image, &sb.url("via/sub/gone.png"))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::FetchError, "{}", err.message);
        let err = via
            .load(MediaKind::Image, &sb.url("via/file-missing.png"))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::MediaNotAllowed, "{}", err.message);
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
