//! Several load generator processes (`--procs N`): one process's open-file limit (20 000
//! here) caps its connections, so a big run is split over worker processes that each run
//! their share of the same plan and start at the same instant.
//!
//! The parent re-runs its own executable with the same arguments plus `--worker-index I`,
//! and talks to each worker over its stdin/stdout, one line per message:
//! - worker → parent: `ready <LiveSnapshot JSON>` (setup done), `progress <LiveSnapshot
//!   JSON>` (every 250 ms), `result <ProcessOutput JSON>` (at the end);
//! - parent → worker: `go <t0>` (the start instant, ns on `CLOCK_MONOTONIC`, which every
//!   process on the host shares).
//!
//! Workers inherit stderr. A worker that exits early or reports nonsense ends the run with
//! an error (the parent kills the others it started, by their child handles). Each worker
//! restricts itself to its own CPUs (worker `i` takes `shards` CPUs from `i × shards`,
//! wrapping), so the workers' shards do not all pin to the first CPU.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::clock::now_ns;
use crate::engine::{self, Coordinator, LiveSnapshot, ProcessOutput, RunConfig};
use crate::metrics::Window;
use crate::run::Observer;
use crate::usage;

/// A line from a worker.
#[derive(Debug)]
enum Line {
    Ready(LiveSnapshot),
    Progress(LiveSnapshot),
    Result(Box<ProcessOutput>),
    Gone,
    Bad(String),
}

fn parse_line(l: &str) -> Line {
    let (kind, body) = l.split_once(' ').unwrap_or((l, ""));
    match kind {
        "ready" => serde_json::from_str(body)
            .map(Line::Ready)
            .unwrap_or_else(|e| Line::Bad(e.to_string())),
        "progress" => serde_json::from_str(body)
            .map(Line::Progress)
            .unwrap_or_else(|e| Line::Bad(e.to_string())),
        "result" => serde_json::from_str(body)
            .map(|o| Line::Result(Box::new(o)))
            .unwrap_or_else(|e| Line::Bad(e.to_string())),
        _ => Line::Bad(format!("unexpected line from worker: {l:.80}")),
    }
}

struct WorkerCoordinator {
    last: u64,
}

fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

impl Coordinator for WorkerCoordinator {
    fn ready(&mut self, snap: &LiveSnapshot) -> anyhow::Result<u64> {
        say(&format!("ready {}", serde_json::to_string(snap)?))?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        match line.trim().strip_prefix("go ").map(str::parse::<u64>) {
            Some(Ok(t0)) => Ok(t0),
            _ => bail!("worker expected `go <t0>` from its parent, got {line:?}"),
        }
    }

    fn tick(&mut self, snap: &LiveSnapshot, _window: Option<&Window>) {
        let now = now_ns();
        if now - self.last >= 250_000_000 {
            self.last = now;
            if let Ok(j) = serde_json::to_string(snap) {
                let _ = say(&format!("progress {j}"));
            }
        }
    }
}

/// Runs as worker `cfg.proc_index` of `cfg.procs`.
pub fn run_worker(cfg: Arc<RunConfig>) -> anyhow::Result<()> {
    let cpus = usage::allowed_cpus(std::process::id());
    if !cpus.is_empty() && cfg.procs > 1 {
        let mine: Vec<usize> = (0..cfg.shards)
            .map(|k| cpus[(cfg.proc_index * cfg.shards + k) % cpus.len()])
            .collect();
        if let Err(e) = usage::set_affinity(&mine) {
            tracing::warn!(error = %e, "cannot set worker CPU affinity");
        }
    }
    let out = engine::run_process(cfg, &mut WorkerCoordinator { last: 0 })?;
    say(&format!("result {}", serde_json::to_string(&out)?))?;
    Ok(())
}

/// Kills (by their handles) and reaps the workers still running.
fn stop_all(children: &mut [Child]) {
    for c in children.iter_mut() {
        if let Ok(None) = c.try_wait() {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

/// Starts the workers, coordinates the start, and collects their outputs.
pub fn run_parent(cfg: &RunConfig, obs: &mut Observer) -> anyhow::Result<Vec<ProcessOutput>> {
    let n = cfg.procs;
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let (tx, rx) = mpsc::channel::<(usize, Line)>();
    let mut children = Vec::with_capacity(n);
    let mut stdins = Vec::with_capacity(n);
    for i in 0..n {
        let spawned = Command::new(&exe)
            .args(&args)
            .arg("--worker-index")
            .arg(i.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                stop_all(&mut children);
                return Err(e).context("cannot start a worker process");
            }
        };
        stdins.push(child.stdin.take());
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    match line {
                        Ok(l) => {
                            if tx.send((i, parse_line(&l))).is_err() {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
                let _ = tx.send((i, Line::Gone));
            });
        }
        obs.own_pids.push(child.id());
        children.push(child);
    }
    drop(tx);
    let result = coordinate(cfg, obs, &rx, &mut stdins);
    if result.is_err() {
        stop_all(&mut children);
    } else {
        for c in children.iter_mut() {
            let _ = c.wait();
        }
    }
    result
}

fn coordinate(
    cfg: &RunConfig,
    obs: &mut Observer,
    rx: &mpsc::Receiver<(usize, Line)>,
    stdins: &mut [Option<std::process::ChildStdin>],
) -> anyhow::Result<Vec<ProcessOutput>> {
    let n = stdins.len();
    let mut snaps = vec![LiveSnapshot::default(); n];
    let mut ready = vec![false; n];
    let mut results: Vec<Option<ProcessOutput>> = (0..n).map(|_| None).collect();
    let mut window: Option<Window> = None;
    let total = |s: &[LiveSnapshot]| {
        let mut t = LiveSnapshot::default();
        for x in s {
            t.add(x);
        }
        t
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((i, Line::Ready(s))) => {
                snaps[i] = s;
                ready[i] = true;
                if window.is_none() && ready.iter().all(|r| *r) {
                    let t0 = now_ns() + 100_000_000;
                    for (j, stdin) in stdins.iter_mut().enumerate() {
                        let ok = stdin.as_mut().is_some_and(|s| {
                            writeln!(s, "go {t0}").and_then(|_| s.flush()).is_ok()
                        });
                        if !ok {
                            bail!("cannot start worker {j}: it is gone");
                        }
                    }
                    window = Some(engine::window_at(cfg, t0));
                }
            }
            Ok((i, Line::Progress(s))) => snaps[i] = s,
            Ok((i, Line::Result(o))) => {
                results[i] = Some(*o);
                if results.iter().all(Option::is_some) {
                    obs.tick(&total(&snaps), window.as_ref());
                    return Ok(results.into_iter().flatten().collect());
                }
            }
            Ok((i, Line::Gone)) => {
                if results[i].is_none() {
                    bail!(
                        "worker {i} exited before reporting its results (see its messages above)"
                    );
                }
            }
            Ok((i, Line::Bad(msg))) => bail!("worker {i}: {msg}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("every worker is gone"),
        }
        obs.tick(&total(&snaps), window.as_ref());
    }
}
