//! The report: a versioned JSON schema, built from merged recorders, and the human table.
//!
//! Schema `shardcast-loadgen.report/v1` (see loadgen/README.md for every field):
//! `{schema, label, scenario, parameters, environment, results, groups, timeline, warnings}`.
//! Times are microseconds (`*_us`), rates per second (`*_per_s`), sizes bytes. `results`
//! holds the whole run; `groups` the parts of a `mixed` run; `timeline` one point per second
//! since the start (warm-up seconds flagged). Latency summaries carry the full HdrHistogram
//! (base64 V2, `hdr`) and a percentile curve for plotting, so a report can be re-analysed.
//!
//! A reader accepts any report whose schema has the same major version (`v1`): fields are
//! only ever added within a major version, and unknown fields are ignored.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::metrics::{encode_histogram, Recorder};

/// The schema name written into every report.
pub const SCHEMA: &str = "shardcast-loadgen.report/v1";
const SCHEMA_MAJOR: &str = "shardcast-loadgen.report/v1";

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// A name for this run in `compare` and `plot` (`--label`, default scenario + target).
    pub label: String,
    /// The scenario (`echo`, `ack`, `fanout`, `rooms`, `broadcast`, `connect`, `hold`, `mixed`).
    pub scenario: String,
    /// The scenario's parameters as given or defaulted.
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Where and how it ran.
    pub environment: Environment,
    /// The figures for the whole run.
    pub results: Results,
    /// Per-part figures of a `mixed` run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupReport>,
    /// One point per second since the start.
    pub timeline: Vec<TimelinePoint>,
    /// Anything that limits how far the figures can be trusted.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One part of a mixed run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// The part's name.
    pub name: String,
    /// Its scenario.
    pub scenario: String,
    /// Its figures.
    pub results: Results,
}

/// Where and how the run happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// `shardcast-loadgen` version.
    pub loadgen_version: String,
    /// The command line.
    pub command_line: Vec<String>,
    /// Host name.
    pub hostname: String,
    /// Kernel release.
    pub kernel: String,
    /// CPUs online.
    pub cpus_online: usize,
    /// CPUs this process may run on (affinity; `taskset`).
    pub cpus_allowed: Vec<usize>,
    /// Load generator shards per process.
    pub shards: usize,
    /// Load generator processes.
    pub procs: usize,
    /// Target URLs.
    pub targets: Vec<String>,
    /// `shardcast` or `raw`.
    pub target_kind: String,
    /// Source addresses used.
    pub sources: Vec<String>,
    /// Wall-clock start, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// Server processes watched (`--server-pid`).
    pub server_pids: Vec<u32>,
}

/// The figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Warm-up length, seconds.
    pub warmup_seconds: f64,
    /// Measured window length, seconds.
    pub measured_seconds: f64,
    /// Connections.
    pub connections: Connections,
    /// Messages.
    pub messages: Messages,
    /// Rates over the measured window.
    pub throughput: Throughput,
    /// Message latency over the measured window: round trip (echo, ack) or end to end
    /// (fanout, rooms, broadcast).
    pub latency: LatencySummary,
    /// Handshake latency: TCP connect to WebSocket upgrade verified (or stelar CONNECT).
    pub handshake: LatencySummary,
    /// Faults and disconnects by kind.
    pub errors: BTreeMap<String, u64>,
    /// Server usage (with `--server-pid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerUsage>,
    /// The load generator's own usage.
    #[serde(default)]
    pub loadgen: LoadgenUsage,
}

/// Connection figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connections {
    /// Connection attempts.
    pub attempted: u64,
    /// Handshakes completed.
    pub established: u64,
    /// Connections that completed setup and took part.
    pub ready: u64,
    /// Attempts that failed (see `errors`).
    pub failed: u64,
    /// Most open at once (sum of per-shard peaks).
    pub peak_open: u64,
}

/// Message figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Messages {
    /// Sent, all.
    pub sent: u64,
    /// Sent in the measured window.
    pub sent_measured: u64,
    /// Received (stamped), all, duplicates included.
    pub received: u64,
    /// Received that were sent in the measured window.
    pub received_measured: u64,
    /// Deliveries expected for everything sent (sent × audience).
    pub expected: u64,
    /// Expected but never received (`expected − unique`).
    pub lost: u64,
    /// Received more than once.
    pub duplicates: u64,
    /// Received after a later message of the same publisher.
    pub reordered: u64,
    /// Gaps seen inside publisher streams at the end.
    pub holes: u64,
    /// Echo/ACK requests still unanswered at the end (included in `lost`).
    pub unanswered: u64,
}

/// Rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Messages sent per second (measured window).
    pub sent_per_s: f64,
    /// Messages received per second (messages sent in the window, per window second):
    /// round trips/s for echo and ack, deliveries/s for fan-out.
    pub received_per_s: f64,
    /// The open-loop rate asked for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intended_per_s: Option<f64>,
    /// Handshakes per second (connect: over the measured window; otherwise over setup).
    pub handshakes_per_s: f64,
    /// Bytes written per second over the whole run.
    pub bytes_sent_per_s: f64,
    /// Bytes read per second over the whole run.
    pub bytes_received_per_s: f64,
}

/// A latency distribution, microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p99_9_us: f64,
    /// 99.99th percentile.
    pub p99_99_us: f64,
    /// Largest.
    pub max_us: f64,
    /// `[percentile, µs]` points of the distribution (HdrHistogram's percentile
    /// iteration, 5 ticks per half distance), for plots.
    #[serde(default)]
    pub curve: Vec<[f64; 2]>,
    /// The histogram itself (ns), base64 HdrHistogram V2.
    #[serde(default)]
    pub hdr: String,
}

impl LatencySummary {
    /// Summarises a histogram of nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        let q = |x: f64| us(h.value_at_quantile(x));
        let mut curve = Vec::new();
        for v in h.iter_quantiles(5) {
            let p = v.quantile_iterated_to() * 100.0;
            if p >= 100.0 || curve.len() >= 400 {
                break;
            }
            curve.push([p, us(v.value_iterated_to())]);
        }
        curve.push([100.0, us(h.max())]);
        LatencySummary {
            count: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p99_9_us: q(0.999),
            p99_99_us: q(0.9999),
            max_us: us(h.max()),
            curve,
            hdr: encode_histogram(h),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the start.
    pub second: u64,
    /// This second is warm-up (excluded from the figures).
    pub warmup: bool,
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Faults.
    pub errors: u64,
    /// Median latency of messages received in this second.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// The server's resource use over the measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerUsage {
    /// Processes summed.
    pub pids: Vec<u32>,
    /// User + system CPU seconds during the measured window.
    pub cpu_seconds: f64,
    /// CPU use in percent of one core over the window.
    pub cpu_percent: f64,
    /// Messages received by the load generator per server CPU-second: the fair figure when
    /// the load generator is the limit.
    pub messages_per_cpu_second: f64,
    /// RSS before the load generator connected (bytes).
    pub rss_before_bytes: u64,
    /// RSS with every connection open (bytes).
    pub rss_loaded_bytes: u64,
    /// `(loaded − before) / established connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_per_connection_bytes: Option<f64>,
}

/// The load generator's own resource use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadgenUsage {
    /// User + system CPU seconds of every load generator process over the measured window.
    pub cpu_seconds: f64,
    /// CPU use in percent of the cores its shards run on.
    pub cpu_percent_of_shards: f64,
    /// RSS of every load generator process with every connection open (bytes).
    pub rss_bytes: u64,
    /// `(rss − rss before connecting) / established connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_per_connection_bytes: Option<f64>,
    /// The load generator itself was the limit (CPU ≥ 90 % of its cores, or it could not
    /// send at the intended rate): server figures are lower bounds.
    pub saturated: bool,
}

/// Summarises a merged recorder.
pub fn results_from(r: &Recorder, warmup_seconds: f64, whole_run_seconds: f64) -> Results {
    let secs = r.window.seconds().max(1e-9);
    let whole = whole_run_seconds.max(1e-9);
    let c = &r.counts;
    let unique = r.seq.unique;
    let failed = c.connect_attempts.saturating_sub(c.connected);
    let handshake_secs = if r.counts.connected > 0 { secs } else { 1.0 };
    Results {
        warmup_seconds,
        measured_seconds: r.window.seconds(),
        connections: Connections {
            attempted: c.connect_attempts,
            established: c.connected,
            ready: c.ready,
            failed,
            peak_open: c.peak_open,
        },
        messages: Messages {
            sent: c.sent,
            sent_measured: c.sent_measured,
            received: c.received,
            received_measured: c.received_measured,
            expected: c.expected,
            lost: c.expected.saturating_sub(unique),
            duplicates: r.seq.duplicates,
            reordered: r.seq.reordered,
            holes: r.seq.holes,
            unanswered: c.unanswered,
        },
        throughput: Throughput {
            sent_per_s: c.sent_measured as f64 / secs,
            received_per_s: c.received_measured as f64 / secs,
            intended_per_s: None,
            handshakes_per_s: c.connected as f64 / handshake_secs,
            bytes_sent_per_s: c.bytes_sent as f64 / whole,
            bytes_received_per_s: c.bytes_received as f64 / whole,
        },
        latency: LatencySummary::from_histogram(&r.latency),
        handshake: LatencySummary::from_histogram(&r.handshake),
        errors: r.faults.to_map(),
        server: None,
        loadgen: LoadgenUsage::default(),
    }
}

/// The per-second timeline of a merged recorder.
pub fn timeline_from(r: &Recorder) -> Vec<TimelinePoint> {
    let warm_secs = r.window.measure_start.saturating_sub(r.window.t0) / 1_000_000_000;
    r.timeline
        .iter()
        .enumerate()
        .map(|(i, s)| TimelinePoint {
            second: i as u64,
            warmup: (i as u64) < warm_secs,
            sent: s.sent,
            received: s.received,
            handshakes: s.handshakes,
            errors: s.faults,
            p50_us: s.quantile(0.5) as f64 / 1000.0,
            p99_us: s.quantile(0.99) as f64 / 1000.0,
            max_us: s.quantile(1.0) as f64 / 1000.0,
        })
        .collect()
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not JSON of this schema.
    #[error("{path}: not a shardcast-loadgen report: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// Another major schema version.
    #[error("{path}: report schema {found:?} is not supported (this build reads {SCHEMA_MAJOR})")]
    Schema {
        /// The file.
        path: String,
        /// Its schema.
        found: String,
    },
}

impl Report {
    /// Reads a report, checking its schema version.
    pub fn load(path: &Path) -> Result<Report, ReportError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
            path: shown.clone(),
            source,
        })?;
        Report::from_json(&text, &shown)
    }

    /// Parses a report from JSON text (`path` names it in errors).
    pub fn from_json(text: &str, path: &str) -> Result<Report, ReportError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| ReportError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let schema = v
            .get("schema")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string();
        if schema != SCHEMA_MAJOR && !schema.starts_with(&format!("{SCHEMA_MAJOR}.")) {
            return Err(ReportError::Schema {
                path: path.to_string(),
                found: schema,
            });
        }
        serde_json::from_value(v).map_err(|e| ReportError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// Writes the report as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<(), ReportError> {
        let io = |source| ReportError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        std::fs::write(path, text + "\n").map_err(io)
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let e = &self.environment;
        let _ = writeln!(
            out,
            "shardcast-loadgen {} — {} ({}) — {} shard(s) × {} process(es)",
            self.scenario,
            e.targets.join(", "),
            e.target_kind,
            e.shards,
            e.procs
        );
        if !self.parameters.is_empty() {
            let params: Vec<String> = self
                .parameters
                .iter()
                .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
                .collect();
            let _ = writeln!(out, "parameters    {}", params.join(" "));
        }
        write_results(&mut out, &self.results);
        for g in &self.groups {
            let _ = writeln!(out, "\n[{}: {}]", g.name, g.scenario);
            write_results(&mut out, &g.results);
        }
        for w in &self.warnings {
            let _ = writeln!(out, "WARNING: {w}");
        }
        out
    }
}

/// `1234567.8` → `1.23M`.
pub fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Microseconds, printed in a readable unit.
pub fn dur_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{us:.1}µs")
    }
}

fn write_latency(out: &mut String, name: &str, l: &LatencySummary) {
    if l.count == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "{name:<14}p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}  (n={})",
        dur_us(l.p50_us),
        dur_us(l.p90_us),
        dur_us(l.p99_us),
        dur_us(l.p99_9_us),
        dur_us(l.p99_99_us),
        dur_us(l.max_us),
        si(l.count as f64)
    );
}

fn write_results(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "window        {:.2}s measured after {:.2}s warm-up",
        r.measured_seconds, r.warmup_seconds
    );
    let c = &r.connections;
    let _ = writeln!(
        out,
        "connections   attempted {}  established {}  ready {}  failed {}  peak open {}",
        c.attempted, c.established, c.ready, c.failed, c.peak_open
    );
    let m = &r.messages;
    let t = &r.throughput;
    if m.sent > 0 || m.received > 0 {
        let intended = t
            .intended_per_s
            .map(|i| format!(" (intended {}/s)", si(i)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "throughput    sent {}/s{intended}  received {}/s  ({} / {} bytes/s out/in)",
            si(t.sent_per_s),
            si(t.received_per_s),
            si(t.bytes_sent_per_s),
            si(t.bytes_received_per_s)
        );
        let _ = writeln!(
            out,
            "messages      sent {}  received {}  expected {}  lost {}  duplicates {}  reordered {}  unanswered {}",
            m.sent, m.received, m.expected, m.lost, m.duplicates, m.reordered, m.unanswered
        );
    }
    write_latency(out, "latency", &r.latency);
    if r.handshake.count > 0 {
        let _ = writeln!(out, "handshakes    {}/s", si(t.handshakes_per_s));
    }
    write_latency(out, "handshake", &r.handshake);
    if r.errors.is_empty() {
        let _ = writeln!(out, "errors        none");
    } else {
        let list: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "errors        {}", list.join("  "));
    }
    if let Some(s) = &r.server {
        let per_conn = s
            .rss_per_connection_bytes
            .map(|b| format!("  RSS/connection {}B", si(b)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "server        pid {:?}: {:.2} CPU-s ({:.0}% of a core)  {} msgs per server CPU-second  RSS {}B → {}B{per_conn}",
            s.pids,
            s.cpu_seconds,
            s.cpu_percent,
            si(s.messages_per_cpu_second),
            si(s.rss_before_bytes as f64),
            si(s.rss_loaded_bytes as f64)
        );
    }
    let l = &r.loadgen;
    let per_conn = l
        .rss_per_connection_bytes
        .map(|b| format!("  RSS/connection {}B", si(b)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "loadgen       {:.2} CPU-s ({:.0}% of its cores)  RSS {}B{per_conn}{}",
        l.cpu_seconds,
        l.cpu_percent_of_shards,
        si(l.rss_bytes as f64),
        if l.saturated { "  SATURATED" } else { "" }
    );
}

/// Sample reports for other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::metrics::Window;

    /// A report with `rate` msgs/s received and latencies around `lat_us`.
    pub(crate) fn sample_report(rate: f64, lat_us: f64) -> Report {
        let w = Window {
            t0: 0,
            measure_start: 1_000_000_000,
            measure_end: 3_000_000_000,
        };
        let mut r = Recorder::new(w);
        for i in 0..2000u64 {
            let t = 1_000_000_000 + i * 1_000_000;
            r.sent(t, t, 1);
            r.received(t, t + (lat_us * 1000.0) as u64 + i % 100);
        }
        r.seq.unique = 2000;
        let mut results = results_from(&r, 1.0, 3.0);
        results.throughput.received_per_s = rate;
        results.throughput.sent_per_s = rate;
        Report {
            schema: SCHEMA.into(),
            label: format!("rate {rate}"),
            scenario: "echo".into(),
            parameters: BTreeMap::new(),
            environment: Environment::default(),
            results,
            groups: Vec::new(),
            timeline: timeline_from(&r),
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{decode_histogram, Window};

    pub(crate) fn sample() -> Report {
        let w = Window {
            t0: 0,
            measure_start: 1_000_000_000,
            measure_end: 3_000_000_000,
        };
        let mut r = Recorder::new(w);
        for i in 0..1000u64 {
            r.sent(1_000_000_000 + i, 1_000_000_000 + i, 1);
            r.received(1_000_000_000 + i, 1_000_000_000 + i + 20_000 + i * 10);
        }
        r.seq.unique = 1000;
        r.handshake(150_000, 500_000_000);
        r.counts.connect_attempts = 1;
        let mut parameters = BTreeMap::new();
        parameters.insert("connections".into(), serde_json::json!(1));
        Report {
            schema: SCHEMA.into(),
            label: "test".into(),
            scenario: "echo".into(),
            parameters,
            environment: Environment {
                targets: vec!["ws://127.0.0.1:1/".into()],
                ..Default::default()
            },
            results: results_from(&r, 1.0, 3.0),
            groups: Vec::new(),
            timeline: timeline_from(&r),
            warnings: vec!["something".into()],
        }
    }

    /// Equal up to float parsing (serde_json parses floats to within an ulp or so).
    pub(crate) fn assert_same(a: &Report, b: &Report) {
        fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
            use serde_json::Value::*;
            match (a, b) {
                (Number(x), Number(y)) => {
                    let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                    (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
                }
                (Array(x), Array(y)) => {
                    x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
                }
                (Object(x), Object(y)) => {
                    x.len() == y.len()
                        && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
                }
                _ => a == b,
            }
        }
        let (x, y) = (
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap(),
        );
        assert!(same(&x, &y), "reports differ:\n{x}\n{y}");
    }

    #[test]
    fn schema_round_trip() {
        let rep = sample();
        let json = serde_json::to_string_pretty(&rep).unwrap();
        let back = Report::from_json(&json, "x").unwrap();
        assert_same(&back, &rep);
        assert_eq!(back.results.messages.lost, 0);
        assert_eq!(back.results.latency.count, 1000);
        assert!(back.results.latency.p50_us > 20.0 && back.results.latency.p50_us < 30.0);
        assert_eq!(
            decode_histogram(&back.results.latency.hdr).unwrap().len(),
            1000
        );
        assert!(back.results.latency.curve.len() > 10);
        assert_eq!(back.timeline.len(), 2);
        assert!(back.timeline[0].warmup);
        assert!(!back.timeline[1].warmup);
        let dir = std::env::temp_dir().join(format!("lg-report-{}", std::process::id()));
        rep.save(&dir).unwrap();
        assert_same(&Report::load(&dir).unwrap(), &rep);
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn other_schema_versions_are_refused_clearly() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["schema"] = "shardcast-loadgen.report/v2".into();
        let err = Report::from_json(&v.to_string(), "a.json").unwrap_err();
        assert!(err.to_string().contains("v2"), "{err}");
        assert!(matches!(
            Report::from_json("{", "a.json"),
            Err(ReportError::Parse { .. })
        ));
        // Added fields within v1 are fine.
        let mut v = serde_json::to_value(sample()).unwrap();
        v["future_field"] = 1.into();
        assert!(Report::from_json(&v.to_string(), "a.json").is_ok());
    }

    #[test]
    fn table_mentions_the_figures() {
        let t = sample().table();
        assert!(t.contains("echo"));
        assert!(t.contains("p99"));
        assert!(t.contains("WARNING: something"));
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(dur_us(1500.0), "1.50ms");
    }
}
