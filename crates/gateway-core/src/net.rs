//! The network side: accepting connections, the WebSocket handshake, authentication,
//! and the session loop that carries commands out and results in.

pub mod connection;
pub mod handshake;
pub mod listener;
pub mod outgoing;
pub mod reader;
pub mod session;
pub mod socket;
pub mod trim;

/// The byte stream under a WebSocket: a TCP socket the gateway accepted or was handed
/// by Node (plain `http.Server`), or one end of a socket pair whose other end Node
/// feeds with the bytes it decrypted (`https.Server`).
pub type Transport = tokio_util::either::Either<tokio::net::TcpStream, tokio::net::UnixStream>;
