//! Test harness: real `shardcast` servers, the loadgen's own sink, a third-party echo server
//! (Python `websockets`), and runs of the `shardcast-loadgen` binary with deadlines.
//!
//! Every child process is started here and killed by its handle on drop; nothing waits
//! without a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shardcast_loadgen::report::Report;

/// The loadgen binary under test.
pub fn loadgen_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_shardcast-loadgen"))
}

/// A workspace binary next to the test executable's directory (`target/<profile>/NAME`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace` first (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// Waits for a line matching `prefix` on a child's stdout, with a deadline.
fn first_line(child: &mut Child, prefix: &str, within: Duration) -> String {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with(&prefix) {
                let _ = tx.send(line);
                // Keep draining so the child never blocks on a full pipe.
            }
        }
    });
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("no `{}` line within {within:?}", "listening"))
}

fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .to_string()
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running shardcast server.
pub struct Server {
    pub proc: Proc,
    /// `host:port` of the WebSocket port.
    pub ws: String,
    /// `host:port` of the stelar TCP port.
    pub tcp: String,
}

impl Server {
    /// `shardcast --host 127.0.0.1 --port 0 --shards 1 --bench-endpoints`, pinned to CPU 0
    /// when the machine has more than one (so the load generator can take another).
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// [`start`](Self::start) with more flags.
    pub fn start_with(extra: &[&str]) -> Server {
        let mut cmd = Command::new(workspace_bin("shardcast"));
        cmd.args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--shards",
            "1",
            "--bench-endpoints",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start shardcast");
        let line = first_line(&mut child, "shardcast listening", Duration::from_secs(15));
        Server {
            ws: field(&line, "ws="),
            tcp: field(&line, "tcp="),
            proc: Proc { child },
        }
    }
}

/// A running `shardcast-loadgen sink`.
pub struct Sink {
    pub proc: Proc,
    pub ws: String,
    pub tcp: String,
}

impl Sink {
    pub fn start(extra: &[&str]) -> Sink {
        let mut child = Command::new(loadgen_bin())
            .args(["sink", "--port", "0", "--exit-after", "120s"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sink");
        let line = first_line(&mut child, "sink listening", Duration::from_secs(15));
        Sink {
            ws: field(&line, "ws="),
            tcp: field(&line, "tcp="),
            proc: Proc { child },
        }
    }
}

/// A Python interpreter with `websockets`: `$SHARDCAST_TEST_PYTHON` (set by ./test.sh; then
/// it must work), else the venv test.sh makes. `None` if there is none.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SHARDCAST_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let mut candidates =
        vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python")];
    if let Some(target) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
        candidates.push(target.join("venv/bin/python"));
    }
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import websockets"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A third-party echo server: Python `websockets`, echoing every message.
pub struct PyEcho {
    pub proc: Proc,
    pub port: u16,
}

impl PyEcho {
    pub fn start(python: &Path) -> PyEcho {
        const SCRIPT: &str = r#"
import asyncio
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with serve(echo, "127.0.0.1", 0, compression=None, max_size=None) as s:
        print("listening", s.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(120)
asyncio.run(main())
"#;
        let mut child = Command::new(python)
            .args(["-c", SCRIPT])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python echo server");
        let line = first_line(&mut child, "listening", Duration::from_secs(20));
        let port = line
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("port");
        PyEcho {
            proc: Proc { child },
            port,
        }
    }
}

/// A unique temporary path.
pub fn temp(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("lg-test-{}-{n}-{name}", std::process::id()))
}

/// Runs the loadgen with `args`, killing it after `deadline`.
pub fn run(args: &[&str], deadline: Duration) -> Output {
    let mut child = Command::new(loadgen_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadgen");
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().expect("output"),
            Ok(None) if start.elapsed() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "loadgen {args:?} did not finish within {deadline:?}\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("wait: {e}"),
        }
    }
}

/// Runs a scenario briefly and returns its report (asserting exit code 0).
pub fn scenario(args: &[&str]) -> Report {
    let json = temp("report.json");
    let json_s = json.to_str().expect("utf-8 temp path").to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&[
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--drain",
        "1s",
        "--no-progress",
        "--json",
        &json_s,
    ]);
    let out = run(&all, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "loadgen {all:?} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("latency") || stdout.contains("handshake"),
        "no table:\n{stdout}"
    );
    let r = Report::load(&json).unwrap_or_else(|e| panic!("report: {e}\nstdout:\n{stdout}"));
    let _ = std::fs::remove_file(&json);
    r
}

/// Asserts a clean run: messages flowed, none lost, no errors.
pub fn assert_clean(r: &Report) {
    let m = &r.results.messages;
    assert!(m.sent > 0 && m.received > 0, "no traffic: {m:?}");
    assert_eq!(m.lost, 0, "lost messages: {m:?}\n{}", r.table());
    assert_eq!(m.duplicates, 0, "{m:?}");
    assert!(
        r.results.errors.is_empty(),
        "errors: {:?}\n{}",
        r.results.errors,
        r.table()
    );
    assert!(r.results.latency.count > 0);
    assert!(r.results.latency.p50_us > 0.0);
    assert!(r.results.latency.p50_us <= r.results.latency.p99_us);
    assert_eq!(r.results.connections.failed, 0);
}
