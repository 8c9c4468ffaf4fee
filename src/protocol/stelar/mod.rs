//! The stelar protocol's framing and envelopes (PROTOCOL.md §2, §3, §4, §6, §9, §10), sans-IO.
//!
//! # What lives here
//! - [`frame`]: the binary TCP protocol (§4): [`FrameType`], the in-place [`FrameDecoder`]
//!   (`Ok(None)` = need more bytes; event and payload handed out as `Bytes` views of the
//!   read buffer), and [`OutFrame`], which builds any frame in one allocation.
//! - [`envelope`]: the JSON envelope of WebSocket text messages (§2) and the JSON inside
//!   TCP ACK frames (§4.4). Parsing keeps `data` as the exact bytes received, so fan-out
//!   never re-serialises it; [`TextEnvelope`] encodes by concatenation; [`DataParser`]
//!   gives handlers a simd-json DOM of `data`.
//! - [`binary`]: the WebSocket binary-message envelope (§3).
//! - [`names`]: event-name rules (§2.4, Q13) and room names from join/leave (§6, Q14).
//! - [`json`]: the validating, span-keeping JSON scanner behind all of the above, and
//!   `JSON.stringify`-compatible string escaping.
//! - [`fuzz`]: fuzz bodies over arbitrary bytes (for proptest and `fuzz/` targets).
//! - [`Error`]: the layer's one error enum, with [`Error::answer`] (ERROR frame + close,
//!   silent drop, or never sent) and [`Error::label`] (counter label).
//!
//! # What does not
//! No sockets, clocks, executors or threads: `conn/` feeds bytes in and writes the `Bytes`
//! that come out; it also owns rate limits, payload-size policy and dispatch. The WebSocket
//! framing around envelopes is `protocol::ws`'s.

pub mod binary;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod fuzz;
pub mod json;
pub mod names;

pub use binary::BinaryMessage;
pub use envelope::{AckPayload, DataParser, Envelope, Members, TextEnvelope};
pub use error::{Answer, Error};
pub use frame::{Frame, FrameDecoder, FrameType, OutFrame};
