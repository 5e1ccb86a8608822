//! A connection after its upgrade: the socket and what was read of it beyond whole
//! frames. The session loop reads and writes it directly (`net::session`); the auth
//! exchange and the closing handshake use the few awaited steps here, each bounded so
//! that a peer cannot hold a task forever.

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use tokio::io::AsyncWriteExt;

use super::outgoing::Outgoing;
use super::reader::{Owned, ReadError, Reader};
use super::Transport;
use crate::protocol::{control_frame, push_text_frame, Frame};

pub struct Socket {
    pub io: Transport,
    pub reader: Reader,
}

/// How long a closing handshake may take to write.
const CLOSING: std::time::Duration = std::time::Duration::from_secs(1);

impl Socket {
    /// `head` is what the client sent after its upgrade request, already read.
    pub fn new(io: Transport, head: Vec<u8>) -> Self {
        Self {
            io,
            reader: Reader::holding(head),
        }
    }

    /// The next text (or binary) message or close, pings answered on the way; messages
    /// over `limit` are refused from their header.
    pub async fn next(&mut self, limit: usize) -> Result<Option<String>, ReadError> {
        loop {
            match self.reader.next(&mut self.io, limit).await? {
                Owned::Text(text) => return Ok(Some(text)),
                Owned::Close => return Ok(None),
                Owned::Ping(payload) => {
                    self.io
                        .write_all(&control_frame(0xa, &payload))
                        .await
                        .map_err(|_| ReadError::Broken)?;
                }
                Owned::Pong => {}
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        let mut frame = Vec::with_capacity(text.len() + 10);
        push_text_frame(&mut frame, text);
        self.io.write_all(&frame).await
    }

    /// Writes frames straight from their buffers.
    pub async fn write_frames(
        &mut self,
        frames: impl IntoIterator<Item = Frame>,
    ) -> io::Result<()> {
        let mut out = Outgoing::default();
        out.extend(frames);
        let io = &mut self.io;
        poll_fn(|cx| {
            while !out.is_empty() {
                std::task::ready!(out.poll_write(io, cx))?;
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Sends a close frame (`code` 1005: one without a code, as an answer to such).
    pub async fn close(&mut self, code: u16, reason: &str) {
        let mut payload = Vec::with_capacity(2 + reason.len());
        if code != 1005 {
            payload.extend_from_slice(&code.to_be_bytes());
            // A control frame carries at most 125 bytes: the reason is cut, on a
            // character boundary.
            let mut end = reason.len().min(123);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            payload.extend_from_slice(&reason.as_bytes()[..end]);
        }
        let frame = control_frame(0x8, &payload);
        let _ = tokio::time::timeout(CLOSING, self.io.write_all(&frame)).await;
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match &self.io {
            tokio_util::either::Either::Left(tcp) => tcp.as_raw_fd(),
            tokio_util::either::Either::Right(unix) => unix.as_raw_fd(),
        }
    }
}
