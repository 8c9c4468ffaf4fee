//! Every scenario, briefly, against a real `shardcast` (and the raw mode against a
//! third-party echo server and the sink), checking that the report is sane: traffic flowed,
//! nothing was lost where nothing should be, errors are counted by kind when they happen.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use shardcast_loadgen::report::Report;

#[test]
fn echo_over_websocket_and_tcp() {
    let s = Server::start();
    let r = scenario(&[
        "echo",
        "--url",
        &format!("ws://{}", s.ws),
        "-c",
        "4",
        "-D",
        "4",
    ]);
    assert_clean(&r);
    assert_eq!(r.scenario, "echo");
    assert_eq!(r.results.connections.established, 4);
    assert_eq!(r.results.messages.received, r.results.messages.sent);
    let t = scenario(&[
        "echo",
        "--url",
        &format!("tcp://{}", s.tcp),
        "-c",
        "2",
        "-D",
        "2",
    ]);
    assert_clean(&t);
    assert!(t.environment.targets[0].starts_with("tcp://"));
}

#[test]
fn open_loop_echo_keeps_its_rate() {
    let s = Server::start();
    let r = scenario(&[
        "echo",
        "--url",
        &format!("ws://{}", s.ws),
        "-c",
        "5",
        "--rate",
        "2000",
    ]);
    assert_clean(&r);
    let t = &r.results.throughput;
    assert_eq!(t.intended_per_s, Some(2000.0));
    assert!(
        (1800.0..2200.0).contains(&t.sent_per_s),
        "sent {}/s",
        t.sent_per_s
    );
}

#[test]
fn ack_round_trips_over_websocket_and_tcp() {
    let s = Server::start();
    for url in [format!("ws://{}", s.ws), format!("tcp://{}", s.tcp)] {
        let r = scenario(&["ack", "--url", &url, "-c", "3", "-D", "2"]);
        assert_clean(&r);
        assert_eq!(r.scenario, "ack");
    }
}

#[test]
fn fanout_delivers_every_publish_to_every_other_member() {
    let s = Server::start();
    let r = scenario(&[
        "fanout",
        "--url",
        &format!("ws://{}", s.ws),
        "--rooms",
        "2",
        "--room-size",
        "10",
        "--publishers",
        "2",
        "--rate",
        "400",
    ]);
    assert_clean(&r);
    let m = &r.results.messages;
    // Every publish reaches the 9 other members of its room.
    assert_eq!(m.expected, m.sent * 9);
    assert_eq!(m.received, m.expected);
    assert_eq!(r.results.connections.ready, 20);
    // Mixed transports in one room are the server's business; TCP alone works too.
    let t = scenario(&[
        "fanout",
        "--url",
        &format!("tcp://{}", s.tcp),
        "--room-size",
        "5",
        "--rate",
        "200",
    ]);
    assert_clean(&t);
}

#[test]
fn rooms_and_broadcast() {
    let s = Server::start();
    let r = scenario(&[
        "rooms",
        "--url",
        &format!("ws://{}", s.ws),
        "--rooms",
        "10",
        "--members",
        "4",
        "--rate",
        "200",
    ]);
    assert_clean(&r);
    assert_eq!(r.results.messages.expected, r.results.messages.sent * 3);
    let b = scenario(&[
        "broadcast",
        "--url",
        &format!("ws://{}", s.ws),
        "-c",
        "12",
        "--rate",
        "100",
    ]);
    assert_clean(&b);
    assert_eq!(b.results.messages.expected, b.results.messages.sent * 11);
    // The raw /broadcast bench endpoint.
    let raw = scenario(&[
        "broadcast",
        "--target",
        "raw",
        "--url",
        &format!("ws://{}", s.ws),
        "-c",
        "6",
        "--rate",
        "100",
    ]);
    assert_clean(&raw);
    assert!(raw.environment.targets[0].ends_with("/broadcast"));
}

#[test]
fn connect_storm_and_hold() {
    let s = Server::start();
    let c = scenario(&[
        "connect",
        "--url",
        &format!("ws://{}", s.ws),
        "--concurrency",
        "4",
    ]);
    assert!(c.results.errors.is_empty(), "{:?}", c.results.errors);
    assert!(c.results.connections.established > 10);
    assert!(c.results.handshake.count > 10);
    assert!(c.results.throughput.handshakes_per_s > 0.0);
    let pid = s.proc.pid().to_string();
    let h = scenario(&[
        "hold",
        "--url",
        &format!("ws://{}", s.ws),
        "-c",
        "300",
        "--server-pid",
        &pid,
    ]);
    assert!(h.results.errors.is_empty(), "{:?}", h.results.errors);
    assert_eq!(h.results.connections.ready, 300);
    let server = h
        .results
        .server
        .as_ref()
        .expect("server usage with --server-pid");
    assert_eq!(server.pids, vec![s.proc.pid()]);
    assert!(server.rss_loaded_bytes > 0);
    assert!(server.rss_per_connection_bytes.is_some());
    assert!(h.results.loadgen.rss_bytes > 0);
}

#[test]
fn mixed_runs_every_part() {
    let s = Server::start();
    let mix = temp("mix.toml");
    std::fs::write(
        &mix,
        "connections = 30\n\
         [[part]]\nname = \"chat\"\nscenario = \"rooms\"\nmembers = 5\nrate = 100\nweight = 2\n\
         [[part]]\nname = \"pings\"\nscenario = \"echo\"\nweight = 1\n\
         [[part]]\nscenario = \"hold\"\nconnections = 5\n",
    )
    .unwrap();
    let r = scenario(&[
        "mixed",
        "--url",
        &format!("ws://{}", s.ws),
        "--mix",
        mix.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&mix);
    assert_eq!(r.groups.len(), 3);
    assert_eq!(r.groups[0].name, "chat");
    assert_eq!(r.groups[0].results.connections.ready, 20);
    assert_eq!(r.groups[1].results.connections.ready, 10);
    assert_eq!(r.groups[2].results.connections.ready, 5);
    assert_clean(&r.groups[0].as_report_like(&r));
    assert!(r.groups[1].results.messages.received > 0);
    assert_eq!(r.results.connections.ready, 35);
}

/// Lets group results be checked with the same helper.
trait IntoReportLike {
    fn as_report_like(
        &self,
        whole: &shardcast_loadgen::report::Report,
    ) -> shardcast_loadgen::report::Report;
}

impl IntoReportLike for shardcast_loadgen::report::GroupReport {
    fn as_report_like(
        &self,
        whole: &shardcast_loadgen::report::Report,
    ) -> shardcast_loadgen::report::Report {
        let mut r = whole.clone();
        r.results = self.results.clone();
        r
    }
}

#[test]
fn several_worker_processes() {
    let s = Server::start();
    let r = scenario(&[
        "echo",
        "--url",
        &format!("ws://{}", s.ws),
        "-c",
        "6",
        "-D",
        "2",
        "--procs",
        "2",
    ]);
    assert_clean(&r);
    assert_eq!(r.environment.procs, 2);
    assert_eq!(r.results.connections.established, 6);
}

#[test]
fn raw_echo_against_a_third_party_server() {
    let py = python().expect(
        "no Python with `websockets`: run ./test.sh once (it creates target/venv), or set \
         SHARDCAST_TEST_PYTHON",
    );
    let echo = PyEcho::start(&py);
    let url = format!("ws://127.0.0.1:{}/", echo.port);
    let r = scenario(&[
        "echo", "--target", "raw", "--url", &url, "-c", "3", "-D", "2",
    ]);
    assert_clean(&r);
    let b = scenario(&[
        "echo", "--target", "raw", "--binary", "--url", &url, "-c", "2", "--size", "300",
    ]);
    assert_clean(&b);
}

#[test]
fn tls_transports_against_the_sink() {
    let pem = temp("sink.pem");
    let sink = Sink::start(&["--tls", "--cert-out", pem.to_str().unwrap()]);
    let ca = pem.to_str().unwrap();
    let wss = scenario(&[
        "echo",
        "--url",
        &format!("wss://{}", sink.ws),
        "--insecure",
        "-c",
        "2",
        "-D",
        "2",
    ]);
    assert_clean(&wss);
    let ack = scenario(&[
        "ack",
        "--url",
        &format!("wss://localhost:{}", port(&sink.ws)),
        "--ca",
        ca,
        "-c",
        "2",
    ]);
    assert_clean(&ack);
    let tcp = scenario(&[
        "echo",
        "--url",
        &format!("tcp+tls://{}", sink.tcp),
        "--ca",
        ca,
        "-c",
        "2",
        "-D",
        "2",
    ]);
    assert_clean(&tcp);
    let raw = scenario(&[
        "echo",
        "--target",
        "raw",
        "--url",
        &format!("wss://{}/echo", sink.ws),
        "--insecure",
        "-c",
        "2",
    ]);
    assert_clean(&raw);
    let _ = std::fs::remove_file(&pem);
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

#[test]
fn sink_broadcast_and_plain_tcp() {
    let sink = Sink::start(&["--shards", "2"]);
    let b = scenario(&[
        "broadcast",
        "--target",
        "raw",
        "--url",
        &format!("ws://{}", sink.ws),
        "-c",
        "8",
        "--rate",
        "200",
        "--shards",
        "2",
    ]);
    assert_clean(&b);
    assert_eq!(b.results.messages.expected, b.results.messages.sent * 7);
    let t = scenario(&["ack", "--url", &format!("tcp://{}", sink.tcp), "-c", "2"]);
    assert_clean(&t);
}

#[test]
fn failures_are_counted_by_kind() {
    // Nothing listens on this port: every connection is refused; exit code 1, clear message.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let json = temp("refused.json");
    let out = run(
        &[
            "echo",
            "--url",
            &format!("ws://127.0.0.1:{port}"),
            "-c",
            "3",
            "--duration",
            "1s",
            "--no-progress",
            "--json",
            json.to_str().unwrap(),
        ],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no connection could be established"),
        "{stderr}"
    );
    let r = shardcast_loadgen::report::Report::load(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(
        r.results.errors.get("connect_refused"),
        Some(&3),
        "{:?}",
        r.results.errors
    );
    assert_eq!(r.results.connections.failed, 3);
}

#[test]
fn a_server_killed_mid_run_loses_every_connection() {
    // The server dies mid-run: the disconnects are counted, by kind, not guessed.
    const CONNS: u64 = 5;
    let mut s = Server::start();
    let json = temp("killed.json");
    let conns = CONNS.to_string();
    // The hold lasts 5 s from the moment all connections are open; the kill follows that
    // moment by one /health poll, so it lands well inside the hold (checked below).
    let mut lg = Proc {
        child: Command::new(loadgen_bin())
            .args([
                "hold",
                "--url",
                &format!("ws://{}", s.ws),
                "-c",
                &conns,
                "--duration",
                "5s",
                "--no-progress",
                "--json",
                json.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start loadgen"),
    };
    // The event: the server holds every connection. Killing it earlier would turn the
    // connects that had not happened yet into `connect_refused`, which is not a loss.
    wait_for_active_connections(&s.ws, CONNS, Duration::from_secs(30));
    assert!(
        lg.child.try_wait().unwrap().is_none(),
        "the loadgen ended its 5 s hold before the server was killed"
    );
    s.proc.kill();
    let (status, stdout, stderr) = wait_output(&mut lg, Duration::from_secs(60));
    let r = Report::load(&json).unwrap_or_else(|e| panic!("report: {e}\n{stdout}\n{stderr}"));
    let _ = std::fs::remove_file(&json);
    let c = &r.results.connections;
    let errors = &r.results.errors;
    assert_eq!(c.attempted, CONNS, "{c:?}");
    // SIGKILL sends no close frame: the kernel closes each socket, with a FIN (`server_eof`)
    // or, when the server had unread bytes, a RST (`reset`). Each connection ends once, so
    // each is counted once, and nothing else is counted.
    for kind in errors.keys() {
        assert!(
            ["server_eof", "reset"].contains(&kind.as_str()),
            "unexpected kind {kind}: {errors:?}"
        );
    }
    assert_eq!(errors.values().sum::<u64>(), CONNS, "{errors:?}");
    // The server counts a connection as open once its 101 is queued; a client that had not
    // read its 101 when the kill landed fails its handshake instead (same kinds as above).
    assert_eq!(c.established + c.failed, CONNS, "{c:?}");
    assert_eq!(r.results.messages.sent, 0);
    // The run itself succeeded unless not one connection was established.
    let want = if c.established > 0 { 0 } else { 1 };
    assert_eq!(status.code(), Some(want), "{c:?}\n{stdout}\n{stderr}");
}

/// Polls the server's `/health` until `activeConnections` is `want`, within `within`.
fn wait_for_active_connections(ws: &str, want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        last = active_connections(ws);
        if last == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "the server did not report {want} active connections within {within:?} (last: {last:?})"
    );
}

/// `activeConnections` from one `GET /health`, or `None` if the request failed.
fn active_connections(ws: &str) -> Option<u64> {
    health_u64(ws, "activeConnections")
}

/// A number from one `GET /health`, or `None` if the request failed.
fn health_u64(ws: &str, key: &str) -> Option<u64> {
    let mut sock = TcpStream::connect(ws).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    sock.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    sock.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = Vec::new();
    sock.read_to_end(&mut response).ok()?;
    let body_at = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let health: serde_json::Value = serde_json::from_slice(&response[body_at..]).ok()?;
    health[key].as_u64()
}

/// Waits for `p` to exit within `within` (else kills it and panics); its status and output.
fn wait_output(p: &mut Proc, within: Duration) -> (ExitStatus, String, String) {
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = p.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = p.child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    if let Some(mut e) = p.child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    (status, stdout, stderr)
}

/// The server's `--jwt-secret` and the loadgen's (HS256 wants at least 32 bytes).
const DIALECT_SECRET: &str = "loadgen-dialect-test-secret-0123456789";

/// One server with a path per dialect.
fn dialect_server() -> Server {
    Server::start_with(&[
        "--dialect",
        "/ss=stellarstack",
        "--dialect",
        "/ig=ignis",
        "--dialect",
        "/st=stonyx",
        "--jwt-secret",
        DIALECT_SECRET,
    ])
}

const DIALECTS: [(&str, &str); 4] = [
    ("stelar", "/"),
    ("stellarstack", "/ss"),
    ("ignis", "/ig"),
    ("stonyx", "/st"),
];

#[test]
fn fanout_to_each_dialect_loses_nothing() {
    let s = dialect_server();
    for (dialect, path) in DIALECTS {
        // 2 rooms of 10: one stelar publisher and 9 receivers in `dialect` each.
        let r = scenario(&[
            "fanout",
            "--url",
            &format!("ws://{}{path}", s.ws),
            "--dialect",
            dialect,
            "--jwt-secret",
            DIALECT_SECRET,
            "--rooms",
            "2",
            "--room-size",
            "10",
            "--rate",
            "200",
        ]);
        assert_clean(&r);
        let m = &r.results.messages;
        assert_eq!(m.expected, m.sent * 9, "{dialect}");
        assert_eq!(m.received, m.expected, "{dialect}: {m:?}");
        assert_eq!(r.results.connections.ready, 20, "{dialect}");
        if dialect != "stelar" {
            assert_eq!(r.parameters.get("dialect"), Some(&dialect.into()));
        }
        // The report keeps the command line, not the secret.
        let cmd = &r.environment.command_line;
        assert!(cmd.iter().any(|a| a == "<redacted>"), "{cmd:?}");
        assert!(!cmd.iter().any(|a| a.contains(DIALECT_SECRET)), "{cmd:?}");
    }
}

#[test]
fn broadcast_and_hold_in_each_dialect() {
    let s = dialect_server();
    for (dialect, path) in &DIALECTS[1..] {
        let url = format!("ws://{}{path}", s.ws);
        // One stelar broadcaster, 7 receivers in `dialect` (a broadcast reaches every
        // authenticated client: no join).
        let b = scenario(&[
            "broadcast",
            "--url",
            &url,
            "--dialect",
            dialect,
            "--jwt-secret",
            DIALECT_SECRET,
            "-c",
            "8",
            "--rate",
            "100",
        ]);
        assert_clean(&b);
        assert_eq!(b.results.messages.expected, b.results.messages.sent * 7);
        // Idle receivers are ready once authenticated.
        let h = scenario(&[
            "hold",
            "--url",
            &url,
            "--dialect",
            dialect,
            "--jwt-secret",
            DIALECT_SECRET,
            "-c",
            "5",
        ]);
        assert!(
            h.results.errors.is_empty(),
            "{dialect}: {:?}",
            h.results.errors
        );
        assert_eq!(h.results.connections.ready, 5, "{dialect}");
    }
}

#[test]
fn a_wrong_secret_is_counted_as_auth_rejected() {
    let s = dialect_server();
    for (dialect, path) in &DIALECTS[1..] {
        let json = temp("auth.json");
        let out = run(
            &[
                "fanout",
                "--url",
                &format!("ws://{}{path}", s.ws),
                "--dialect",
                dialect,
                "--jwt-secret",
                "not-the-server-secret-not-the-server-secret",
                "--room-size",
                "4",
                "--rate",
                "10",
                "--duration",
                "200ms",
                "--no-progress",
                "--json",
                json.to_str().unwrap(),
            ],
            Duration::from_secs(60),
        );
        let r = Report::load(&json).unwrap_or_else(|e| {
            panic!(
                "{dialect}: report: {e}\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let _ = std::fs::remove_file(&json);
        // The 3 receivers are refused; the stelar publisher is not.
        assert_eq!(
            r.results.errors.get("auth_rejected"),
            Some(&3),
            "{dialect}: {:?}",
            r.results.errors
        );
        assert_eq!(r.results.connections.ready, 1, "{dialect}");
    }
}

#[test]
fn dialect_arguments_are_checked() {
    for (args, says) in [
        (
            vec![
                "fanout",
                "--dialect",
                "ignis",
                "--url",
                "ws://127.0.0.1:9/ws",
            ],
            "--jwt-secret",
        ),
        (
            vec![
                "fanout",
                "--dialect",
                "ignis",
                "--jwt-secret",
                "k",
                "--url",
                "ws://127.0.0.1:9",
            ],
            "path",
        ),
        (
            vec![
                "fanout",
                "--dialect",
                "stonyx",
                "--jwt-secret",
                "k",
                "--url",
                "tcp://127.0.0.1:9",
            ],
            "WebSocket",
        ),
        (
            vec![
                "echo",
                "--dialect",
                "stellarstack",
                "--jwt-secret",
                "k",
                "--url",
                "ws://127.0.0.1:9/a",
            ],
            "fanout, broadcast and hold",
        ),
    ] {
        let out = run(&args, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn a_server_stalled_at_the_end_of_the_window_is_waited_for_not_counted_as_loss() {
    // The server is stopped (SIGSTOP) while the publishes flow and resumed after the window
    // has ended and the shard has heard nothing for longer than its quiet pause: with one
    // shard in one process the load generator knows deliveries are still due and waits (up
    // to --drain) instead of reporting them lost.
    let s = Server::start();
    let json = temp("stall.json");
    let mut lg = Proc {
        child: Command::new(loadgen_bin())
            .args([
                "fanout",
                "--url",
                &format!("ws://{}", s.ws),
                "--room-size",
                "5",
                "--rate",
                "200",
                "--warmup",
                "0",
                "--duration",
                "1s",
                "--drain",
                "10s",
                "--no-progress",
                "--json",
                json.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start loadgen"),
    };
    // The event: publishes are reaching the server (the window is running).
    let deadline = Instant::now() + Duration::from_secs(30);
    while health_u64(&s.ws, "totalMessagesReceived").unwrap_or(0) < 20 {
        assert!(Instant::now() < deadline, "no publishes reached the server");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = s.proc.pid() as libc::pid_t;
    // SAFETY: signalling our own child process by its id.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // The fault lasts past the end of the 1 s window plus the 200 ms quiet pause.
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let (status, stdout, stderr) = wait_output(&mut lg, Duration::from_secs(60));
    assert!(status.success(), "{stdout}\n{stderr}");
    let r = Report::load(&json).unwrap_or_else(|e| panic!("report: {e}\n{stdout}\n{stderr}"));
    let _ = std::fs::remove_file(&json);
    let m = &r.results.messages;
    assert!(m.sent >= 100, "{m:?}");
    assert_eq!(m.lost, 0, "{m:?}\n{stdout}");
    assert_eq!(m.received, m.sent * 4, "{m:?}");
    // Some of them waited out the stall.
    assert!(
        r.results.latency.max_us > 1_000_000.0,
        "{:?}",
        r.results.latency
    );
}
