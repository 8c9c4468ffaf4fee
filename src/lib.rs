//! shardcast: a thread-per-core real-time messaging server speaking the stelar wire
//! protocol over WebSocket and over stelar's binary TCP framing.
//!
//! # Layout
//! - [`protocol`]: sans-IO codecs (RFC 6455 WebSocket, RFC 7692 permessage-deflate, the
//!   stelar TCP frames and JSON/binary envelopes, the little HTTP/1.1 the server needs).
//!   Nothing in there touches a socket, an executor or a clock.
//!
//! The shard runtime lives in the `shardcast-shards` crate; the load generator in
//! `shardcast-loadgen`. See ARCHITECTURE.md for the map and its invariants.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(unreachable_pub)]

pub mod app;
pub(crate) mod auth;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod conn;
pub mod dialect;
pub(crate) mod hub;
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod internals;
pub mod live;
pub(crate) mod protect;
pub mod protocol;
pub(crate) mod reload;
pub mod server;
pub(crate) mod stats;

pub use app::{Context, Json, Payload, Server};
