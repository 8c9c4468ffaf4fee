//! Counters, and the two ways they are read: `/health` (stelar-compatible JSON,
//! PROTOCOL.md §1.3) and `/metrics` (Prometheus text exposition format 0.0.4).
//!
//! Each shard owns a [`Counters`] of plain `Cell`s: counting costs an add, no atomics, no
//! locks. A reader asks every shard for a [`Snapshot`] over the mesh and sums them
//! ([`Snapshot::merge`]); the rendering functions here are pure.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;

use shardcast_shards::uring::{Ring, RingStats};

/// The two client transports, for per-transport counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket (the stelar JSON envelope, or a raw bench endpoint).
    Ws,
    /// stelar binary TCP.
    Tcp,
}

/// One shard's counters. Only the owning shard writes them.
#[derive(Default, Debug)]
pub(crate) struct Counters {
    ws_opened: Cell<u64>,
    tcp_opened: Cell<u64>,
    ws_closed: Cell<u64>,
    tcp_closed: Cell<u64>,
    /// Data messages received from clients.
    pub messages_received: Cell<u64>,
    /// Messages queued to clients (one per recipient).
    pub messages_sent: Cell<u64>,
    /// Bytes read from client sockets.
    pub bytes_received: Cell<u64>,
    /// Bytes written to client sockets.
    pub bytes_sent: Cell<u64>,
    /// Socket writes (each may carry many frames).
    pub writes: Cell<u64>,
    /// Messages handed to other shards.
    pub mesh_sent: Cell<u64>,
    /// HTTP requests answered (not upgrades).
    pub http_requests: Cell<u64>,
    /// Labelled counters: protocol errors by kind.
    errors: RefCell<BTreeMap<&'static str, u64>>,
    /// Labelled counters: connections closed by the server, by reason.
    disconnects: RefCell<BTreeMap<&'static str, u64>>,
    /// Labelled counters: connections or requests refused, by reason.
    refused: RefCell<BTreeMap<&'static str, u64>>,
    /// Labelled counters: messages dropped, by reason.
    dropped: RefCell<BTreeMap<&'static str, u64>>,
    /// Authentication attempts, by result (`auth/`).
    auth: RefCell<BTreeMap<&'static str, u64>>,
    /// Authentication time, microseconds summed, and how many were timed.
    auth_micros: Cell<u64>,
    auth_timed: Cell<u64>,
    // Latency histograms (issue 9): plain per-shard arrays, summed when /metrics is read.
    /// WebSocket handshakes: accepted socket → 101 written.
    handshake: Histogram,
    /// ACK requests: request received → reply queued.
    ack: Histogram,
    /// Authentication: credentials received → verdict.
    auth_latency: Histogram,
    // --- TLS (issue 9, item 1) ---
    /// TLS handshakes completed.
    tls_handshakes: Cell<u64>,
    /// Labelled counters: TLS handshakes failed, by reason.
    tls_failures: RefCell<BTreeMap<&'static str, u64>>,
}

/// Upper bounds of the latency histograms' buckets, in microseconds (the `le` labels, in
/// seconds, are these / 1e6); one more bucket counts what is above the last.
pub(crate) const LATENCY_BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// One shard's latency histogram: a count per bucket and the sum, each a plain `Cell`.
#[derive(Default, Debug)]
pub(crate) struct Histogram {
    counts: [Cell<u64>; LATENCY_BUCKETS_US.len() + 1],
    sum_micros: Cell<u64>,
}

impl Histogram {
    /// Records one observation of `micros` microseconds.
    pub(crate) fn observe(&self, micros: u64) {
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < micros);
        bump(&self.counts[i], 1);
        bump(&self.sum_micros, micros);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].get()),
            sum_micros: self.sum_micros.get(),
        }
    }
}

/// A histogram's counts (per bucket, not cumulative) and sum, summed over shards.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct HistogramSnapshot {
    /// Observations per bucket; the last is above every bound.
    pub(crate) counts: [u64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of the observations, in microseconds.
    pub(crate) sum_micros: u64,
}

impl HistogramSnapshot {
    fn merge(&mut self, o: &HistogramSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
        self.sum_micros += o.sum_micros;
    }

    /// Observations in all buckets.
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Renders `h` as a Prometheus histogram in seconds.
fn prom_histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, n) in LATENCY_BUCKETS_US.iter().zip(h.counts) {
        cumulative += n;
        let le = *bound as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(out, "{name}_sum {}", h.sum_micros as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", h.count());
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

fn bump_label(map: &RefCell<BTreeMap<&'static str, u64>>, label: &'static str) {
    *map.borrow_mut().entry(label).or_insert(0) += 1;
}

impl Counters {
    /// A connection of `t` was accepted (and not refused).
    pub(crate) fn opened(&self, t: Transport) {
        match t {
            Transport::Ws => bump(&self.ws_opened, 1),
            Transport::Tcp => bump(&self.tcp_opened, 1),
        }
    }
    /// A connection of `t` ended (for any reason).
    pub(crate) fn closed(&self, t: Transport) {
        match t {
            Transport::Ws => bump(&self.ws_closed, 1),
            Transport::Tcp => bump(&self.tcp_closed, 1),
        }
    }
    /// Adds `n` to a plain counter.
    pub(crate) fn add(c: &Cell<u64>, n: u64) {
        bump(c, n);
    }
    /// Counts a protocol error by its label.
    pub(crate) fn error(&self, label: &'static str) {
        bump_label(&self.errors, label);
    }
    /// Counts a server-initiated disconnect by reason.
    pub(crate) fn disconnect(&self, reason: &'static str) {
        bump_label(&self.disconnects, reason);
    }
    /// Counts a refusal by reason.
    pub(crate) fn refuse(&self, reason: &'static str) {
        bump_label(&self.refused, reason);
    }
    /// Counts a dropped message by reason.
    pub(crate) fn drop_message(&self, reason: &'static str) {
        bump_label(&self.dropped, reason);
    }
    /// Counts a completed TLS handshake.
    pub(crate) fn tls_handshake(&self) {
        bump(&self.tls_handshakes, 1);
    }
    /// Counts a failed TLS handshake by reason.
    pub(crate) fn tls_failure(&self, reason: &'static str) {
        bump_label(&self.tls_failures, reason);
    }

    /// A WebSocket handshake took `micros` (accepted socket → 101 written).
    pub(crate) fn observe_handshake_micros(&self, micros: u64) {
        self.handshake.observe(micros);
    }
    /// An ACK took `micros` (request received → reply queued).
    pub(crate) fn observe_ack_micros(&self, micros: u64) {
        self.ack.observe(micros);
    }
    /// Counts an authentication by result (`ok`, `anonymous`, or a fault's label).
    pub(crate) fn auth_result(&self, result: &'static str) {
        bump_label(&self.auth, result);
    }
    /// Records how long one authentication took (token known → answer), in microseconds.
    pub(crate) fn observe_auth_micros(&self, micros: u64) {
        bump(&self.auth_micros, micros);
        bump(&self.auth_timed, 1);
        self.auth_latency.observe(micros);
    }

    /// A copy that can travel to another shard.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            ws_opened: self.ws_opened.get(),
            tcp_opened: self.tcp_opened.get(),
            ws_closed: self.ws_closed.get(),
            tcp_closed: self.tcp_closed.get(),
            messages_received: self.messages_received.get(),
            messages_sent: self.messages_sent.get(),
            bytes_received: self.bytes_received.get(),
            bytes_sent: self.bytes_sent.get(),
            writes: self.writes.get(),
            mesh_sent: self.mesh_sent.get(),
            http_requests: self.http_requests.get(),
            errors: self.errors.borrow().clone(),
            disconnects: self.disconnects.borrow().clone(),
            refused: self.refused.borrow().clone(),
            dropped: self.dropped.borrow().clone(),
            auth: self.auth.borrow().clone(),
            auth_micros: self.auth_micros.get(),
            auth_timed: self.auth_timed.get(),
            tls_handshakes: self.tls_handshakes.get(),
            tls_failures: self.tls_failures.borrow().clone(),
            rooms: 0,
            users: 0,
            shards: 1,
            memory: MemoryGauges::default(),
            handshake: self.handshake.snapshot(),
            ack: self.ack.snapshot(),
            auth_latency: self.auth_latency.snapshot(),
            queued_by_shard: Vec::new(),
            reloads: (0, 0),
            cluster: None,
            // This shard's ring (a snapshot is taken on each shard's own thread).
            ring: Ring::current().map(|r| r.stats()).unwrap_or_default(),
        }
    }
}

/// Memory gauges (bytes), summed over shards: see `hub/memory.rs` for what each bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct MemoryGauges {
    /// Frames queued to clients.
    pub(crate) output_used: u64,
    /// The output budget.
    pub(crate) output_limit: u64,
    /// Partly received input held.
    pub(crate) input_used: u64,
    /// The input budget.
    pub(crate) input_limit: u64,
    /// Cross-shard messages held back for full inboxes.
    pub(crate) mesh_overflow: u64,
}

impl MemoryGauges {
    fn merge(&mut self, o: &MemoryGauges) {
        self.output_used += o.output_used;
        self.output_limit += o.output_limit;
        self.input_used += o.input_used;
        self.input_limit += o.input_limit;
        self.mesh_overflow += o.mesh_overflow;
    }
}

/// Counters summed over shards, plus gauges filled in by the reader.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// WebSocket connections ever opened.
    pub ws_opened: u64,
    /// TCP connections ever opened.
    pub tcp_opened: u64,
    /// WebSocket connections ended.
    pub ws_closed: u64,
    /// TCP connections ended.
    pub tcp_closed: u64,
    /// Data messages received.
    pub messages_received: u64,
    /// Messages queued to clients.
    pub messages_sent: u64,
    /// Bytes read.
    pub bytes_received: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Socket writes.
    pub writes: u64,
    /// Cross-shard messages sent.
    pub mesh_sent: u64,
    /// HTTP requests answered.
    pub http_requests: u64,
    /// Protocol errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Server-initiated disconnects by reason.
    pub disconnects: BTreeMap<&'static str, u64>,
    /// Refusals by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// Dropped messages by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Authentications by result.
    pub auth: BTreeMap<&'static str, u64>,
    /// Authentication time, microseconds summed.
    pub auth_micros: u64,
    /// Authentications timed.
    pub auth_timed: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS handshakes failed, by reason.
    pub tls_failures: BTreeMap<&'static str, u64>,
    /// Rooms in the process (a gauge: the reader sets it, merge keeps the largest view).
    pub rooms: u64,
    /// Distinct users with a connection in the process (a gauge like `rooms`).
    pub users: u64,
    /// Shards summed.
    pub shards: u64,
    /// Memory gauges, summed.
    pub memory: MemoryGauges,
    /// WebSocket handshake latency.
    pub handshake: HistogramSnapshot,
    /// ACK latency.
    pub ack: HistogramSnapshot,
    /// Authentication latency.
    pub auth_latency: HistogramSnapshot,
    /// Bytes queued to clients, per shard: (shard, bytes), sorted by shard.
    pub queued_by_shard: Vec<(u16, u64)>,
    /// Reloads (committed, refused): process-wide, set by the reader.
    pub reloads: (u64, u64),
    /// The cluster bridge's counters (process-wide), in a cluster.
    pub cluster: Option<crate::cluster::StatsSnapshot>,
    /// What the shards' own io_uring rings did (`shards/src/uring.rs`), summed.
    pub ring: RingStats,
}

fn merge_map(into: &mut BTreeMap<&'static str, u64>, from: &BTreeMap<&'static str, u64>) {
    for (k, v) in from {
        *into.entry(k).or_insert(0) += v;
    }
}

impl Snapshot {
    /// Adds another shard's snapshot.
    pub(crate) fn merge(&mut self, o: &Snapshot) {
        self.ws_opened += o.ws_opened;
        self.tcp_opened += o.tcp_opened;
        self.ws_closed += o.ws_closed;
        self.tcp_closed += o.tcp_closed;
        self.messages_received += o.messages_received;
        self.messages_sent += o.messages_sent;
        self.bytes_received += o.bytes_received;
        self.bytes_sent += o.bytes_sent;
        self.writes += o.writes;
        self.mesh_sent += o.mesh_sent;
        self.http_requests += o.http_requests;
        merge_map(&mut self.errors, &o.errors);
        merge_map(&mut self.disconnects, &o.disconnects);
        merge_map(&mut self.refused, &o.refused);
        merge_map(&mut self.dropped, &o.dropped);
        merge_map(&mut self.auth, &o.auth);
        self.auth_micros += o.auth_micros;
        self.auth_timed += o.auth_timed;
        self.tls_handshakes += o.tls_handshakes;
        merge_map(&mut self.tls_failures, &o.tls_failures);
        self.rooms = self.rooms.max(o.rooms);
        self.users = self.users.max(o.users);
        self.shards += o.shards;
        self.memory.merge(&o.memory);
        self.handshake.merge(&o.handshake);
        self.ack.merge(&o.ack);
        self.auth_latency.merge(&o.auth_latency);
        self.queued_by_shard.extend_from_slice(&o.queued_by_shard);
        self.queued_by_shard.sort_unstable();
        self.reloads = self.reloads.max(o.reloads);
        if self.cluster.is_none() {
            self.cluster.clone_from(&o.cluster);
        }
        self.ring.merge(&o.ring);
    }

    /// Open WebSocket connections.
    pub(crate) fn ws_active(&self) -> u64 {
        self.ws_opened.saturating_sub(self.ws_closed)
    }
    /// Open TCP connections.
    pub(crate) fn tcp_active(&self) -> u64 {
        self.tcp_opened.saturating_sub(self.tcp_closed)
    }
}

/// Process facts read at render time.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Process {
    /// Milliseconds since start.
    pub uptime_ms: u64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

impl Process {
    /// Reads RSS from `/proc/self/statm`; `uptime_ms` from the caller.
    pub(crate) fn read(uptime_ms: u64) -> Process {
        Process {
            uptime_ms,
            rss_bytes: rss_bytes().unwrap_or(0),
        }
    }
}

/// Resident set size of this process, from `/proc/self/statm`.
pub(crate) fn rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// Memory available to the process: physical memory (`MemTotal` in `/proc/meminfo`), or the
/// cgroup v2 limit (`/sys/fs/cgroup/memory.max`) when that is lower.
pub(crate) fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let total = total_kib * 1024;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// The `/health` body: stelar's keys in stelar's order (PROTOCOL.md §1.3, Q21), with
/// `memoryUsage` filled from RSS (there is no JS heap), then shardcast's own additions.
pub(crate) fn health_json(s: &Snapshot, p: &Process) -> String {
    let rss = p.rss_bytes;
    let active = s.ws_active() + s.tcp_active();
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        concat!(
            "{{\"status\":\"ok\",\"totalConnections\":{},\"activeConnections\":{},",
            "\"totalMessagesReceived\":{},\"totalMessagesSent\":{},\"totalRooms\":{},",
            "\"uptime\":{},\"wsConnections\":{},\"tcpConnections\":{},",
            "\"memoryUsage\":{{\"rss\":{},\"heapTotal\":{},\"heapUsed\":{},\"external\":0,\"arrayBuffers\":0}},",
            "\"rateLimiterEntries\":0,\"uptimeSeconds\":{},\"memoryMB\":{:.2},",
            "\"server\":\"shardcast\",\"version\":\"{}\",\"shards\":{}}}"
        ),
        s.ws_opened + s.tcp_opened,
        active,
        s.messages_received,
        s.messages_sent,
        s.rooms,
        p.uptime_ms,
        s.ws_active(),
        s.tcp_active(),
        rss,
        rss,
        rss,
        p.uptime_ms / 1000,
        rss as f64 / (1024.0 * 1024.0),
        env!("CARGO_PKG_VERSION"),
        s.shards,
    );
    out
}

fn prom_labelled(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    map: &BTreeMap<&'static str, u64>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (k, v) in map {
        let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
    }
}

/// The `/metrics` body in the Prometheus text format.
pub(crate) fn prometheus_text(s: &Snapshot, p: &Process) -> String {
    let mut out = String::with_capacity(2048);
    let mut counter = |name: &str, help: &str, rows: &[(&str, u64)]| {
        prom_counter(&mut out, name, help, rows);
    };
    counter(
        "shardcast_connections_total",
        "Client connections accepted.",
        &[
            ("transport=\"ws\"", s.ws_opened),
            ("transport=\"tcp\"", s.tcp_opened),
        ],
    );
    counter(
        "shardcast_messages_received_total",
        "Data messages received from clients.",
        &[("", s.messages_received)],
    );
    counter(
        "shardcast_messages_sent_total",
        "Messages queued to clients, one per recipient.",
        &[("", s.messages_sent)],
    );
    counter(
        "shardcast_bytes_received_total",
        "Bytes read from client sockets.",
        &[("", s.bytes_received)],
    );
    counter(
        "shardcast_bytes_sent_total",
        "Bytes written to client sockets.",
        &[("", s.bytes_sent)],
    );
    counter(
        "shardcast_socket_writes_total",
        "Socket writes; each carries every frame queued for that client during a loop turn.",
        &[("", s.writes)],
    );
    counter(
        "shardcast_mesh_messages_total",
        "Messages handed from one shard to another.",
        &[("", s.mesh_sent)],
    );
    counter(
        "shardcast_http_requests_total",
        "Plain HTTP requests answered.",
        &[("", s.http_requests)],
    );
    prom_labelled(
        &mut out,
        "shardcast_protocol_errors_total",
        "Malformed input from clients, by kind.",
        "kind",
        &s.errors,
    );
    prom_labelled(
        &mut out,
        "shardcast_disconnects_total",
        "Connections closed by the server, by reason.",
        "reason",
        &s.disconnects,
    );
    prom_labelled(
        &mut out,
        "shardcast_refused_total",
        "Connections or requests refused, by reason.",
        "reason",
        &s.refused,
    );
    prom_labelled(
        &mut out,
        "shardcast_dropped_messages_total",
        "Messages dropped, by reason.",
        "reason",
        &s.dropped,
    );
    prom_labelled(
        &mut out,
        "shardcast_auth_total",
        "Client authentications, by result (ok, anonymous, or why it failed).",
        "result",
        &s.auth,
    );
    let _ = writeln!(
        out,
        "# HELP shardcast_auth_duration_microseconds_total Time spent authenticating, from a token being known to the answer.\n# TYPE shardcast_auth_duration_microseconds_total counter\nshardcast_auth_duration_microseconds_total {}\n# HELP shardcast_auth_checks_total Authentications timed (the divisor of the duration total).\n# TYPE shardcast_auth_checks_total counter\nshardcast_auth_checks_total {}",
        s.auth_micros, s.auth_timed
    );
    let _ = writeln!(
        out,
        "# HELP shardcast_tls_handshakes_total TLS handshakes completed.\n# TYPE shardcast_tls_handshakes_total counter\nshardcast_tls_handshakes_total {}",
        s.tls_handshakes
    );
    prom_labelled(
        &mut out,
        "shardcast_tls_handshake_failures_total",
        "TLS handshakes failed, by reason (timeout, eof, bad_record, alert, no_shared_cipher, ...).",
        "reason",
        &s.tls_failures,
    );
    let _ = writeln!(
        out,
        "# HELP shardcast_connections_active Open client connections.\n# TYPE shardcast_connections_active gauge\nshardcast_connections_active{{transport=\"ws\"}} {}\nshardcast_connections_active{{transport=\"tcp\"}} {}",
        s.ws_active(),
        s.tcp_active()
    );
    let _ = writeln!(
        out,
        "# HELP shardcast_rooms Rooms with at least one member.\n# TYPE shardcast_rooms gauge\nshardcast_rooms {}",
        s.rooms
    );
    let _ = writeln!(
        out,
        "# HELP shardcast_users Distinct users (authenticated ids) with a connection.\n# TYPE shardcast_users gauge\nshardcast_users {}",
        s.users
    );
    let _ = writeln!(
        out,
        "# HELP shardcast_shards Shards (threads) serving.\n# TYPE shardcast_shards gauge\nshardcast_shards {}",
        s.shards
    );
    let _ = writeln!(
        out,
        "# HELP shardcast_uptime_seconds Seconds since start.\n# TYPE shardcast_uptime_seconds gauge\nshardcast_uptime_seconds {}",
        p.uptime_ms / 1000
    );
    let m = &s.memory;
    for (name, help, v) in [
        (
            "shardcast_output_queued_bytes",
            "Bytes queued to clients (with per-frame overhead), all shards.",
            m.output_used,
        ),
        (
            "shardcast_output_budget_bytes",
            "The output budget (memory.output_budget).",
            m.output_limit,
        ),
        (
            "shardcast_input_held_bytes",
            "Bytes of partly received messages held, all shards.",
            m.input_used,
        ),
        (
            "shardcast_input_budget_bytes",
            "The input budget (memory.input_budget).",
            m.input_limit,
        ),
        (
            "shardcast_mesh_overflow_bytes",
            "Cross-shard messages held back for full inboxes.",
            m.mesh_overflow,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    prom_histogram(
        &mut out,
        "shardcast_ws_handshake_duration_seconds",
        "WebSocket handshakes, accepted socket to 101 response written.",
        &s.handshake,
    );
    prom_histogram(
        &mut out,
        "shardcast_ack_duration_seconds",
        "ACK requests, request received to reply queued.",
        &s.ack,
    );
    prom_histogram(
        &mut out,
        "shardcast_auth_duration_seconds",
        "Client authentication, credentials received to verdict.",
        &s.auth_latency,
    );
    let _ = writeln!(
        out,
        "# HELP shardcast_shard_output_queued_bytes Bytes queued to clients on each shard.\n# TYPE shardcast_shard_output_queued_bytes gauge"
    );
    for (shard, bytes) in &s.queued_by_shard {
        let _ = writeln!(
            out,
            "shardcast_shard_output_queued_bytes{{shard=\"{shard}\"}} {bytes}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP shardcast_reloads_total Configuration reloads, by result.\n# TYPE shardcast_reloads_total counter\nshardcast_reloads_total{{result=\"ok\"}} {}\nshardcast_reloads_total{{result=\"refused\"}} {}",
        s.reloads.0,
        s.reloads.1
    );
    if let Some(c) = &s.cluster {
        let _ = writeln!(
            out,
            "# HELP shardcast_cluster_connected Whether this node is connected to Redis (1) or not (0).\n# TYPE shardcast_cluster_connected gauge\nshardcast_cluster_connected {}\n\
             # HELP shardcast_cluster_subscriptions Redis channels and patterns this node is subscribed to.\n# TYPE shardcast_cluster_subscriptions gauge\nshardcast_cluster_subscriptions {}\n\
             # HELP shardcast_cluster_published_total Messages published to Redis for other nodes.\n# TYPE shardcast_cluster_published_total counter\nshardcast_cluster_published_total {}\n\
             # HELP shardcast_cluster_received_total Messages from other nodes (or outside publishers) handed to this node's shards.\n# TYPE shardcast_cluster_received_total counter\nshardcast_cluster_received_total {}\n\
             # HELP shardcast_cluster_reconnects_total Times Redis came back after being lost.\n# TYPE shardcast_cluster_reconnects_total counter\nshardcast_cluster_reconnects_total {}\n\
             # HELP shardcast_cluster_dropped_total Messages that could not cross between this node and Redis, by reason.\n# TYPE shardcast_cluster_dropped_total counter",
            u8::from(c.connected),
            c.subscriptions,
            c.published,
            c.received,
            c.reconnects
        );
        for (reason, n) in &c.dropped {
            let _ = writeln!(
                out,
                "shardcast_cluster_dropped_total{{reason=\"{reason}\"}} {n}"
            );
        }
    }
    prom_ring(&mut out, &s.ring);
    let _ = writeln!(
        out,
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
        p.rss_bytes
    );
    out
}

/// A counter family: its help and type lines, then one sample per row (labels, value).
fn prom_counter(out: &mut String, name: &str, help: &str, rows: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, v) in rows {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// The shards' io_uring rings: what the socket path costs in the kernel, for whoever tunes it.
fn prom_ring(out: &mut String, r: &RingStats) {
    let mut counter = |name: &str, help: &str, rows: &[(&str, u64)]| {
        prom_counter(out, name, help, rows);
    };
    counter(
        "shardcast_ring_submits_total",
        "io_uring_enter calls on the shards' rings that submitted requests.",
        &[("", r.submits)],
    );
    counter(
        "shardcast_ring_requests_total",
        "Requests submitted to the shards' rings (read and write polls, cancels, wait timers).",
        &[("", r.submitted)],
    );
    counter(
        "shardcast_ring_completions_total",
        "Completions reaped from the shards' rings.",
        &[("", r.completions)],
    );
    counter(
        "shardcast_socket_reads_total",
        "recv calls on client sockets, by result: bytes, or empty (readiness reported for bytes already read).",
        &[
            ("result=\"bytes\"", r.recvs.saturating_sub(r.empty_recvs)),
            ("result=\"empty\"", r.empty_recvs),
        ],
    );
    counter(
        "shardcast_ring_read_poll_rearms_total",
        "Read-readiness polls armed again after the kernel ended them or a pause cancelled them.",
        &[("", r.rearms)],
    );
    counter(
        "shardcast_ring_parks_total",
        "Times a shard's ring driver parked (the shard had nothing to do).",
        &[("", r.parks)],
    );
    counter(
        "shardcast_ring_waits_total",
        "Waits on a shard's ring between bursts of work, by how they ended.",
        &[
            ("result=\"served\"", r.waits_served),
            (
                "result=\"timed_out\"",
                r.waits.saturating_sub(r.waits_served),
            ),
        ],
    );
    counter(
        "shardcast_ring_wait_timers_total",
        "Timer requests armed to bound those waits (one per window of waits).",
        &[("", r.wait_timers)],
    );
    let _ = writeln!(
        out,
        "# HELP shardcast_ring_sockets Sockets on the shards' rings.\n# TYPE shardcast_ring_sockets gauge\nshardcast_ring_sockets {}",
        r.sockets
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_has_stelar_keys_in_order() {
        let c = Counters::default();
        c.opened(Transport::Ws);
        c.opened(Transport::Tcp);
        c.opened(Transport::Tcp);
        c.closed(Transport::Tcp);
        let mut s = c.snapshot();
        s.rooms = 4;
        let text = health_json(
            &s,
            &Process {
                uptime_ms: 12_345,
                rss_bytes: 3 * 1024 * 1024,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["totalConnections"], 3);
        assert_eq!(v["activeConnections"], 2);
        assert_eq!(v["wsConnections"], 1);
        assert_eq!(v["tcpConnections"], 1);
        assert_eq!(v["totalRooms"], 4);
        assert_eq!(v["uptimeSeconds"], 12);
        assert_eq!(v["memoryMB"], 3.0);
        let keys = [
            "status",
            "totalConnections",
            "activeConnections",
            "totalMessagesReceived",
            "totalMessagesSent",
            "totalRooms",
            "uptime",
            "wsConnections",
            "tcpConnections",
            "memoryUsage",
            "rateLimiterEntries",
            "uptimeSeconds",
            "memoryMB",
        ];
        let mut last = 0;
        for k in keys {
            let at = text.find(&format!("\"{k}\"")).unwrap();
            assert!(at >= last, "{k} out of order");
            last = at;
        }
    }

    #[test]
    fn merge_sums_and_prometheus_renders_labels() {
        let a = Counters::default();
        a.error("ws_invalid_utf8");
        a.error("ws_invalid_utf8");
        a.disconnect("slow_consumer");
        let b = Counters::default();
        b.error("ws_invalid_utf8");
        let mut s = a.snapshot();
        s.merge(&b.snapshot());
        assert_eq!(s.errors["ws_invalid_utf8"], 3);
        assert_eq!(s.shards, 2);
        s.ring = RingStats {
            recvs: 10,
            empty_recvs: 3,
            waits: 5,
            waits_served: 4,
            sockets: 2,
            ..RingStats::default()
        };
        s.merge(&Snapshot {
            ring: RingStats {
                recvs: 1,
                sockets: 1,
                ..RingStats::default()
            },
            ..Snapshot::default()
        });
        let text = prometheus_text(&s, &Process::default());
        assert!(text.contains("shardcast_socket_reads_total{result=\"bytes\"} 8"));
        assert!(text.contains("shardcast_socket_reads_total{result=\"empty\"} 3"));
        assert!(text.contains("shardcast_ring_waits_total{result=\"timed_out\"} 1"));
        assert!(text.contains("shardcast_ring_sockets 3"));
        assert!(text.contains("shardcast_protocol_errors_total{kind=\"ws_invalid_utf8\"} 3"));
        assert!(text.contains("shardcast_disconnects_total{reason=\"slow_consumer\"} 1"));
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find(|f| text.contains(&format!("# TYPE {f} histogram")))
                .unwrap_or(name);
            assert!(text.contains(&format!("# TYPE {family} ")), "{name}");
        }
    }

    #[test]
    fn histograms_bucket_sum_and_render_cumulatively() {
        let a = Counters::default();
        a.observe_ack_micros(40);
        a.observe_ack_micros(300);
        let b = Counters::default();
        b.observe_ack_micros(20_000_000);
        let mut s = a.snapshot();
        s.merge(&b.snapshot());
        assert_eq!(s.ack.count(), 3);
        assert_eq!(s.ack.sum_micros, 20_000_340);
        s.queued_by_shard = vec![(0, 10), (1, 0)];
        s.reloads = (2, 1);
        let text = prometheus_text(&s, &Process::default());
        for want in [
            "shardcast_ack_duration_seconds_bucket{le=\"0.00005\"} 1",
            "shardcast_ack_duration_seconds_bucket{le=\"0.00025\"} 1",
            "shardcast_ack_duration_seconds_bucket{le=\"0.0005\"} 2",
            "shardcast_ack_duration_seconds_bucket{le=\"10\"} 2",
            "shardcast_ack_duration_seconds_bucket{le=\"+Inf\"} 3",
            "shardcast_ack_duration_seconds_sum 20.00034",
            "shardcast_ack_duration_seconds_count 3",
            "shardcast_ws_handshake_duration_seconds_count 0",
            "shardcast_shard_output_queued_bytes{shard=\"0\"} 10",
            "shardcast_reloads_total{result=\"ok\"} 2",
            "shardcast_reloads_total{result=\"refused\"} 1",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
    }

    #[test]
    fn auth_results_and_time_are_rendered() {
        let a = Counters::default();
        a.auth_result("ok");
        a.auth_result("expired");
        a.observe_auth_micros(40);
        let b = Counters::default();
        b.auth_result("ok");
        b.observe_auth_micros(2);
        let mut s = a.snapshot();
        s.merge(&b.snapshot());
        let text = prometheus_text(&s, &Process::default());
        assert!(
            text.contains("shardcast_auth_total{result=\"ok\"} 2"),
            "{text}"
        );
        assert!(text.contains("shardcast_auth_total{result=\"expired\"} 1"));
        assert!(text.contains("shardcast_auth_duration_microseconds_total 42"));
        assert!(text.contains("shardcast_auth_checks_total 2"));
    }

    #[test]
    fn rss_is_readable() {
        assert!(rss_bytes().unwrap() > 0);
    }
}
