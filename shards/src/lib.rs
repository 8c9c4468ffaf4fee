//! `shardcast-shards`: the thread-per-core runtime under shardcast's server and load generator.
//!
//! # What it owns
//! - **Shards** ([`Runtime`], [`Builder`], [`Shard`]): `N` glommio executors (default: one per
//!   CPU this process may use), each on a named thread pinned to its CPU, started together:
//!   [`Builder::start`] returns once every shard is up, or with the first shard's setup error
//!   and nothing left running; [`Runtime::join`] returns when every shard has ended.
//! - **Listeners** ([`Listener`]): for each named address, one `SO_REUSEPORT` socket per shard
//!   on the same port (port 0 picks one for all), all bound before any shard runs; optionally
//!   a listener at the port after another one's ([`Builder::listen_next_to`]); an accept loop
//!   that counts errors and backs off on `EMFILE` instead of spinning.
//! - **The mesh** ([`MeshSender`], [`ShardMesh`], [`Inbox`]): one bounded MPSC inbox per shard
//!   for a caller-defined message type `M`, fed from shards or plain threads, drained in
//!   batches, with a doorbell that wakes an idle shard and costs nothing while it is busy.
//! - **Timers** ([`TimerWheel`], [`Timers`], [`Expirations`]): a clock-free hashed timer wheel
//!   and the glue that drives one wheel per shard from a single glommio timer.
//! - **Shutdown** ([`Shutdown`]): a process-wide handle (optionally driven by SIGINT/SIGTERM)
//!   that every shard observes as a future: phase 1 drains, phase 2 (explicit or after the
//!   drain timeout) forces.
//! - **Signals** (optional, [`Builder::handle_signals`]): SIGINT/SIGTERM drive the shutdown,
//!   SIGHUP runs the caller's hangup hooks ([`Builder::on_hangup`]).
//!
//! # What it does not own
//! No WebSocket, no stelar, no HTTP: a stream is handed to the caller as a glommio
//! `TcpStream`, and a mesh message is whatever `M` the caller defines (the server's `hub/`
//! decides what `Publish` or `Direct` mean, and which shard owns a client). Connection state,
//! rooms and metrics rendering live in the server; this crate only exposes counters.
//!
//! # Use
//! ```no_run
//! use shardcast_shards::Runtime;
//!
//! enum Msg { Ping(usize) }
//!
//! let runtime = Runtime::builder()
//!     .shards(2)
//!     .messages::<Msg>()
//!     .listen("ws", "127.0.0.1:0")
//!     .start(|shard| async move {
//!         let listener = shard.take_listener("ws").expect("configured above");
//!         let mut inbox = shard.take_inbox().expect("taken once");
//!         shard.spawn(async move {
//!             let mut batch = Vec::new();
//!             loop {
//!                 batch.clear();
//!                 inbox.recv_batch(&mut batch).await;
//!                 for Msg::Ping(_from) in batch.drain(..) {}
//!             }
//!         }).detach();
//!         let peer = (shard.id() + 1) % shard.count();
//!         let _ = shard.mesh().send(peer, Msg::Ping(shard.id()));
//!         let s = shard.clone();
//!         // Returns when shutdown begins; the socket stops accepting at once.
//!         let _ = listener.accept_loop(move |stream| {
//!             s.spawn(async move { drop(stream) }).detach();
//!         }).await;
//!         // Close the clients (1001), let them drain, return. If that takes longer than
//!         // `drain_timeout`, the runtime drops this future and the shard ends anyway.
//!     })?;
//! println!("listening on {:?}", runtime.bound_addrs());
//! runtime.shutdown_handle().trigger();
//! runtime.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Choices worth knowing
//! - Inboxes are **bounded** (default 16 384 messages): a full inbox returns
//!   [`MeshError::Full`] with the message instead of growing memory; queue length, wake-ups and
//!   rejections are in [`MeshSender::inbox_stats`].
//! - A shard's timer wheel ticks (default every 100 ms) only while it holds a timer.
//! - Every shard keeps a 10 ms **wake guard** timer armed ([`Builder::wake_guard`]): glommio
//!   0.9 occasionally misses the completion that should wake a parked executor (reproduced
//!   without this crate in `tests/glommio_wakeup.rs`); the guard bounds such a stall.
//! - Locked memory: glommio's I/O buffer is sized to its 64 KiB minimum so the runtime starts
//!   under an 8 MiB `RLIMIT_MEMLOCK` without `CAP_IPC_LOCK` (see `runtime.rs`).
//! - Signals are opt-in ([`Builder::handle_signals`]): first SIGINT/SIGTERM drains, second
//!   forces. **SIGHUP never ends the process** while a runtime handles signals: it runs the
//!   hooks given to [`Builder::on_hangup`] (meant for reloading configuration and
//!   certificates), on the signal thread, for each runtime still serving; with no hook it is
//!   logged at info level ("nothing to reload yet") and ignored. Once no such runtime is left,
//!   all three signals take their default action again. Shard threads block them, so a signal
//!   never interrupts a shard's io_uring loop (`signals.rs`).
//! - Port 0 with [`Builder::listen_next_to`] picks a port `p` whose next port is free too,
//!   holding `p` while it binds `p + 1`, and trying again (up to 64 ports) when `p + 1` is
//!   taken; the pair is never checked free and then bound.
//! - Dropping a [`Runtime`] without joining forces shutdown and waits for the shard threads.
//!
//! # Layout
//! `runtime.rs` start/join and configuration; `shard.rs` the per-shard handle; `listener.rs`
//! binding and accepting; `mesh.rs` inboxes; `doorbell.rs` the wake-up handshake; `timer/`
//! the wheel and its driver; `shutdown.rs` phases; `signals.rs` SIGINT/SIGTERM/SIGHUP (with
//! `signal-hook`); `event.rs` a shard-local set-once event; `sys.rs` the OS calls (sockets
//! through `socket2`, the rest through `libc`).
//!
//! glommio is re-exported as [`glommio`] so callers name the same version's types.

mod doorbell;
mod event;
mod listener;
mod mesh;
mod runtime;
mod shard;
mod shutdown;
mod signals;
mod sys;
pub mod timer;
pub mod uring;

pub use glommio;
pub use listener::{AcceptCounters, AcceptError, BoundListener, Listener};
pub use mesh::{Inbox, InboxCounters, InboxStats, MeshError, MeshSender, ShardMesh};
pub use runtime::{Builder, JoinError, Runtime, ShardExit, StartError};
pub use shard::{Shard, ShutdownFuture};
pub use shutdown::{Phase, Shutdown};
pub use sys::raise_open_file_limit;
pub use timer::{Expirations, TimerId, TimerWheel, Timers};
