//! Follows the WebSocket frames an extension sends, header by header as the bytes
//! arrive, so that a message over a size limit is refused from its header, before its
//! body is buffered. Used before auth (`maxPreAuthPayload`), when the WebSocket's own
//! limit is still the larger `maxPayload`.

/// A message grew past the meter's limit.
#[derive(Debug, PartialEq, Eq)]
pub struct MessageTooBig;

pub struct FrameMeter {
    limit: u64,
    /// Bytes of the current frame header seen so far (at most 14).
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes of the current frame still to come; `None` while in a header.
    payload_left: Option<u64>,
    /// Payload of the current (possibly fragmented) data message so far.
    message_len: u64,
}

impl FrameMeter {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit as u64,
            header: [0; 14],
            header_len: 0,
            payload_left: None,
            message_len: 0,
        }
    }

    /// Feeds bytes as read from the socket, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), MessageTooBig> {
        while !bytes.is_empty() {
            match self.payload_left {
                Some(left) => {
                    let skip = left.min(bytes.len() as u64);
                    bytes = &bytes[skip as usize..];
                    self.payload_left = (left > skip).then_some(left - skip);
                }
                None => {
                    self.header[self.header_len] = bytes[0];
                    self.header_len += 1;
                    bytes = &bytes[1..];
                    if let Some(payload) = self.header_complete() {
                        self.header_len = 0;
                        self.payload_left = (payload > 0).then_some(payload);
                        self.count(payload)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The payload length once the header in `self.header` is complete.
    fn header_complete(&self) -> Option<u64> {
        let have = &self.header[..self.header_len];
        if have.len() < 2 {
            return None;
        }
        let masked = have[1] & 0x80 != 0;
        let (extended, short) = match have[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        let needed = 2 + extended + if masked { 4 } else { 0 };
        if have.len() < needed {
            return None;
        }
        Some(short.unwrap_or_else(|| {
            have[2..2 + extended]
                .iter()
                .fold(0u64, |n, b| (n << 8) | u64::from(*b))
        }))
    }

    fn count(&mut self, payload: u64) -> Result<(), MessageTooBig> {
        let opcode = self.header[0] & 0x0f;
        // Control frames are small (tungstenite checks them) and sit between fragments.
        if opcode & 0x08 != 0 {
            return Ok(());
        }
        if opcode != 0 {
            self.message_len = 0;
        }
        self.message_len = self.message_len.saturating_add(payload);
        if self.message_len > self.limit {
            return Err(MessageTooBig);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header for `len` payload bytes (the payload is not needed
    /// to test the meter, only its length).
    fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out
    }

    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut out = header(fin, opcode, len as u64);
        out.extend(std::iter::repeat_n(b'x', len));
        out
    }

    #[test]
    fn messages_up_to_the_limit_pass_in_any_split() {
        let stream: Vec<u8> = [
            frame(true, 1, 100),
            frame(true, 9, 4),
            frame(true, 1, 16 * 1024),
            frame(true, 2, 0),
        ]
        .concat();
        for chunk in [1, 3, 7, 1000, stream.len()] {
            let mut meter = FrameMeter::new(16 * 1024);
            for part in stream.chunks(chunk) {
                assert_eq!(meter.feed(part), Ok(()), "chunk {chunk}");
            }
        }
    }

    #[test]
    fn a_header_announcing_too_much_is_refused_before_the_body() {
        for len in [16 * 1024 + 1, 70_000, 1 << 40] {
            let mut meter = FrameMeter::new(16 * 1024);
            assert_eq!(
                meter.feed(&header(true, 1, len)),
                Err(MessageTooBig),
                "{len}"
            );
        }
    }

    #[test]
    fn fragments_add_up_and_control_frames_between_them_do_not() {
        let mut meter = FrameMeter::new(1000);
        meter.feed(&frame(false, 1, 600)).unwrap();
        meter.feed(&frame(true, 10, 100)).unwrap();
        assert_eq!(meter.feed(&frame(true, 0, 401)), Err(MessageTooBig));
        // A new message starts counting from zero.
        let mut meter = FrameMeter::new(1000);
        meter.feed(&frame(true, 1, 900)).unwrap();
        meter.feed(&frame(true, 1, 900)).unwrap();
    }
}
