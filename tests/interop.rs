//! Interop with a real third-party client: Python `websockets` negotiating permessage-deflate
//! exchanges envelopes with a stelar TCP client through a room, both ways, with messages
//! large enough to be compressed and small enough not to be.
//!
//! Python comes from the venv `./test.sh` creates (`$SHARDCAST_TEST_PYTHON`, else
//! `target/venv/bin/python`); without it the test fails and says how to get it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_with_deflate_talks_to_a_tcp_client_through_a_room() {
    let server = ServerProc::start(&["--shards", "2"]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/ws_deflate_client.py"
    );
    const N: usize = 20;
    let mut child = Command::new(python())
        .args([
            script,
            &server.ws_url("/chat?user=py"),
            "mixed",
            &N.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python client");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v = if line == "READY" {
                json!("READY")
            } else {
                serde_json::from_str(&line).expect("client prints JSON")
            };
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let next = |rx: &mpsc::Receiver<Value>| {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("python client output within 20 s")
    };
    let ext = next(&rx);
    assert!(
        ext["extension"]
            .as_str()
            .unwrap()
            .starts_with("permessage-deflate"),
        "deflate negotiated: {ext}"
    );
    assert_eq!(
        next(&rx)["confirm"],
        json!({"event": "joined-room", "data": "mixed"})
    );
    assert_eq!(next(&rx), json!("READY"));

    let mut tcp = Tcp::connect(server.tcp.unwrap()).await;
    tcp.join("mixed").await;

    // Python → TCP: small and large (compressed) data, verbatim.
    for i in 0..N {
        let data = json!({"i": i, "pad": "é".repeat(if i % 2 == 0 { 10 } else { 3000 })});
        writeln!(stdin, "{data}").unwrap();
        let (event, got) = tcp.recv_json().await;
        assert_eq!(event, "chat");
        assert_eq!(got, data);
    }
    // TCP → Python.
    for i in 0..N {
        let data =
            json!({"from": "tcp", "i": i, "pad": "x".repeat(if i % 2 == 0 { 5 } else { 5000 })});
        tcp.emit(
            "publish",
            &json!({"room": "mixed", "event": "chat", "data": data}),
        )
        .await;
        let got = next(&rx);
        assert_eq!(got["received"], json!({"event": "chat", "data": data}));
    }
    drop(stdin);
    let status = child.wait().expect("python client exits");
    assert!(status.success(), "python client failed: {status:?}");
}
