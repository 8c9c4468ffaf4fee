//! Per-shard registries and cross-shard routing: client ids that name their shard, the
//! partitioned room registry, and the messages shards exchange.
//!
//! Everything here is plain data owned by one shard; `server.rs` moves the messages over
//! the mesh of `shardcast-shards`.

pub mod id;
pub mod rooms;
