//! Tests that need a process of their own: starting under an 8 MiB `RLIMIT_MEMLOCK` without
//! `CAP_IPC_LOCK` (as on a production machine), and SIGTERM/SIGINT/SIGHUP handling.
//!
//! Each parent test re-executes this test binary with `SHARDCAST_TEST_CHILD=<role>` and runs
//! only the matching `child_*` function there. Outside such a child, the `child_*` functions
//! return at once: they are the children's bodies, not tests of their own.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use shardcast_shards::{Runtime, ShardExit};

const ROLE: &str = "SHARDCAST_TEST_CHILD";
/// Runs the test binary given as `$0` with the remaining arguments.
const SH_EXEC: &str = "exec \"$0\" \"$@\"";

fn role_is(name: &str) -> bool {
    std::env::var(ROLE).is_ok_and(|r| r == name)
}

/// `cmd` running `this_test_binary --exact <test> --nocapture` as the child `role`.
fn child_command(program: &str, pre_args: &[&str], role: &str, test: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(program);
    cmd.args(pre_args)
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// Reads the child's stdout line by line on a thread.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `marker` and returns the line from the marker on (libtest may
/// print `test child_x ... ` before the child's first line), with a deadline.
fn expect_line(rx: &mpsc::Receiver<String>, marker: &str) -> String {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("child never printed {marker:?}"));
        if let Some(at) = line.find(marker) {
            return line[at..].to_string();
        }
    }
}

/// Kills the child if the test fails before it exits, so no orphan outlives the test.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(mut cmd: Command) -> (Guard, mpsc::Receiver<String>) {
    let mut child = cmd.spawn().expect("spawn child");
    let rx = lines(&mut child);
    (Guard(Some(child)), rx)
}

fn wait_within(mut guard: Guard, limit: Duration) -> ExitStatus {
    let Some(mut child) = guard.0.take() else {
        panic!("child already reaped")
    };
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(limit) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            // SAFETY: killing our own child process.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("child {pid} did not exit in time");
        }
    }
}

fn signal(guard: &Guard, sig: libc::c_int) {
    let pid = guard.0.as_ref().expect("child running").id();
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

// ---------------------------------------------------------------------------------------------
// Locked memory.

const CAP_IPC_LOCK: u32 = 14;

fn effective_caps() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).unwrap()
}

/// Spawns the child `role` (test `test`) without CAP_IPC_LOCK under `ulimit -l limit_kib`;
/// `None` (with a message) where `capsh` is not installed.
fn spawn_under_memlock(
    limit_kib: u32,
    role: &str,
    test: &str,
) -> Option<(Guard, mpsc::Receiver<String>)> {
    if Command::new("capsh").arg("--help").output().is_err() {
        eprintln!("capsh not installed: skipping (run the child under a memlock limit by hand)");
        return None;
    }
    let script = format!("ulimit -l {limit_kib} && {SH_EXEC}");
    let pre = ["--drop=cap_ipc_lock", "--", "-c", script.as_str()];
    Some(spawn(child_command("capsh", &pre, role, test)))
}

/// The shards start with the machine's core count under `ulimit -l 8192` and without
/// CAP_IPC_LOCK. Skipped (with a message) where `capsh` is not installed.
#[test]
fn starts_under_an_8_mib_memlock_limit_without_cap_ipc_lock() {
    let Some((child, rx)) = spawn_under_memlock(8192, "memlock", "child_memlock") else {
        return;
    };
    let line = expect_line(&rx, "memlock-ok");
    eprintln!("{line}");
    assert!(wait_within(child, Duration::from_secs(60)).success());
}

/// A hard memlock limit below glommio's minimum is reported as such, before any thread runs.
#[test]
fn a_memlock_limit_below_glommios_minimum_is_reported() {
    let Some((child, rx)) = spawn_under_memlock(64, "memlock-low", "child_memlock_low") else {
        return;
    };
    assert_eq!(
        expect_line(&rx, "memlock-low"),
        "memlock-low memlock_too_low 65536"
    );
    assert!(wait_within(child, Duration::from_secs(60)).success());
}

#[test]
fn child_memlock_low() {
    if !role_is("memlock-low") {
        return;
    }
    let err = Runtime::builder()
        .shards(1)
        .start(|_shard| async {})
        .unwrap_err();
    match err {
        shardcast_shards::StartError::MemlockTooLow { limit, .. } => {
            println!("\nmemlock-low {} {limit}", err.label());
        }
        other => panic!("unexpected error: {other}"),
    }
}

#[test]
fn child_memlock() {
    if !role_is("memlock") {
        return;
    }
    assert_eq!(
        effective_caps() & (1 << CAP_IPC_LOCK),
        0,
        "CAP_IPC_LOCK must be dropped"
    );
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an `rlimit` we own.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) },
        0
    );
    assert!(lim.rlim_max <= 8 << 20, "hard limit {}", lim.rlim_max);

    // Default shard count (every CPU) and more shards than CPUs both start.
    for shards in [None, Some(8)] {
        let mut builder = Runtime::builder().listen("tcp", "127.0.0.1:0");
        if let Some(n) = shards {
            builder = builder.shards(n);
        }
        let rt = builder
            .start(|shard| async move {
                let listener = shard.take_listener("tcp").unwrap();
                listener.accept_loop(drop).await.unwrap();
            })
            .expect("start under an 8 MiB memlock limit");
        let addr = rt.bound_addr("tcp").unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let count = rt.shards();
        rt.shutdown_handle().trigger();
        let exits = rt.join().unwrap();
        assert_eq!(exits, vec![ShardExit::Finished; count]);
        println!(
            "\nmemlock-step shards={count} memlock_hard={}",
            lim.rlim_max
        );
    }
    println!("\nmemlock-ok");
}

// ---------------------------------------------------------------------------------------------
// Signals.

/// SIGTERM drains every shard, and the process exits cleanly.
#[test]
fn sigterm_drains_the_shards() {
    let (child, rx) = spawn(child_command(
        "sh",
        &["-c", SH_EXEC],
        "drain",
        "child_signals",
    ));
    expect_line(&rx, "ready");
    signal(&child, libc::SIGTERM);
    let exits = expect_line(&rx, "exits");
    assert_eq!(exits, "exits [Finished, Finished]");
    assert!(wait_within(child, Duration::from_secs(30)).success());
}

/// A second signal forces shards that do not finish draining.
#[test]
fn a_second_signal_forces() {
    let (child, rx) = spawn(child_command(
        "sh",
        &["-c", SH_EXEC],
        "stuck",
        "child_signals",
    ));
    expect_line(&rx, "ready");
    signal(&child, libc::SIGINT);
    expect_line(&rx, "draining");
    expect_line(&rx, "draining");
    signal(&child, libc::SIGINT);
    assert_eq!(expect_line(&rx, "exits"), "exits [Forced, Forced]");
    // With no runtime left, the next SIGINT takes its default action again.
    expect_line(&rx, "idle");
    signal(&child, libc::SIGINT);
    let status = wait_within(child, Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
}

#[test]
fn child_signals() {
    let stuck = role_is("stuck");
    if !role_is("drain") && !stuck {
        return;
    }
    let rt = Runtime::builder()
        .shards(2)
        .handle_signals(true)
        .drain_timeout(Duration::from_secs(3600))
        .start(move |shard| async move {
            shard.shutdown().await;
            println!("draining {}", shard.id());
            if stuck {
                std::future::pending::<()>().await;
            }
        })
        .unwrap();
    println!("\nready");
    let exits = rt.join().unwrap();
    println!("exits {exits:?}");
    if stuck {
        println!("idle");
        // Wait for the parent's last SIGINT, which must now terminate the process.
        loop {
            std::thread::park();
        }
    }
}

/// SIGHUP runs the hangup hooks, in order, and never stops the shards: a hook that panics
/// keeps neither the next hook nor the next signal from being handled, and SIGTERM still
/// drains afterwards. Once the runtime is gone, SIGHUP takes its default action again.
#[test]
fn sighup_runs_the_hangup_hooks_and_never_stops_the_shards() {
    let (child, rx) = spawn(child_command(
        "sh",
        &["-c", SH_EXEC],
        "hangup",
        "child_hangup",
    ));
    expect_line(&rx, "ready");
    for n in 1..=2 {
        signal(&child, libc::SIGHUP);
        assert_eq!(expect_line(&rx, "hangup"), format!("hangup {n}"));
    }
    signal(&child, libc::SIGTERM);
    assert_eq!(expect_line(&rx, "exits"), "exits [Finished, Finished]");
    expect_line(&rx, "idle");
    signal(&child, libc::SIGHUP);
    let status = wait_within(child, Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc::SIGHUP), "{status:?}");
}

#[test]
fn child_hangup() {
    if !role_is("hangup") {
        return;
    }
    let hangups = AtomicUsize::new(0);
    let rt = Runtime::builder()
        .shards(2)
        .handle_signals(true)
        .on_hangup(|| panic!("this hangup hook panics on purpose"))
        .on_hangup(move || {
            let n = hangups.fetch_add(1, Ordering::Relaxed) + 1;
            println!("hangup {n}");
        })
        .start(|shard| async move { shard.shutdown().await })
        .unwrap();
    println!("\nready");
    let exits = rt.join().unwrap();
    println!("exits {exits:?}");
    println!("idle");
    // Wait for the parent's last SIGHUP, which must now terminate the process.
    loop {
        std::thread::park();
    }
}
