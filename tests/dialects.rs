//! Dialects (issue 12) against the real binary: StellarStack, ignis and stonyx clients written
//! in Python (`websockets`) from each system's own document (tests/dialects/*_client.py; seeds
//! 002, 003, 004 and /work/notes/dialect-contract.md), following every flow the document shows
//! — authentication that succeeds and fails, subscribe / join / leave, ping / heartbeat,
//! pushes from a backend (`POST /api/...`), the close codes — and one room shared by clients
//! of all four formats (stelar included), a binary relay message they cannot receive, and the
//! presence events.
//!
//! Each Python client runs one flow, prints one JSON line per step (`{"at": NAME, ...}`), and
//! at the points where the backend has to act reads commands on stdin (`dialect_common.py`
//! describes them). It exits non-zero, saying DEVIATION and why, on any message whose shape
//! differs from its document. Every wait has a deadline on both sides.
//!
//! Python comes from the venv `./test.sh` creates (`$SHARDCAST_TEST_PYTHON`, else
//! `target/venv/bin/python`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use shardcast::protocol::stelar::OutFrame;

const SECRET: &str = "dialect-test-secret-at-least-32-bytes!";
const KEY: &str = "dialect-test-api-key";
/// Where each dialect is served in these tests.
const SS: &str = "/api/ws";
const IGNIS: &str = "/ws";
const STONYX: &str = "/stonyx";
/// How long the test waits for a line from a Python client (longer than the client's own
/// deadline, so a client's DEVIATION message is what a failure shows).
const PY_DEADLINE: Duration = Duration::from_secs(20);
/// The contract calls it `shardcast_messages_dropped_total`; the counter of drops by reason
/// that exists (and that the contract says to keep) is `shardcast_dropped_messages_total`.
const DROPPED: &str = r#"shardcast_dropped_messages_total{reason="not_sendable_in_dialect"}"#;

/// A token of the tests' secret for `sub`.
fn token(sub: &str) -> String {
    hs256_token(SECRET, sub, json!({}))
}

/// A well-formed token the server must refuse: signed with another secret.
fn bad_token() -> String {
    hs256_token(
        "not-the-servers-secret-not-the-servers!",
        "mallory",
        json!({}),
    )
}

/// The three dialect routes, the JWT secret and the API key.
fn dialect_args() -> [String; 5] {
    [
        format!("--dialect={SS}=stellarstack"),
        format!("--dialect={IGNIS}=ignis"),
        format!("--dialect={STONYX}=stonyx"),
        format!("--jwt-secret={SECRET}"),
        format!("--api-key={KEY}"),
    ]
}

/// A server with [`dialect_args`] plus `extra`.
fn start(extra: &[&str]) -> ServerProc {
    let routes = dialect_args();
    let mut args: Vec<&str> = routes.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    ServerProc::start(&args)
}

/// One Python dialect client running one flow.
struct Py {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: tokio::sync::mpsc::UnboundedReceiver<Value>,
    stderr: Arc<Mutex<String>>,
}

impl Py {
    /// Runs `tests/dialects/{client}_client.py flow 'args'`.
    fn start(client: &str, flow: &str, args: Value) -> Py {
        let script = format!(
            "{}/tests/dialects/{client}_client.py",
            env!("CARGO_MANIFEST_DIR")
        );
        let name = format!("{client}:{flow}");
        let mut child = Command::new(python())
            .arg(&script)
            .arg(flow)
            .arg(args.to_string())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let err = Arc::new(Mutex::new(String::new()));
        let err2 = err.clone();
        let tag = name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                let mut e = err2.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        Py {
            name,
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: err,
        }
    }

    /// Runs `flow` as `user`, with a token of the tests' secret: the arguments
    /// `{"url", "token", "user"}` and `more`.
    fn as_user(client: &str, flow: &str, url: &str, user: &str, more: Value) -> Py {
        let mut args = json!({"url": url, "token": token(user), "user": user});
        for (k, v) in more.as_object().expect("more arguments: a JSON object") {
            args[k] = v.clone();
        }
        Py::start(client, flow, args)
    }

    /// What the client said on stderr, once it has ended (for a failure message).
    fn report(&mut self) -> String {
        let status = (0..100)
            .find_map(|_| match self.child.try_wait() {
                Ok(Some(s)) => Some(s.to_string()),
                _ => {
                    std::thread::sleep(Duration::from_millis(20));
                    None
                }
            })
            .unwrap_or_else(|| "still running".into());
        std::thread::sleep(Duration::from_millis(50));
        format!(
            "{} ({status}); its stderr:\n{}",
            self.name,
            self.stderr.lock().unwrap()
        )
    }

    /// The client's next line.
    async fn line(&mut self) -> Value {
        match tokio::time::timeout(PY_DEADLINE, self.lines.recv()).await {
            Ok(Some(v)) => v,
            Ok(None) => panic!("the client ended early: {}", self.report()),
            Err(_) => panic!(
                "{}: no line within {PY_DEADLINE:?}; stderr so far:\n{}",
                self.name,
                self.stderr.lock().unwrap()
            ),
        }
    }

    /// The next line, which must be step `at`.
    async fn at(&mut self, at: &str) -> Value {
        let v = self.line().await;
        assert_eq!(v["at"], at, "{}: expected step {at:?}, got {v}", self.name);
        v
    }

    fn cmd(&mut self, v: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{v}").expect("write a command to the client");
        stdin.flush().unwrap();
    }

    /// Receives `n` pushes (their shapes checked by the client): (message, raw text) each.
    async fn expect_raw(&mut self, n: usize) -> Vec<(Value, String)> {
        self.cmd(json!({ "expect": n }));
        let mut got = Vec::new();
        for _ in 0..n {
            let v = self.at("received").await;
            got.push((v["msg"].clone(), v["raw"].as_str().unwrap().to_owned()));
        }
        self.at("ok").await;
        got
    }

    /// Receives `n` pushes (their shapes checked by the client).
    async fn expect(&mut self, n: usize) -> Vec<Value> {
        self.expect_raw(n)
            .await
            .into_iter()
            .map(|(v, _)| v)
            .collect()
    }

    /// Has the client send `v` as a text message.
    async fn send(&mut self, v: Value) {
        self.cmd(json!({ "send": v }));
        self.at("ok").await;
    }

    /// Lets the client go on with its flow.
    fn cont(&mut self) {
        self.cmd(json!({"continue": true}));
    }

    /// The flow's last line, then a successful exit.
    async fn done(mut self) {
        self.at("done").await;
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + PY_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{}", self.report());
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not exit",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Lets each client go on with its flow, then waits for each one's last line and exit.
async fn finish<const N: usize>(mut clients: [Py; N]) {
    for c in clients.iter_mut() {
        c.cont();
    }
    for c in clients {
        c.done().await;
    }
}

/// A StellarStack, an ignis and a stonyx client on `server` (users `{prefix}_ss`, `_ig`,
/// `_st`), each in `rooms` (subscribed, joined), at the `member` flow; the stonyx client
/// offers permessage-deflate if `stonyx_deflate`.
fn dialect_members(
    server: &ServerProc,
    prefix: &str,
    rooms: &[&str],
    stonyx_deflate: bool,
) -> [Py; 3] {
    [
        Py::as_user(
            "stellarstack",
            "member",
            &server.ws_url(SS),
            &format!("{prefix}_ss"),
            json!({ "servers": rooms }),
        ),
        Py::as_user(
            "ignis",
            "member",
            &server.ws_url(IGNIS),
            &format!("{prefix}_ig"),
            json!({ "rooms": rooms }),
        ),
        Py::as_user(
            "stonyx",
            "member",
            &server.ws_url(STONYX),
            &format!("{prefix}_st"),
            json!({ "rooms": rooms, "deflate": stonyx_deflate }),
        ),
    ]
}

/// An `auth-bad` flow's refusals, `hows` in order, then its end.
async fn refusals(mut bad: Py, hows: &[&str]) {
    for how in hows {
        let v = bad.at("refused").await;
        assert_eq!(v["how"], *how);
        eprintln!("{} refused ({how}): {}", bad.name, v["reason"]);
    }
    bad.done().await;
}

/// `client`, at its `unauthenticated` step, gets none of a backend's pushes: a broadcast and
/// a `server:sync` to each of `rooms`, which a stelar client in those rooms receives first
/// (proof they went out); then `client` goes on.
async fn nothing_before_auth(server: &ServerProc, client: &mut Py, rooms: &[&str]) {
    client.at("unauthenticated").await;
    let mut stelar = Ws::connect(&server.ws_url("/")).await;
    for room in rooms {
        stelar.join(room).await;
    }
    broadcast(server, "announce", json!(1)).await;
    for room in rooms {
        publish(server, room, "server:sync", server_state(room)).await;
    }
    assert_eq!(stelar.recv().await["event"], "announce");
    for _ in rooms {
        assert_eq!(stelar.recv().await["event"], "server:sync");
    }
    client.expect(0).await;
    client.cont();
}

impl Drop for Py {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A backend call with the API key; returns (status, body).
async fn api(server: &ServerProc, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let auth = format!("Bearer {KEY}");
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, text) = http(server.ws, method, path, &[("Authorization", &auth)], &body).await;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

async fn api_ok(server: &ServerProc, path: &str, body: Value) {
    let (status, v) = api(server, "POST", path, &body).await;
    assert_eq!(status, 202, "POST {path} {body}: {v}");
}

async fn publish(server: &ServerProc, room: &str, event: &str, data: Value) {
    api_ok(
        server,
        "/api/publish",
        json!({"room": room, "event": event, "data": data}),
    )
    .await;
}

async fn broadcast(server: &ServerProc, event: &str, data: Value) {
    api_ok(
        server,
        "/api/broadcast",
        json!({"event": event, "data": data}),
    )
    .await;
}

/// `POST /api/send` to the client `id`.
async fn send_to_client(server: &ServerProc, id: &str, event: &str, data: Value) {
    api_ok(
        server,
        "/api/send",
        json!({"to": id, "event": event, "data": data}),
    )
    .await;
}

/// `POST /api/send` to every connection of `user`.
async fn send_to_user(server: &ServerProc, user: &str, event: &str, data: Value) {
    api_ok(
        server,
        "/api/send",
        json!({"user": user, "event": event, "data": data}),
    )
    .await;
}

/// The member ids of `room` (`GET /api/rooms/{room}`; none when the room does not exist).
async fn members(server: &ServerProc, room: &str) -> Vec<String> {
    let (status, v) = api(server, "GET", &format!("/api/rooms/{room}"), &Value::Null).await;
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "GET /api/rooms/{room}: {v}");
    v["members"]
        .as_array()
        .unwrap_or_else(|| panic!("members of {room}: {v}"))
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

/// Waits (harness deadline) until `room` has `n` members; returns them.
async fn wait_members(server: &ServerProc, room: &str, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let m = members(server, room).await;
        if m.len() == n {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "room {room} still has {} members after {DEADLINE:?} (want {n}): {m:?}",
            m.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `got` and `want` hold the same messages, in any order (pushes from separate HTTP requests
/// may be handled by different shards).
fn same_set(got: &[Value], want: &[Value]) {
    let mut g: Vec<String> = got.iter().map(Value::to_string).collect();
    let mut w: Vec<String> = want.iter().map(Value::to_string).collect();
    g.sort();
    w.sort();
    assert_eq!(g, w, "the pushes received (any order) vs the pushes sent");
}

/// A server's state, as a StellarStack backend pushes it every 5 s (the shape of the
/// document's `server:sync` data, values of our own).
fn server_state(id: &str) -> Value {
    json!({
        "id": id, "shortId": &id[4..], "name": "test-server", "status": "running",
        "suspended": false, "memory": 1024, "disk": 4096, "cpu": 50, "cpuPinning": null,
        "node": {"id": "node_1", "displayName": "Test node", "port": 8443, "isOnline": true,
                 "location": {"id": "loc_1", "name": "Lab"}},
        "allocations": [{"id": "alloc_1", "ip": "127.0.0.1", "port": 25565, "isPrimary": true}],
        "updatedAt": "2026-12-06T04:00:00.000Z"
    })
}

// ---------------------------------------------------------------------------------------------
// StellarStack (seed 002)

/// Token auth (bad token, no token, then the retry that works), the errors before auth and for
/// malformed messages, ping/pong, nothing pushed before auth; the token with the upgrade
/// (the document's session cookie, a bearer header, `?token=`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stellarstack_authentication() {
    let server = start(&["--shards=1"]);
    let url = server.ws_url(SS);
    let more = json!({ "bad_token": bad_token() });
    let mut auth = Py::as_user("stellarstack", "auth", &url, "user_ss", more);

    nothing_before_auth(&server, &mut auth, &["srv_abc123"]).await;
    let v = auth.at("auth_error").await;
    assert!(!v["error"].as_str().unwrap().is_empty(), "{v}");
    auth.at("authenticated").await;
    auth.done().await;

    // After the broadcast above, which these clients would get (they are authenticated).
    let mut upgrade = Py::as_user("stellarstack", "upgrade", &url, "user_up", json!({}));
    for via in ["cookie", "bearer", "query"] {
        assert_eq!(upgrade.at("auto-auth").await["via"], via);
    }
    upgrade.done().await;
}

/// subscribe / unsubscribe a server id, the rooms claim, and every push a backend makes:
/// `server:sync` to a subscribed server (the document's shape), broadcast, to the user, to the
/// client; none after unsubscribe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stellarstack_subscriptions_and_pushes() {
    let server = start(&["--shards=2"]);
    let user = "user_42";
    let tok = hs256_token(SECRET, user, json!({"rooms": ["srv_*"]}));
    let mut c = Py::start(
        "stellarstack",
        "session",
        json!({"url": server.ws_url(SS), "token": tok, "user": user,
               "servers": ["srv_a1", "srv_b2"], "forbidden": "other_1"}),
    );
    c.at("subscribed").await;
    assert!(members(&server, "other_1").await.is_empty());
    let id = wait_members(&server, "srv_a1", 1).await.remove(0);
    assert_eq!(members(&server, "srv_b2").await, vec![id.clone()]);

    publish(&server, "srv_a1", "server:sync", server_state("srv_a1")).await;
    publish(
        &server,
        "srv_b2",
        "console:output",
        json!({"line": "Done (1.2s)!"}),
    )
    .await;
    broadcast(&server, "maintenance", json!({"in": 300})).await;
    send_to_user(&server, user, "notify", json!("hi")).await;
    send_to_client(&server, &id, "direct", json!([1, 2])).await;
    let got = c.expect(5).await;
    same_set(
        &got,
        &[
            json!({"type": "server:sync", "serverId": "srv_a1", "data": server_state("srv_a1")}),
            json!({"type": "console:output", "serverId": "srv_b2",
                   "data": {"line": "Done (1.2s)!"}}),
            json!({"type": "maintenance", "data": {"in": 300}}),
            json!({"type": "notify", "data": "hi"}),
            json!({"type": "direct", "data": [1, 2]}),
        ],
    );
    // A push without data: `data` is omitted.
    api_ok(
        &server,
        "/api/publish",
        json!({"room": "srv_b2", "event": "server:deleted"}),
    )
    .await;
    assert_eq!(
        c.expect(1).await,
        vec![json!({"type": "server:deleted", "serverId": "srv_b2"})]
    );
    c.cont();

    c.at("unsubscribed").await;
    wait_members(&server, "srv_a1", 0).await;
    publish(&server, "srv_a1", "server:sync", server_state("srv_a1")).await;
    publish(&server, "srv_b2", "server:sync", server_state("srv_b2")).await;
    assert_eq!(
        c.expect(1).await,
        vec![json!({"type": "server:sync", "serverId": "srv_b2", "data": server_state("srv_b2")})]
    );
    c.cont();
    c.done().await;
}

// ---------------------------------------------------------------------------------------------
// ignis (seed 003)

/// authenticate → connected; the errors before it; refused tokens → error then 4003; the
/// relay's events in ignis' envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignis_authentication() {
    let server = start(&["--shards=1"]);
    let url = server.ws_url(IGNIS);
    let mut ok = Py::as_user("ignis", "auth", &url, "user_ig", json!({}));
    let bad = Py::start(
        "ignis",
        "auth-bad",
        json!({"url": url, "bad_token": bad_token()}),
    );

    nothing_before_auth(&server, &mut ok, &[]).await;
    let v = ok.at("connected").await;
    let id = v["id"].as_str().unwrap();
    assert_eq!(
        shard_of(id),
        0,
        "connected names a shardcast client id: {v}"
    );
    let v = ok.at("unknown").await;
    assert_eq!(v["error"]["code"], "unknown_event", "{v}");
    ok.done().await;

    refusals(bad, &["bad token", "no token", "no data"]).await;
}

/// Default rooms (the default pair, and a path's own list from the TOML file), the client-id
/// room, sends to the client, to the user and to everyone; join / leave without confirmation
/// (membership seen through the API); the rooms claim filters joins silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignis_rooms_and_pushes() {
    let toml = format!(
        "shards = 2\napi_key = \"{KEY}\"\n[auth]\njwt_secret = \"{SECRET}\"\n\
         [[dialect]]\npath = \"{IGNIS}\"\nname = \"ignis\"\n\
         [[dialect]]\npath = \"/custom\"\nname = \"ignis\"\ndefault_rooms = [\"lobby-x\"]\n"
    );
    let server = ServerProc::start_with_toml(&toml, &[]);
    let user = "user_ig";
    let mut c = Py::as_user(
        "ignis",
        "session",
        &server.ws_url(IGNIS),
        user,
        json!({"rooms": ["room-1", "room-2"]}),
    );
    let id = c.at("connected").await["id"].as_str().unwrap().to_owned();
    assert_eq!(members(&server, "ws-default").await, vec![id.clone()]);
    assert_eq!(members(&server, "ws-notification").await, vec![id.clone()]);
    assert_eq!(members(&server, &id).await, vec![id.clone()]);
    publish(&server, "ws-default", "d", json!(1)).await;
    publish(&server, "ws-notification", "n", json!({"k": "v"})).await;
    publish(&server, &id, "self", json!("room named by the id")).await;
    send_to_client(&server, &id, "direct", json!(2)).await;
    send_to_user(&server, user, "user", json!(3)).await;
    broadcast(&server, "all", json!(null)).await;
    same_set(
        &c.expect(6).await,
        &[
            json!({"event": "d", "data": 1}),
            json!({"event": "n", "data": {"k": "v"}}),
            json!({"event": "self", "data": "room named by the id"}),
            json!({"event": "direct", "data": 2}),
            json!({"event": "user", "data": 3}),
            json!({"event": "all", "data": null}),
        ],
    );
    c.cont();

    c.at("joined").await;
    wait_members(&server, "room-1", 1).await;
    wait_members(&server, "room-2", 1).await;
    publish(&server, "room-1", "r1", json!(1)).await;
    publish(&server, "room-2", "r2", json!(2)).await;
    same_set(
        &c.expect(2).await,
        &[
            json!({"event": "r1", "data": 1}),
            json!({"event": "r2", "data": 2}),
        ],
    );
    c.cont();

    c.at("left").await;
    wait_members(&server, "room-1", 0).await;
    publish(&server, "room-1", "r1", json!("gone")).await;
    publish(&server, "room-2", "r2", json!("still")).await;
    assert_eq!(
        c.expect(1).await,
        vec![json!({"event": "r2", "data": "still"})]
    );
    c.cont();
    c.done().await;

    // A path with its own default rooms joins those instead of the default pair.
    let mut custom = Py::as_user(
        "ignis",
        "member",
        &server.ws_url("/custom"),
        "u2",
        json!({"rooms": []}),
    );
    let cid = custom.at("ready").await["id"].as_str().unwrap().to_owned();
    assert_eq!(members(&server, "lobby-x").await, vec![cid.clone()]);
    assert!(members(&server, "ws-default").await.is_empty());
    assert_eq!(members(&server, &cid).await, vec![cid.clone()]);
    publish(&server, "lobby-x", "x", json!(true)).await;
    assert_eq!(
        custom.expect(1).await,
        vec![json!({"event": "x", "data": true})]
    );
    custom.cont();
    custom.done().await;

    // The token's rooms claim: the allowed subset is joined, the rest skipped silently.
    let tok = hs256_token(SECRET, "u3", json!({"rooms": ["ok_*", "ws-*"]}));
    let mut limited = Py::start(
        "ignis",
        "member",
        json!({"url": server.ws_url(IGNIS), "token": tok, "user": "u3",
               "rooms": ["nope_1", "ok_1"]}),
    );
    let lid = limited.at("ready").await["id"].as_str().unwrap().to_owned();
    assert_eq!(wait_members(&server, "ok_1", 1).await, vec![lid]);
    assert!(members(&server, "nope_1").await.is_empty());
    limited.cont();
    limited.done().await;
}

// ---------------------------------------------------------------------------------------------
// stonyx (seed 004)

/// auth (data.token and the document's data.authKey) → "success"; heartBeat before and after;
/// a refused auth → 4003 without a response; any other request before auth → 4003.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stonyx_authentication() {
    let server = start(&["--shards=1"]);
    let url = server.ws_url(STONYX);
    let mut ok = Py::as_user("stonyx", "auth", &url, "user_st", json!({}));
    let bad = Py::start(
        "stonyx",
        "auth-bad",
        json!({"url": url, "bad_token": bad_token()}),
    );
    let mut early = Py::start("stonyx", "before-auth", json!({ "url": url }));

    nothing_before_auth(&server, &mut ok, &[]).await;
    ok.done().await;

    refusals(bad, &["bad token", "bad authKey", "no data"]).await;
    for request in ["echo", "join-room", "bogus"] {
        assert_eq!(early.at("refused").await["request"], request);
    }
    early.done().await;
}

/// The relay's requests (echo, time, whoami, stats, members), join-room / leave-room answered
/// once confirmed, pushes as `{request, data}`, an unknown request's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stonyx_requests_rooms_and_pushes() {
    let server = start(&["--shards=2", "--relay-members"]);
    let user = "worker_7";
    let mut c = Py::as_user(
        "stonyx",
        "session",
        &server.ws_url(STONYX),
        user,
        json!({"room": "jobs", "members": true}),
    );
    let m = c.at("members").await;
    assert_eq!(m["response"]["users"], json!([user]), "{m}");
    let id = c.at("joined").await["id"].as_str().unwrap().to_owned();
    assert_eq!(members(&server, "jobs").await, vec![id.clone()]);
    publish(&server, "jobs", "scanGames", json!({"games": ["a", "b"]})).await;
    send_to_user(&server, user, "toUser", json!(1)).await;
    send_to_client(&server, &id, "toClient", json!(2)).await;
    broadcast(&server, "announcement", json!({"msg": "m"})).await;
    same_set(
        &c.expect(4).await,
        &[
            json!({"request": "scanGames", "data": {"games": ["a", "b"]}}),
            json!({"request": "toUser", "data": 1}),
            json!({"request": "toClient", "data": 2}),
            json!({"request": "announcement", "data": {"msg": "m"}}),
        ],
    );
    c.cont();
    c.at("left").await;
    assert!(members(&server, "jobs").await.is_empty());
    publish(&server, "jobs", "scanGames", json!("gone")).await;
    send_to_user(&server, user, "toUser", json!("barrier")).await;
    assert_eq!(
        c.expect(1).await,
        vec![json!({"request": "toUser", "data": "barrier"})]
    );
    c.cont();
    c.done().await;
}

// ---------------------------------------------------------------------------------------------
// Every dialect: timeouts

/// No authentication within `auth.timeout_ms`: close 4001 on every dialect path, however alive
/// the client keeps itself (ping, heartbeat, heartBeat); an authenticated client and a stelar
/// client beside them (auth off on its path) are not touched. Routes from `SHARDCAST_DIALECT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_timeout_closes_4001_on_every_dialect() {
    let routes = format!("{SS}=stellarstack,{IGNIS}=ignis,{STONYX}=stonyx");
    let secret = format!("--jwt-secret={SECRET}");
    let server = ServerProc::start_with(&["--shards=1", &secret, "--auth-timeout-ms=600"], |c| {
        c.env("SHARDCAST_DIALECT", &routes);
    });
    let mut stelar = Ws::connect(&server.ws_url("/")).await;
    let mut member = Py::as_user(
        "stonyx",
        "member",
        &server.ws_url(STONYX),
        "in",
        json!({"rooms": []}),
    );
    let mut clients = [
        Py::start("stellarstack", "timeout", json!({"url": server.ws_url(SS)})),
        Py::start("ignis", "timeout", json!({"url": server.ws_url(IGNIS)})),
        Py::start("stonyx", "timeout", json!({"url": server.ws_url(STONYX)})),
    ];
    for c in clients.iter_mut() {
        let v = c.at("closed").await;
        let waited = v["seconds"].as_f64().unwrap();
        assert!((0.3..5.0).contains(&waited), "{}: {v}", c.name);
    }
    for c in clients {
        c.done().await;
    }
    // An authenticated client outlives the timeout (by twice its length, then heartBeat).
    let since = std::time::Instant::now();
    member.at("ready").await;
    tokio::time::sleep(Duration::from_millis(1200).saturating_sub(since.elapsed())).await;
    member.expect(0).await;
    member.cont();
    member.done().await;
    stelar.emit("echo", json!("still here")).await;
    assert_eq!(
        stelar.recv().await,
        json!({"event": "echo", "data": "still here"})
    );
}

/// Clients that never answer the server's pings: ignis closes them 4002 "Heartbeat timeout"
/// (an ignis client sending heartbeat events stays), StellarStack and stonyx 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_timeout_per_dialect() {
    let server = start(&[
        "--shards=2",
        "--heartbeat-interval-ms=200",
        "--heartbeat-timeout-ms=800",
    ]);
    let mut ig = Py::as_user(
        "ignis",
        "heartbeat",
        &server.ws_url(IGNIS),
        "hb",
        json!({"wait_s": 6}),
    );
    let mut ss = Py::as_user(
        "stellarstack",
        "silent",
        &server.ws_url(SS),
        "hb2",
        json!({"wait_s": 6}),
    );
    let mut st = Py::as_user(
        "stonyx",
        "silent",
        &server.ws_url(STONYX),
        "hb3",
        json!({"wait_s": 6}),
    );
    let v = ig.at("closed").await;
    assert_eq!(
        (&v["code"], &v["reason"]),
        (&json!(4002), &json!("Heartbeat timeout"))
    );
    assert!(v["pings"].as_u64().unwrap() >= 1, "pinged first: {v}");
    assert!(v["seconds"].as_f64().unwrap() >= 0.6, "{v}");
    ig.at("alive").await;
    ig.done().await;
    for c in [&mut ss, &mut st] {
        let v = c.at("closed").await;
        assert_eq!(
            (&v["code"], &v["reason"]),
            (&json!(1001), &json!("Heartbeat timeout")),
            "{}",
            c.name
        );
        assert!(v["seconds"].as_f64().unwrap() >= 0.6, "{v}");
    }
    ss.done().await;
    st.done().await;
}

// ---------------------------------------------------------------------------------------------
// Rooms across dialects

/// One room, `srv_1`, with a StellarStack subscriber, an ignis client that joined it, a stonyx
/// client that sent join-room, a stelar WebSocket client and a stelar TCP client: one backend
/// publish reaches each in its own format (ignis byte for byte as stelar); relay publishes
/// from each dialect reach the others, as do a direct and a broadcast; a binary relay message reaches the stelar members only,
/// is counted `not_sendable_in_dialect` for the others and leaves them working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_room_four_formats() {
    let server = start(&["--shards=2"]);
    let room = "srv_1";
    // stelar binary events name their room (`ROOM:NAME`) and cannot hold `_`: the binary
    // message goes to a second room everyone is in.
    let game = "game-1";
    let [mut ss, mut ig, mut st] = dialect_members(&server, "u", &[room, game], false);
    let mut ws = Ws::connect(&server.ws_url("/")).await;
    ws.join(room).await;
    ws.join(game).await;
    let mut tcp = Tcp::connect(server.tcp.unwrap()).await;
    tcp.join(room).await;
    tcp.join(game).await;
    // Two of them compressed (permessage-deflate: shardcast compresses the larger pushes),
    // one not: each dialect's frame in both forms.
    let mut ig_id = String::new();
    for c in [&mut ss, &mut ig] {
        let v = c.at("ready").await;
        let ext = v["extension"].as_str().unwrap_or("");
        assert!(ext.starts_with("permessage-deflate"), "{}: {v}", c.name);
        if let Some(id) = v["id"].as_str() {
            ig_id = id.to_owned();
        }
    }
    assert_eq!(st.at("ready").await["extension"], Value::Null);
    wait_members(&server, room, 5).await;
    wait_members(&server, game, 5).await;

    // The backend's publish.
    let state = server_state(room);
    publish(&server, room, "server:sync", state.clone()).await;
    let stelar_text = ws.recv_text().await;
    let stelar: Value = serde_json::from_str(&stelar_text).unwrap();
    assert_eq!(stelar, json!({"event": "server:sync", "data": state}));
    assert_eq!(
        ss.expect(1).await,
        vec![json!({"type": "server:sync", "serverId": room, "data": state})]
    );
    let (ig_msg, ig_text) = ig.expect_raw(1).await.remove(0);
    assert_eq!(ig_msg, json!({"event": "server:sync", "data": state}));
    assert_eq!(
        ig_text, stelar_text,
        "ignis gets stelar's frame byte for byte"
    );
    assert_eq!(
        st.expect(1).await,
        vec![json!({"request": "server:sync", "data": state})]
    );
    assert_eq!(
        tcp.recv_json().await,
        ("server:sync".to_owned(), state.clone())
    );

    // Relay publishes from a stelar client and from each dialect reach every other member.
    let chat = |from: &str| json!({"from": from, "text": "hello"});
    ws.emit(
        "publish",
        json!({"room": room, "event": "chat", "data": chat("stelar")}),
    )
    .await;
    let relay_ig = json!({"event": "publish",
                          "data": {"room": room, "event": "chat", "data": chat("ignis")}});
    let relay_st = json!({"request": "publish",
                          "data": {"room": room, "event": "chat", "data": chat("stonyx")}});
    for (from, sender) in [("stelar", None), ("ignis", Some(0)), ("stonyx", Some(1))] {
        match sender {
            Some(0) => ig.send(relay_ig.clone()).await,
            Some(_) => st.send(relay_st.clone()).await,
            None => {}
        }
        let data = chat(from);
        if from != "stelar" {
            assert_eq!(ws.recv().await, json!({"event": "chat", "data": data}));
        }
        assert_eq!(tcp.recv_json().await, ("chat".to_owned(), data.clone()));
        assert_eq!(
            ss.expect(1).await,
            vec![json!({"type": "chat", "serverId": room, "data": data})]
        );
        if from != "ignis" {
            assert_eq!(
                ig.expect(1).await,
                vec![json!({"event": "chat", "data": data})]
            );
        }
        if from != "stonyx" {
            assert_eq!(
                st.expect(1).await,
                vec![json!({"request": "chat", "data": data})]
            );
        }
    }

    // Binary from the TCP client to game-1: the stelar WebSocket member gets it; the three
    // dialect members cannot, and are counted.
    tcp.send(OutFrame::Binary {
        event: "game-1:frame",
        payload: &[0, 1, 2, 255],
    })
    .await;
    let got = ws.recv_binary().await;
    assert!(got.ends_with(&[0, 1, 2, 255]), "{got:?}");
    server.wait_metric(DROPPED, 3).await;
    // They still work, and the JSON message is the next thing each one receives.
    publish(&server, room, "after", json!("binary")).await;
    assert_eq!(ws.recv().await, json!({"event": "after", "data": "binary"}));
    let (e, _) = tcp.recv_json().await;
    assert_eq!(e, "after");
    assert_eq!(
        ss.expect(1).await,
        vec![json!({"type": "after", "serverId": room, "data": "binary"})]
    );
    assert_eq!(
        ig.expect(1).await,
        vec![json!({"event": "after", "data": "binary"})]
    );
    assert_eq!(
        st.expect(1).await,
        vec![json!({"request": "after", "data": "binary"})]
    );
    assert_eq!(server.metric(DROPPED).await, 3);

    // The relay's direct (stonyx to the ignis client) and broadcast (from ignis to all).
    st.send(json!({"request": "direct",
                   "data": {"to": ig_id, "event": "dm", "data": {"n": 1}}}))
        .await;
    assert_eq!(
        ig.expect(1).await,
        vec![json!({"event": "dm", "data": {"n": 1}})]
    );
    ig.send(json!({"event": "broadcast", "data": {"event": "all", "data": 2}}))
        .await;
    assert_eq!(ws.recv().await, json!({"event": "all", "data": 2}));
    assert_eq!(tcp.recv_json().await, ("all".to_owned(), json!(2)));
    assert_eq!(ss.expect(1).await, vec![json!({"type": "all", "data": 2})]);
    assert_eq!(
        st.expect(1).await,
        vec![json!({"request": "all", "data": 2})]
    );

    // The stelar path is unchanged beside them: ACKs, errors, binary relay to WebSocket.
    let v = ws.request("echo", "echo", json!({"x": 1}), "c#1").await;
    assert_eq!(v["data"], json!({"x": 1}), "{v}");
    assert_eq!(v["_isAck"], true, "{v}");
    ws.emit("no-such-event", json!(1)).await;
    let v = ws.recv().await;
    assert_eq!(v["event"], "server:error", "{v}");
    assert_eq!(v["data"]["code"], "unknown_event", "{v}");

    finish([ss, ig, st]).await;
    wait_members(&server, room, 2).await;
}

/// Two nodes through Redis: a backend publish on node A, and a stelar client's relay publish
/// on A, reach StellarStack, ignis and stonyx members of the room on node B, each in its own
/// format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_room_across_nodes() {
    let redis = RedisProc::start();
    let routes = dialect_args();
    let mut args: Vec<&str> = routes.iter().map(String::as_str).collect();
    args.push("--shards=1");
    let a = start_node(&redis, "node-a", &args);
    let b = start_node(&redis, "node-b", &args);
    a.wait_metric("shardcast_cluster_connected", 1).await;
    b.wait_metric("shardcast_cluster_connected", 1).await;
    let room = "srv_9";
    let [mut ss, mut ig, mut st] = dialect_members(&b, "n", &[room], true);
    for c in [&mut ss, &mut ig, &mut st] {
        c.at("ready").await;
    }
    wait_members(&b, room, 3).await;
    redis
        .wait_count("node B subscribed to the room", 1, |r| {
            r.shard_subscribers(&format!("shardcast:room:{room}"))
        })
        .await;
    publish(&a, room, "server:sync", server_state(room)).await;
    let mut stelar = Ws::connect(&a.ws_url("/")).await;
    stelar
        .emit(
            "publish",
            json!({"room": room, "event": "chat", "data": {"via": "relay on A"}}),
        )
        .await;
    let state = server_state(room);
    let chat = json!({"via": "relay on A"});
    assert_eq!(
        ss.expect(2).await,
        vec![
            json!({"type": "server:sync", "serverId": room, "data": state}),
            json!({"type": "chat", "serverId": room, "data": chat}),
        ]
    );
    assert_eq!(
        ig.expect(2).await,
        vec![
            json!({"event": "server:sync", "data": state}),
            json!({"event": "chat", "data": chat}),
        ]
    );
    assert_eq!(
        st.expect(2).await,
        vec![
            json!({"request": "server:sync", "data": state}),
            json!({"request": "chat", "data": chat}),
        ]
    );
    finish([ss, ig, st]).await;
}

// ---------------------------------------------------------------------------------------------
// Presence

/// `--member-events 'lobby*'`: the other members of a matching room get member-joined /
/// member-left (on leave and on disconnect), with the joiner's user (a stonyx client's token
/// `sub`, null for a stelar client without authentication); a room that does not match gets
/// none; the `members` ACK lists ids and users (stelar and stonyx).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_events_and_members() {
    let server = start(&["--shards=2", "--member-events=lobby*", "--relay-members"]);
    let mut a = Ws::connect(&server.ws_url("/")).await;
    let a_id = a.whoami().await;
    a.join("lobby1").await;
    a.join("other").await;

    let mut b = Ws::connect(&server.ws_url("/")).await;
    let b_id = b.whoami().await;
    b.join("lobby1").await;
    let joined_b = json!({"event": "member-joined",
                          "data": {"room": "lobby1", "id": b_id, "user": null}});
    assert_eq!(a.recv().await, joined_b);
    b.emit("leave-room", json!("lobby1")).await;
    assert_eq!(
        b.recv().await,
        json!({"event": "left-room", "data": "lobby1"})
    );
    let left_b = json!({"event": "member-left",
                        "data": {"room": "lobby1", "id": b_id, "user": null}});
    assert_eq!(a.recv().await, left_b);

    // A room the patterns do not match: no events (the publish that follows comes first).
    b.join("other").await;
    publish(&server, "other", "plain", json!(1)).await;
    assert_eq!(a.recv().await, json!({"event": "plain", "data": 1}));
    assert_eq!(b.recv().await, json!({"event": "plain", "data": 1}));

    // A stonyx member: its user in the events, and gone on disconnect.
    let mut st = Py::as_user(
        "stonyx",
        "member",
        &server.ws_url(STONYX),
        "sto",
        json!({"rooms": ["lobby1"]}),
    );
    let st_id = st.at("ready").await["id"].as_str().unwrap().to_owned();
    assert_eq!(
        a.recv().await,
        json!({"event": "member-joined", "data": {"room": "lobby1", "id": st_id, "user": "sto"}})
    );
    let v = a
        .request("members", "members", json!("lobby1"), "m#1")
        .await;
    let mut ids: Vec<&str> = v["data"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![a_id.as_str(), st_id.as_str()];
    want.sort();
    assert_eq!(ids, want, "{v}");
    assert_eq!(v["data"]["users"], json!(["sto"]), "{v}");
    // B joins lobby1 again: the stonyx member is told, in its own format.
    b.join("lobby1").await;
    assert_eq!(a.recv().await, joined_b);
    assert_eq!(
        st.expect(1).await,
        vec![json!({"request": "member-joined",
                    "data": {"room": "lobby1", "id": b_id, "user": null}})]
    );
    st.cont();
    st.done().await;
    let left_st = json!({"event": "member-left",
                         "data": {"room": "lobby1", "id": st_id, "user": "sto"}});
    assert_eq!(a.recv().await, left_st);
    assert_eq!(b.recv().await, left_st);
}
