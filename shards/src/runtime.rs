//! Starting and joining the shards: [`Builder`] → [`Runtime`] (DESIGN.md "Thread-per-core,
//! shared-nothing").
//!
//! `Builder::start` does, in order, on the calling thread:
//! 1. resolves the shard count (default: the CPUs in this process's affinity mask) and a CPU
//!    per shard (pinning is skipped with a warning when there are more shards than CPUs);
//! 2. raises the soft `RLIMIT_MEMLOCK` to the hard limit (see "Locked memory" below);
//! 3. binds every listener, one `SO_REUSEPORT` socket per shard (`listener.rs`), so that an
//!    address in use fails here, before any thread exists; a listener configured with
//!    [`Builder::listen_next_to`] is bound together with the one it follows;
//! 4. creates the mesh inboxes and shutdown doorbells, and registers with the signal thread if
//!    asked (until the `Runtime` drops);
//! 5. spawns one named thread per shard, which blocks the handled signals, pins itself, builds
//!    its glommio executor, wraps its sockets and reports ready — then waits for "go";
//! 6. waits for every report. All ready: sends "go" and returns the [`Runtime`]. Any failure
//!    (executor creation, thread spawn, a panic): tells the others to stand down, joins them
//!    and returns the first error. So the caller never hangs on a half-started runtime.
//!
//! **Locked memory.** glommio registers its I/O buffer (`io_memory`) with each of its three
//! io_uring rings per executor, and without `CAP_IPC_LOCK` the kernel charges each
//! registration against `RLIMIT_MEMLOCK` (per user). With glommio's default of 10 MiB per
//! executor that never fits a common 8 MiB limit: registration fails, glommio logs a warning
//! and carries on without registered buffers, having still allocated 10 MiB per shard for
//! nothing. This runtime does no storage I/O, which is all that buffer serves, so it asks for
//! glommio's minimum, 64 KiB: 3 × 64 KiB = 192 KiB per shard, about 40 shards under 8 MiB
//! (beyond that, the same harmless fallback). The rings' own memory counts against the same
//! limit on current kernels (seen on 6.18), hence the ring-depth fitting below. glommio
//! refuses to create an executor when the *soft* limit is under 512 KiB, hence step 2; if
//! even the hard limit is below that (64 KiB is an old distribution default), `start` fails
//! with [`StartError::MemlockTooLow`] before spawning anything. Checked by the `process`
//! integration test, which runs under `capsh --drop=cap_ipc_lock` with `ulimit -l 8192`.
//!
//! **Ring depth.** glommio keeps one pending poll per socket on each executor's main ring and
//! cancels a timeout there at every reactor turn; the kernel finds the request to cancel by
//! walking one bucket of the ring's cancel table, whose size follows the completion queue (at
//! most 256 buckets, from 8192 completions up). The default depth is therefore 4096, not
//! glommio's 128 (8 buckets), which made that walk a third of a shard's CPU at 10 000
//! connections (PERF.md, "Many connections"). Without `CAP_IPC_LOCK`, three rings of that
//! depth count for about 4 MiB of locked memory per shard (1.5 MiB of it resident), so `start`
//! lowers the depth until every shard fits the limit (`fit_ring_depth`, down to 128: about 16
//! shards under 8 MiB) and warns, and a shard refused its rings anyway (the limit is shared by
//! all of a user's processes) halves its depth again.
//!
//! **Wake guard.** glommio 0.9 sometimes parks an executor and misses the completion that
//! should wake it (see `Builder::wake_guard` and `tests/glommio_wakeup.rs`); every shard
//! therefore keeps a 10 ms timer armed, which bounds such a stall.
//!
//! The join side: [`Runtime::join`] waits for every shard thread and reports how each ended.
//! Dropping a `Runtime` without joining forces shutdown and joins.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::doorbell::Doorbell;
use crate::listener::{
    bind_group, bind_pair, BoundListener, Group, Listener, PairError, PAIR_TRIES,
};
use crate::mesh::{self, InboxParts, MeshSender};
use crate::shard::{Shard, ShardInner};
use crate::shutdown::{self, ShardShutdown, Shutdown};
use crate::signals::{self, HangupHook};
use crate::sys;

/// Defaults, documented on the builder methods.
const DEFAULT_BACKLOG: u32 = 4096;
const DEFAULT_INBOX_CAPACITY: usize = 16 * 1024;
const DEFAULT_INBOX_BATCH: usize = 256;
const DEFAULT_IO_MEMORY: usize = 64 * 1024;
/// 4096 submission entries give a completion queue of 8192, the size at which the kernel gives
/// a ring the most buckets (256) for its table of cancellable requests. glommio cancels a
/// timeout on the main ring at every reactor turn, and that ring holds one pending poll per
/// socket: at its default depth (128, 8 buckets) each cancel walked a chain of connections/8
/// polls — 34 % of a shard's CPU with 10 000 connections. See the module doc and PERF.md.
const DEFAULT_RING_DEPTH: usize = 4096;
const DEFAULT_PREEMPT_TIMER: Duration = Duration::from_millis(5);
const DEFAULT_TIMER_TICK: Duration = Duration::from_millis(100);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_WAKE_GUARD: Duration = Duration::from_millis(10);
/// glommio 0.9's `MIN_MEMLOCK_LIMIT` (sys/uring.rs): it will not create an executor below it.
const GLOMMIO_MIN_MEMLOCK: u64 = 512 * 1024;

/// Why the runtime could not start. Nothing is left running when `start` returns this.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `shards(0)` was configured.
    #[error("the shard count must be at least 1")]
    ZeroShards,
    /// Two listeners were given the same name.
    #[error("listener name {name:?} is used twice")]
    DuplicateListener {
        /// The repeated name.
        name: String,
    },
    /// A listener's address did not resolve to any socket address.
    #[error("listener {name:?}: cannot resolve {addr:?}: {source}")]
    Resolve {
        /// Listener name.
        name: String,
        /// The address as given.
        addr: String,
        /// Resolver error.
        #[source]
        source: io::Error,
    },
    /// Creating, binding or listening on a socket failed (e.g. address in use).
    #[error("listener {name:?}: cannot listen on {addr}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// The address we tried.
        addr: SocketAddr,
        /// The OS error (`AddrInUse`, `PermissionDenied`, ...).
        #[source]
        source: io::Error,
    },
    /// [`Builder::listen_next_to`] named, as the listener to follow, one that was not added
    /// with [`Builder::listen`] (an unknown name, or another follower).
    #[error("listener {name:?} is to follow {of:?}, which is not a listener added with `listen`")]
    NextToUnknown {
        /// The follower's name.
        name: String,
        /// The name it gave.
        of: String,
    },
    /// Two listeners were configured to follow the same one (only one port comes after it).
    #[error("listener {name:?} is to follow {of:?}, which listener {other:?} already follows")]
    NextToTaken {
        /// The second follower's name.
        name: String,
        /// The listener both follow.
        of: String,
        /// The first follower's name.
        other: String,
    },
    /// The listener to follow was given port 65535 explicitly: no port comes after it.
    #[error("listener {name:?}: {of:?} listens on {addr}, and no port comes after it")]
    NoNextPort {
        /// The follower's name.
        name: String,
        /// The listener it follows.
        of: String,
        /// Where that listener is bound.
        addr: SocketAddr,
    },
    /// The listener to follow asked for port 0, and for every port the kernel offered it the
    /// next port was in use.
    #[error(
        "listeners {of:?} and {name:?}: no free pair of consecutive ports on {ip} in {tries} \
         tries"
    )]
    NoConsecutivePorts {
        /// The follower's name.
        name: String,
        /// The listener it follows.
        of: String,
        /// The IP address both bind.
        ip: IpAddr,
        /// How many ports were tried.
        tries: u32,
    },
    /// `RLIMIT_MEMLOCK` (soft, after raising it to the hard limit) is below the 512 KiB glommio
    /// requires to create an executor. Raise it: `ulimit -l`, systemd `LimitMEMLOCK=`, docker
    /// `--ulimit memlock=`.
    #[error(
        "RLIMIT_MEMLOCK is {limit} bytes but glommio needs at least {needed}: raise it \
         (ulimit -l, systemd LimitMEMLOCK=, docker --ulimit memlock=)"
    )]
    MemlockTooLow {
        /// The soft limit in force, in bytes.
        limit: u64,
        /// The minimum glommio accepts, in bytes.
        needed: u64,
    },
    /// Creating a doorbell socketpair failed (out of descriptors).
    #[error("cannot create a shard doorbell: {0}")]
    Doorbell(#[source] io::Error),
    /// Installing the SIGINT/SIGTERM/SIGHUP handlers or starting the signal thread failed.
    #[error("cannot install the signal handler: {0}")]
    Signals(#[source] io::Error),
    /// The OS refused to create a shard thread.
    #[error("shard {shard}: cannot spawn its thread: {source}")]
    SpawnThread {
        /// Shard index.
        shard: usize,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// glommio could not create the shard's executor (io_uring setup, memlock limit, ...).
    #[error("shard {shard}: cannot create its executor: {source}")]
    Executor {
        /// Shard index.
        shard: usize,
        /// glommio's error, as an `io::Error`.
        #[source]
        source: io::Error,
    },
    /// A shard thread died (panicked) during start-up.
    #[error("shard {shard}: thread ended during start-up")]
    ShardDied {
        /// Shard index.
        shard: usize,
    },
}

impl StartError {
    /// A short static label for logs and counters.
    pub fn label(&self) -> &'static str {
        match self {
            Self::ZeroShards => "zero_shards",
            Self::DuplicateListener { .. } => "duplicate_listener",
            Self::Resolve { .. } => "resolve",
            Self::Bind { .. } => "bind",
            Self::NextToUnknown { .. } => "next_to_unknown",
            Self::NextToTaken { .. } => "next_to_taken",
            Self::NoNextPort { .. } => "no_next_port",
            Self::NoConsecutivePorts { .. } => "no_consecutive_ports",
            Self::MemlockTooLow { .. } => "memlock_too_low",
            Self::Doorbell(_) => "doorbell",
            Self::Signals(_) => "signals",
            Self::SpawnThread { .. } => "spawn_thread",
            Self::Executor { .. } => "executor",
            Self::ShardDied { .. } => "shard_died",
        }
    }

    /// True for an address-in-use bind failure (another process holds the port), including
    /// finding no free pair of consecutive ports.
    pub fn is_addr_in_use(&self) -> bool {
        match self {
            Self::Bind { source, .. } => source.kind() == io::ErrorKind::AddrInUse,
            Self::NoConsecutivePorts { .. } => true,
            _ => false,
        }
    }
}

/// A shard thread panicked.
#[derive(Debug, thiserror::Error)]
#[error("shard(s) {shards:?} panicked")]
pub struct JoinError {
    /// Indices of the shards whose thread panicked.
    pub shards: Vec<usize>,
    /// How every shard ended (`Panicked` for those above).
    pub exits: Vec<ShardExit>,
}

impl JoinError {
    /// A short static label for logs and counters.
    pub fn label(&self) -> &'static str {
        "shard_panicked"
    }
}

/// How one shard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardExit {
    /// Its main future returned.
    Finished,
    /// Its drain timeout elapsed before its main future returned; it was dropped.
    DrainTimedOut,
    /// `Shutdown::force` was called before its main future returned; it was dropped.
    Forced,
    /// Its thread panicked (the runtime then triggered shutdown on every other shard).
    Panicked,
}

enum ListenAddr {
    Resolved(SocketAddr),
    Failed { addr: String, error: io::Error },
}

/// Where a configured listener binds.
enum ListenAt {
    /// An address of its own ([`Builder::listen`]).
    Addr(ListenAddr),
    /// The port after the one the named listener is bound to ([`Builder::listen_next_to`]).
    NextTo(String),
}

struct ListenSpec {
    name: String,
    at: ListenAt,
}

/// Configures and starts a [`Runtime`]. Obtain with [`Runtime::builder`]; `M` is the
/// cross-shard message type, `()` until set with [`Builder::messages`].
pub struct Builder<M = ()> {
    shards: Option<usize>,
    pin: bool,
    listeners: Vec<ListenSpec>,
    backlog: u32,
    inbox_capacity: usize,
    inbox_batch: usize,
    io_memory: usize,
    ring_depth: usize,
    preempt_timer: Duration,
    timer_tick: Duration,
    drain_timeout: Duration,
    handle_signals: bool,
    /// Run on SIGHUP, in order, when `handle_signals` is on.
    hangup_hooks: Vec<HangupHook>,
    thread_name: String,
    wake_guard: Option<Duration>,
    messages: PhantomData<fn() -> M>,
}

impl<M> fmt::Debug for Builder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("shards", &self.shards)
            .field("pin", &self.pin)
            .field(
                "listeners",
                &self.listeners.iter().map(|l| &l.name).collect::<Vec<_>>(),
            )
            .field("backlog", &self.backlog)
            .field("inbox_capacity", &self.inbox_capacity)
            .field("inbox_batch", &self.inbox_batch)
            .field("io_memory", &self.io_memory)
            .field("ring_depth", &self.ring_depth)
            .field("preempt_timer", &self.preempt_timer)
            .field("timer_tick", &self.timer_tick)
            .field("drain_timeout", &self.drain_timeout)
            .field("handle_signals", &self.handle_signals)
            .field("hangup_hooks", &self.hangup_hooks.len())
            .field("wake_guard", &self.wake_guard)
            .finish()
    }
}

impl Default for Builder<()> {
    fn default() -> Self {
        Self {
            shards: None,
            pin: true,
            listeners: Vec::new(),
            backlog: DEFAULT_BACKLOG,
            inbox_capacity: DEFAULT_INBOX_CAPACITY,
            inbox_batch: DEFAULT_INBOX_BATCH,
            io_memory: DEFAULT_IO_MEMORY,
            ring_depth: DEFAULT_RING_DEPTH,
            preempt_timer: DEFAULT_PREEMPT_TIMER,
            timer_tick: DEFAULT_TIMER_TICK,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            handle_signals: false,
            hangup_hooks: Vec::new(),
            thread_name: "shard".into(),
            wake_guard: Some(DEFAULT_WAKE_GUARD),
            messages: PhantomData,
        }
    }
}

impl<M: Send + 'static> Builder<M> {
    /// Sets the cross-shard message type carried by the mesh (`Shard::mesh`,
    /// `Shard::take_inbox`, `Runtime::mesh`).
    pub fn messages<N: Send + 'static>(self) -> Builder<N> {
        Builder {
            shards: self.shards,
            pin: self.pin,
            listeners: self.listeners,
            backlog: self.backlog,
            inbox_capacity: self.inbox_capacity,
            inbox_batch: self.inbox_batch,
            io_memory: self.io_memory,
            ring_depth: self.ring_depth,
            preempt_timer: self.preempt_timer,
            timer_tick: self.timer_tick,
            drain_timeout: self.drain_timeout,
            handle_signals: self.handle_signals,
            hangup_hooks: self.hangup_hooks,
            thread_name: self.thread_name,
            wake_guard: self.wake_guard,
            messages: PhantomData,
        }
    }

    /// Number of shards. Default: the number of CPUs this process may run on.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Pin each shard to its own CPU (default `true`). Pinning is skipped, with a warning,
    /// when there are more shards than CPUs or the OS refuses it.
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Adds a listener: every shard gets its own `SO_REUSEPORT` socket on `addr` and takes it
    /// with `Shard::take_listener(name)`. Port 0 picks a free port (read it back with
    /// [`Runtime::bound_addr`]). Only the first resolved address is used.
    pub fn listen(
        mut self,
        name: impl Into<String>,
        addr: impl ToSocketAddrs + fmt::Debug,
    ) -> Self {
        let shown = format!("{addr:?}");
        let addr = match addr.to_socket_addrs().map(|mut it| it.next()) {
            Ok(Some(a)) => ListenAddr::Resolved(a),
            Ok(None) => ListenAddr::Failed {
                addr: shown,
                error: io::Error::new(io::ErrorKind::NotFound, "no address"),
            },
            Err(error) => ListenAddr::Failed { addr: shown, error },
        };
        self.listeners.push(ListenSpec {
            name: name.into(),
            at: ListenAt::Addr(addr),
        });
        self
    }

    /// Adds a listener bound at the port after the one listener `of` is bound to, on the same
    /// IP address: a protocol whose clients find its port by adding one to another's. `of`
    /// must be added with [`Builder::listen`] (before or after this call), and only one
    /// listener may follow it. When `of` asks for port 0, `start` picks a port `p` such that
    /// both `p` and `p + 1` are free, holding each while it tries (at most 64 ports, then
    /// [`StartError::NoConsecutivePorts`]); with an explicit port, this one binds `port + 1`
    /// or fails as [`Builder::listen`] would. Take it with `Shard::take_listener(name)`.
    pub fn listen_next_to(mut self, name: impl Into<String>, of: impl Into<String>) -> Self {
        self.listeners.push(ListenSpec {
            name: name.into(),
            at: ListenAt::NextTo(of.into()),
        });
        self
    }

    /// Listen backlog per socket (default 4096, for connection storms; the kernel caps it at
    /// `net.core.somaxconn`).
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Capacity of each shard's mesh inbox (default 16 384 messages; memory per shard is
    /// about `capacity × (size_of::<M>() + 8)`, preallocated).
    pub fn inbox_capacity(mut self, capacity: usize) -> Self {
        self.inbox_capacity = capacity.max(1);
        self
    }

    /// Maximum messages per `Inbox::recv_batch` (default 256).
    pub fn inbox_batch(mut self, batch: usize) -> Self {
        self.inbox_batch = batch.max(1);
        self
    }

    /// glommio's per-executor I/O buffer (default 64 KiB, glommio's minimum; see the module
    /// doc on locked memory before raising it).
    pub fn io_memory(mut self, bytes: usize) -> Self {
        self.io_memory = bytes;
        self
    }

    /// io_uring submission queue depth per ring (default 4096: see `DEFAULT_RING_DEPTH`). The
    /// rings count for about 4 MiB of locked memory per shard at this depth; where the limit
    /// cannot hold them, the depth is lowered (down to 128) with a warning (module doc).
    pub fn ring_depth(mut self, depth: usize) -> Self {
        self.ring_depth = depth.max(1);
        self
    }

    /// How long a shard runs ready tasks before polling for I/O again (default 5 ms;
    /// glommio's own default, 100 ms, is too coarse for a network server under load).
    pub fn preempt_timer(mut self, every: Duration) -> Self {
        self.preempt_timer = every;
        self
    }

    /// Granularity of the shard timer wheels (`Shard::timers`; default 100 ms).
    pub fn timer_tick(mut self, tick: Duration) -> Self {
        self.timer_tick = tick;
        self
    }

    /// How long a shard may drain after shutdown begins before it is forced (default 10 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Handle SIGINT, SIGTERM and SIGHUP (default `false`; a server binary turns it on).
    /// SIGINT/SIGTERM: the first drains, the second forces. SIGHUP never ends the process: it
    /// runs the [`Builder::on_hangup`] hooks, or is logged and ignored when there are none.
    /// Once no runtime that handles signals is left, each takes its default action again. See
    /// `signals.rs` for how.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.handle_signals = on;
        self
    }

    /// Adds a hook run on SIGHUP (the conventional "reload your configuration" signal), when
    /// [`Builder::handle_signals`] is on; hooks run in the order added. They run on the
    /// process's signal thread, one SIGHUP at a time, while this runtime is serving (not once
    /// it is shutting down): a hook should do its work quickly or hand it to a thread or a
    /// shard (`Runtime::mesh`), since a later SIGTERM waits for it. A hook that panics is
    /// logged; the others still run and the signal thread carries on.
    pub fn on_hangup(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.hangup_hooks.push(Arc::new(hook));
        self
    }

    /// Keeps a glommio timer armed on every shard with this period (default 10 ms; `None`
    /// turns it off). glommio 0.9 occasionally parks an executor and misses the completion
    /// that should wake it (reproduced with glommio alone in `tests/glommio_wakeup.rs`); an
    /// armed timer always wakes it, so a stall lasts at most one period instead of forever.
    /// Cost: one timer wake-up per period on an idle shard, nothing measurable on a busy one.
    pub fn wake_guard(mut self, every: Option<Duration>) -> Self {
        self.wake_guard = every.filter(|d| !d.is_zero());
        self
    }

    /// Thread name prefix; shard `i` runs on thread `"{prefix}-{i}"` (default `"shard"`).
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Checks the listeners' names and what each follows. Returns, for every listener that
    /// another follows ([`Builder::listen_next_to`]), the follower's index, by the followed
    /// one's index.
    fn check_listeners(&self) -> Result<HashMap<usize, usize>, StartError> {
        for (i, spec) in self.listeners.iter().enumerate() {
            if self.listeners[..i]
                .iter()
                .any(|other| other.name == spec.name)
            {
                return Err(StartError::DuplicateListener {
                    name: spec.name.clone(),
                });
            }
        }
        let mut followers: HashMap<usize, usize> = HashMap::new();
        for (i, spec) in self.listeners.iter().enumerate() {
            let ListenAt::NextTo(of) = &spec.at else {
                continue;
            };
            let followed = self
                .listeners
                .iter()
                .position(|l| l.name == *of && matches!(l.at, ListenAt::Addr(_)))
                .ok_or_else(|| StartError::NextToUnknown {
                    name: spec.name.clone(),
                    of: of.clone(),
                })?;
            if let Some(&other) = followers.get(&followed) {
                return Err(StartError::NextToTaken {
                    name: spec.name.clone(),
                    of: of.clone(),
                    other: self.listeners[other].name.clone(),
                });
            }
            followers.insert(followed, i);
        }
        Ok(followers)
    }

    /// Binds, spawns the shards and runs `main(shard)` on each once all are up. Returns when
    /// every shard is ready, or with the first error (and nothing left running).
    ///
    /// `main` runs on the shard's thread; its future need not be `Send`. When it returns, the
    /// shard ends (tasks it spawned are dropped).
    pub fn start<F, Fut>(self, main: F) -> Result<Runtime<M>, StartError>
    where
        F: Fn(Shard<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let cpus = sys::allowed_cpus().unwrap_or_default();
        let count = match self.shards {
            Some(0) => return Err(StartError::ZeroShards),
            Some(n) => n,
            None => cpus.len().max(1),
        };
        let followers = self.check_listeners()?;
        let placement: Vec<Option<usize>> = if !self.pin {
            vec![None; count]
        } else if count > cpus.len() {
            tracing::warn!(
                shards = count,
                cpus = cpus.len(),
                "more shards than CPUs: running unpinned"
            );
            vec![None; count]
        } else {
            cpus.iter().take(count).map(|&c| Some(c)).collect()
        };

        let memlock = match sys::raise_memlock_soft_limit() {
            Ok((soft, _)) if soft < GLOMMIO_MIN_MEMLOCK => {
                return Err(StartError::MemlockTooLow {
                    limit: soft,
                    needed: GLOMMIO_MIN_MEMLOCK,
                });
            }
            Ok((soft, _)) => {
                tracing::debug!(memlock = soft, "RLIMIT_MEMLOCK soft limit");
                Some(soft)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read or raise RLIMIT_MEMLOCK");
                None
            }
        };
        let memlock = memlock.filter(|&l| l != libc::RLIM_INFINITY && !sys::has_cap_ipc_lock());
        let ring_depth = fit_ring_depth(self.ring_depth, self.io_memory, count, memlock);
        if ring_depth < self.ring_depth {
            let needed_mib = (count as u64 * shard_memlock(self.ring_depth, self.io_memory)
                + MEMLOCK_RESERVE)
                .div_ceil(1024 * 1024);
            tracing::warn!(
                ring_depth,
                wanted = self.ring_depth,
                shards = count,
                memlock = memlock.unwrap_or_default(),
                "io_uring ring depth lowered to fit RLIMIT_MEMLOCK, which costs CPU with many \
                 connections; the full depth needs `ulimit -l` of about {needed_mib} MiB (or \
                 CAP_IPC_LOCK)"
            );
        }

        // 3. Bind every socket up front, a follower together with the listener it follows.
        let mut groups: Vec<Option<Group>> = self.listeners.iter().map(|_| None).collect();
        for (i, spec) in self.listeners.iter().enumerate() {
            let ListenAt::Addr(addr) = &spec.at else {
                continue; // bound with the listener it follows
            };
            let addr = match addr {
                ListenAddr::Resolved(a) => *a,
                ListenAddr::Failed { addr, error } => {
                    return Err(StartError::Resolve {
                        name: spec.name.clone(),
                        addr: addr.clone(),
                        source: io::Error::new(error.kind(), error.to_string()),
                    });
                }
            };
            let bind_error = |source| StartError::Bind {
                name: spec.name.clone(),
                addr,
                source,
            };
            let Some(&follower) = followers.get(&i) else {
                groups[i] = Some(bind_group(addr, count, self.backlog).map_err(bind_error)?);
                continue;
            };
            let follower_name = || self.listeners[follower].name.clone();
            let (first, second) =
                bind_pair(addr, count, self.backlog, PAIR_TRIES).map_err(|e| match e {
                    PairError::First(source) => bind_error(source),
                    PairError::NoNextPort(addr) => StartError::NoNextPort {
                        name: follower_name(),
                        of: spec.name.clone(),
                        addr,
                    },
                    PairError::Second { addr, source } => StartError::Bind {
                        name: follower_name(),
                        addr,
                        source,
                    },
                    PairError::NoFreePair { tries } => StartError::NoConsecutivePorts {
                        name: follower_name(),
                        of: spec.name.clone(),
                        ip: addr.ip(),
                        tries,
                    },
                })?;
            groups[i] = Some(first);
            groups[follower] = Some(second);
        }
        // In configuration order, as `bound_addrs` promises.
        let mut bound = Vec::with_capacity(self.listeners.len());
        // per_shard[shard] = [(name, addr, fd)] in listener order.
        let mut per_shard: Vec<Vec<(String, SocketAddr, OwnedFd)>> =
            (0..count).map(|_| Vec::new()).collect();
        for (spec, group) in self.listeners.iter().zip(groups) {
            // `check_listeners` made every follower name a listener bound above.
            let group = group.expect("a follower is bound with the listener it follows");
            bound.push(BoundListener {
                name: spec.name.clone(),
                addr: group.addr,
            });
            for (shard, fd) in group.fds.into_iter().enumerate() {
                per_shard[shard].push((spec.name.clone(), group.addr, fd));
            }
        }

        // 4. Mesh, shutdown doorbells, signals.
        let (mesh, inbox_parts) =
            mesh::build::<M>(count, self.inbox_capacity).map_err(StartError::Doorbell)?;
        let mut shutdown_bells = Vec::with_capacity(count);
        let mut shutdown_reads = Vec::with_capacity(count);
        for _ in 0..count {
            let (read, write) = sys::doorbell_pair().map_err(StartError::Doorbell)?;
            shutdown_bells.push(Arc::new(Doorbell::new(write)));
            shutdown_reads.push(read);
        }
        let shutdown = Shutdown::new(shutdown_bells.into_boxed_slice());
        let signals = if self.handle_signals {
            let hooks = self.hangup_hooks.clone().into();
            Some(signals::register(&shutdown, hooks).map_err(StartError::Signals)?)
        } else {
            None
        };
        if signals.is_none() && !self.hangup_hooks.is_empty() {
            tracing::warn!(
                hooks = self.hangup_hooks.len(),
                "hangup hooks are configured but signal handling is off: they will never run"
            );
        }

        // 5. Spawn the shards.
        let config = Arc::new(ShardConfig {
            count,
            io_memory: self.io_memory,
            ring_depth,
            preempt_timer: self.preempt_timer,
            timer_tick: self.timer_tick,
            drain_timeout: self.drain_timeout,
            inbox_batch: self.inbox_batch,
            wake_guard: self.wake_guard,
        });
        let main = Arc::new(main);
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), StartError>)>();
        let mut threads = Vec::with_capacity(count);
        let mut gos = Vec::with_capacity(count);
        let mut spawn_error = None;
        let parts = inbox_parts
            .into_iter()
            .zip(shutdown_reads)
            .zip(per_shard)
            .zip(placement);
        for (id, (((inbox, shutdown_read), listeners), cpu)) in parts.enumerate() {
            let (go_tx, go_rx) = mpsc::channel::<bool>();
            let setup = ShardSetup {
                id,
                cpu,
                config: Arc::clone(&config),
                inbox,
                mesh: mesh.clone(),
                shutdown: shutdown.clone(),
                shutdown_read,
                listeners,
                ready: ready_tx.clone(),
                go: go_rx,
            };
            let main = Arc::clone(&main);
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{id}", self.thread_name))
                .spawn(move || run_shard(setup, main));
            match spawned {
                Ok(handle) => {
                    threads.push(handle);
                    gos.push(go_tx);
                }
                Err(source) => {
                    spawn_error = Some(StartError::SpawnThread { shard: id, source });
                    break;
                }
            }
        }
        drop(ready_tx);

        // 6. Wait for every spawned shard's report (or its death: its sender drops).
        let mut first_error = spawn_error;
        let mut reported = vec![false; threads.len()];
        for _ in 0..threads.len() {
            match ready_rx.recv() {
                Ok((id, Ok(()))) => {
                    if let Some(r) = reported.get_mut(id) {
                        *r = true;
                    }
                }
                Ok((id, Err(e))) => {
                    if let Some(r) = reported.get_mut(id) {
                        *r = true;
                    }
                    first_error.get_or_insert(e);
                }
                Err(mpsc::RecvError) => break,
            }
        }
        if first_error.is_none() {
            if let Some(dead) = reported.iter().position(|r| !r) {
                first_error = Some(StartError::ShardDied { shard: dead });
            }
        }
        if let Some(error) = first_error {
            for go in &gos {
                let _ = go.send(false);
            }
            for t in threads {
                let _ = t.join();
            }
            return Err(error);
        }
        for go in &gos {
            let _ = go.send(true);
        }
        tracing::debug!(shards = count, "shards started");
        Ok(Runtime {
            count,
            bound,
            mesh,
            shutdown,
            threads: Some(threads),
            _signals: signals,
        })
    }
}

struct ShardConfig {
    count: usize,
    io_memory: usize,
    ring_depth: usize,
    preempt_timer: Duration,
    timer_tick: Duration,
    drain_timeout: Duration,
    inbox_batch: usize,
    wake_guard: Option<Duration>,
}

/// Everything a shard thread receives (all `Send`).
struct ShardSetup<M> {
    id: usize,
    cpu: Option<usize>,
    config: Arc<ShardConfig>,
    inbox: InboxParts<M>,
    mesh: MeshSender<M>,
    shutdown: Shutdown,
    shutdown_read: OwnedFd,
    listeners: Vec<(String, SocketAddr, OwnedFd)>,
    ready: mpsc::Sender<(usize, Result<(), StartError>)>,
    go: mpsc::Receiver<bool>,
}

/// Triggers a process-wide shutdown if its shard thread unwinds, so the other shards drain
/// and `join` returns instead of the process limping on without a shard.
struct PanicGuard {
    shard: usize,
    shutdown: Shutdown,
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                shard = self.shard,
                "shard panicked: shutting down all shards"
            );
            self.shutdown.trigger();
        }
    }
}

/// The smallest ring depth chosen when locked memory is short (glommio's own default).
const MIN_RING_DEPTH: usize = 128;

/// Locked memory one shard's executor takes at ring depth `depth` with `io_memory` bytes of
/// registered I/O buffer (registered with each of its three rings). Without `CAP_IPC_LOCK` the
/// kernel charges the rings themselves to `RLIMIT_MEMLOCK` as well; what it charged was
/// measured on Linux 6.18 by how many shards started under 8 MiB at each depth (2 at 4096,
/// 4 at 2048, 6 at 1024, 12 at 128): about 450 KiB plus 850 B per entry besides the I/O
/// buffers. This is an upper bound of that, rounded up.
fn shard_memlock(depth: usize, io_memory: usize) -> u64 {
    3 * io_memory as u64 + 448 * 1024 + 896 * depth as u64
}

/// Locked memory left for other uses when the ring depth is chosen (doorbells, the registered
/// I/O buffers of other libraries, a margin for page rounding).
const MEMLOCK_RESERVE: u64 = 512 * 1024;

/// The ring depth for each of `shards` shards: `wanted`, halved (not below [`MIN_RING_DEPTH`])
/// until every shard's rings and registered I/O buffers ([`shard_memlock`]) fit the
/// locked-memory limit. `None`: no limit applies (`CAP_IPC_LOCK`, or unlimited).
fn fit_ring_depth(wanted: usize, io_memory: usize, shards: usize, memlock: Option<u64>) -> usize {
    let Some(limit) = memlock else {
        return wanted;
    };
    let budget = limit.saturating_sub(MEMLOCK_RESERVE) / shards.max(1) as u64;
    let mut depth = wanted;
    while depth > MIN_RING_DEPTH && shard_memlock(depth, io_memory) > budget {
        depth = (depth / 2).max(MIN_RING_DEPTH);
    }
    depth
}

/// Builds the shard's executor at the configured ring depth, halving the depth while the kernel
/// refuses the rings for want of locked memory (`ENOMEM`: without `CAP_IPC_LOCK`, ring memory
/// counts against the user's `RLIMIT_MEMLOCK`, which every process of that user shares). A
/// shard that had to settle for less says so once, with what to do about it.
fn make_executor(id: usize, config: &ShardConfig) -> io::Result<glommio::LocalExecutor> {
    let mut depth = config.ring_depth;
    loop {
        let made = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name(&format!("shard-{id}"))
            .io_memory(config.io_memory)
            .ring_depth(depth)
            .preempt_timer(config.preempt_timer)
            .make();
        match made {
            Ok(executor) => {
                if depth < config.ring_depth {
                    tracing::warn!(
                        shard = id,
                        ring_depth = depth,
                        wanted = config.ring_depth,
                        "locked-memory limit too low for the io_uring rings: running with a \
                         smaller ring depth, which costs CPU with many connections; raise \
                         `ulimit -l` or grant CAP_IPC_LOCK"
                    );
                }
                return Ok(executor);
            }
            Err(e) => {
                let error: io::Error = e.into();
                if error.kind() != io::ErrorKind::OutOfMemory || depth <= MIN_RING_DEPTH {
                    return Err(error);
                }
                depth = (depth / 2).max(MIN_RING_DEPTH);
            }
        }
    }
}

fn run_shard<M, F, Fut>(setup: ShardSetup<M>, main: Arc<F>) -> ShardExit
where
    M: Send + 'static,
    F: Fn(Shard<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let ShardSetup {
        id,
        cpu,
        config,
        inbox,
        mesh,
        shutdown,
        shutdown_read,
        listeners,
        ready,
        go,
    } = setup;
    let _guard = PanicGuard {
        shard: id,
        shutdown: shutdown.clone(),
    };

    // Before glommio spawns its helper thread (which inherits this mask). Why shards block
    // them: `signals::block_in_current_thread`.
    if let Err(error) = signals::block_in_current_thread() {
        tracing::warn!(shard = id, %error, "cannot block the handled signals on the shard thread");
    }
    // Pin before the executor allocates, so its memory is NUMA-local.
    let cpu = cpu.and_then(|c| match sys::pin_current_thread(c) {
        Ok(()) => Some(c),
        Err(error) => {
            tracing::warn!(shard = id, cpu = c, %error, "cannot pin shard: running unpinned");
            None
        }
    });

    let executor = match make_executor(id, &config) {
        Ok(ex) => ex,
        Err(source) => {
            let _ = ready.send((id, Err(StartError::Executor { shard: id, source })));
            return ShardExit::Finished;
        }
    };

    executor.run(async move {
        let local_shutdown = ShardShutdown::new();
        let listeners: Vec<Listener> = listeners
            .into_iter()
            .map(|(name, addr, fd)| {
                Listener::attach(
                    Rc::from(name.as_str()),
                    addr,
                    fd,
                    Rc::clone(&local_shutdown),
                )
            })
            .collect();
        let (shard_mesh, inbox) = mesh::attach(id, inbox, mesh, config.inbox_batch);
        let shard = Shard {
            inner: Rc::new(ShardInner {
                id,
                count: config.count,
                cpu,
                mesh: shard_mesh,
                inbox: std::cell::RefCell::new(Some(inbox)),
                listeners: std::cell::RefCell::new(listeners),
                shutdown: Rc::clone(&local_shutdown),
                global_shutdown: shutdown.clone(),
                timer_tick: config.timer_tick,
            }),
        };
        if ready.send((id, Ok(()))).is_err() {
            return ShardExit::Finished;
        }
        drop(ready);
        // Blocking is fine here: nothing else runs on this executor yet.
        if !matches!(go.recv(), Ok(true)) {
            return ShardExit::Finished;
        }
        tracing::debug!(shard = id, ?cpu, "shard running");

        if let Some(every) = config.wake_guard {
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(every).await;
                }
            })
            .detach();
        }

        glommio::spawn_local(shutdown::watch(
            shutdown,
            Rc::clone(&local_shutdown),
            shutdown_read,
            config.drain_timeout,
        ))
        .detach();

        let forced = local_shutdown.forced();
        futures_lite::future::or(
            async move {
                main(shard).await;
                ShardExit::Finished
            },
            async move {
                forced.await;
                if local_shutdown.timed_out() {
                    ShardExit::DrainTimedOut
                } else {
                    ShardExit::Forced
                }
            },
        )
        .await
    })
}

/// The running shards. Obtain with [`Runtime::builder`] … [`Builder::start`].
///
/// `M` is the cross-shard message type.
pub struct Runtime<M = ()> {
    count: usize,
    bound: Vec<BoundListener>,
    mesh: MeshSender<M>,
    shutdown: Shutdown,
    threads: Option<Vec<JoinHandle<ShardExit>>>,
    /// Signals reach this runtime until it drops, which `join` and `Drop` do after the shard
    /// threads have ended (a field drops after `Drop::drop` has run).
    _signals: Option<signals::Registered>,
}

impl<M> fmt::Debug for Runtime<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("shards", &self.count)
            .field("bound", &self.bound)
            .field("phase", &self.shutdown.phase())
            .finish()
    }
}

impl Runtime<()> {
    /// A builder with the defaults documented on its methods.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<M> Runtime<M> {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.count
    }

    /// Every configured listener with the address it is bound to, in configuration order
    /// (for the start-up log line).
    pub fn bound_addrs(&self) -> &[BoundListener] {
        &self.bound
    }

    /// The bound address of the listener named `name`.
    pub fn bound_addr(&self, name: &str) -> Option<SocketAddr> {
        self.bound.iter().find(|b| b.name == name).map(|b| b.addr)
    }

    /// A sender into every shard's inbox, usable from any thread.
    pub fn mesh(&self) -> &MeshSender<M> {
        &self.mesh
    }

    /// The process-wide shutdown handle.
    pub fn shutdown_handle(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Waits for every shard to end and reports how each did. Shards end when their main
    /// future returns or when they are forced; call `shutdown_handle().trigger()` (or let a
    /// signal do it) to begin.
    pub fn join(mut self) -> Result<Vec<ShardExit>, JoinError> {
        let threads = self.threads.take().unwrap_or_default();
        let exits: Vec<ShardExit> = threads
            .into_iter()
            .map(|t| t.join().unwrap_or(ShardExit::Panicked))
            .collect();
        let panicked: Vec<usize> = exits
            .iter()
            .enumerate()
            .filter(|(_, e)| **e == ShardExit::Panicked)
            .map(|(i, _)| i)
            .collect();
        if panicked.is_empty() {
            Ok(exits)
        } else {
            Err(JoinError {
                shards: panicked,
                exits,
            })
        }
    }
}

impl<M> Drop for Runtime<M> {
    fn drop(&mut self) {
        if let Some(threads) = self.threads.take() {
            self.shutdown.force();
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn ring_depth_fits_the_locked_memory_limit() {
        let io = DEFAULT_IO_MEMORY;
        let usable = 8 * MIB - MEMLOCK_RESERVE;
        // No limit (CAP_IPC_LOCK or unlimited): what was asked for.
        assert_eq!(fit_ring_depth(4096, io, 64, None), 4096);
        // One shard under 8 MiB keeps the full depth; two (this machine) halve it once.
        assert_eq!(fit_ring_depth(4096, io, 1, Some(8 * MIB)), 4096);
        assert_eq!(fit_ring_depth(4096, io, 2, Some(8 * MIB)), 2048);
        // Whatever was chosen fits, down to the floor.
        for shards in [2, 4, 8] {
            let d = fit_ring_depth(4096, io, shards, Some(8 * MIB));
            assert!(
                shards as u64 * shard_memlock(d, io) <= usable,
                "{shards} shards at {d}"
            );
        }
        // Many shards: never below glommio's default, even if that does not fit.
        assert_eq!(fit_ring_depth(4096, io, 256, Some(8 * MIB)), MIN_RING_DEPTH);
        // A depth asked below the floor is kept as asked.
        assert_eq!(fit_ring_depth(64, io, 8, Some(8 * MIB)), 64);
    }
}
