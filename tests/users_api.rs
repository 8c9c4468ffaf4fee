//! Users and the backend HTTP API (issue 9, items 3 and 6): the per-user index and cap across
//! shards, sending to a user from the library, the relay and the API, disconnecting from the
//! API, several API keys, and the JSON error shape of every 4xx.
//!
//! Users come from an embedded server whose middleware calls `ctx.set_user` (JWT is built
//! elsewhere); the API's keys, errors, rooms and disconnects run against the real binary.

mod common;

use std::net::SocketAddr;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use shardcast::app::{Json, Reject, Server};
use shardcast::protocol::stelar::FrameType;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "users-test-key-0001";

/// An embedded server, 2 shards, at most 2 connections per user, the relay on and an API key.
/// Its middleware gives a WebSocket client the user in `?user=`; with `?shard=N` it refuses
/// (4009) a connection that landed on another shard, without giving it the user, so a test
/// can place one user's connections on both shards. TCP clients log in with a `login` event.
fn start() -> shardcast::server::Running {
    Server::builder()
        .configure(|c| {
            c.host = [127, 0, 0, 1].into();
            c.port = 0;
            c.shards = 2;
            c.limits.max_connections_per_user = 2;
            c.api_key = Some(KEY.to_owned());
        })
        .relay(true)
        .handle_signals(false)
        .middleware(|ctx| async move {
            let Some(user) = ctx.query("user") else {
                return Ok(());
            };
            if let Some(want) = ctx.query("shard") {
                if ctx.id().location().shard.to_string() != want {
                    return Err(Reject {
                        code: 4009,
                        reason: "wrong shard".into(),
                    });
                }
            }
            ctx.set_user(&user).map_err(|e| Reject {
                code: e.close_code(),
                reason: e.to_string(),
            })
        })
        .on_connect(|ctx| async move {
            let _ = ctx.emit_value(
                "welcome",
                &json!({"id": ctx.id().to_string(), "user": ctx.user()}),
            );
        })
        .on("login", |ctx, data| async move {
            let user: String = data.parse().unwrap();
            let result = match ctx.set_user(&user) {
                Ok(()) => json!({"user": ctx.user()}),
                Err(e) => json!({"refused": e.to_string()}),
            };
            let _ = ctx.emit_value("logged-in", &result);
        })
        .on("to-user", |ctx, data| async move {
            let v: Value = data.parse().unwrap();
            let _ = ctx
                .to_user(v["user"].as_str().unwrap())
                .emit("for-user", &Json::from_value(&v["data"]));
        })
        .start()
        .expect("server starts")
}

/// How a WebSocket connection attempt ended: the welcome (id, user), or a close.
enum Attempt {
    Welcome(Box<Ws>, String, Value),
    Closed(u16, String),
}

async fn attempt(addr: SocketAddr, query: &str) -> Attempt {
    let mut ws = Ws::connect(&format!("ws://{addr}/?{query}")).await;
    match within("welcome or close", ws.inner.next()).await {
        Some(Ok(Message::Text(t))) => {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["event"], "welcome", "{v}");
            let id = v["data"]["id"].as_str().unwrap().to_owned();
            Attempt::Welcome(Box::new(ws), id, v["data"]["user"].clone())
        }
        Some(Ok(Message::Close(Some(f)))) => {
            Attempt::Closed(u16::from(f.code), f.reason.to_string())
        }
        other => panic!("expected welcome or close, got {other:?}"),
    }
}

/// A connection of `user` on `shard` (connections landing elsewhere are refused and retried;
/// the kernel spreads them, so a few tries find each shard).
async fn user_on_shard(addr: SocketAddr, user: &str, shard: u16) -> (Ws, String) {
    for _ in 0..200 {
        match attempt(addr, &format!("user={user}&shard={shard}")).await {
            Attempt::Welcome(ws, id, u) => {
                assert_eq!(shard_of(&id), shard);
                assert_eq!(u, json!(user), "ctx.user() after ctx.set_user");
                return (*ws, id);
            }
            Attempt::Closed(4009, _) => continue,
            Attempt::Closed(code, reason) => panic!("refused: {code} {reason}"),
        }
    }
    panic!("no connection landed on shard {shard} in 200 tries");
}

/// The next close frame (data messages before it are returned too).
async fn close_of(ws: &mut Ws) -> (u16, String) {
    within("close frame", async {
        loop {
            match ws.inner.next().await {
                Some(Ok(Message::Close(Some(f)))) => {
                    return (u16::from(f.code), f.reason.to_string())
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
}

fn auth() -> [(&'static str, &'static str); 1] {
    [("Authorization", "Bearer users-test-key-0001")]
}

async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (status, text) = http(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(v["error"]["message"].is_string(), "{body}");
    v["error"]["code"].as_str().expect("error.code").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_spans_shards_is_capped_and_is_reached_and_disconnected_everywhere() {
    let running = start();
    let addr = running.ws_addr();

    // One user on both shards; the third connection is over the process-wide cap of 2.
    let (mut a0, a0_id) = user_on_shard(addr, "alice", 0).await;
    let (mut a1, _a1_id) = user_on_shard(addr, "alice", 1).await;
    match attempt(addr, "user=alice").await {
        Attempt::Closed(code, reason) => {
            assert_eq!(code, 4003);
            assert_eq!(reason, "too many connections for this user");
        }
        Attempt::Welcome(..) => panic!("a third connection of alice was accepted"),
    }
    assert_eq!(
        metric(
            addr,
            "shardcast_refused_total{reason=\"user_connection_limit\"}"
        )
        .await,
        1
    );
    assert_eq!(metric(addr, "shardcast_users").await, 1);

    // Another user is not affected; a TCP client logs in after connecting.
    let Attempt::Welcome(bob, _, _) = attempt(addr, "user=bob").await else {
        panic!("bob refused");
    };
    let mut bob = *bob;
    let mut tcp = Tcp::connect(running.tcp_addr().unwrap()).await;
    assert_eq!(tcp.recv_json().await.0, "welcome");
    tcp.emit("login", &json!("carol")).await;
    assert_eq!(
        tcp.recv_json().await,
        ("logged-in".to_owned(), json!({"user": "carol"}))
    );

    // The library: ctx.to_user reaches both of alice's connections, on both shards.
    bob.emit("to-user", json!({"user": "alice", "data": {"n": 1}}))
        .await;
    for a in [&mut a0, &mut a1] {
        assert_eq!(
            a.recv().await,
            json!({"event": "for-user", "data": {"n": 1}})
        );
    }
    // ...and TCP connections of a user.
    bob.emit("to-user", json!({"user": "carol", "data": 2}))
        .await;
    assert_eq!(tcp.recv_json().await, ("for-user".to_owned(), json!(2)));

    // The relay: `direct` with a user, data verbatim; the sender is excluded.
    a0.send_text(r#"{"event":"direct","data":{"user":"alice","event":"dm","data":{"x" : [1]}}}"#)
        .await;
    assert_eq!(a1.recv().await, json!({"event": "dm", "data": {"x": [1]}}));
    bob.emit("direct", json!({"user": 5, "event": "dm"})).await;
    let err = bob.recv().await;
    assert_eq!(err["event"], "server:error");
    assert_eq!(err["data"]["code"], "invalid_data");
    // The barrier: a0 got nothing from its own direct.
    a0.emit("echo", json!("barrier")).await;
    assert_eq!(a0.recv().await, json!({"event": "echo", "data": "barrier"}));

    // The API: send to a user (202 with how many got it), or 404 with a code.
    let send = r#"{"user":"alice","event":"api","data":[3]}"#;
    let (status, body) = http(addr, "POST", "/api/send", &auth(), send).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"ok": true, "delivered": 2})
    );
    for a in [&mut a0, &mut a1] {
        assert_eq!(a.recv().await, json!({"event": "api", "data": [3]}));
    }
    let (status, body) = http(
        addr,
        "POST",
        "/api/send",
        &auth(),
        r#"{"user":"nobody","event":"api"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_code(&body), "unknown_user");

    // Room members carry their user.
    a0.join("lobby").await;
    bob.join("lobby").await;
    let (status, body) = http(addr, "GET", "/api/rooms/lobby", &auth(), "").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let clients = v["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 2, "{body}");
    assert!(
        clients.contains(&json!({"id": a0_id, "user": "alice"})),
        "{body}"
    );
    assert_eq!(v["members"].as_array().unwrap().len(), 2);

    // Disconnect a user: every connection, on every shard, with the code and reason given.
    let (status, body) = http(
        addr,
        "POST",
        "/api/disconnect",
        &auth(),
        r#"{"user":"alice","code":4010,"reason":"bye alice"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"ok": true, "disconnected": 2})
    );
    for a in [&mut a0, &mut a1] {
        assert_eq!(close_of(a).await, (4010, "bye alice".to_owned()));
    }
    drop((a0, a1));
    // Their cap is released when they are gone: alice may connect again (each try is
    // answered; the loop ends at the first accepted one).
    within("alice is let back in", async {
        loop {
            match attempt(addr, "user=alice").await {
                Attempt::Welcome(..) => return,
                Attempt::Closed(4003, _) => continue,
                Attempt::Closed(code, r) => panic!("{code} {r}"),
            }
        }
    })
    .await;

    // The TCP user is disconnected with an ERROR frame carrying the reason.
    let (status, body) = http(
        addr,
        "POST",
        "/api/disconnect",
        &auth(),
        r#"{"user":"carol","reason":"bye carol"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let f = tcp.recv().await;
    assert_eq!(f.frame_type, FrameType::Error);
    assert_eq!(&f.payload[..], b"bye carol");
    assert_eq!(
        metric(
            addr,
            "shardcast_disconnects_total{reason=\"api_disconnect\"}"
        )
        .await,
        3
    );
    let (status, body) = http(
        addr,
        "POST",
        "/api/disconnect",
        &auth(),
        r#"{"user":"zed"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_code(&body), "unknown_user");

    running.shutdown();
    tokio::task::spawn_blocking(move || running.join().unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_rooms_disconnect_and_json_errors_against_the_binary() {
    let server = ServerProc::start_with_toml(
        "api_key = \"first-key-0000001\"\napi_keys = [\"second-key-000002\"]\n",
        &["--shards", "2", "--max-connections-per-user", "3"],
    );
    let first = [("Authorization", "Bearer first-key-0000001")];
    let second = [("X-API-Key", "second-key-000002")];

    // No key: 401 with a Bearer challenge and a JSON error; a wrong key: 401 too.
    let r = http_response(server.ws, "GET", "/api/rooms", &[], "").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(error_code(&r.body), "unauthorized");
    let wrong = [("Authorization", "Bearer first-key-0000002")];
    let r = http_response(server.ws, "POST", "/api/broadcast", &wrong, "{}").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    assert_eq!(error_code(&r.body), "unauthorized");
    assert_eq!(
        server
            .metric("shardcast_refused_total{reason=\"api_unauthorized\"}")
            .await,
        2
    );

    // Both keys open the API; rooms list their member counts summed over shards.
    let mut ws = Ws::connect(&server.ws_url("/")).await;
    let ws_id = ws.whoami().await;
    ws.join("r1").await;
    let mut tcp = Tcp::connect(server.tcp.unwrap()).await;
    tcp.join("r1").await;
    tcp.join("r2").await;
    for key in [&first[..], &second[..]] {
        let (status, body) = http(server.ws, "GET", "/api/rooms", key, "").await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            json!({"rooms": [{"name": "r1", "members": 2}, {"name": "r2", "members": 1}]})
        );
    }
    let (status, body) = http(server.ws, "GET", "/api/rooms/r2", &second, "").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["members"], json!([tcp.id]));
    assert_eq!(v["clients"], json!([{"id": tcp.id, "user": null}]));
    let (status, body) = http(server.ws, "GET", "/api/stats", &first, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ok"
    );

    // Every 4xx carries {"error":{"code","message"}}.
    for (method, path, body, status, code) in [
        ("GET", "/api/nothing", "", 404, "not_found"),
        ("GET", "/nothing", "", 404, "not_found"),
        ("GET", "/api/publish", "", 405, "method_not_allowed"),
        ("POST", "/api/publish", "{", 400, "invalid_data"),
        (
            "POST",
            "/api/publish",
            r#"{"event":"e"}"#,
            400,
            "invalid_room",
        ),
        (
            "POST",
            "/api/publish",
            r#"{"room":"r","event":"a b"}"#,
            400,
            "invalid_event_name",
        ),
        ("POST", "/api/send", r#"{"event":"e"}"#, 400, "invalid_data"),
        (
            "POST",
            "/api/send",
            r#"{"user":"","event":"e"}"#,
            400,
            "invalid_data",
        ),
        (
            "POST",
            "/api/send",
            r#"{"user":"u","event":"e"}"#,
            404,
            "unknown_user",
        ),
        ("POST", "/api/disconnect", "[]", 400, "invalid_data"),
        (
            "POST",
            "/api/disconnect",
            r#"{"client":"x"}"#,
            400,
            "invalid_data",
        ),
        (
            "POST",
            "/api/disconnect",
            r#"{"user":"u","client":"x"}"#,
            400,
            "invalid_data",
        ),
        (
            "POST",
            "/api/disconnect",
            r#"{"user":"u","code":1005}"#,
            400,
            "invalid_data",
        ),
        (
            "POST",
            "/api/disconnect",
            r#"{"user":"u","extra":1}"#,
            400,
            "invalid_data",
        ),
        (
            "POST",
            "/api/disconnect",
            r#"{"client":"00000000-0000-4000-8000-000000000000"}"#,
            404,
            "unknown_client",
        ),
    ] {
        let (got, text) = http(server.ws, method, path, &first, body).await;
        assert_eq!(got, status, "{method} {path} {body}: {text}");
        assert_eq!(error_code(&text), code, "{method} {path} {body}");
    }

    // Disconnect one client by id, whichever shard holds it: WebSocket gets a close frame
    // (default code 1008), TCP an ERROR frame with the reason given.
    let (status, body) = http(
        server.ws,
        "POST",
        "/api/disconnect",
        &first,
        &json!({"client": ws_id}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(close_of(&mut ws).await, (1008, "Disconnected".to_owned()));
    let (status, body) = http(
        server.ws,
        "POST",
        "/api/disconnect",
        &second,
        &json!({"client": tcp.id, "code": 4000, "reason": "maintenance"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let f = tcp.recv().await;
    assert_eq!(f.frame_type, FrameType::Error);
    assert_eq!(&f.payload[..], b"maintenance");
    tcp.read_to_end().await;
    // Gone now: 404.
    let (status, body) = http(
        server.ws,
        "POST",
        "/api/disconnect",
        &first,
        &json!({"client": tcp.id}).to_string(),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_code(&body), "unknown_client");
    assert_eq!(
        server
            .metric("shardcast_disconnects_total{reason=\"api_disconnect\"}")
            .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_api_answers_403_with_a_code_and_keys_come_from_flags() {
    let server = ServerProc::start(&["--shards", "1"]);
    let (status, body) = http(server.ws, "GET", "/api/rooms", &[], "").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "api_disabled");
    drop(server);

    // `--api-key` repeated and comma-separated: every key opens the API.
    let server = ServerProc::start(&[
        "--shards",
        "1",
        "--api-key",
        "flag-key-a",
        "--api-key=flag-key-b,flag-key-c",
    ]);
    for key in ["flag-key-a", "flag-key-b", "flag-key-c"] {
        let (status, body) = http(server.ws, "GET", "/api/rooms", &[("X-API-Key", key)], "").await;
        assert_eq!(status, 200, "{key}: {body}");
    }
    let (status, _) = http(
        server.ws,
        "GET",
        "/api/rooms",
        &[("X-API-Key", "flag-key")],
        "",
    )
    .await;
    assert_eq!(status, 401);
}
