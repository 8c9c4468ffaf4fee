//! Sans-IO protocol codecs.
//!
//! Every codec here reads from a buffer the caller owns and appends its output to a buffer
//! the caller owns. Time, when a rule needs it, comes in as an argument. There are no
//! sockets, no executor and no clock reads in this module tree: `conn/` (server) and the
//! load generator (client role) drive these codecs.
//!
//! - [`ws`]: RFC 6455 WebSocket (handshake, framing, masking, UTF-8, close codes,
//!   fragmentation) and RFC 7692 permessage-deflate, in both roles.
//! - [`stelar`]: the stelar TCP frame codec (PROTOCOL.md §4), the JSON envelope
//!   (§2) parsed without materialising `data`, and the WebSocket binary envelope (§3).
//! - [`http`]: the little HTTP/1.1 the server needs: request heads, query strings,
//!   responses (upgrade, `/health`, `/metrics`, the publish API).
//! - [`fuzzing`]: fuzz bodies shared by proptest and the `fuzz/` targets.

pub mod fuzzing;
pub mod http;
pub mod stelar;
pub mod ws;
