//! The byte stream under a WebSocket as the gateway uses it: a [`Transport`] with two
//! additions.
//!
//! - A write gate. Commands are written straight to the socket, in parts, while the
//!   WebSocket keeps reading; reading can make tungstenite write too (a pong, the reply
//!   to a close). While a command is half written the gate holds tungstenite's writes
//!   back (they see a socket that is not ready), so no frame is ever cut by another.
//! - A meter on what is read before auth: a message over `maxPreAuthPayload` is
//!   refused from its frame header, before its body is buffered.
//! - A record of whether tungstenite still owes bytes to the socket (a pong it could
//!   not write whole), so that the session knows when its socket is idle for writes.
//! - Read-ahead. tungstenite reads at most its (small, for idle memory) buffer size
//!   at a time; under load that is a system call for every frame or two. One read
//!   here takes up to `READ_AHEAD` bytes and serves tungstenite's reads from them; the
//!   rest is kept only until it is consumed, so an idle session holds none. Only
//!   after auth: before it, nothing is read that the meter has not seen.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame_meter::FrameMeter;
use super::Transport;

/// The most one read from the socket takes.
const READ_AHEAD: usize = 16 * 1024;
const _: () = assert!(READ_AHEAD <= u32::MAX as usize, "ahead_at is a u32");

pub struct Wire {
    inner: Transport,
    /// Bytes read from the socket and not yet handed on, from `ahead_at`.
    ahead: Box<[u8]>,
    ahead_at: u32,
    /// Boxed: it lives only until auth, and every idle session's task holds its `Wire`.
    meter: Option<Box<FrameMeter>>,
    too_big: bool,
    held: bool,
    /// Whoever found the gate held, to wake when it opens.
    waiting: Option<Waker>,
    /// tungstenite's last write was refused or taken only in part.
    owes: bool,
}

impl Wire {
    /// `pre_auth_limit` meters messages until `authenticated()`; `head` is what the
    /// client sent after its upgrade request, already read.
    pub fn new(inner: Transport, pre_auth_limit: usize, head: &[u8]) -> Self {
        let mut meter = Box::new(FrameMeter::new(pre_auth_limit));
        let too_big = meter.feed(head).is_err();
        Self {
            inner,
            ahead: Box::default(),
            ahead_at: 0,
            meter: Some(meter),
            too_big,
            held: false,
            waiting: None,
            owes: false,
        }
    }

    /// From now on only the WebSocket's own limit (`maxPayload`) applies.
    pub fn authenticated(&mut self) {
        self.meter = None;
        self.too_big = false;
    }

    /// Whether reading stopped because a message before auth was too big.
    pub fn pre_auth_too_big(&self) -> bool {
        self.too_big
    }

    /// The socket itself, for writing a command in parts; `hold()` first.
    pub fn raw(&mut self) -> &mut Transport {
        &mut self.inner
    }

    /// Neither a command nor tungstenite is in the middle of writing.
    pub fn idle_for_writes(&self) -> bool {
        !self.held && !self.owes
    }

    pub fn raw_ref(&self) -> &Transport {
        &self.inner
    }

    pub fn hold(&mut self) {
        self.held = true;
    }

    pub fn release(&mut self) {
        self.held = false;
        if let Some(waker) = self.waiting.take() {
            waker.wake();
        }
    }

    fn gate(&mut self, cx: &Context<'_>) -> Poll<()> {
        if self.held {
            self.waiting = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

fn too_big() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "message over maxPreAuthPayload")
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The bytes that tripped the meter were handed on: they may also hold the auth
        // frame before the big one. Reading stops at the next read, unless auth has
        // succeeded meanwhile.
        if this.too_big && this.meter.is_some() {
            return Poll::Ready(Err(too_big()));
        }
        let before = buf.filled().len();
        let polled = this.read_into(cx, buf);
        if let (Poll::Ready(Ok(())), Some(meter)) = (&polled, this.meter.as_mut()) {
            if meter.feed(&buf.filled()[before..]).is_err() {
                this.too_big = true;
            }
        }
        polled
    }
}

impl Wire {
    /// Fills `buf` from the bytes read ahead, else from one read of the socket.
    fn read_into(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let at = self.ahead_at as usize;
        if at < self.ahead.len() {
            let n = buf.remaining().min(self.ahead.len() - at);
            buf.put_slice(&self.ahead[at..at + n]);
            if at + n == self.ahead.len() {
                self.ahead = Box::default();
                self.ahead_at = 0;
            } else {
                // Below READ_AHEAD: fits.
                self.ahead_at = (at + n) as u32;
            }
            return Poll::Ready(Ok(()));
        }
        // Before auth, nothing is read that the meter has not seen.
        if buf.remaining() >= READ_AHEAD || self.meter.is_some() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_AHEAD];
        let mut read = ReadBuf::uninit(&mut chunk);
        std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
        let bytes = read.filled();
        let n = buf.remaining().min(bytes.len());
        buf.put_slice(&bytes[..n]);
        if n < bytes.len() {
            self.ahead = bytes[n..].into();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.owes = true;
        std::task::ready!(this.gate(cx));
        let written = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.owes = written < buf.len();
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.gate(cx));
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.gate(cx));
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.owes = true;
        std::task::ready!(this.gate(cx));
        let written = std::task::ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.owes = written < bufs.iter().map(|b| b.len()).sum();
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
