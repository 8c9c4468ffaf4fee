//! Authentication and authorization (issue 9, item 2) against the real binary: JWTs made at
//! test time (HS256 with `jsonwebtoken`, RS256 with a key pair `openssl` makes), presented in
//! the `Authorization` header, the `?token=` query or a first `auth` message (WebSocket and
//! TCP); expired / wrong key / missing / timeout answers; the rooms and publish claims; the
//! `optional` and `off` modes; and an embedding application's own async authenticator.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use shardcast::protocol::stelar::{FrameType, OutFrame};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "test-secret-test-secret-test-secret!";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn token(sub: &str) -> String {
    hs256_token(SECRET, sub, json!({}))
}

fn start(mode: &str, extra: &[&str]) -> ServerProc {
    let auth = format!("--auth={mode}");
    let secret = format!("--jwt-secret={SECRET}");
    let mut args = vec![auth.as_str(), secret.as_str(), "--shards=2"];
    args.extend_from_slice(extra);
    ServerProc::start(&args)
}

/// Connects with `Authorization: Bearer token`.
async fn ws_bearer(url: &str, token: &str) -> Ws {
    Ws::connect_bearer(url, token).await
}

/// Waits for the server's close frame: (code, reason).
async fn expect_close(ws: &mut Ws) -> (u16, String) {
    ws.close_frame().await
}

/// `auth-ok` for `user`; returns the id it names.
async fn expect_auth_ok(ws: &mut Ws, user: &str) -> String {
    let v = ws.recv().await;
    assert_eq!(v["event"], "auth-ok", "{v}");
    assert_eq!(v["data"]["user"], user, "{v}");
    v["data"]["id"].as_str().unwrap().to_owned()
}

/// A TCP ERROR frame with `text`, then the end of the connection.
async fn expect_tcp_error(t: &mut Tcp, text: &str) {
    let f = t.recv().await;
    assert_eq!(f.frame_type, FrameType::Error, "{f:?}");
    assert_eq!(&f.payload[..], text.as_bytes());
    t.read_to_end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_header_query_and_first_message() {
    let server = start("required", &[]);
    // Header: auth-ok comes first, naming the client's id (the one whoami reports).
    let mut a = ws_bearer(&server.ws_url("/"), &token("alice")).await;
    let id = expect_auth_ok(&mut a, "alice").await;
    assert_eq!(a.whoami().await, id);
    // Query.
    let mut b = Ws::connect(&server.ws_url(&format!("/?token={}", token("bob")))).await;
    expect_auth_ok(&mut b, "bob").await;
    // First message, with a join pipelined right behind it: held until auth succeeds, then
    // handled in order.
    let mut c = Ws::connect(&server.ws_url("/")).await;
    let auth = json!({"event": "auth", "data": {"token": token("carol")}}).to_string();
    let join = json!({"event": "join-room", "data": "lobby"}).to_string();
    c.inner.feed(Message::Text(auth)).await.unwrap();
    c.inner.feed(Message::Text(join)).await.unwrap();
    c.inner.flush().await.unwrap();
    expect_auth_ok(&mut c, "carol").await;
    assert_eq!(
        c.recv().await,
        json!({"event": "joined-room", "data": "lobby"})
    );
    // The rooms are shared with the others as usual.
    a.join("lobby").await;
    a.emit(
        "publish",
        json!({"room": "lobby", "event": "hi", "data": 1}),
    )
    .await;
    assert_eq!(c.recv().await, json!({"event": "hi", "data": 1}));

    // TCP: CONNECT first, then a JSON frame `auth`; auth-ok as a JSON frame.
    let mut t = Tcp::connect(server.tcp.unwrap()).await;
    t.emit("auth", &json!({"token": token("dave")})).await;
    let (e, d) = t.recv_json().await;
    assert_eq!(e, "auth-ok");
    assert_eq!(d, json!({"id": t.id, "user": "dave"}));
    t.join("lobby").await;
    assert_eq!(
        server.metric("shardcast_auth_total{result=\"ok\"}").await,
        4
    );
    assert!(server.metric("shardcast_auth_checks_total").await >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_websocket() {
    let server = start("required", &["--auth-timeout-ms=400"]);
    let url = server.ws_url("/");
    // Expired (past the 30 s leeway).
    let expired = hs256_token(SECRET, "a", json!({"exp": now() - 120}));
    let mut ws = ws_bearer(&url, &expired).await;
    assert_eq!(expect_close(&mut ws).await, (4003, "Token expired".into()));
    // Signed with another key.
    let wrong = hs256_token("another-secret-another-secret-another", "a", json!({}));
    let mut ws = Ws::connect(&format!("{url}?token={wrong}")).await;
    assert_eq!(
        expect_close(&mut ws).await,
        (4003, "Invalid token signature".into())
    );
    // Not a JWT, in the first message.
    let mut ws = Ws::connect(&url).await;
    ws.emit("auth", json!({"token": "garbage"})).await;
    assert_eq!(
        expect_close(&mut ws).await,
        (4003, "Malformed token".into())
    );
    // Anything before auth is refused, and not processed: the join creates no room.
    let mut ws = Ws::connect(&url).await;
    ws.emit("join-room", json!("sneaky")).await;
    assert_eq!(
        expect_close(&mut ws).await,
        (4003, "Authentication required".into())
    );
    // Nothing within the timeout: 4001.
    let mut ws = Ws::connect(&url).await;
    let started = std::time::Instant::now();
    assert_eq!(
        expect_close(&mut ws).await,
        (4001, "Authentication timeout".into())
    );
    assert!(started.elapsed() >= Duration::from_millis(350));
    for (result, n) in [
        ("expired", 1),
        ("bad_signature", 1),
        ("malformed", 1),
        ("missing", 1),
        ("timeout", 1),
    ] {
        let name = format!("shardcast_auth_total{{result=\"{result}\"}}");
        assert_eq!(server.metric(&name).await, n, "{name}");
    }
    let (status, health) = http(server.ws, "GET", "/health", &[], "").await;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        health["totalRooms"], 0,
        "the join before auth was not processed"
    );
    assert_eq!(
        health["totalConnections"], 0,
        "no refused client was opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_tcp() {
    let server = start("required", &["--auth-timeout-ms=400"]);
    let addr = server.tcp.unwrap();
    let mut t = Tcp::connect(addr).await;
    t.emit(
        "auth",
        &json!({"token": hs256_token("x-another-secret-another-secret-x", "a", json!({}))}),
    )
    .await;
    expect_tcp_error(&mut t, "Invalid token signature").await;
    let mut t = Tcp::connect(addr).await;
    t.send(OutFrame::Join { room: "sneaky" }).await;
    expect_tcp_error(&mut t, "Authentication required").await;
    let mut t = Tcp::connect(addr).await;
    t.emit("auth", &json!({})).await;
    expect_tcp_error(&mut t, "Authentication required").await;
    // Silent: ERROR after the timeout; PINGs meanwhile are still answered.
    let mut t = Tcp::connect(addr).await;
    t.send(OutFrame::Ping).await;
    assert_eq!(recv_raw_type(&mut t).await, FrameType::Pong);
    expect_tcp_error(&mut t, "Authentication timeout").await;
    assert_eq!(
        server
            .metric("shardcast_auth_total{result=\"timeout\"}")
            .await,
        1
    );
    assert_eq!(
        server
            .metric("shardcast_auth_total{result=\"missing\"}")
            .await,
        2
    );
}

/// The next frame's type, read raw (the harness's `recv` answers PINGs and skips them).
async fn recv_raw_type(t: &mut Tcp) -> FrameType {
    use tokio::io::AsyncReadExt;
    within("tcp frame", async {
        let mut head = [0u8; 7];
        t.sock.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        let mut rest = vec![0u8; len - 7];
        t.sock.read_exact(&mut rest).await.unwrap();
        match head[4] {
            0x04 => FrameType::Pong,
            0x0B => FrameType::Error,
            other => panic!("unexpected frame type {other}"),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_limit_rooms_publish_and_broadcast() {
    let server = start("required", &[]);
    let url = server.ws_url("/");
    let limited = hs256_token(
        SECRET,
        "lim",
        json!({"rooms": ["chat:*"], "publish": ["chat:1"], "broadcast": false}),
    );
    let mut a = ws_bearer(&url, &limited).await;
    expect_auth_ok(&mut a, "lim").await;
    let mut b = ws_bearer(&url, &token("free")).await;
    expect_auth_ok(&mut b, "free").await;
    // rooms: the glob lets chat:1 and chat:2 in, not admin.
    a.join("chat:1").await;
    a.join("chat:2").await;
    a.emit("join-room", json!("admin")).await;
    let v = a.recv().await;
    assert_eq!(v["event"], "server:error");
    assert_eq!(v["data"]["code"], "forbidden");
    assert_eq!(v["data"]["event"], "join-room");
    // A token without a rooms claim joins anything (auth.default_rooms = allow).
    b.join("chat:1").await;
    b.join("chat:2").await;
    b.join("admin").await;
    // publish: chat:1 only.
    a.emit(
        "publish",
        json!({"room": "chat:2", "event": "x", "data": 0}),
    )
    .await;
    let v = a.recv().await;
    assert_eq!(v["data"]["code"], "forbidden", "{v}");
    assert_eq!(v["data"]["event"], "publish");
    a.emit(
        "publish",
        json!({"room": "chat:1", "event": "x", "data": 1}),
    )
    .await;
    assert_eq!(b.recv().await, json!({"event": "x", "data": 1}));
    // broadcast: false.
    a.emit("broadcast", json!({"event": "all", "data": 2}))
        .await;
    let v = a.recv().await;
    assert_eq!(v["data"]["code"], "forbidden", "{v}");
    assert_eq!(v["data"]["event"], "broadcast");
    b.emit("broadcast", json!({"event": "all", "data": 3}))
        .await;
    assert_eq!(a.recv().await, json!({"event": "all", "data": 3}));
    b.expect_silence(Duration::from_millis(100)).await;
    assert_eq!(
        server
            .metric("shardcast_protocol_errors_total{kind=\"auth_forbidden_join\"}")
            .await,
        1
    );
    assert_eq!(
        server
            .metric("shardcast_protocol_errors_total{kind=\"auth_forbidden_publish\"}")
            .await,
        1
    );

    // auth.default_rooms = deny (TOML): no rooms claim, no room.
    let toml = format!(
        "[auth]\nmode = \"required\"\njwt_secret = \"{SECRET}\"\ndefault_rooms = \"deny\"\n"
    );
    let strict = ServerProc::start_with_toml(&toml, &[]);
    let mut c = ws_bearer(&strict.ws_url("/"), &token("c")).await;
    expect_auth_ok(&mut c, "c").await;
    c.emit("join-room", json!("lobby")).await;
    assert_eq!(c.recv().await["data"]["code"], "forbidden");
    let mut d = ws_bearer(
        &strict.ws_url("/"),
        &hs256_token(SECRET, "d", json!({"rooms": ["lobby"]})),
    )
    .await;
    expect_auth_ok(&mut d, "d").await;
    d.join("lobby").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_and_off_modes() {
    let server = start("optional", &[]);
    // No token: anonymous, works as before (no auth-ok: the first message is the ACK reply).
    let mut anon = Ws::connect(&server.ws_url("/")).await;
    let id = anon.whoami().await;
    assert_eq!(id.len(), 36);
    anon.join("lobby").await;
    let mut t = Tcp::connect(server.tcp.unwrap()).await;
    t.join("lobby").await;
    // A token presented must be valid.
    let mut ok = ws_bearer(&server.ws_url("/"), &token("eve")).await;
    expect_auth_ok(&mut ok, "eve").await;
    let mut bad = ws_bearer(&server.ws_url("/"), "nonsense").await;
    assert_eq!(
        expect_close(&mut bad).await,
        (4003, "Malformed token".into())
    );
    assert_eq!(
        server
            .metric("shardcast_auth_total{result=\"anonymous\"}")
            .await,
        2
    );

    // off (the default): tokens are ignored, nothing is sent at connect.
    let off = ServerProc::start(&[]);
    let mut c = ws_bearer(&off.ws_url("/"), "nonsense").await;
    let id = c.whoami().await;
    assert_eq!(id.len(), 36);
    c.join("chat:anything").await;
    assert_eq!(off.metric("shardcast_auth_total{result=\"ok\"}").await, 0);
}

/// Runs `openssl` with `args`; panics with its stderr if it fails.
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A fresh RSA key pair: (private PEM path, public PEM path).
fn rsa_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let p = private.to_str().unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        p,
    ]);
    openssl(&[
        "pkey",
        "-in",
        p,
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (private, public)
}

/// The JWK of an RSA public key, with `kid`.
fn rsa_jwk(public: &Path, kid: &str) -> Value {
    use base64::Engine;
    let out = openssl(&[
        "rsa",
        "-pubin",
        "-in",
        public.to_str().unwrap(),
        "-noout",
        "-modulus",
    ]);
    let hex = String::from_utf8(out).unwrap();
    let hex = hex.trim().strip_prefix("Modulus=").unwrap();
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
           "n": b64.encode(n), "e": "AQAB"})
}

fn rs256(private: &Path, kid: Option<&str>, sub: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_rsa_pem(&std::fs::read(private).unwrap()).unwrap();
    encode(&header, &json!({"sub": sub, "exp": now() + 60}), &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_with_a_pem_key_and_a_jwks_by_kid() {
    let dir = std::env::temp_dir().join(format!("shardcast-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (priv1, pub1) = rsa_pair(&dir, "one");
    let (priv2, pub2) = rsa_pair(&dir, "two");

    // A PEM public key.
    let key_flag = format!("--jwt-public-key={}", pub1.display());
    let server = ServerProc::start(&["--auth=required", &key_flag]);
    let mut a = ws_bearer(&server.ws_url("/"), &rs256(&priv1, None, "rsa-user")).await;
    expect_auth_ok(&mut a, "rsa-user").await;
    let mut b = ws_bearer(&server.ws_url("/"), &rs256(&priv2, None, "x")).await;
    assert_eq!(
        expect_close(&mut b).await,
        (4003, "Invalid token signature".into())
    );
    // An HS256 token: no key of its family (the public key is never an HMAC secret).
    let mut c = ws_bearer(&server.ws_url("/"), &token("x")).await;
    assert_eq!(
        expect_close(&mut c).await,
        (4003, "No key for this token".into())
    );

    // A JWKS with both keys: the token's kid picks one.
    let jwks = dir.join("keys.jwks");
    let set = json!({"keys": [rsa_jwk(&pub1, "k1"), rsa_jwk(&pub2, "k2")]});
    std::fs::write(&jwks, set.to_string()).unwrap();
    let key_flag = format!("--jwt-public-key={}", jwks.display());
    let server = ServerProc::start(&["--auth=required", &key_flag]);
    let mut a = ws_bearer(&server.ws_url("/"), &rs256(&priv2, Some("k2"), "two")).await;
    expect_auth_ok(&mut a, "two").await;
    let mut b = ws_bearer(&server.ws_url("/"), &rs256(&priv1, Some("k2"), "one")).await;
    assert_eq!(
        expect_close(&mut b).await,
        (4003, "Invalid token signature".into())
    );
    // Without a kid, each key of the family is tried.
    let mut c = ws_bearer(&server.ws_url("/"), &rs256(&priv1, None, "one")).await;
    expect_auth_ok(&mut c, "one").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn start_up_refuses_auth_without_keys_and_bad_key_files() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .args(["--host=127.0.0.1", "--port=0", "--auth=required"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.mode") && err.contains("--jwt-secret"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .args([
            "--host=127.0.0.1",
            "--port=0",
            "--auth=optional",
            "--jwt-public-key=/nonexistent.pem",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.jwt_public_key"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .args(["--jwt-secret=short", "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The library: an application's own async authenticator, with the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applications_async_authenticator() {
    use shardcast::app::{AuthReject, Identity, Json, Server};
    let running = Server::builder()
        .configure(|c| {
            c.host = [127, 0, 0, 1].into();
            c.port = 0;
            c.shards = 2;
            c.auth.timeout_ms = 2_000;
        })
        .handle_signals(false)
        .relay(true)
        .authenticate(|ctx, token| async move {
            // A session lookup that takes a while.
            glommio::timer::sleep(Duration::from_millis(20)).await;
            let via = if ctx.header("authorization").is_some() {
                "header"
            } else {
                "message"
            };
            match token.as_deref().and_then(|t| t.strip_prefix("session:")) {
                Some(user) if !user.is_empty() => {
                    Ok(Identity::user(user).meta("via", via).rooms(["team:*"]))
                }
                _ => Err(AuthReject::new("unknown session")),
            }
        })
        .on_connect(|ctx| async move {
            let _ = ctx.emit_value(
                "welcome",
                &json!({"user": ctx.user(), "via": ctx.meta("via")}),
            );
        })
        .on("me", |ctx, _| async move {
            let _ = ctx.emit("me", &Json::from_value(&ctx.user()));
        })
        .start()
        .expect("server starts");
    let url = format!("ws://{}/", running.ws_addr());
    let mut a = ws_bearer(&url, "session:zoe").await;
    expect_auth_ok(&mut a, "zoe").await;
    assert_eq!(
        a.recv().await,
        json!({"event": "welcome", "data": {"user": "zoe", "via": "header"}})
    );
    a.emit("me", Value::Null).await;
    assert_eq!(a.recv().await, json!({"event": "me", "data": "zoe"}));
    a.join("team:red").await;
    a.emit("join-room", json!("lobby")).await;
    assert_eq!(a.recv().await["data"]["code"], "forbidden");
    let mut b = ws_bearer(&url, "session:").await;
    assert_eq!(expect_close(&mut b).await, (4003, "unknown session".into()));
    // TCP, first frame.
    let mut t = Tcp::connect(running.tcp_addr().unwrap()).await;
    t.emit("auth", &json!({"token": "session:tim"})).await;
    let (e, d) = t.recv_json().await;
    assert_eq!((e.as_str(), &d["user"]), ("auth-ok", &json!("tim")));
    let (e, d) = t.recv_json().await;
    assert_eq!(e, "welcome");
    assert_eq!(d, json!({"user": "tim", "via": "message"}));
    running.shutdown();
    running.join().unwrap();
}

/// A browser-style client that cannot set headers (Python `websockets`, the venv of
/// `./test.sh` or `$SHARDCAST_TEST_PYTHON`): token in the first message, and 4001 when it
/// sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_first_message_and_timeout() {
    let python = python();
    let server = start("required", &["--auth-timeout-ms=300"]);
    const SCRIPT: &str = r#"
import asyncio, json, sys, websockets
async def main(url, token):
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"event": "auth", "data": {"token": token}}))
        print(await ws.recv(), flush=True)
    async with websockets.connect(url) as ws:
        try:
            print(await ws.recv(), flush=True)
        except websockets.ConnectionClosed as e:
            print(json.dumps({"code": e.rcvd.code, "reason": e.rcvd.reason}), flush=True)
asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;
    let args = [
        "-c".to_owned(),
        SCRIPT.to_owned(),
        server.ws_url("/"),
        token("py"),
    ];
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python).args(args).output()
    });
    let out = within("python client", run)
        .await
        .unwrap()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["event"], "auth-ok");
    assert_eq!(lines[0]["data"]["user"], "py");
    assert_eq!(
        lines[1],
        json!({"code": 4001, "reason": "Authentication timeout"})
    );
}
