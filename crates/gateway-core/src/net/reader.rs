//! WebSocket frames from an extension, parsed straight from the socket's bytes.
//!
//! Every read goes into a buffer on the stack (up to `READ_AHEAD` bytes, one system call
//! for many frames under load), and the messages it completes are handed on from there,
//! unmasked in place. Only the bytes of a frame not yet complete are kept, on the heap,
//! until it is: an idle connection holds no buffer at all (a WebSocket library's read
//! buffer, kept per connection, was the largest part of an idle session after its task).
//!
//! A message over the limit is refused from its frame header, before its body is read.
//! Client frames must be masked and use no extension; control frames are small and
//! whole; fragments of one message may have control frames between them (RFC 6455).

use std::mem::MaybeUninit;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The most one read from the socket takes.
const READ_AHEAD: usize = 16 * 1024;

/// Longest frame header a client sends: 2 bytes, 8 of length, 4 of mask.
const MAX_HEADER: usize = 14;

/// A message from the extension, borrowed from the bytes it came in.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// The closing handshake, with the extension's code and reason if it gave them.
    Close(Option<(u16, &'a str)>),
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// A message over the limit (close with 1009).
    TooBig,
    /// Not the WebSocket protocol, an I/O error, or the end of the stream: the
    /// connection is lost.
    Broken,
}

/// The reading side of a connection: whatever a read brought beyond whole frames.
#[derive(Default)]
pub struct Reader {
    /// Bytes read and not yet handed on: the start of a frame still arriving (or, after
    /// the caller stopped, the frames after it). Empty, without an allocation, otherwise.
    held: Vec<u8>,
    /// A message sent in fragments, until its last one. Boxed: almost none are.
    fragments: Option<Box<Fragments>>,
}

struct Fragments {
    text: bool,
    bytes: Vec<u8>,
}

/// A frame whose header is complete.
struct Header {
    fin: bool,
    opcode: u8,
    /// Where the mask is; the payload follows it.
    mask_at: usize,
    len: usize,
}

impl Header {
    fn end(&self) -> usize {
        self.mask_at + 4 + self.len
    }
}

/// The header at the start of `bytes`: `None` while it is incomplete. A data frame
/// announcing more than `limit` is refused as soon as its length is known.
fn header(bytes: &[u8], limit: usize) -> Result<Option<Header>, ReadError> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    // No extension was negotiated; a client masks every frame.
    if first & 0x70 != 0 || second & 0x80 == 0 {
        return Err(ReadError::Broken);
    }
    let opcode = first & 0x0f;
    let fin = first & 0x80 != 0;
    let (len, mask_at) = match second & 0x7f {
        126 => match bytes.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                (u64::from_be_bytes(be), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let control = opcode & 0x08 != 0;
    if control && (!fin || len > 125) {
        return Err(ReadError::Broken);
    }
    if !control && len > limit as u64 {
        return Err(ReadError::TooBig);
    }
    if bytes.len() < mask_at + 4 {
        return Ok(None);
    }
    Ok(Some(Header {
        fin,
        opcode,
        mask_at,
        // At most `limit` (or 125): fits.
        len: len as usize,
    }))
}

fn unmask(frame: &mut [u8], header: &Header) {
    let (mask, payload) = frame[header.mask_at..header.end()].split_at_mut(4);
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

fn text(bytes: &[u8]) -> Result<&str, ReadError> {
    std::str::from_utf8(bytes).map_err(|_| ReadError::Broken)
}

impl Reader {
    /// A reader that first hands on `bytes`, read before it existed.
    pub fn holding(bytes: Vec<u8>) -> Self {
        Self {
            held: bytes,
            fragments: None,
        }
    }

    /// Reads what the socket has and hands `on_message` each message it completes, in
    /// order, until that returns `Break`. `Ready(Ok(Continue))` after each read (call
    /// again: there may be more), `Pending` once the socket has nothing; bytes after a
    /// `Break` are kept for the next call.
    pub fn poll_read<R, B>(
        &mut self,
        socket: &mut R,
        cx: &mut Context<'_>,
        limit: usize,
        mut on_message: impl FnMut(Message<'_>) -> ControlFlow<B>,
    ) -> Poll<Result<ControlFlow<B>, ReadError>>
    where
        R: AsyncRead + Unpin,
    {
        if !self.held.is_empty() {
            let flow = self.consume_held(limit, &mut on_message)?;
            if let Some(flow) = flow {
                return Poll::Ready(Ok(flow));
            }
        }
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_AHEAD];
        let mut read = ReadBuf::uninit(&mut chunk);
        match Pin::new(socket).poll_read(cx, &mut read) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Err(ReadError::Broken)),
            Poll::Ready(Ok(())) => {}
        }
        if read.filled().is_empty() {
            return Poll::Ready(Err(ReadError::Broken));
        }
        if !self.held.is_empty() {
            self.held.extend_from_slice(read.filled());
            let flow = self.consume_held(limit, &mut on_message)?;
            return Poll::Ready(Ok(flow.unwrap_or(ControlFlow::Continue(()))));
        }
        let bytes = read.filled_mut();
        let (used, flow) = self.consume(bytes, limit, &mut on_message)?;
        if used < bytes.len() {
            self.hold(&bytes[used..], limit);
        }
        Poll::Ready(Ok(flow))
    }

    /// Keeps the rest of a read, with room for the whole frame it begins when its
    /// header tells its length.
    fn hold(&mut self, rest: &[u8], limit: usize) {
        let frame = match header(rest, limit) {
            Ok(Some(header)) => header.end(),
            _ => MAX_HEADER,
        };
        let mut held = Vec::with_capacity(frame.max(rest.len()));
        held.extend_from_slice(rest);
        self.held = held;
    }

    /// Hands on the messages the held bytes complete; `None` when they completed none
    /// and the caller did not stop (more must be read).
    fn consume_held<B>(
        &mut self,
        limit: usize,
        on_message: &mut impl FnMut(Message<'_>) -> ControlFlow<B>,
    ) -> Result<Option<ControlFlow<B>>, ReadError> {
        let mut held = std::mem::take(&mut self.held);
        let (used, flow) = self.consume(&mut held, limit, on_message)?;
        if used < held.len() {
            held.drain(..used);
            self.held = held;
        }
        Ok((used > 0 || flow.is_break()).then_some(flow))
    }

    /// Hands on each message the whole frames at the start of `bytes` complete; returns
    /// how many bytes those frames took.
    fn consume<B>(
        &mut self,
        bytes: &mut [u8],
        limit: usize,
        on_message: &mut impl FnMut(Message<'_>) -> ControlFlow<B>,
    ) -> Result<(usize, ControlFlow<B>), ReadError> {
        let mut at = 0;
        while let Some(head) = header(&bytes[at..], limit)? {
            let frame = &mut bytes[at..];
            if frame.len() < head.end() {
                break;
            }
            at += head.end();
            unmask(frame, &head);
            let payload = &frame[head.mask_at + 4..head.end()];
            if let ControlFlow::Break(b) = self.frame(&head, payload, limit, on_message)? {
                return Ok((at, ControlFlow::Break(b)));
            }
        }
        Ok((at, ControlFlow::Continue(())))
    }

    /// One whole, unmasked frame.
    fn frame<B>(
        &mut self,
        header: &Header,
        payload: &[u8],
        limit: usize,
        on_message: &mut impl FnMut(Message<'_>) -> ControlFlow<B>,
    ) -> Result<ControlFlow<B>, ReadError> {
        let message = match (header.opcode, header.fin) {
            (0x1 | 0x2, _) if self.fragments.is_some() => return Err(ReadError::Broken),
            (0x1, true) => Message::Text(text(payload)?),
            (0x2, true) => Message::Binary(payload),
            (0x1 | 0x2, false) => {
                self.fragments = Some(Box::new(Fragments {
                    text: header.opcode == 0x1,
                    bytes: payload.to_vec(),
                }));
                return Ok(ControlFlow::Continue(()));
            }
            (0x0, fin) => {
                let fragments = self.fragments.as_mut().ok_or(ReadError::Broken)?;
                if fragments.bytes.len() + payload.len() > limit {
                    return Err(ReadError::TooBig);
                }
                fragments.bytes.extend_from_slice(payload);
                if !fin {
                    return Ok(ControlFlow::Continue(()));
                }
                let Some(whole) = self.fragments.take() else {
                    return Err(ReadError::Broken);
                };
                let message = if whole.text {
                    Message::Text(text(&whole.bytes)?)
                } else {
                    Message::Binary(&whole.bytes)
                };
                return Ok(on_message(message));
            }
            (0x8, _) => Message::Close(match payload {
                [] => None,
                [a, b, reason @ ..] => Some((u16::from_be_bytes([*a, *b]), text(reason)?)),
                [_] => return Err(ReadError::Broken),
            }),
            (0x9, _) => Message::Ping(payload),
            (0xa, _) => Message::Pong,
            _ => return Err(ReadError::Broken),
        };
        Ok(on_message(message))
    }

    /// Bytes held now (tests: an idle reader holds none).
    #[cfg(test)]
    pub fn held_capacity(&self) -> usize {
        self.held.capacity()
    }

    /// The next message, owned, for the few awaited before a session starts; pings
    /// come back too, for the caller to answer.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        socket: &mut R,
        limit: usize,
    ) -> Result<Owned, ReadError> {
        std::future::poll_fn(|cx| loop {
            let read = std::task::ready!(
                self.poll_read(socket, cx, limit, |m| { ControlFlow::Break(Owned::of(m)) })
            )?;
            if let ControlFlow::Break(message) = read {
                return Poll::Ready(Ok(message));
            }
        })
        .await
    }
}

/// A message kept beyond the read that brought it.
#[derive(Debug, PartialEq, Eq)]
pub enum Owned {
    /// Text, or binary read as text.
    Text(String),
    Ping(Vec<u8>),
    Pong,
    Close,
}

impl Owned {
    fn of(message: Message<'_>) -> Self {
        match message {
            Message::Text(text) => Self::Text(text.to_owned()),
            Message::Binary(bytes) => Self::Text(String::from_utf8_lossy(bytes).into_owned()),
            Message::Ping(payload) => Self::Ping(payload.to_vec()),
            Message::Pong => Self::Pong,
            Message::Close(_) => Self::Close,
        }
    }
}

/// What a reader would hand on from `bytes` split into reads at `cuts`: the fuzz
/// target's entry (it must never panic), and the tests'.
#[cfg(any(test, feature = "fuzzing"))]
pub fn read_all(limit: usize, cuts: &[usize], bytes: &[u8]) -> (Vec<Owned>, Option<ReadError>) {
    struct Cut<'a>(Vec<&'a [u8]>);
    impl AsyncRead for Cut<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            // Every part read: nothing more for now (the stream does not end).
            let Some(part) = self.0.first_mut() else {
                return Poll::Pending;
            };
            let n = part.len().min(buf.remaining());
            buf.put_slice(&part[..n]);
            *part = &part[n..];
            if part.is_empty() {
                self.0.remove(0);
            }
            Poll::Ready(Ok(()))
        }
    }
    let mut parts = Vec::new();
    let mut rest = bytes;
    for &cut in cuts {
        let (now, later) = rest.split_at(cut.min(rest.len()));
        if !now.is_empty() {
            parts.push(now);
        }
        rest = later;
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    let mut socket = Cut(parts);
    let mut reader = Reader::default();
    let mut got = Vec::new();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    loop {
        let read = reader.poll_read(&mut socket, &mut cx, limit, |m| {
            got.push(Owned::of(m));
            ControlFlow::<()>::Continue(())
        });
        match read {
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => return (got, Some(e)),
            Poll::Pending => return (got, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with a fixed key.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let len = payload.len();
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn text(s: &str) -> Owned {
        Owned::Text(s.to_string())
    }

    #[test]
    fn messages_come_out_whole_however_the_bytes_are_cut() {
        let big = "é".repeat(20_000);
        let stream = [
            frame(true, 1, b"{\"type\":\"heartbeat\"}"),
            frame(true, 9, b"pi"),
            frame(false, 1, &big.as_bytes()[..3]),
            frame(true, 10, b""),
            frame(false, 0, &big.as_bytes()[3..30_001]),
            frame(true, 0, &big.as_bytes()[30_001..]),
            frame(true, 2, b"bin"),
            frame(true, 1, big.as_bytes()),
            frame(true, 8, &[0x03, 0xe8, b'b', b'y', b'e']),
        ]
        .concat();
        let expected = vec![
            text("{\"type\":\"heartbeat\"}"),
            Owned::Ping(b"pi".to_vec()),
            Owned::Pong,
            text(&big),
            text("bin"),
            text(&big),
            Owned::Close,
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..200 {
            let cuts: Vec<usize> = match round {
                0 => vec![],
                1 => (1..stream.len()).map(|_| 1).collect(),
                _ => (0..rng.usize(1..40))
                    .map(|_| rng.usize(1..20_000))
                    .collect(),
            };
            let (got, error) = read_all(1 << 20, &cuts, &stream);
            assert_eq!(error, None, "round {round}");
            assert_eq!(got, expected, "round {round}");
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_from_its_header() {
        let header_only = &frame(true, 1, &vec![b'x'; 5000])[..8];
        assert_eq!(
            read_all(4096, &[], header_only),
            (vec![], Some(ReadError::TooBig))
        );
        // Fragments add up; a control frame between them does not count.
        let stream = [
            frame(false, 1, &[b'x'; 3000]),
            frame(true, 9, &[b'p'; 100]),
            frame(true, 0, &[b'x'; 1097]),
        ]
        .concat();
        let (got, error) = read_all(4096, &[], &stream);
        assert_eq!((got.len(), error), (1, Some(ReadError::TooBig)));
        let (got, error) = read_all(4097, &[], &stream);
        assert_eq!((got.len(), error), (2, None));
        // Exactly the limit passes.
        assert_eq!(
            read_all(5, &[], &frame(true, 1, b"12345")),
            (vec![text("12345")], None)
        );
    }

    #[test]
    fn what_is_not_the_protocol_breaks_the_connection() {
        let unmasked = [0x81, 0x02, b'h', b'i'];
        let reserved = {
            let mut f = frame(true, 1, b"hi");
            f[0] |= 0x40;
            f
        };
        let long_ping = frame(true, 9, &[0; 126]);
        let cut_ping = frame(false, 9, b"");
        let lone_continuation = frame(true, 0, b"x");
        let unknown_opcode = frame(true, 3, b"x");
        let bad_utf8 = frame(true, 1, &[0xff, 0xfe]);
        let interrupted = [frame(false, 1, b"a"), frame(true, 1, b"b")].concat();
        let one_byte_close = frame(true, 8, &[3]);
        for (name, bytes) in [
            ("unmasked", unmasked.to_vec()),
            ("reserved", reserved),
            ("long ping", long_ping),
            ("cut ping", cut_ping),
            ("lone continuation", lone_continuation),
            ("unknown opcode", unknown_opcode),
            ("bad utf-8", bad_utf8),
            ("interrupted", interrupted),
            ("one-byte close", one_byte_close),
        ] {
            assert_eq!(
                read_all(1 << 20, &[], &bytes),
                (vec![], Some(ReadError::Broken)),
                "{name}"
            );
        }
    }

    #[test]
    fn an_idle_reader_holds_no_buffer_and_keeps_what_follows_a_stop() {
        let mut reader = Reader::default();
        let stream = [
            frame(true, 1, b"first"),
            frame(true, 1, b"second"),
            frame(false, 1, b"thi"),
        ]
        .concat();
        let mut socket: &[u8] = &stream;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let read = reader.poll_read(&mut socket, &mut cx, 1024, |m| {
            ControlFlow::Break(Owned::of(m))
        });
        assert!(
            matches!(read, Poll::Ready(Ok(ControlFlow::Break(Owned::Text(t)))) if t == "first")
        );
        assert!(reader.held_capacity() > 0, "the rest is kept");
        let mut got = Vec::new();
        let mut empty: &[u8] = &[];
        let read = reader.poll_read(&mut empty, &mut cx, 1024, |m| {
            got.push(Owned::of(m));
            ControlFlow::<()>::Continue(())
        });
        assert!(matches!(read, Poll::Ready(Ok(ControlFlow::Continue(())))));
        assert_eq!(got, [text("second")]);
        let mut last: &[u8] = &frame(true, 0, b"rd");
        let read = reader.poll_read(&mut last, &mut cx, 1024, |m| {
            got.push(Owned::of(m));
            ControlFlow::<()>::Continue(())
        });
        assert!(matches!(read, Poll::Ready(Ok(ControlFlow::Continue(())))));
        assert_eq!(got, [text("second"), text("third")]);
        assert_eq!(reader.held_capacity(), 0, "nothing held once consumed");
        assert!(reader.fragments.is_none());
    }
}
