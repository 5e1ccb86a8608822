//! Frames on their way to a session's socket, as byte chunks written straight from
//! their buffers: small frames gathered into one chunk, media parts as they are. The
//! session loop writes them a little at a time, between reads, and knows whether it
//! is in the middle of a frame (then nothing else may be written).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;

use crate::metrics;
use crate::protocol::{control_frame, push_text_frame, push_text_frame_header, Frame};

/// Slices handed to one vectored write.
const SLICES_PER_WRITE: usize = 16;

#[derive(Default)]
pub struct Outgoing {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Bytes of the frame (or gathered frames) at the front already written.
    into_frame: usize,
}

struct Chunk {
    bytes: Bytes,
    /// The last chunk of a frame: a frame boundary follows it.
    ends_frame: bool,
}

impl Outgoing {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Part of a frame is written and the rest is not: anything else written now
    /// would corrupt the stream.
    pub fn mid_frame(&self) -> bool {
        self.into_frame > 0
    }

    pub fn extend(&mut self, frames: impl IntoIterator<Item = Frame>) {
        let mut gathered = Vec::new();
        for frame in frames {
            match frame {
                Frame::Text(text) => push_text_frame(&mut gathered, &text),
                Frame::Media(media) => {
                    self.push(std::mem::take(&mut gathered), true);
                    let mut header = Vec::with_capacity(10);
                    push_text_frame_header(&mut header, media.len());
                    let parts = media.into_parts();
                    self.push(header, false);
                    let last = parts.len().saturating_sub(1);
                    for (i, part) in parts.into_iter().enumerate() {
                        if !part.is_empty() || i == last {
                            self.chunks.push_back(Chunk {
                                bytes: part,
                                ends_frame: i == last,
                            });
                        }
                    }
                }
            }
        }
        self.push(gathered, true);
    }

    /// A control frame (a pong) after the frames queued so far.
    pub fn push_control(&mut self, opcode: u8, payload: &[u8]) {
        self.push(control_frame(opcode, payload), true);
    }

    fn push(&mut self, bytes: Vec<u8>, ends_frame: bool) {
        if !bytes.is_empty() {
            self.chunks.push_back(Chunk {
                bytes: bytes.into(),
                ends_frame,
            });
        }
    }

    /// Takes over the rest of frames another thread began writing (`write_through`):
    /// nothing else may be written before it.
    pub fn resume(&mut self, rest: Bytes) {
        // Write-through happens only while the task has nothing under way.
        debug_assert!(!self.mid_frame(), "a write-through began inside a frame");
        self.chunks.push_front(Chunk {
            bytes: rest,
            ends_frame: true,
        });
        self.offset = 0;
        self.into_frame = 1;
    }

    /// Drops every frame not started yet (the session is closing).
    pub fn drop_unstarted(&mut self) {
        if !self.mid_frame() {
            self.chunks.clear();
            self.offset = 0;
            return;
        }
        if let Some(end) = self.chunks.iter().position(|c| c.ends_frame) {
            self.chunks.truncate(end + 1);
        }
    }

    /// Writes what it can from the front; `Ready(Ok(n))` with `n > 0` bytes written.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        socket: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
        let mut count = 0;
        for (i, chunk) in self.chunks.iter().take(SLICES_PER_WRITE).enumerate() {
            let start = if i == 0 { self.offset } else { 0 };
            slices[i] = IoSlice::new(&chunk.bytes[start..]);
            count += 1;
        }
        if count == 0 {
            return Poll::Ready(Ok(0));
        }
        let written =
            std::task::ready!(Pin::new(socket).poll_write_vectored(cx, &slices[..count]))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.advance(written);
        metrics::bytes_written(written);
        Poll::Ready(Ok(written))
    }

    /// Everything queued, as the socket would receive it.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn collect_for_fuzzing(mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        while let Some(chunk) = self.chunks.pop_front() {
            wire.extend_from_slice(&chunk.bytes[std::mem::take(&mut self.offset)..]);
        }
        wire
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.bytes.len() - self.offset;
            if n < left {
                self.offset += n;
                self.into_frame += n;
                return;
            }
            n -= left;
            let ends_frame = front.ends_frame;
            self.chunks.pop_front();
            self.offset = 0;
            self.into_frame = if ends_frame {
                0
            } else {
                self.into_frame + left
            };
        }
        if self.chunks.is_empty() {
            // An idle session keeps no buffer from its last write.
            self.chunks = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A socket that takes at most `per_write` bytes per call.
    struct Trickle {
        taken: Vec<u8>,
        per_write: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.per_write);
            self.taken.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Text("small".into()),
            crate::protocol::media_frame(
                &crate::protocol::MediaCommand {
                    kind: crate::protocol::SendKind::Image,
                    request_id: "r",
                    phone_number: "+1",
                    caption: "",
                    mime_type: "image/png",
                    document_name: None,
                },
                "x".repeat(300).into(),
                crate::config::Dialect::Doc,
            ),
            Frame::Text("after".into()),
        ]
    }

    #[test]
    fn writes_the_same_bytes_in_any_slicing_and_tracks_frame_boundaries() {
        let mut whole = Outgoing::default();
        whole.extend(frames());
        let mut expected = Trickle {
            taken: Vec::new(),
            per_write: usize::MAX,
        };
        let mut cx = Context::from_waker(Waker::noop());
        while !whole.is_empty() {
            let _ = whole.poll_write(&mut expected, &mut cx);
        }
        // The media frame, header included: over 125 bytes, so its header is 4.
        let media = crate::protocol::frame_len(&frames()[1]);
        let total = 2 + 5 + media + 2 + 5;
        assert_eq!(expected.taken.len(), total);
        for per_write in [1, 3, 7, 100] {
            let mut out = Outgoing::default();
            out.extend(frames());
            let mut socket = Trickle {
                taken: Vec::new(),
                per_write,
            };
            let mut boundaries = Vec::new();
            while !out.is_empty() {
                assert!(
                    matches!(out.poll_write(&mut socket, &mut cx), Poll::Ready(Ok(n)) if n > 0)
                );
                if !out.mid_frame() {
                    boundaries.push(socket.taken.len());
                }
            }
            assert_eq!(socket.taken, expected.taken, "per_write {per_write}");
            assert!(
                boundaries.contains(&7) || per_write > 7,
                "after the first frame: {boundaries:?}"
            );
            assert!(
                boundaries.contains(&(7 + media)) || per_write > 7,
                "after the media frame"
            );
            assert_eq!(boundaries.last(), Some(&total));
        }
    }

    /// Property: whatever strings the caller (or a media server, for the MIME type and
    /// the data URL) supplies, every command frame on the wire is one text frame whose
    /// JSON holds exactly the caller's fields, no more, no fewer.
    #[test]
    fn any_command_frame_parses_back_to_exactly_the_callers_fields() {
        use crate::config::Dialect;
        use crate::protocol::{media_frame, message_frame, MediaCommand, SendKind};
        use serde_json::{json, Value};

        const ALPHABET: &[&str] = &[
            "a",
            "Z",
            "0",
            " ",
            "\"",
            "\\",
            ",",
            ":",
            "{",
            "}",
            "[",
            "]",
            "\n",
            "\r",
            "\t",
            "\u{0}",
            "\u{1f}",
            "\u{7f}",
            "é",
            "漢",
            "😀",
            "\u{2028}",
            "\u{feff}",
            "\",\"x\":\"",
            "data:",
            ";base64,",
        ];
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let text = |rng: &mut fastrand::Rng| -> String {
            (0..rng.usize(0..24))
                .map(|_| ALPHABET[rng.usize(..ALPHABET.len())])
                .collect()
        };
        for _ in 0..3000 {
            let (request_id, phone, caption, mime, url, name) = (
                text(&mut rng),
                text(&mut rng),
                text(&mut rng),
                text(&mut rng),
                text(&mut rng),
                text(&mut rng),
            );
            let kind = [
                SendKind::Message,
                SendKind::Image,
                SendKind::Video,
                SendKind::Document,
            ][rng.usize(..4)];
            let dialect = [Dialect::Compat, Dialect::V1, Dialect::Doc][rng.usize(..3)];
            let (frame, expected) = if kind == SendKind::Message {
                let frame = message_frame(&request_id, &phone, &caption);
                let data = json!({ "phoneNumber": phone, "message": caption });
                (frame, data)
            } else {
                let document_name = (kind == SendKind::Document).then_some(name.as_str());
                let command = MediaCommand {
                    kind,
                    request_id: &request_id,
                    phone_number: &phone,
                    caption: &caption,
                    mime_type: &mime,
                    document_name,
                };
                let mut data =
                    json!({ "phoneNumber": phone, "caption": caption, "mimeType": mime });
                if let Some(name) = document_name {
                    data["documentName"] = json!(name);
                }
                let kind_field = match kind {
                    SendKind::Video => "videoDataUrl",
                    SendKind::Document => "documentDataUrl",
                    _ => "imageDataUrl",
                };
                if dialect != Dialect::Doc {
                    data[kind_field] = json!(url);
                }
                if dialect != Dialect::V1 {
                    data["dataUrl"] = json!(url);
                }
                (media_frame(&command, url.clone().into(), dialect), data)
            };
            let mut out = Outgoing::default();
            out.extend([frame]);
            let mut socket = Trickle {
                taken: Vec::new(),
                per_write: rng.usize(1..64),
            };
            let mut cx = Context::from_waker(Waker::noop());
            while !out.is_empty() {
                let _ = out.poll_write(&mut socket, &mut cx);
            }
            let wire = socket.taken;
            assert_eq!(wire[0], 0x81, "one final text frame");
            let (len, start) = match wire[1] {
                126 => (u16::from_be_bytes([wire[2], wire[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            assert_eq!(
                wire.len(),
                start + len,
                "the frame is exactly as long as it says"
            );
            let parsed: Value = serde_json::from_slice(&wire[start..]).expect("valid JSON");
            let expected =
                json!({ "type": kind.command(), "requestId": request_id, "data": expected });
            assert_eq!(parsed, expected, "mime {mime:?} url {url:?}");
        }
    }

    #[test]
    fn nothing_is_kept_allocated_once_everything_is_written() {
        let mut out = Outgoing::default();
        out.extend(frames());
        let mut socket = Trickle {
            taken: Vec::new(),
            per_write: usize::MAX,
        };
        let mut cx = Context::from_waker(Waker::noop());
        while !out.is_empty() {
            let _ = out.poll_write(&mut socket, &mut cx);
        }
        assert_eq!(out.chunks.capacity(), 0);
    }

    #[test]
    fn closing_keeps_only_the_frame_being_written() {
        let mut out = Outgoing::default();
        out.extend(frames());
        out.drop_unstarted();
        assert!(out.is_empty(), "nothing started: everything goes");
        out.extend(frames());
        let mut socket = Trickle {
            taken: Vec::new(),
            per_write: 10,
        };
        let mut cx = Context::from_waker(Waker::noop());
        while !out.mid_frame() {
            let _ = out.poll_write(&mut socket, &mut cx);
        }
        assert_eq!(
            socket.taken.len(),
            7 + 4,
            "the small frame, then the media frame's header"
        );
        out.drop_unstarted();
        while !out.is_empty() {
            let _ = out.poll_write(&mut socket, &mut cx);
        }
        assert_eq!(
            socket.taken.len(),
            7 + crate::protocol::frame_len(&frames()[1]),
            "the small frame and the media frame under way"
        );
    }
}
