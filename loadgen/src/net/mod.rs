//! The connection layer below the wire codec: target URLs, source addresses, opening
//! sockets, TLS, and the stream type that hides whether a connection is encrypted.
//!
//! - [`url`]: `ws://`, `wss://`, `tcp://`, `tcp+tls://` targets, resolved once at start.
//! - [`source`]: `--source 127.0.0.1-127.0.0.32` lists of local addresses.
//! - [`dial`]: a non-blocking socket bound to a chosen source address
//!   (`IP_BIND_ADDRESS_NO_PORT`, so each source address brings its own ephemeral ports per
//!   destination) and put on the thread's ring while the connect is still in flight.
//! - [`tcp`]: [`tcp::Tcp`], a TCP socket read through the thread's io_uring (the shards'
//!   `uring`), so that waking the load generator costs the server under test no interrupt.
//! - [`tls`]: rustls client configuration (`--insecure`, `--ca FILE`, or the system roots)
//!   and the sink's self-signed server configuration.
//! - [`stream`]: [`Stream`], plain or TLS, for both roles.
//!
//! Handshakes (WebSocket upgrade, stelar CONNECT) are `conn.rs`'s; framing is `wire.rs`'s.

pub mod dial;
pub mod source;
pub mod stream;
pub mod tcp;
pub mod tls;
pub mod url;

pub use stream::Stream;
pub use url::{Scheme, TargetUrl};
