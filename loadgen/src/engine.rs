//! One load generator process: N shards (glommio executors, `shardcast-shards`), each
//! running its share of the plan's connections, steered through the phases of a run.
//!
//! Phases (per shard, all shards moved together by the process's main thread):
//! 1. **Setup**: connections open at the paced rate (`--connect-rate`), complete their
//!    handshake and have their joins confirmed (`joined-room`), then count as ready.
//! 2. The main thread learns every shard is ready (or the setup deadline passed), asks its
//!    [`Coordinator`] for the start instant `t0` (in a worker process the parent decides,
//!    so every process starts together) and sends it to every shard through the mesh.
//! 3. **Running** from `t0`: senders send on their schedules; warm-up runs until
//!    `t0 + warmup`, the measured window until `+ duration` (or until every sender used its
//!    `--messages` share).
//! 4. **Draining**: no new sends; replies and deliveries still in flight are received until
//!    the shard has been quiet for a moment with nothing outstanding (with one shard in one
//!    process: every expected delivery arrived), or `--drain` passes.
//! 5. **Closing**: connections close (WebSocket close handshake), results go to the main
//!    thread.
//!
//! Each shard's state is a plain [`ShardCtx`] owned by that shard (`Rc`, `Cell`); the only
//! shared state is the progress counters ([`LiveCounters`], atomics written a few times a
//! second) and the result channel.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use shardcast_shards::{Runtime, Shard};

use crate::clock::now_ns;
use crate::conn;
use crate::dialects::Kind;
use crate::metrics::{Recorder, RecorderData, Window};
use crate::net::TargetUrl;
use crate::plan::{ConnPlan, Plan, Role};
use crate::sync::{Signal, WakerSlots};
use crate::wire::Dialect;

/// Everything a process needs to run its share.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The plan (identical in every process).
    pub plan: Plan,
    /// Target URLs; connection `target` indexes this.
    pub targets: Vec<TargetUrl>,
    /// Raw WebSocket target (`--target raw`).
    pub raw: bool,
    /// Raw target: binary messages.
    pub binary: bool,
    /// Data size of measured messages.
    pub size: usize,
    /// Shards in this process.
    pub shards: usize,
    /// Processes in the run.
    pub procs: usize,
    /// This process's index.
    pub proc_index: usize,
    /// Source addresses (`--source`), round-robin by connection id.
    pub sources: Vec<IpAddr>,
    /// TLS client configuration, for `wss`/`tcp+tls` targets.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Warm-up.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
    /// Longest drain after the window.
    pub drain: Duration,
    /// Connections opened per second during setup (whole run).
    pub connect_rate: f64,
    /// Longest TCP connect + TLS + upgrade.
    pub connect_timeout: Duration,
    /// Longest setup (all connections opened and joined).
    pub setup_timeout: Duration,
    /// Close storm connections with RST (no TIME_WAIT).
    pub linger_zero: bool,
    /// The dialect receiving connections speak (`--dialect`), `None` for stelar.
    pub recv_dialect: Option<Kind>,
    /// Where publishers connect when receivers speak another dialect (`--publisher-path`).
    pub publisher_path: String,
    /// The secret receivers' tokens are signed with (`--jwt-secret`).
    pub jwt_secret: Option<JwtSecret>,
}

/// An HS256 secret (shown redacted).
#[derive(Clone)]
pub struct JwtSecret(pub Arc<[u8]>);

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

/// The claims of a receiver's token.
#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

/// Whether a connection of this role only receives (and so speaks `--dialect`).
pub fn is_receiver(role: &Role) -> bool {
    matches!(role, Role::Member { publish: None, .. } | Role::Idle)
}

impl RunConfig {
    /// The dialect spoken to target `t`, by connections that publish or request.
    pub fn dialect(&self, t: usize) -> Dialect {
        match self.targets.get(t).map(|u| u.scheme.is_ws()) {
            Some(false) => Dialect::TcpRelay,
            _ if self.raw => Dialect::WsRaw {
                binary: self.binary,
            },
            _ => Dialect::WsRelay,
        }
    }

    /// The dialect connection `c` speaks: `--dialect` for receivers, else
    /// [`dialect`](Self::dialect).
    pub fn dialect_of(&self, c: &ConnPlan) -> Dialect {
        match self.recv_dialect {
            Some(kind) if is_receiver(&c.role) => Dialect::Ws(kind),
            _ => self.dialect(c.target),
        }
    }

    /// The WebSocket request target of connection `c`: publishers of a `--dialect` run use
    /// `--publisher-path`, everyone else [`path`](Self::path).
    pub fn path_of(&self, c: &ConnPlan) -> String {
        if self.recv_dialect.is_some() && !is_receiver(&c.role) {
            return self.publisher_path.clone();
        }
        self.path(c.target, c.group)
    }

    /// A token for connection `id`: HS256, `sub` = `lg-<id>`, issued now, valid for a day.
    pub fn token(&self, id: u32) -> Option<String> {
        let secret = self.jwt_secret.as_ref()?;
        let now = crate::clock::unix_ms() / 1000;
        let sub = format!("lg-{id}");
        let claims = Claims {
            sub: &sub,
            iat: now,
            exp: now + 86_400,
        };
        match jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret.0),
        ) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot sign a token");
                None
            }
        }
    }

    /// The WebSocket request target for a connection of `group` to target `t`.
    pub fn path(&self, t: usize, group: usize) -> String {
        if let Some(p) = self.targets.get(t).and_then(|u| u.path.clone()) {
            return p;
        }
        if self.raw {
            self.plan
                .groups
                .get(group)
                .map_or("/echo", |g| g.raw_path)
                .to_string()
        } else {
            "/".to_string()
        }
    }
}

/// Where the shards are in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting and joining.
    Setup,
    /// Sending (warm-up, then measured).
    Running,
    /// No new sends; receiving what is in flight.
    Draining,
    /// Closing connections.
    Closing,
}

/// Progress counters one shard publishes for the live progress line.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Connections open.
    pub open: AtomicU64,
    /// Connections ready.
    pub ready: AtomicU64,
    /// Connections that failed.
    pub failed: AtomicU64,
    /// Messages sent.
    pub sent: AtomicU64,
    /// Messages received.
    pub received: AtomicU64,
    /// Faults.
    pub faults: AtomicU64,
    /// p99 latency of the last complete second, ns.
    pub p99_ns: AtomicU64,
}

/// A point-in-time sum of every shard's [`LiveCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LiveSnapshot {
    /// Connections open.
    pub open: u64,
    /// Connections ready.
    pub ready: u64,
    /// Connections failed.
    pub failed: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Faults.
    pub faults: u64,
    /// Largest shard p99 of the last second, ns.
    pub p99_ns: u64,
}

impl LiveSnapshot {
    /// Sums the counters.
    pub fn of(live: &[Arc<LiveCounters>]) -> LiveSnapshot {
        let mut s = LiveSnapshot::default();
        for l in live {
            s.open += l.open.load(Ordering::Relaxed);
            s.ready += l.ready.load(Ordering::Relaxed);
            s.failed += l.failed.load(Ordering::Relaxed);
            s.sent += l.sent.load(Ordering::Relaxed);
            s.received += l.received.load(Ordering::Relaxed);
            s.faults += l.faults.load(Ordering::Relaxed);
            s.p99_ns = s.p99_ns.max(l.p99_ns.load(Ordering::Relaxed));
        }
        s
    }

    /// Adds another snapshot (another process).
    pub fn add(&mut self, o: &LiveSnapshot) {
        self.open += o.open;
        self.ready += o.ready;
        self.failed += o.failed;
        self.sent += o.sent;
        self.received += o.received;
        self.faults += o.faults;
        self.p99_ns = self.p99_ns.max(o.p99_ns);
    }
}

/// One shard's state, owned by that shard.
pub struct ShardCtx {
    /// The run's configuration.
    pub cfg: Arc<RunConfig>,
    /// This shard's index.
    pub shard: usize,
    /// Current phase.
    pub phase: Cell<Phase>,
    /// The run's time frame (known from `t0` on).
    pub window: Cell<Window>,
    /// One recorder per group.
    pub recorders: RefCell<Vec<Recorder>>,
    /// Connection task wakers.
    pub wakers: WakerSlots,
    /// 64 KiB read scratch shared by this shard's connections (borrowed only inside a poll).
    pub scratch: RefCell<Box<[u8]>>,
    /// Connections not yet ready or failed.
    pub setup_pending: Cell<usize>,
    /// Set when `setup_pending` reaches 0.
    pub setup_done: Signal,
    /// Connection tasks alive.
    pub tasks: Cell<usize>,
    /// Set when `tasks` reaches 0.
    pub all_done: Signal,
    /// Senders that have not used up their `--messages` share.
    pub senders_active: Cell<usize>,
    /// Set when `senders_active` reaches 0 (only when there were senders).
    pub senders_done: Signal,
    /// Connections open now / at most.
    pub open: Cell<u64>,
    /// Most connections open at once.
    pub peak: Cell<u64>,
    /// Requests in flight on this shard (echo/ack).
    pub in_flight: Cell<u64>,
    /// Last time a message arrived on this shard.
    pub last_rx: Cell<u64>,
    /// Instant by which setup must be over.
    pub setup_deadline: Cell<u64>,
    /// Per-shard RNG state (WebSocket keys, masks seeds).
    pub rng: Cell<u64>,
    /// Progress counters.
    pub live: Arc<LiveCounters>,
}

impl ShardCtx {
    /// A random u64 (xorshift64*).
    pub fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A connection finished setup (`ok`) or failed during it.
    pub fn setup_finished(&self, ok: bool) {
        if ok {
            self.live.ready.fetch_add(1, Ordering::Relaxed);
        } else {
            self.live.failed.fetch_add(1, Ordering::Relaxed);
        }
        let n = self.setup_pending.get().saturating_sub(1);
        self.setup_pending.set(n);
        if n == 0 {
            self.setup_done.set();
        }
    }

    /// A sender used up its share.
    pub fn sender_finished(&self) {
        let n = self.senders_active.get().saturating_sub(1);
        self.senders_active.set(n);
        if n == 0 {
            self.senders_done.set();
        }
    }

    /// A connection opened.
    pub fn opened(&self) {
        let n = self.open.get() + 1;
        self.open.set(n);
        self.peak.set(self.peak.get().max(n));
        self.live.open.store(n, Ordering::Relaxed);
    }

    /// A connection closed.
    pub fn closed(&self) {
        let n = self.open.get().saturating_sub(1);
        self.open.set(n);
        self.live.open.store(n, Ordering::Relaxed);
    }

    fn set_phase(&self, p: Phase) {
        self.phase.set(p);
        self.wakers.wake_all();
    }

    /// Copies the recorders' counts into the progress counters.
    fn publish_progress(&self) {
        let recs = self.recorders.borrow();
        let (mut sent, mut received, mut faults, mut p99) = (0, 0, 0, 0);
        let sec = self.window.get().second(now_ns());
        for r in recs.iter() {
            sent += r.counts.sent;
            received += r.counts.received;
            faults += r.faults.total();
            let last = sec.checked_sub(1).and_then(|s| r.timeline.get(s));
            if let Some(s) = last {
                p99 = p99.max(s.quantile(0.99));
            }
        }
        self.live.sent.store(sent, Ordering::Relaxed);
        self.live.received.store(received, Ordering::Relaxed);
        self.live.faults.store(faults, Ordering::Relaxed);
        self.live.p99_ns.store(p99, Ordering::Relaxed);
    }
}

/// Cross-shard control message.
#[derive(Debug, Clone, Copy)]
pub enum Ctl {
    /// Begin setup: open the connections. Sent once every shard is up and the process's
    /// baseline memory has been read, so that per-connection figures exclude the runtime.
    Connect,
    /// Start at this instant (ns, `CLOCK_MONOTONIC`).
    Go(u64),
}

/// What a shard reports to the main thread.
#[derive(Debug)]
enum ShardEvent {
    Ready,
    Done(Vec<RecorderData>),
}

/// The process's results.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProcessOutput {
    /// One merged recorder per group.
    pub groups: Vec<RecorderData>,
    /// Setup time (first connect to all ready), seconds.
    pub setup_seconds: f64,
    /// This process's RSS with its shards running and no connection open yet.
    #[serde(default)]
    pub rss_baseline_bytes: u64,
}

/// Decides when a process starts, and watches it run.
pub trait Coordinator {
    /// Every shard is ready (`snapshot` says how many connections); returns `t0`.
    fn ready(&mut self, snapshot: &LiveSnapshot) -> anyhow::Result<u64>;
    /// Called about every 100 ms with fresh counters; `window` once known.
    fn tick(&mut self, snapshot: &LiveSnapshot, window: Option<&Window>);
}

/// Runs this process's share of the plan to the end.
pub fn run_process(
    cfg: Arc<RunConfig>,
    coord: &mut dyn Coordinator,
) -> anyhow::Result<ProcessOutput> {
    let shards = cfg.shards.max(1);
    let live: Vec<Arc<LiveCounters>> = (0..shards)
        .map(|_| Arc::new(LiveCounters::default()))
        .collect();
    let (tx, rx) = mpsc::channel::<(usize, ShardEvent)>();
    let shard_cfg = cfg.clone();
    let shard_live = live.clone();
    let setup_start = now_ns();
    let runtime = Runtime::builder()
        .messages::<Ctl>()
        .shards(shards)
        .thread_name("loadgen")
        .preempt_timer(Duration::from_millis(2))
        .start(move |shard: Shard<Ctl>| {
            let cfg = shard_cfg.clone();
            let tx = tx.clone();
            let live = shard_live[shard.id()].clone();
            async move { shard_main(shard, cfg, tx, live, setup_start).await }
        })
        .map_err(|e| anyhow::anyhow!("cannot start shards: {e}"))?;
    let rss_baseline_bytes = crate::usage::sample(std::process::id()).map_or(0, |s| s.rss_bytes);
    for i in 0..shards {
        runtime
            .mesh()
            .send(i, Ctl::Connect)
            .map_err(|e| anyhow::anyhow!("cannot start shard {i}: {e}"))?;
    }

    let tick = Duration::from_millis(100);
    let mut ready = 0;
    while ready < shards {
        match rx.recv_timeout(tick) {
            Ok((_, ShardEvent::Ready)) => ready += 1,
            Ok((_, ShardEvent::Done(_))) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => coord.tick(&LiveSnapshot::of(&live), None),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("a shard ended during setup")
            }
        }
    }
    let setup_seconds = (now_ns() - setup_start) as f64 / 1e9;
    let t0 = coord.ready(&LiveSnapshot::of(&live))?;
    let window = window_at(&cfg, t0);
    for i in 0..shards {
        runtime
            .mesh()
            .send(i, Ctl::Go(t0))
            .map_err(|e| anyhow::anyhow!("cannot start shard {i}: {e}"))?;
    }
    let mut outputs: Vec<Vec<RecorderData>> = Vec::new();
    while outputs.len() < shards {
        match rx.recv_timeout(tick) {
            Ok((_, ShardEvent::Done(d))) => outputs.push(d),
            Ok((_, ShardEvent::Ready)) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                coord.tick(&LiveSnapshot::of(&live), Some(&window))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("a shard ended without results")
            }
        }
    }
    coord.tick(&LiveSnapshot::of(&live), Some(&window));
    runtime.shutdown_handle().trigger();
    let _ = runtime.join();

    let groups = merge_outputs(&outputs)?;
    Ok(ProcessOutput {
        groups,
        setup_seconds,
        rss_baseline_bytes,
    })
}

/// Merges per-shard (or per-process) group recorders.
pub fn merge_outputs(outputs: &[Vec<RecorderData>]) -> anyhow::Result<Vec<RecorderData>> {
    let mut merged: Vec<Recorder> = Vec::new();
    for out in outputs {
        for (g, d) in out.iter().enumerate() {
            let r = Recorder::from_data(d)?;
            match merged.get_mut(g) {
                Some(m) => m.merge(&r),
                None => merged.push(r),
            }
        }
    }
    Ok(merged.iter().map(Recorder::to_data).collect())
}

/// The window implied by a start instant.
pub fn window_at(cfg: &RunConfig, t0: u64) -> Window {
    let measure_start = t0 + cfg.warmup.as_nanos() as u64;
    Window {
        t0,
        measure_start,
        measure_end: measure_start + cfg.duration.as_nanos() as u64,
    }
}

async fn sleep_until(t: u64) {
    let now = now_ns();
    if t > now {
        glommio::timer::sleep(Duration::from_nanos(t - now)).await;
    }
}

async fn shard_main(
    shard: Shard<Ctl>,
    cfg: Arc<RunConfig>,
    tx: mpsc::Sender<(usize, ShardEvent)>,
    live: Arc<LiveCounters>,
    process_start: u64,
) {
    let id = shard.id();
    let Some(mut inbox) = shard.take_inbox() else {
        return;
    };
    let mut batch = Vec::new();
    loop {
        batch.clear();
        inbox.recv_batch(&mut batch).await;
        if batch.iter().any(|m| matches!(m, Ctl::Connect)) {
            break;
        }
    }
    // Pace connects from when this shard is up, not from when the process began starting
    // its shards (executor start-up would otherwise crowd the first connects together).
    let setup_start = now_ns();
    let conns: Vec<ConnPlan> = cfg.plan.share(cfg.proc_index, cfg.procs, id, cfg.shards);
    let groups = cfg.plan.groups.len().max(1);
    let provisional = Window {
        t0: setup_start,
        measure_start: u64::MAX,
        measure_end: u64::MAX,
    };
    let senders = conns
        .iter()
        .filter(|c| c.role.sender().is_some_and(|s| s.limit != u64::MAX))
        .count();
    let storms = conns.iter().any(|c| matches!(c.role, Role::Storm { .. }));
    let ctx = Rc::new(ShardCtx {
        cfg: cfg.clone(),
        shard: id,
        phase: Cell::new(Phase::Setup),
        window: Cell::new(provisional),
        recorders: RefCell::new((0..groups).map(|_| Recorder::new(provisional)).collect()),
        wakers: WakerSlots::with_len(conns.len()),
        scratch: RefCell::new(vec![0u8; 64 * 1024].into_boxed_slice()),
        setup_pending: Cell::new(
            conns
                .iter()
                .filter(|c| !matches!(c.role, Role::Storm { .. }))
                .count(),
        ),
        setup_done: Signal::default(),
        tasks: Cell::new(conns.len()),
        all_done: Signal::default(),
        senders_active: Cell::new(senders),
        senders_done: Signal::default(),
        open: Cell::new(0),
        peak: Cell::new(0),
        in_flight: Cell::new(0),
        last_rx: Cell::new(0),
        setup_deadline: Cell::new(process_start + cfg.setup_timeout.as_nanos() as u64),
        rng: Cell::new(now_ns() ^ ((id as u64 + 1) << 32) ^ (std::process::id() as u64) | 1),
        live,
    });
    if ctx.setup_pending.get() == 0 {
        ctx.setup_done.set();
    }
    if conns.is_empty() {
        ctx.all_done.set();
    }

    // Paced connects: this shard's share of the global rate.
    let per_shard_rate = cfg.connect_rate / (cfg.shards.max(1) * cfg.procs.max(1)) as f64;
    let gap = crate::plan::interval_ns(per_shard_rate);
    let mut setup_index = 0u64;
    for (local, c) in conns.into_iter().enumerate() {
        let start_at = if matches!(c.role, Role::Storm { .. }) {
            0
        } else {
            setup_index += 1;
            setup_start + (setup_index - 1) * gap
        };
        let ctx2 = ctx.clone();
        glommio::spawn_local(async move {
            conn::run(ctx2.clone(), local, c, start_at).await;
            ctx2.wakers.clear(local);
            let n = ctx2.tasks.get() - 1;
            ctx2.tasks.set(n);
            if n == 0 {
                ctx2.all_done.set();
            }
        })
        .detach();
    }

    // Progress publisher.
    let progress_ctx = ctx.clone();
    glommio::spawn_local(async move {
        while !progress_ctx.all_done.is_set() {
            progress_ctx.publish_progress();
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
        progress_ctx.publish_progress();
    })
    .detach();

    // Setup done, or its deadline.
    futures_lite::future::or(ctx.setup_done.wait(), async {
        sleep_until(ctx.setup_deadline.get()).await;
    })
    .await;
    if !ctx.setup_done.is_set() {
        // Connections still setting up fail with a join/connect timeout on their own when
        // woken past the deadline.
        ctx.wakers.wake_all();
    }
    let _ = tx.send((id, ShardEvent::Ready));

    let t0 = loop {
        batch.clear();
        inbox.recv_batch(&mut batch).await;
        if let Some(t) = batch.iter().find_map(|m| match m {
            Ctl::Go(t) => Some(*t),
            Ctl::Connect => None,
        }) {
            break t;
        }
    };
    let window = window_at(&cfg, t0);
    ctx.window.set(window);
    for r in ctx.recorders.borrow_mut().iter_mut() {
        r.window = window;
    }
    sleep_until(t0).await;
    ctx.set_phase(Phase::Running);

    // The measured window ends on time, or when every sender has used its share.
    let early = if senders > 0 && !storms {
        futures_lite::future::or(
            async {
                ctx.senders_done.wait().await;
                true
            },
            async {
                sleep_until(window.measure_end).await;
                false
            },
        )
        .await
    } else {
        sleep_until(window.measure_end).await;
        false
    };
    if early {
        let end = now_ns().max(window.measure_start);
        let w = Window {
            measure_end: end,
            ..window
        };
        ctx.window.set(w);
        for r in ctx.recorders.borrow_mut().iter_mut() {
            r.window = w;
        }
    }
    ctx.set_phase(Phase::Draining);
    let drain_end = now_ns() + cfg.drain.as_nanos() as u64;
    let quiet = 200_000_000;
    // With one shard in one process every sender and receiver of the run is on this shard,
    // so its counters say whether deliveries are still due: a server that stalls at the end
    // of the window (a busy machine) is then waited for up to --drain, not taken for done
    // after a quiet moment and its late deliveries for losses.
    let whole_plan_here = cfg.shards == 1 && cfg.procs == 1;
    let missing = || {
        ctx.recorders
            .borrow()
            .iter()
            .map(|r| r.counts.expected.saturating_sub(r.counts.received))
            .sum::<u64>()
    };
    loop {
        let now = now_ns();
        if now >= drain_end || ctx.all_done.is_set() {
            break;
        }
        if ctx.in_flight.get() == 0
            && now.saturating_sub(ctx.last_rx.get()) >= quiet
            && !(whole_plan_here && missing() > 0)
        {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    ctx.set_phase(Phase::Closing);
    futures_lite::future::or(ctx.all_done.wait(), async {
        glommio::timer::sleep(Duration::from_secs(3)).await;
    })
    .await;
    ctx.publish_progress();
    let mut recs = ctx.recorders.borrow_mut();
    // Peak open is per shard, not per group: count it once, in group 0.
    if let Some(r) = recs.first_mut() {
        r.counts.peak_open += ctx.peak.get();
    }
    let data: Vec<RecorderData> = recs.iter().map(Recorder::to_data).collect();
    let _ = tx.send((id, ShardEvent::Done(data)));
}
