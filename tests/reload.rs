//! Live reload and observability against the real binary: SIGHUP re-reads the `--config` file
//! and applies it without dropping anyone (a limit raised and one lowered, observed by their
//! effect), refuses an invalid file as a whole, changes the log filter, logs the diff;
//! `check-config` output reads back to itself; `/metrics` has the latency histograms.
//!
//! Every wait has a deadline (the log line or the effect); nothing sleeps and hopes.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{raw_ws, read_until_eof, server_frames, within, ServerProc, Ws};
use serde_json::json;

/// A config file the test rewrites, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "shardcast-reload-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let f = ConfigFile(path);
        f.write(text);
        f
    }
    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).expect("write the test config");
    }
    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts the server on `file` with `args`, the log filter taken from the file (the harness's
/// `SHARDCAST_LOG` would override it on every reload).
fn start(file: &ConfigFile, args: &[&str]) -> ServerProc {
    let mut all = vec!["--config", file.path()];
    all.extend_from_slice(args);
    ServerProc::start_with(&all, |cmd| {
        cmd.env_remove("SHARDCAST_LOG");
    })
}

fn hangup(server: &ServerProc) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) }, 0);
}

/// Whether `room` is joined: a refused join is silent (PROTOCOL.md §6), so a `whoami` ACK
/// behind it is the barrier: its reply comes first exactly when the join was refused.
async fn try_join(ws: &mut Ws, room: &str) -> bool {
    ws.emit("join-room", json!(room)).await;
    ws.send(json!({"event": "whoami", "data": null, "_ackName": "whoami", "_correlationId": "j"}))
        .await;
    let first = ws.recv().await;
    if first == json!({"event": "joined-room", "data": room}) {
        let _ = ws.recv().await; // the whoami reply
        true
    } else {
        assert!(first["data"].is_string(), "the whoami reply: {first}");
        false
    }
}

/// A WebSocket client refused at capacity: the 101, then close 1008 "Server full".
async fn refused_as_full(server: &ServerProc) -> bool {
    let (mut s, rest) = raw_ws(server.ws, "/").await;
    let got = within("read the refusal", read_until_eof(&mut s, rest)).await;
    let mut full = 1008u16.to_be_bytes().to_vec();
    full.extend_from_slice(b"Server full");
    server_frames(&got) == vec![(8, full)]
}

#[tokio::test]
async fn sighup_applies_new_limits_to_a_connected_client_and_logs_the_diff() {
    let file = ConfigFile::new("log = \"info\"\n[limits]\nmax_rooms_per_client = 1\n");
    let server = start(&file, &["--shards", "2"]);
    let mut a = Ws::connect(&server.ws_url("/")).await;
    let id = a.whoami().await;
    assert!(try_join(&mut a, "one").await);
    assert!(!try_join(&mut a, "two").await, "the old limit: one room");

    // Raise the room limit, lower max_connections to the one client there is, and change a
    // setting that only a restart can change.
    file.write(
        "log = \"info\"\n[limits]\nmax_rooms_per_client = 3\nmax_connections = 1\n\
         [memory]\nmesh_overflow = 2097152\n",
    );
    hangup(&server);
    let line = server.expect_output("configuration reloaded");
    assert!(
        line.contains("limits.max_rooms_per_client: 1 -> 3"),
        "{line}"
    );
    assert!(line.contains("limits.max_connections: "), "{line}");
    assert!(line.contains(" -> 1"), "{line}");
    assert!(!line.contains("mesh_overflow"), "{line}");
    let restart = server.expect_output("need a restart");
    assert!(
        restart.contains("memory.mesh_overflow: 67108864 -> 2097152"),
        "{restart}"
    );

    // The same connection, now under the new limits.
    assert_eq!(a.whoami().await, id, "the client stayed connected");
    assert!(try_join(&mut a, "two").await, "the new limit: three rooms");
    assert!(try_join(&mut a, "three").await);
    assert!(!try_join(&mut a, "four").await);
    // max_connections lowered: the connected client stays, a new one is refused.
    assert!(
        refused_as_full(&server).await,
        "a new client over the new cap"
    );
    assert_eq!(a.whoami().await, id);
    assert_eq!(
        server
            .metric("shardcast_reloads_total{result=\"ok\"}")
            .await,
        1
    );
    assert_eq!(
        server
            .metric("shardcast_reloads_total{result=\"refused\"}")
            .await,
        0
    );
}

#[tokio::test]
async fn an_invalid_config_is_refused_as_a_whole() {
    let file = ConfigFile::new("log = \"info\"\n[limits]\nmax_rooms_per_client = 1\n");
    let server = start(&file, &["--shards", "2"]);
    let mut a = Ws::connect(&server.ws_url("/")).await;
    let id = a.whoami().await;
    assert!(try_join(&mut a, "one").await);

    // A valid change beside an invalid one: neither applies.
    file.write("log = \"info\"\n[limits]\nmax_rooms_per_client = 3\nmax_frame_size = 1\n");
    hangup(&server);
    let line = server.expect_output("configuration reload refused");
    assert!(line.contains("limits.max_frame_size"), "{line}");
    assert!(
        !try_join(&mut a, "two").await,
        "the old limit still applies"
    );

    // A file that is not TOML for this schema, and one that is gone.
    file.write("[limits]\nmax_rooms_per_client = \"many\"\n");
    hangup(&server);
    let line = server.expect_output("configuration reload refused");
    assert!(line.contains("invalid config file"), "{line}");
    assert!(line.contains("max_rooms_per_client"), "{line}");
    // A bad log filter is refused like any other setting.
    file.write("log = \"shardcast=loud\"\n[limits]\nmax_rooms_per_client = 3\n");
    hangup(&server);
    let line = server.expect_output("configuration reload refused");
    assert!(line.contains("`log`"), "{line}");

    assert!(!try_join(&mut a, "two").await, "still the old limit");
    assert_eq!(a.whoami().await, id);
    assert_eq!(
        server
            .metric("shardcast_reloads_total{result=\"refused\"}")
            .await,
        3
    );
    assert_eq!(
        server
            .metric("shardcast_reloads_total{result=\"ok\"}")
            .await,
        0
    );

    // And a good file afterwards applies.
    file.write("log = \"info\"\n[limits]\nmax_rooms_per_client = 3\n");
    hangup(&server);
    server.expect_output("configuration reloaded");
    assert!(try_join(&mut a, "two").await);
}

#[tokio::test]
async fn the_log_filter_reloads() {
    let file = ConfigFile::new("log = \"info\"\n");
    let server = start(&file, &["--shards", "1"]);
    // At info, a connection logs nothing.
    let mut quiet = Ws::connect(&server.ws_url("/")).await;
    let quiet_id = quiet.whoami().await;

    file.write("log = \"info,shardcast=debug\"\n");
    hangup(&server);
    server.expect_output("log filter changed");
    let line = server.expect_output("configuration reloaded");
    assert!(
        line.contains("log: \"info\" -> \"info,shardcast=debug\""),
        "{line}"
    );

    // At debug, one line per connection opened and closed, with the reason.
    let mut loud = Ws::connect(&server.ws_url("/")).await;
    let loud_id = loud.whoami().await;
    let opened = server.expect_output("connection opened");
    assert!(opened.contains(&loud_id), "{opened}");
    assert!(!opened.contains(&quiet_id), "{opened}");
    loud.inner.close(None).await.expect("close");
    let closed = server.expect_output("connection closed");
    assert!(closed.contains(&loud_id), "{closed}");
    assert!(closed.contains("reason="), "{closed}");
}

/// `check-config` prints TOML that `--config` reads back to the same output.
#[test]
fn check_config_round_trips() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_shardcast"))
            .arg("check-config")
            .args(args)
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run shardcast check-config");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let first = run(&[
        "--port=4100",
        "--tcp-port=0",
        "--api-key=s3cret",
        "--api-cors-origin=https://app.example",
        "--max-rooms-per-client=7",
        "--relay-direct=false",
        "--log=shardcast=debug,warn",
        "--compression=false",
    ]);
    assert!(!first.contains("s3cret"), "{first}");
    assert!(first.contains("max_rooms_per_client = 7"), "{first}");
    let file = ConfigFile::new(&first);
    let second = run(&["--config", file.path()]);
    assert_eq!(first, second);
}

#[tokio::test]
async fn metrics_have_latency_histograms_queue_bytes_per_shard_and_reloads() {
    let server = ServerProc::start(&["--shards", "2"]);
    let mut ws = Ws::connect(&server.ws_url("/")).await;
    ws.whoami().await; // an ACK
    let (status, text) = common::http(server.ws, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200, "{text}");
    for family in [
        "shardcast_ws_handshake_duration_seconds",
        "shardcast_ack_duration_seconds",
        "shardcast_auth_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} histogram")),
            "{text}"
        );
        let count: u64 = server.metric(&format!("{family}_count")).await;
        let inf = server
            .metric(&format!("{family}_bucket{{le=\"+Inf\"}}"))
            .await;
        assert_eq!(count, inf, "{family}");
        if family != "shardcast_auth_duration_seconds" {
            assert!(count >= 1, "{family}: {text}");
        }
    }
    assert!(
        text.contains("shardcast_ws_handshake_duration_seconds_bucket{le=\"0.00005\"}"),
        "{text}"
    );
    for shard in 0..2 {
        assert!(
            text.contains(&format!(
                "shardcast_shard_output_queued_bytes{{shard=\"{shard}\"}}"
            )),
            "{text}"
        );
    }
    assert!(
        text.contains("shardcast_reloads_total{result=\"ok\"} 0"),
        "{text}"
    );
    // The shards' rings: the upgrade request and the message were read from a socket on one
    // of them, and the WebSocket connection is still open on it.
    let reads = server
        .metric("shardcast_socket_reads_total{result=\"bytes\"}")
        .await;
    assert!(reads >= 2, "{text}");
    assert!(server.metric("shardcast_ring_sockets").await >= 1, "{text}");
    assert!(
        text.contains("# TYPE shardcast_ring_waits_total counter"),
        "{text}"
    );
    // /health is unchanged (stelar's keys).
    let (status, body) = common::http(server.ws, "GET", "/health", &[], "").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
}

/// The library API: `Running::reload` reports what changed and what needs a restart, and
/// refuses an invalid configuration without changing anything.
#[test]
fn running_reload_reports_changes_and_refusals() {
    use shardcast::config::Config;
    let mut config = Config {
        host: [127, 0, 0, 1].into(),
        port: 0,
        shards: 1,
        ..Config::default()
    };
    config.limits.max_connections = 10;
    let running = shardcast::Server::builder()
        .config(config.clone())
        .handle_signals(false)
        .start()
        .expect("start");
    let mut next = config.clone();
    next.limits.max_rooms = 5;
    next.port = 1234;
    next.api_key = Some("k1".into());
    let changes = running.reload(next.clone()).expect("reload");
    let applied: Vec<String> = changes.applied.iter().map(ToString::to_string).collect();
    assert_eq!(
        applied,
        [
            "api_key: (unset) -> \"<redacted>\"",
            "limits.max_rooms: 100000 -> 5"
        ]
    );
    assert_eq!(changes.needs_restart.len(), 1);
    assert_eq!(changes.needs_restart[0].key, "port");
    let mut bad = next.clone();
    bad.timeouts.heartbeat_interval_ms = 0;
    let err = running.reload(bad).unwrap_err();
    assert_eq!(err.part, "config");
    assert!(err.reason.contains("heartbeat_interval_ms"), "{err}");
    // Nothing changed by the refusal: the same config again applies nothing new.
    assert!(running.reload(next).expect("reload").applied.is_empty());
    running.shutdown();
    running.join().expect("join");
}
