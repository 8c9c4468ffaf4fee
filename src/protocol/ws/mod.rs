//! RFC 6455 WebSocket without I/O, in both roles, plus RFC 7692 permessage-deflate.
//!
//! - [`handshake`]: the opening handshake (server: parse + validate + 101 or HTTP error;
//!   client: build the request, verify the response), subprotocols and extension
//!   negotiation.
//! - [`frame`]: frame headers (§5.2), parsed from and written into caller buffers.
//! - [`mask`]: in-place (un)masking (§5.3).
//! - [`utf8`]: incremental UTF-8 validation for text messages that span fragments.
//! - [`close`]: close codes and close-frame payloads (§7.4).
//! - [`deflate`]: permessage-deflate compression and bounded decompression (RFC 7692).
//! - [`codec`]: message-level decoder and encoder: fragmentation, control frames
//!   interleaved, limits, and the close code to answer each violation with.

pub mod close;
pub mod codec;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;
