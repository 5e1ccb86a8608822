//! Writing to a connection's socket outside the session loop: the replies to a
//! successful auth, and the closing handshake, each bounded so that a peer cannot hold
//! a task forever.

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::handshake::Socket;
use super::outgoing::Outgoing;
use crate::protocol::Frame;

/// Writes frames straight to the socket, after what tungstenite has buffered.
pub async fn write_frames(
    ws: &mut Socket,
    frames: impl IntoIterator<Item = Frame>,
) -> io::Result<()> {
    ws.flush().await.map_err(io::Error::other)?;
    let mut out = Outgoing::default();
    out.extend(frames);
    let wire = ws.get_mut();
    wire.hold();
    let written = poll_fn(|cx| {
        while !out.is_empty() {
            std::task::ready!(out.poll_write(wire.raw(), cx))?;
        }
        Poll::Ready(Ok(()))
    })
    .await;
    wire.release();
    written
}

pub async fn close(ws: &mut Socket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    let closing = async {
        let _ = ws.close(Some(frame)).await;
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), closing).await;
}
