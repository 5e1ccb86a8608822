//! Writing to a session's socket: commands straight from their buffers, and the
//! closing handshake, each bounded so that a peer cannot hold a task forever.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Error as WsError;

use super::handshake::Socket;
use crate::protocol::{push_text_frame_header, Frame};

/// Writes frames straight to the socket: small ones gathered into one buffer that
/// lives only for this write, media parts as they are. Through tungstenite, every
/// frame would be copied into a write buffer that each idle session then keeps.
pub async fn write_frames(ws: &mut Socket, frames: VecDeque<Frame>) -> Result<(), WsError> {
    // What tungstenite has buffered (an error reply, a pong) goes first.
    ws.flush().await?;
    let socket = ws.get_mut();
    let mut gathered = Vec::new();
    for frame in frames {
        match frame {
            Frame::Text(text) => {
                push_text_frame_header(&mut gathered, text.len());
                gathered.extend_from_slice(text.as_bytes());
            }
            Frame::Parts(parts) => {
                push_text_frame_header(&mut gathered, parts.iter().map(Bytes::len).sum());
                socket.write_all(&gathered).await?;
                gathered.clear();
                for part in &parts {
                    socket.write_all(part).await?;
                }
            }
        }
    }
    socket.write_all(&gathered).await?;
    Ok(socket.flush().await?)
}

pub async fn close(ws: &mut Socket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let closing = async {
        let _ = ws.close(Some(frame)).await;
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), closing).await;
}
