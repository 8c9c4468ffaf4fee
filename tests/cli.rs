//! The `shardcast` command line as a user meets it: logs without colour codes in a pipe.
//!
//! Each test runs the real binary with a cleared environment and waits with a deadline.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `shardcast ARGS` with only `env` in its environment.
fn shardcast(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardcast"));
    cmd.args(args).env_clear().envs(env.iter().copied());
    cmd
}

fn wait(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shardcast did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn logs_in_a_pipe_have_no_colour_codes() {
    // Not a terminal, and NO_COLOR unset: only the pipe can turn colours off.
    let mut child = shardcast(
        &["--host", "127.0.0.1", "--port", "0", "--shards", "1"],
        &[],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start shardcast");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listening = rx.recv_timeout(Duration::from_secs(30));
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = wait(&mut child, Duration::from_secs(30));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let line = listening.unwrap_or_else(|_| panic!("no listening line within 30 s:\n{stderr}"));
    assert!(line.starts_with("shardcast listening"), "{line}");
    assert!(status.success(), "{status}\n{stderr}");
    // The start-up line is logged (at info) as well as printed, and so is the shutdown.
    assert!(stderr.contains("listening"), "{stderr}");
    assert!(stderr.contains("shut down"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}
