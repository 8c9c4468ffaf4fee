//! shardcast-loadgen: a thread-per-core load generator for shardcast and any WebSocket
//! server that echoes or rebroadcasts.
pub mod cli;
pub mod clock;
pub mod compare;
pub mod conn;
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
