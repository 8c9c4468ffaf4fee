//! The dialect examples (`examples/stellarstack.rs`, `ignis.rs`, `stonyx.rs`), built with
//! cargo and started as their README headers say (`--port`, here a free one), each driven
//! through the client flow its header shows, with real WebSocket clients and deadlines.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Builds the examples once and returns `name`'s executable. `cargo build --workspace
/// --examples` selects the same packages and targets' features as `cargo test --workspace`
/// (`./test.sh`), which has built them already: then this is a no-op, where `--example NAME`
/// alone would resolve other features and rebuild the library (~1.5 min in CI).
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "--quiet",
                "--message-format=json",
                "--workspace",
                "--examples",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // What cargo set for this test's run is not the build's environment: some build
        // scripts track such variables (ring's, CARGO_MANIFEST_DIR), and inheriting them would
        // rebuild half the dependency graph, twice (here, then in the next plain build).
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            let set_by_cargo = k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_EXE_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&&*k);
            if set_by_cargo {
                cmd.env_remove(&*k);
            }
        }
        let mut child = cmd.spawn().expect("run cargo build --example");
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut out).map(|_| out)
        });
        // Usually seconds (`cargo test` has built them already); a cold build on a loaded
        // machine takes minutes. Past this, something is stuck.
        let within = Duration::from_secs(30 * 60);
        let status = wait_exit(&mut child, "cargo build --example", within);
        assert!(status.success(), "cargo build --example failed: {status}");
        let out = reader.join().unwrap().expect("cargo's output");
        out.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| {
                m["reason"] == "compiler-artifact" && m["target"]["kind"] == json!(["example"])
            })
            .filter_map(|m| {
                let name = m["target"]["name"].as_str()?.to_owned();
                Some((name, PathBuf::from(m["executable"].as_str()?)))
            })
            .collect()
    });
    built
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| panic!("cargo built no example {name}"))
}

/// Starts an example on 127.0.0.1 and a free port, with `envs`.
fn start(name: &str, envs: &[(&str, &str)]) -> ServerProc {
    ServerProc::start_program(&example(name), &[], |cmd| {
        cmd.env("SHARDCAST_SHARDS", "2");
        for (k, v) in envs {
            cmd.env(k, v);
        }
    })
}

/// Stops the example with SIGTERM and checks it exits cleanly and in time.
fn stop(mut server: ServerProc) {
    let status = server.terminate().expect("the example exits on SIGTERM");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stellarstack_example() {
    let server = start("stellarstack", &[]);
    let url = server.ws_url("/api/ws");

    // The doc's manual flow: ping before auth, a refused subscribe, a bad then a good token.
    let mut a = Ws::connect(&url).await;
    a.send(json!({"type": "ping"})).await;
    assert_eq!(a.recv().await, json!({"type": "pong"}));
    a.send(json!({"type": "subscribe", "serverId": "srv_abc123"}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"type": "error", "error": "Authentication required to subscribe"})
    );
    a.send(json!({"type": "auth", "token": "session_token_nope"}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"type": "auth_error", "error": "Invalid or expired session"})
    );
    a.send(json!({"type": "auth", "token": "session_token_abc123"}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"type": "auth_success", "userId": "user_123"})
    );
    // Only the user's own servers (the identity's rooms): an error, and no subscription.
    // (The exact text is the dialect's, checked in tests/dialects.rs.)
    a.send(json!({"type": "subscribe", "serverId": "srv_def456"}))
        .await;
    let m = a.recv().await;
    assert_eq!(m["type"], "error", "{m}");
    assert!(!m["error"].as_str().unwrap_or_default().is_empty(), "{m}");
    a.send(json!({"type": "subscribe", "serverId": "srv_abc123"}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"type": "subscribed", "serverId": "srv_abc123"})
    );

    // The cookie flow: authenticated on connection.
    let mut b = Ws::connect_with(
        &url,
        &[(
            "Cookie",
            "theme=dark; better-auth.session_token=session_token_def456",
        )],
    )
    .await;
    assert_eq!(
        b.recv().await,
        json!({"type": "auth_success", "userId": "user_456"})
    );
    b.send(json!({"type": "subscribe", "serverId": "srv_def456"}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"type": "subscribed", "serverId": "srv_def456"})
    );

    // The app's own message type changes what the next sync shows.
    a.send(json!({"type": "power", "serverId": "srv_abc123", "action": "stop"}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"type": "power", "data": {"serverId": "srv_abc123", "status": "stopped"}})
    );

    // The periodic push (every 5 s): the doc's shape, the new status.
    let deadline = Instant::now() + Duration::from_secs(15);
    let sync = loop {
        assert!(Instant::now() < deadline, "no sync with the stopped status");
        let m = a.recv().await;
        assert_eq!(m["type"], "server:sync", "{m}");
        assert_eq!(m["serverId"], "srv_abc123", "{m}");
        if m["data"]["status"] == "stopped" {
            break m;
        }
    };
    let data = &sync["data"];
    assert_eq!(data["id"], "srv_abc123");
    assert_eq!(data["shortId"], "abc123");
    assert_eq!(data["ownerId"], "user_123");
    assert_eq!(data["node"]["location"]["name"], "US-East-1");
    assert_eq!(data["allocations"][0]["isPrimary"], true);
    assert_eq!(data["blueprint"]["name"], "Minecraft Java");
    // ISO 8601 in UTC with milliseconds, as the document's timestamps.
    let updated = data["updatedAt"].as_str().unwrap().as_bytes();
    assert_eq!(updated.len(), 24, "{data}");
    for (i, c) in updated.iter().enumerate() {
        let want = match i {
            4 | 7 => b'-',
            10 => b'T',
            13 | 16 => b':',
            19 => b'.',
            23 => b'Z',
            _ => b'0',
        };
        assert!(
            if want == b'0' {
                c.is_ascii_digit()
            } else {
                *c == want
            },
            "{data}"
        );
    }
    assert_eq!(
        sync.as_object().unwrap().len(),
        3,
        "type, serverId, data: {sync}"
    );

    // b gets its own server only.
    let m = b.recv().await;
    assert_eq!(m["type"], "server:sync", "{m}");
    assert_eq!(m["serverId"], "srv_def456", "{m}");
    assert_eq!(m["data"]["name"], "survival");

    a.send(json!({"type": "unsubscribe", "serverId": "srv_abc123"}))
        .await;
    loop {
        // A sync may have been on its way.
        let m = a.recv().await;
        if m["type"] != "server:sync" {
            assert_eq!(m, json!({"type": "unsubscribed", "serverId": "srv_abc123"}));
            break;
        }
    }
    drop((a, b));
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignis_example() {
    let server = start("ignis", &[]);
    let url = server.ws_url("/ws");

    async fn login(url: &str, token: &str, user: &str) -> Ws {
        let mut ws = Ws::connect(url).await;
        ws.send(json!({"event": "heartbeat"})).await;
        ws.send(json!({"event": "authenticate", "data": {"token": token}}))
            .await;
        let m = ws.recv().await;
        assert_eq!(m["event"], "connected", "{m}");
        assert_eq!(m["data"]["userId"], user, "{m}");
        assert_eq!(m["data"]["id"].as_str().unwrap().len(), 36, "{m}");
        assert!(m["data"]["time"].as_str().unwrap().ends_with('Z'), "{m}");
        ws
    }
    let mut alice = login(&url, "alice-token", "alice").await;
    let mut bob = login(&url, "bob-token", "bob").await;
    let mut carol = login(&url, "carol-token", "carol").await;

    // A default room; the transformer keeps the e-mail for the admin only.
    bob.send(json!({"event": "chat", "data": {"room": "lobby", "text": "hi"}}))
        .await;
    let chat = json!({"room": "lobby", "from": "bob", "email": "bob@example.com", "text": "hi"});
    assert_eq!(alice.recv().await, json!({"event": "chat", "data": chat}));
    assert_eq!(
        carol.recv().await,
        json!({"event": "chat", "data": {"room": "lobby", "from": "bob", "text": "hi"}})
    );

    // Send to a user.
    bob.send(json!({"event": "dm", "data": {"to": "alice", "text": "psst"}}))
        .await;
    assert_eq!(
        alice.recv().await,
        json!({"event": "dm", "data": {"from": "bob", "text": "psst"}})
    );

    // The other default room, from an admin.
    alice
        .send(json!({"event": "announce", "data": {"text": "maintenance at 6"}}))
        .await;
    let note =
        json!({"event": "notification", "data": {"from": "alice", "text": "maintenance at 6"}});
    for ws in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(ws.recv().await, note);
    }

    // An unknown token: the error event, then close 4003.
    let mut eve = Ws::connect(&url).await;
    eve.send(json!({"event": "authenticate", "data": {"token": "forged"}}))
        .await;
    assert_eq!(
        eve.recv().await,
        json!({"event": "error", "data": {"message": "Invalid token"}})
    );
    assert_eq!(eve.close_frame().await, (4003, "Invalid token".to_owned()));
    drop((alice, bob, carol));
    stop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stonyx_example() {
    let server = start("stonyx", &[("SOCKET_AUTH_KEY", "k3y")]);
    let url = server.ws_url("/");

    // A skip-auth handler and the built-in heartBeat answer before auth; anything else
    // closes the connection.
    let mut early = Ws::connect(&url).await;
    early.send(json!({"request": "version"})).await;
    let m = early.recv().await;
    assert_eq!(m["request"], "version", "{m}");
    assert_eq!(m["response"]["name"], "shardcast-stonyx-example", "{m}");
    early.send(json!({"request": "heartBeat"})).await;
    assert_eq!(
        early.recv().await,
        json!({"request": "heartBeat", "response": true})
    );
    early.send(json!({"request": "sum", "data": [1, 2]})).await;
    assert_eq!(
        early.close_frame().await,
        (4003, "Authentication required".to_owned())
    );

    // The auth handler returns false for a wrong key: closed.
    let mut wrong = Ws::connect(&url).await;
    wrong
        .send(json!({"request": "auth", "data": {"authKey": "AUTH_KEY"}}))
        .await;
    assert_eq!(wrong.close_frame().await.0, 4003);

    async fn login(url: &str, user: &str) -> Ws {
        let mut ws = Ws::connect(url).await;
        ws.send(json!({"request": "auth", "data": {"authKey": "k3y", "user": user}}))
            .await;
        assert_eq!(
            ws.recv().await,
            json!({"request": "auth", "response": "success"})
        );
        ws
    }
    let mut a = login(&url, "ann").await;
    let mut b = login(&url, "ben").await;

    // Handlers' return values are the responses.
    for (request, data, response) in [
        ("sum", json!([1, 2, 3]), json!(6)),
        ("validateGame", json!({"game": "chess"}), json!(true)),
        ("validateGame", json!({"game": "poker"}), json!(false)),
        ("scanGames", Value::Null, json!(["chess", "go", "checkers"])),
    ] {
        a.send(json!({"request": request, "data": data})).await;
        assert_eq!(
            a.recv().await,
            json!({"request": request, "response": response})
        );
    }

    // A null result: no response; the broadcast reaches every authenticated client.
    a.send(json!({"request": "announce", "data": {"msg": "shutdown in 5m"}}))
        .await;
    let ann = json!({"request": "announcement", "data": {"msg": "shutdown in 5m"}});
    assert_eq!(b.recv().await, ann);
    assert_eq!(a.recv().await, ann);
    a.send(json!({"request": "heartBeat"})).await;
    assert_eq!(
        a.recv().await,
        json!({"request": "heartBeat", "response": true})
    );
    drop((a, b));
    stop(server);
}
