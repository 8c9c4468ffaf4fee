//! shardcast-loadgen: a thread-per-core load generator for shardcast and any WebSocket
//! server that echoes or rebroadcasts (DESIGN.md "The load generator"; README.md beside
//! this crate for use, PERF-loadgen.md for its measured headroom).
//!
//! # Layout
//! - Sans-IO pieces: [`stamp`] (the send time / sequence stamp every measured message
//!   carries), [`seq`] (loss, duplicates, reordering), [`wire`] (the client side of
//!   WebSocket relay envelopes, raw WebSocket and stelar TCP frames, over
//!   `shardcast::protocol` only), [`dialects`] (StellarStack, ignis and stonyx receivers:
//!   auth, join, deliveries), [`plan`] and [`scenario`] (who connects where and does
//!   what), [`metrics`] (HDR histograms, counters, timeline), [`report`] (the versioned JSON
//!   schema and the table), [`fault`] (failures by kind).
//! - I/O: [`net`] (URLs, source addresses, sockets, TLS, streams), [`conn`] (one connection's
//!   handshake and drive loop), [`engine`] (shards and the phases of a run), [`procs`]
//!   (worker processes), [`run`] (orchestration, progress, resource sampling), [`usage`]
//!   (`/proc` readings), [`sync`] (shard-local wake-ups).
//! - Commands: [`cli`], [`sink`], [`compare`], [`plot`]; `main.rs` dispatches.
//!
//! **Architecture invariant:** nothing here uses the server's `app`, `conn`, `hub` or relay
//! modules: the load generator speaks to servers only through `shardcast::protocol` codecs
//! (test.sh greps for it).
pub mod cli;
pub mod clock;
pub mod compare;
pub mod conn;
pub mod dialects;
pub mod engine;
pub mod fault;
pub mod metrics;
pub mod net;
pub mod plan;
pub mod plot;
pub mod procs;
pub mod report;
pub mod run;
pub mod scenario;
pub mod seq;
pub mod sink;
pub mod stamp;
pub mod sync;
pub mod usage;
pub mod wire;
