//! The `shardcast` command line as a user meets it: errors that name what the user wrote
//! (a flag or an environment variable), `check-config` output that `--config` reads back,
//! the precedence of file, environment and flags, and logs without colour codes in a pipe.
//!
//! Each test runs the real binary with a cleared environment and waits with a deadline.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::wait_exit;
use shardcast::config::Config;

/// `shardcast ARGS` with only `env` in its environment.
fn shardcast(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardcast"));
    cmd.args(args).env_clear().envs(env.iter().copied());
    cmd
}

/// Runs to the end (killed and failed after 30 s).
fn output(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shardcast");
    let status = wait_exit(&mut child, "shardcast", Duration::from_secs(30));
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("UTF-8 output")
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let out = output(shardcast(&["check-config"], &[("SHARDCAST_PORT", "abc")]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "shardcast: invalid value 'abc' for SHARDCAST_PORT: invalid digit found in string\n"
    );
    assert!(out.stdout.is_empty());

    // Also without a command, and for a value from a list.
    let out = output(shardcast(&[], &[("SHARDCAST_LOG_FORMAT", "xml")]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "shardcast: invalid value 'xml' for SHARDCAST_LOG_FORMAT: possible values: text, json\n"
    );
    let out = output(shardcast(&["serve"], &[("SHARDCAST_RELAY_DIRECT", "yes")]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "shardcast: invalid value 'yes' for SHARDCAST_RELAY_DIRECT: possible values: true, false\n"
    );
}

#[test]
fn a_bad_flag_value_names_the_flag() {
    // The variable is fine; the flag is wrong, and clap says so as usual.
    let out = output(shardcast(
        &["check-config", "--port", "abc"],
        &[("SHARDCAST_PORT", "4000")],
    ));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: invalid value 'abc' for '--port <PORT>'"),
        "{stderr}"
    );
    assert!(!stderr.contains("SHARDCAST_PORT"), "{stderr}");
    // Both wrong: the command line is what was parsed, so the flag is named.
    let out = output(shardcast(
        &["check-config", "--port=abc"],
        &[("SHARDCAST_PORT", "abc")],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("'--port <PORT>'"));
    // A flag hides the variable entirely, bad or not, with a command or without one (the
    // server then refuses the limit after parsing: the port was accepted).
    let out = output(shardcast(
        &["check-config", "--port", "4000"],
        &[("SHARDCAST_PORT", "abc")],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = output(shardcast(
        &["--port", "4000", "--max-frame-size=1"],
        &[("SHARDCAST_PORT", "abc")],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "shardcast: invalid setting `limits.max_frame_size`: must be at least 126 bytes\n"
    );
}

#[test]
fn check_config_prints_toml_in_the_order_of_precedence() {
    let dir = std::env::temp_dir().join(format!("shardcast-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("shardcast.toml");
    std::fs::write(
        &file,
        "port = 4000\n[limits]\nmax_rooms = 5\nmax_rooms_per_client = 3\n\
         [relay]\ndirect = false\nbroadcast = false\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let out = output(shardcast(
        &[
            "check-config",
            "--config",
            file_arg,
            "--max-rooms",
            "9",
            "--relay-broadcast",
        ],
        &[
            ("SHARDCAST_MAX_ROOMS", "7"),
            ("SHARDCAST_SHUTDOWN_TIMEOUT_MS", "1234"),
            ("SHARDCAST_RELAY_DIRECT", "true"),
            ("SHARDCAST_API_KEY", "s3cret"),
        ],
    ));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("s3cret"), "{stdout}");
    let c = Config::from_toml(stdout).unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    let want = Config {
        port: 4000,
        api_key: Some("<redacted>".into()),
        ..Config::default()
    };
    let want = Config {
        limits: shardcast::config::Limits {
            // file 5 < environment 7 < flag 9
            max_rooms: 9,
            max_rooms_per_client: 3,
            ..want.limits.clone()
        },
        timeouts: shardcast::config::Timeouts {
            shutdown_timeout_ms: 1234,
            ..want.timeouts.clone()
        },
        // file false < environment true; file false < flag alone (true)
        relay: shardcast::config::Relay {
            direct: true,
            broadcast: true,
            ..want.relay.clone()
        },
        ..want
    };
    assert_eq!(c, want, "{stdout}");
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
    let status = wait_exit(&mut child, "shardcast", Duration::from_secs(30));
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
