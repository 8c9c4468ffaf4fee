//! Running a scenario end to end: plan, processes, live progress, resource sampling, and
//! the report.
//!
//! One process (`--procs 1`) runs the plan itself ([`crate::engine::run_process`] with a
//! local coordinator that starts as soon as setup is done). With `--procs N` this process
//! becomes the parent of N workers (`procs.rs`) and only coordinates and observes. Either
//! way an [`Observer`] draws the progress line and samples CPU and RSS (the server's with
//! `--server-pid`, and the load generator's own) at the edges of the measured window.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{CommonArgs, TargetKind};
use crate::clock::{now_ns, unix_ms};
use crate::engine::{self, Coordinator, LiveSnapshot, ProcessOutput, RunConfig};
use crate::metrics::{Recorder, RecorderData, Window};
use crate::net::source::parse_sources;
use crate::net::tls;
use crate::report::{
    self, dur_us, si, Environment, GroupReport, LoadgenUsage, Report, ServerUsage, SCHEMA,
};
use crate::scenario::{build_plan, PlanOptions, Spec};
use crate::usage::{self, ProcSample};

/// Warm-up when `--warmup` is not given (connect and hold default to none).
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(1);

/// A scenario run as asked on the command line.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Scenario name (`mixed` for a mix).
    pub scenario: String,
    /// Named parts (one unless mixed).
    pub parts: Vec<(String, Spec)>,
    /// Shared options.
    pub common: CommonArgs,
}

/// Watches a run: progress line and resource samples.
pub struct Observer {
    bar: Option<ProgressBar>,
    started: Instant,
    total_conns: u64,
    server_pids: Vec<u32>,
    /// This process and its workers.
    pub own_pids: Vec<u32>,
    server_before: ProcSample,
    /// This process's (and workers') readings before connecting.
    pub own_before: ProcSample,
    at_start: Option<(ProcSample, ProcSample)>,
    at_end: Option<(ProcSample, ProcSample)>,
    server_loaded_rss: u64,
    own_loaded_rss: u64,
    last: Option<(u64, LiveSnapshot)>,
    rate: (f64, f64),
    window: Option<Window>,
}

impl Observer {
    /// Starts watching; samples the "before" readings now.
    pub fn new(common: &CommonArgs, total_conns: u64) -> Observer {
        let show =
            !common.no_progress && common.worker_index.is_none() && std::io::stderr().is_terminal();
        let bar = show.then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
            b.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        });
        let own = vec![std::process::id()];
        Observer {
            bar,
            started: Instant::now(),
            total_conns,
            server_before: usage::sample_all(&common.server_pids),
            own_before: usage::sample_all(&own),
            server_pids: common.server_pids.clone(),
            own_pids: own,
            at_start: None,
            at_end: None,
            server_loaded_rss: 0,
            own_loaded_rss: 0,
            last: None,
            rate: (0.0, 0.0),
            window: None,
        }
    }

    fn sample(&self) -> (ProcSample, ProcSample) {
        (
            usage::sample_all(&self.server_pids),
            usage::sample_all(&self.own_pids),
        )
    }

    /// Fresh counters (about every 100 ms).
    pub fn tick(&mut self, snap: &LiveSnapshot, window: Option<&Window>) {
        let now = now_ns();
        if let Some(w) = window {
            self.window = Some(*w);
            if self.at_start.is_none() && now >= w.measure_start {
                self.at_start = Some(self.sample());
            }
            if self.at_start.is_some() && self.at_end.is_none() {
                let (s, o) = self.sample();
                self.server_loaded_rss = self.server_loaded_rss.max(s.rss_bytes);
                self.own_loaded_rss = self.own_loaded_rss.max(o.rss_bytes);
                if now >= w.measure_end {
                    self.at_end = Some((s, o));
                }
            }
        }
        match self.last {
            Some((t, prev)) if now - t >= 500_000_000 => {
                let dt = (now - t) as f64 / 1e9;
                self.rate = (
                    (snap.sent.saturating_sub(prev.sent)) as f64 / dt,
                    (snap.received.saturating_sub(prev.received)) as f64 / dt,
                );
                self.last = Some((now, *snap));
            }
            None => self.last = Some((now, *snap)),
            _ => {}
        }
        if let Some(bar) = &self.bar {
            let phase = match window {
                None => "setup",
                Some(w) if now < w.measure_start => "warm-up",
                Some(w) if now < w.measure_end => "measuring",
                Some(_) => "draining",
            };
            bar.set_message(format!(
                "{phase} | conns {}/{} (failed {}) | sent {}/s | recv {}/s | p99 {} | errors {}",
                snap.open,
                self.total_conns,
                snap.failed,
                si(self.rate.0),
                si(self.rate.1),
                dur_us(snap.p99_ns as f64 / 1000.0),
                snap.faults
            ));
            bar.tick();
        }
    }

    /// The run is over.
    pub fn finish(&mut self) {
        if self.at_start.is_none() {
            self.at_start = Some(self.sample());
        }
        if self.at_end.is_none() {
            let (s, o) = self.sample();
            self.server_loaded_rss = self.server_loaded_rss.max(s.rss_bytes);
            self.own_loaded_rss = self.own_loaded_rss.max(o.rss_bytes);
            self.at_end = Some((s, o));
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Whole run so far, seconds.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

struct LocalCoordinator<'a>(&'a mut Observer);

impl Coordinator for LocalCoordinator<'_> {
    fn ready(&mut self, _snap: &LiveSnapshot) -> anyhow::Result<u64> {
        Ok(now_ns() + 20_000_000)
    }

    fn tick(&mut self, snap: &LiveSnapshot, window: Option<&Window>) {
        self.0.tick(snap, window);
    }
}

/// Connections per destination above which one source address is not enough.
///
/// Linux's `connect` picks ephemeral ports of one parity first (the other half of
/// `ip_local_port_range` is kept for `bind`); past half the range (about 14 000 of the default
/// 28 232 ports) new connections to the same destination stall for seconds (measured here:
/// handshakes stop at ~14 100 and complete 15-40 s later). Spreading over several loopback
/// source addresses avoids it.
pub const PER_SOURCE: usize = 10_000;

/// Without `--source`: when a loopback target would get more than [`PER_SOURCE`]
/// connections, spread them over `127.0.0.1`, `127.0.0.2`, … (all of 127/8 is local).
pub fn auto_sources(
    plan: &crate::plan::Plan,
    urls: &[crate::net::TargetUrl],
) -> Vec<std::net::IpAddr> {
    let busiest = (0..urls.len())
        .map(|t| plan.conns.iter().filter(|c| c.target == t).count())
        .max()
        .unwrap_or(0);
    let all_loopback = urls
        .iter()
        .all(|u| u.addr.ip().is_loopback() && u.addr.is_ipv4());
    if !all_loopback || busiest <= PER_SOURCE {
        return Vec::new();
    }
    let n = busiest.div_ceil(PER_SOURCE).min(250) as u8;
    (1..=n)
        .map(|i| std::net::IpAddr::from([127, 0, 0, i]))
        .collect()
}

/// Builds the run configuration for an invocation (this process's share: `proc_index`).
pub fn run_config(inv: &Invocation) -> anyhow::Result<RunConfig> {
    let c = &inv.common;
    let raw = c.target == TargetKind::Raw;
    if raw && c.urls.iter().any(|u| !u.scheme.is_ws()) {
        anyhow::bail!("--target raw speaks WebSocket only: use ws:// or wss:// URLs");
    }
    let recv_dialect = c.dialect.kind();
    if let Some(kind) = recv_dialect {
        let name = kind.name();
        if raw {
            anyhow::bail!("--dialect {name} talks to shardcast: drop --target raw");
        }
        if let Some(u) = c.urls.iter().find(|u| !u.scheme.is_ws()) {
            anyhow::bail!("--dialect {name} is spoken over WebSocket (the TCP port stays stelar): {u} is not a ws:// or wss:// URL");
        }
        if let Some(u) = c.urls.iter().find(|u| u.path.is_none()) {
            anyhow::bail!("--dialect {name}: give the server's path for it in the URL (e.g. {u}/ws for `shardcast --dialect /ws={name}`)");
        }
        if c.jwt_secret.is_none() {
            anyhow::bail!(
                "--dialect {name} authenticates every receiver: give the server's --jwt-secret"
            );
        }
        if !c.publisher_path.starts_with('/') {
            anyhow::bail!("--publisher-path must start with '/'");
        }
        if let Some((_, spec)) = inv.parts.iter().find(|(_, s)| {
            !matches!(
                s,
                Spec::Fanout { .. } | Spec::Broadcast { .. } | Spec::Hold { .. }
            )
        }) {
            anyhow::bail!(
                "--dialect applies to fanout, broadcast and hold (receivers speak the dialect, publishers stelar); {} has no receivers",
                spec.name()
            );
        }
    }
    let plan = build_plan(
        &inv.parts,
        PlanOptions {
            targets: c.urls.len(),
            messages: c.messages,
            raw,
            cluster: c.cluster,
        },
    )?;
    let sources = match &c.source {
        Some(s) => parse_sources(s).context("--source")?,
        None => auto_sources(&plan, &c.urls),
    };
    let tls = if c.urls.iter().any(|u| u.scheme.is_tls()) {
        Some(tls::client_config(c.insecure, c.ca.as_deref())?)
    } else {
        None
    };
    let conns = plan.len() as f64;
    let setup_timeout = c
        .setup_timeout
        .unwrap_or_else(|| Duration::from_secs_f64(30.0 + 2.0 * conns / c.connect_rate));
    Ok(RunConfig {
        plan,
        targets: c.urls.clone(),
        raw,
        binary: c.binary,
        size: c.size as usize,
        shards: usize::from(c.shards),
        procs: usize::from(c.procs),
        proc_index: c.worker_index.map_or(0, usize::from),
        sources,
        tls,
        warmup: c.warmup.unwrap_or(DEFAULT_WARMUP),
        duration: c.duration,
        drain: c.drain,
        connect_rate: c.connect_rate,
        connect_timeout: c.connect_timeout,
        setup_timeout,
        linger_zero: true,
        recv_dialect,
        publisher_path: c.publisher_path.clone(),
        jwt_secret: c
            .jwt_secret
            .as_ref()
            .map(|k| crate::engine::JwtSecret(Arc::from(k.as_bytes()))),
    })
}

/// Runs an invocation and prints/saves the report.
pub fn execute(inv: Invocation) -> anyhow::Result<ExitCode> {
    if let Err(e) = usage::raise_nofile() {
        tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE");
    }
    let cfg = Arc::new(run_config(&inv)?);
    if inv.common.worker_index.is_some() {
        crate::procs::run_worker(cfg)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut observer = Observer::new(&inv.common, cfg.plan.len() as u64);
    let outputs: Vec<ProcessOutput> = if cfg.procs > 1 {
        crate::procs::run_parent(&cfg, &mut observer)?
    } else {
        vec![engine::run_process(
            cfg.clone(),
            &mut LocalCoordinator(&mut observer),
        )?]
    };
    observer.finish();
    let per_group: Vec<Vec<RecorderData>> = outputs.iter().map(|o| o.groups.clone()).collect();
    let merged = engine::merge_outputs(&per_group)?;
    let setup = outputs.iter().map(|o| o.setup_seconds).fold(0.0, f64::max);
    // Memory before connecting: each process's own reading with its shards up (workers'
    // plus, with --procs, this coordinating process's).
    let workers_baseline: u64 = outputs.iter().map(|o| o.rss_baseline_bytes).sum();
    if cfg.procs > 1 {
        observer.own_before.rss_bytes += workers_baseline;
    } else {
        observer.own_before.rss_bytes = workers_baseline;
    }
    let report = assemble(&inv, &cfg, &merged, setup, &observer)?;
    print!("{}", report.table());
    if let Some(path) = &inv.common.json {
        report.save(path)?;
        println!("report written to {}", path.display());
    }
    let c = &report.results.connections;
    if c.attempted > 0 && c.established == 0 {
        eprintln!(
            "shardcast-loadgen: no connection could be established to {} ({})",
            report.environment.targets.join(", "),
            report
                .results
                .errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn usage_over(
    a: Option<(ProcSample, ProcSample)>,
    b: Option<(ProcSample, ProcSample)>,
) -> (f64, f64) {
    match (a, b) {
        (Some((s0, o0)), Some((s1, o1))) => (
            (s1.cpu_seconds - s0.cpu_seconds).max(0.0),
            (o1.cpu_seconds - o0.cpu_seconds).max(0.0),
        ),
        _ => (0.0, 0.0),
    }
}

/// The report for merged per-group recorders.
pub fn assemble(
    inv: &Invocation,
    cfg: &RunConfig,
    groups: &[RecorderData],
    setup_seconds: f64,
    obs: &Observer,
) -> anyhow::Result<Report> {
    let recs: Vec<Recorder> = groups
        .iter()
        .map(Recorder::from_data)
        .collect::<Result<_, _>>()?;
    let Some(first) = recs.first() else {
        anyhow::bail!("the run produced no results");
    };
    let mut total = first.clone();
    for r in &recs[1..] {
        total.merge(r);
    }
    let warmup = cfg.warmup.as_secs_f64();
    let whole = (total.window.seconds() + warmup).max(1e-3);
    let intended: Option<f64> = {
        let rates: Vec<f64> = cfg
            .plan
            .groups
            .iter()
            .filter_map(|g| g.intended_rate)
            .collect();
        (!rates.is_empty()).then(|| rates.iter().sum())
    };
    let mut results = report::results_from(&total, warmup, whole);
    results.throughput.intended_per_s = intended;
    if inv.scenario == "connect" {
        // Storm: handshakes completed per second of the measured window.
        results.throughput.handshakes_per_s = results.throughput.received_per_s;
    } else if results.handshake.count > 0 && setup_seconds > 0.0 {
        results.throughput.handshakes_per_s =
            results.connections.established as f64 / setup_seconds;
    }
    let secs = total.window.seconds().max(1e-9);
    let (server_cpu, own_cpu) = usage_over(obs.at_start, obs.at_end);
    let established = results
        .connections
        .established
        .max(if inv.scenario == "connect" { 0 } else { 1 });
    let per_conn = |loaded: u64, before: u64| {
        (inv.scenario != "connect" && results.connections.established > 0)
            .then(|| loaded.saturating_sub(before) as f64 / established as f64)
    };
    if !cfg_server_pids(inv).is_empty() {
        results.server = Some(ServerUsage {
            pids: cfg_server_pids(inv),
            cpu_seconds: server_cpu,
            cpu_percent: server_cpu / secs * 100.0,
            messages_per_cpu_second: if server_cpu > 0.0 {
                results.messages.received_measured as f64 / server_cpu
            } else {
                0.0
            },
            rss_before_bytes: obs.server_before.rss_bytes,
            rss_loaded_bytes: obs.server_loaded_rss,
            rss_per_connection_bytes: per_conn(obs.server_loaded_rss, obs.server_before.rss_bytes),
        });
    }
    let cores = (cfg.shards * cfg.procs).max(1) as f64;
    let own_pct = own_cpu / secs / cores * 100.0;
    let behind = intended.is_some_and(|i| results.throughput.sent_per_s < 0.95 * i)
        && inv.scenario != "connect";
    results.loadgen = LoadgenUsage {
        cpu_seconds: own_cpu,
        cpu_percent_of_shards: own_pct,
        rss_bytes: obs.own_loaded_rss,
        rss_per_connection_bytes: per_conn(obs.own_loaded_rss, obs.own_before.rss_bytes),
        saturated: own_pct >= 90.0 || behind,
    };

    let mut warnings = Vec::new();
    if results.loadgen.saturated {
        let why = if behind {
            format!(
                "it sent {}/s of the intended {}/s",
                si(results.throughput.sent_per_s),
                si(intended.unwrap_or(0.0))
            )
        } else {
            format!("it used {own_pct:.0}% of its {cores} core(s)")
        };
        warnings.push(format!(
            "the load generator was saturated ({why}): throughput and latency are lower bounds of the server's capacity; compare messages per server CPU-second (--server-pid), or add --shards/--procs"
        ));
    }
    let c = &results.connections;
    if c.failed > 0 {
        warnings.push(format!(
            "{} of {} connection attempts failed (see errors)",
            c.failed, c.attempted
        ));
    }
    let m = &results.messages;
    if m.lost > 0 && inv.scenario != "connect" {
        warnings.push(format!(
            "{} of {} expected messages were lost ({} unanswered at the end)",
            m.lost, m.expected, m.unanswered
        ));
    }
    if m.duplicates > 0 || m.reordered > 0 {
        warnings.push(format!(
            "{} duplicates and {} reordered messages",
            m.duplicates, m.reordered
        ));
    }
    let own_cpus = usage::allowed_cpus(std::process::id());
    for pid in cfg_server_pids(inv) {
        let theirs = usage::allowed_cpus(pid);
        let shared: Vec<usize> = theirs
            .iter()
            .copied()
            .filter(|c| own_cpus.contains(c))
            .collect();
        if !shared.is_empty() {
            warnings.push(format!(
                "server pid {pid} and the load generator may run on the same CPU(s) {shared:?}: pin them apart (taskset) for clean figures"
            ));
        }
    }

    let group_reports = if recs.len() > 1 {
        recs.iter()
            .zip(cfg.plan.groups.iter())
            .map(|(r, g)| {
                let mut res = report::results_from(r, warmup, whole);
                res.throughput.intended_per_s = g.intended_rate;
                GroupReport {
                    name: g.name.clone(),
                    scenario: g.scenario.clone(),
                    results: res,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let parameters = if recs.len() > 1 {
        cfg.plan
            .groups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    serde_json::to_value(&g.parameters).unwrap_or_default(),
                )
            })
            .collect()
    } else {
        cfg.plan
            .groups
            .first()
            .map(|g| g.parameters.clone())
            .unwrap_or_default()
    };
    let mut parameters = parameters;
    let c = &inv.common;
    parameters.insert("size".into(), c.size.into());
    parameters.insert("duration_s".into(), c.duration.as_secs_f64().into());
    parameters.insert("warmup_s".into(), cfg.warmup.as_secs_f64().into());
    if let Some(n) = c.messages {
        parameters.insert("messages".into(), n.into());
    }
    if c.binary {
        parameters.insert("binary".into(), true.into());
    }
    if let Some(kind) = cfg.recv_dialect {
        parameters.insert("dialect".into(), kind.name().into());
        parameters.insert("publisher_path".into(), c.publisher_path.clone().into());
    }
    let (hostname, kernel) = usage::host_and_kernel();
    let targets: Vec<String> = cfg
        .targets
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let mut s = u.to_string();
            if u.scheme.is_ws() && u.path.is_none() {
                s.push_str(&cfg.path(i, 0));
            }
            s
        })
        .collect();
    let label = c.label.clone().unwrap_or_else(|| {
        format!(
            "{} {}",
            inv.scenario,
            targets.first().cloned().unwrap_or_default()
        )
    });
    Ok(Report {
        schema: SCHEMA.to_string(),
        label,
        scenario: inv.scenario.clone(),
        parameters,
        environment: Environment {
            loadgen_version: env!("CARGO_PKG_VERSION").to_string(),
            command_line: redact_secrets(std::env::args()),
            hostname,
            kernel,
            cpus_online: usage::cpus_online(),
            cpus_allowed: own_cpus,
            shards: cfg.shards,
            procs: cfg.procs,
            targets,
            target_kind: if cfg.raw { "raw" } else { "shardcast" }.to_string(),
            sources: cfg.sources.iter().map(|s| s.to_string()).collect(),
            started_unix_ms: unix_ms().saturating_sub((obs.elapsed() * 1000.0) as u64),
            server_pids: cfg_server_pids(inv),
        },
        results,
        groups: group_reports,
        timeline: report::timeline_from(&total),
        warnings,
    })
}

/// The command line with the value of `--jwt-secret` replaced, for the report.
pub fn redact_secrets(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut hide_next = false;
    for a in args {
        if std::mem::take(&mut hide_next) {
            out.push("<redacted>".to_string());
        } else if a == "--jwt-secret" {
            hide_next = true;
            out.push(a);
        } else if a.starts_with("--jwt-secret=") {
            out.push("--jwt-secret=<redacted>".to_string());
        } else {
            out.push(a);
        }
    }
    out
}

fn cfg_server_pids(inv: &Invocation) -> Vec<u32> {
    inv.common.server_pids.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{build_plan, PlanOptions, Spec};

    #[test]
    fn reports_do_not_carry_the_jwt_secret() {
        let args = [
            "lg",
            "fanout",
            "--jwt-secret",
            "s3cret",
            "--jwt-secret=s3cret",
            "-r",
            "1",
        ];
        let out = redact_secrets(args.iter().map(|s| s.to_string()));
        assert_eq!(
            out,
            [
                "lg",
                "fanout",
                "--jwt-secret",
                "<redacted>",
                "--jwt-secret=<redacted>",
                "-r",
                "1"
            ]
        );
    }

    #[test]
    fn auto_sources_only_past_the_per_source_limit_on_loopback() {
        let plan = |n, targets| {
            let opts = PlanOptions {
                targets,
                messages: None,
                raw: false,
                cluster: false,
            };
            build_plan(&[("h".into(), Spec::Hold { connections: n })], opts).unwrap()
        };
        let one: Vec<crate::net::TargetUrl> = vec!["ws://127.0.0.1:9".parse().unwrap()];
        assert!(auto_sources(&plan(10_000, 1), &one).is_empty());
        let s = auto_sources(&plan(19_900, 1), &one);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1], std::net::IpAddr::from([127, 0, 0, 2]));
        let two: Vec<crate::net::TargetUrl> = vec![
            "ws://127.0.0.1:9".parse().unwrap(),
            "ws://127.0.0.1:10".parse().unwrap(),
        ];
        assert!(auto_sources(&plan(19_900, 2), &two).is_empty());
    }
}
