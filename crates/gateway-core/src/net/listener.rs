//! Accepts TCP connections until shutdown and hands each to its own task.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection;
use super::handshake::Upgrade;
use crate::error::{ErrorCode, GatewayError};
use crate::state::Shared;
use tokio_util::either::Either;

pub async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    accepting: CancellationToken,
    tasks: TaskTracker,
) {
    let mut reported = false;
    loop {
        let accepted = tokio::select! {
            _ = accepting.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                reported = false;
                // Commands are small and latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                let connection = connection::serve(
                    Either::Left(stream),
                    Upgrade::Unread,
                    peer.ip(),
                    shared.clone(),
                    shutdown.clone(),
                    tasks.clone(),
                );
                tasks.spawn(connection);
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                // Out of file descriptors or memory: report once per episode and let
                // existing sessions drain a little before trying again.
                if !reported {
                    reported = true;
                    let message = format!("Failed to accept connections: {e}");
                    shared.report(GatewayError::new(
                        ErrorCode::ServerError,
                        message,
                        json!({ "error": e.to_string() }),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
