//! The server process as an operator sees it: start-up under production limits (the machine's
//! cores under the default `ulimit -l` of 8 MiB, without CAP_IPC_LOCK, which root has here and
//! production services usually do not; `capsh` from Debian's libcap2-bin, installed by
//! ./test.sh, drops the capability), the ports it picks, and how it answers signals.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn starts_under_an_8_mib_memlock_limit_without_cap_ipc_lock() {
    let capsh = ["/usr/sbin/capsh", "/sbin/capsh", "/usr/bin/capsh"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("capsh not found: install libcap2-bin (./test.sh does)");
    let bin = env!("CARGO_BIN_EXE_shardcast");
    let script = format!(
        "ulimit -l 8192 && grep CapEff /proc/self/status >&2 && exec {bin} --host 127.0.0.1 --port 0"
    );
    let mut child = Command::new(capsh)
        .args(["--drop=cap_ipc_lock", "--", "-c", &script])
        .env("SHARDCAST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run capsh");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut listening = None;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.starts_with("shardcast listening") => {
                listening = Some(line);
                break;
            }
            Ok(_) => {}
            Err(_) => {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    let _ =
                        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                    panic!("server exited ({status}) before listening:\n{err}");
                }
            }
        }
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    let line = listening.unwrap_or_else(|| panic!("no listening line within 30 s:\n{err}"));
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(line.ends_with(&format!("shards={cores}")), "{line}");
    // CapEff printed by the shell that exec'd the server: bit 14 (CAP_IPC_LOCK) is clear.
    let capeff = err
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .expect("CapEff line");
    assert_eq!(capeff & (1 << 14), 0, "CAP_IPC_LOCK still effective");
    assert!(status.success(), "graceful exit on SIGTERM: {status}");
}

/// A closed stdout/stderr (a log pipe whose reader died) must not stop the server from
/// serving or from shutting down on SIGTERM: logging failures are dropped, never panics.
#[test]
fn a_closed_log_pipe_does_not_prevent_a_graceful_shutdown() {
    let bin = env!("CARGO_BIN_EXE_shardcast");
    let mut child = Command::new(bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--shards",
            "2",
            "--log",
            "debug",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shardcast");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("shardcast listening"), "{line}");
    let ws: std::net::SocketAddr = line
        .split_whitespace()
        .find_map(|p| p.strip_prefix("ws="))
        .unwrap()
        .parse()
        .unwrap();
    // The readers go away: every later write to stdout/stderr fails with EPIPE.
    drop(stdout);
    drop(child.stderr.take());
    // Logging happens on every connection at debug level; the server keeps answering.
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(ws).unwrap();
        std::io::Write::write_all(
            &mut s,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut body = String::new();
        std::io::Read::read_to_string(&mut s, &mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no exit within 20 s of SIGTERM with a closed log pipe"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGHUP (a closed terminal, or `systemctl reload`) must never kill the server: it is caught
/// with the shutdown signals, runs the reload hook (the configuration reload, tests/reload.rs) and
/// the server carries on serving the connections it has. SIGTERM still shuts it down
/// gracefully afterwards.
#[tokio::test]
async fn sighup_is_caught_and_the_server_keeps_serving() {
    // Info level: the line saying the signal was handled is what the test waits on.
    let mut server = common::ServerProc::start(&["--shards", "2", "--log", "info"]);
    let mut ws = common::Ws::connect(&server.ws_url("/")).await;
    let id = ws.whoami().await;

    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) }, 0);
    // Handled, not merely not yet delivered: the signal thread logged it.
    server.expect_output("SIGHUP received");

    // The same connection is still served, and so is a new one.
    assert_eq!(ws.whoami().await, id, "the same client, still connected");
    let (status, body) = common::http(server.ws, "GET", "/health", &[], "").await;
    assert_eq!(status, 200, "{body}");

    let status = server.terminate().expect("exit within 20 s of SIGTERM");
    assert!(
        status.success(),
        "graceful exit on SIGTERM after SIGHUP: {status}"
    );
}

/// `--port 0` puts the stelar TCP listener at the WebSocket port + 1, as any other `--port`
/// does: stelar TCP clients dial exactly that. Several servers starting at once each get a
/// consecutive pair of their own.
#[tokio::test]
async fn port_zero_puts_tcp_at_the_websocket_port_plus_one() {
    // `ServerProc::start` passes `--host 127.0.0.1 --port 0` and no `--tcp-port`.
    let starting: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(|| common::ServerProc::start(&["--shards", "2"])))
        .collect();
    let servers: Vec<common::ServerProc> = starting
        .into_iter()
        .map(|t| t.join().expect("server started"))
        .collect();
    for server in &servers {
        let tcp = server.tcp.expect("TCP is on by default");
        assert_eq!(server.ws.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            tcp,
            std::net::SocketAddr::new(server.ws.ip(), server.ws.port() + 1),
            "ws={} tcp={tcp}",
            server.ws
        );
        // A stelar TCP client at P + 1 is greeted with CONNECT (checked by `Tcp::connect`).
        let client = common::Tcp::connect(tcp).await;
        assert!(!client.id.is_empty());
    }
    for mut server in servers {
        let status = server.terminate().expect("exit within 20 s of SIGTERM");
        assert!(status.success(), "{status}");
    }
}
