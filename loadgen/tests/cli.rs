//! The command line as a user meets it: bad arguments give clap errors (exit code 2) and a
//! message naming the problem, never a panic; `compare` exits 1 on a regression; `plot`
//! writes PNG and SVG; reports round-trip through their JSON schema.

mod common;

use std::time::Duration;

use common::*;
use shardcast_loadgen::report::Report;

fn stderr_of(args: &[&str]) -> (Option<i32>, String) {
    let out = run(args, Duration::from_secs(30));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_are_clear_errors() {
    for (args, needle) in [
        (vec!["echo", "--connections", "0"], "--connections"),
        (vec!["echo", "--url", "http2://x:1"], "unsupported scheme"),
        (vec!["echo", "--url", "tcp://127.0.0.1"], "port"),
        (vec!["echo", "--duration", "soon"], "invalid duration"),
        (vec!["fanout", "--room-size", "1"], "--room-size"),
        (vec!["broadcast", "--rate", "0"], "rate must be > 0"),
        (vec!["compare", "only-one.json"], "REPORT.json"),
        (vec!["plot", "a.json"], "--output"),
        (vec!["warp-drive"], "unrecognized subcommand"),
    ] {
        let (code, err) = stderr_of(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // Semantic errors found after parsing: exit 1 with a message.
    for (args, needle) in [
        (
            vec!["ack", "--target", "raw", "--url", "ws://127.0.0.1:1"],
            "needs --target shardcast",
        ),
        (
            vec!["fanout", "--room-size", "2", "--publishers", "3"],
            "cannot exceed",
        ),
        (
            vec!["echo", "--target", "raw", "--url", "tcp://127.0.0.1:1"],
            "WebSocket only",
        ),
        (
            vec!["echo", "--source", "127.0.0.9-3"],
            "invalid source range",
        ),
        (
            vec![
                "echo",
                "--url",
                "wss://127.0.0.1:1",
                "--ca",
                "/nonexistent.pem",
            ],
            "/nonexistent.pem",
        ),
        (
            vec!["mixed", "--mix", "/nonexistent.toml"],
            "/nonexistent.toml",
        ),
        (
            vec!["compare", "/nonexistent-a.json", "/nonexistent-b.json"],
            "/nonexistent-a.json",
        ),
        (
            vec!["plot", "/nonexistent.json", "-o", "x.gif"],
            ".png or .svg",
        ),
    ] {
        let (code, err) = stderr_of(&args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn report_compare_and_plot() {
    let sink = Sink::start(&[]);
    let a = temp("a.json");
    let out = run(
        &[
            "echo",
            "--target",
            "raw",
            "--url",
            &format!("ws://{}/echo", sink.ws),
            "-c",
            "2",
            "-D",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--no-progress",
            "--label",
            "baseline",
            "--json",
            a.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Schema round trip: what was written reads back, and re-saves identically.
    let report = Report::load(&a).unwrap();
    assert_eq!(report.schema, "shardcast-loadgen.report/v1");
    assert_eq!(report.label, "baseline");
    assert!(report.results.latency.count > 0);
    assert!(!report.results.latency.hdr.is_empty());
    assert!(!report.timeline.is_empty());
    assert!(report.parameters.contains_key("connections"));
    let again = temp("again.json");
    report.save(&again).unwrap();
    let text1 = std::fs::read_to_string(&again).unwrap();
    Report::load(&again).unwrap().save(&again).unwrap();
    assert_eq!(std::fs::read_to_string(&again).unwrap(), text1);

    // A copy that is 30 % slower and has a worse tail: a regression.
    let mut worse = report.clone();
    worse.label = "candidate".into();
    worse.results.throughput.received_per_s *= 0.7;
    worse.results.latency.p99_us *= 2.0;
    let b = temp("b.json");
    worse.save(&b).unwrap();
    let out = run(
        &["compare", a.to_str().unwrap(), b.to_str().unwrap()],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("REGRESSED"), "{stdout}");
    assert!(stdout.contains("received/s"), "{stdout}");
    // Against itself: no regression, exit 0.
    let out = run(
        &["compare", a.to_str().unwrap(), a.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A generous threshold forgives the throughput drop but not the doubled tail.
    let out = run(
        &[
            "compare",
            "--threshold",
            "50",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));

    for ext in ["png", "svg"] {
        let img = temp(&format!("plot.{ext}"));
        let out = run(
            &[
                "plot",
                a.to_str().unwrap(),
                b.to_str().unwrap(),
                "-o",
                img.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&img).unwrap();
        if ext == "png" {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        } else {
            let svg = String::from_utf8_lossy(&bytes);
            assert!(svg.contains("<svg") && svg.contains("baseline") && svg.contains("candidate"));
        }
        let _ = std::fs::remove_file(&img);
    }
    for p in [a, b, again] {
        let _ = std::fs::remove_file(p);
    }
}
