//! The dialect API in-process: a dialect of the embedder's own (a line protocol, not JSON)
//! beside stelar and stonyx on one server — authentication through the app's authenticator,
//! joins and their confirmations, a relay publish reaching it in its own shape, the
//! per-recipient `transform`, `member-joined` / `member-left`, the `on_leave` hook, and stonyx
//! requests answered by `on_request` handlers (one allowed before auth by `skip_auth`, and an
//! `auth` handler that decides who is let in).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use shardcast::app::{AuthReject, Identity, Json, Server};
use shardcast::config::AuthMode;
use shardcast::dialect::{AuthFailure, Dialect, Encoded, Inbound, Outbound};
use tokio_tungstenite::tungstenite::Message;

/// `auth T`, `join R`, `leave R`, `ping`, `say R TEXT` in; `ROOM EVENT DATA` lines out.
struct Lines;

impl Dialect for Lines {
    fn name(&self) -> &str {
        "lines"
    }

    fn parse(&self, msg: &Bytes) -> Inbound {
        let text = String::from_utf8_lossy(msg);
        let mut words = text.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("auth"), t, None) => Inbound::Authenticate {
                token: t.map(str::to_owned),
                data: None,
            },
            (Some("join"), Some(r), None) => Inbound::Join(vec![r.to_owned()]),
            (Some("leave"), Some(r), None) => Inbound::Leave(vec![r.to_owned()]),
            (Some("ping"), None, None) => Inbound::Answer(Bytes::from_static(b"pong")),
            (Some("say"), Some(room), Some(text)) => Inbound::Event {
                event: "publish".into(),
                data: Some(Bytes::from(
                    json!({"room": room, "event": "line", "data": text}).to_string(),
                )),
            },
            _ => Inbound::Invalid("unknown command".into()),
        }
    }

    fn encode(&self, out: &Outbound<'_>) -> Encoded {
        let line = match *out {
            Outbound::Event { event, data, room } => format!(
                "{} {event} {}",
                room.unwrap_or("-"),
                String::from_utf8_lossy(data.unwrap_or(b"null"))
            ),
            Outbound::Binary { .. } => return Encoded::Unsupported,
            Outbound::Reply { request, result } => {
                format!("reply {request} {}", String::from_utf8_lossy(result))
            }
            Outbound::Error { code, .. } => format!("error {code}"),
            Outbound::Joined { room } => format!("joined {room}"),
            Outbound::Left { room } => format!("left {room}"),
            Outbound::Authenticated { user, .. } => format!("welcome {}", user.unwrap_or("-")),
            Outbound::AuthFailed { reason } => format!("denied {reason}"),
        };
        Encoded::Text(Bytes::from(line))
    }

    fn auth_failure(&self) -> AuthFailure {
        AuthFailure::Stay
    }
}

fn start(leaves: Arc<AtomicUsize>) -> shardcast::server::Running {
    Server::builder()
        .configure(|c| {
            c.host = [127, 0, 0, 1].into();
            c.port = 0;
            c.shards = 2;
            c.relay.member_events = vec!["lobby*".into()];
        })
        .handle_signals(false)
        .relay(true)
        .register_dialect(Arc::new(Lines))
        .dialect("/lines", "lines")
        .dialect("/stonyx", "stonyx")
        .authenticate(|_ctx, token| async move {
            match token {
                Some(t) if t.starts_with("good-") => Ok(Identity::user(t)),
                _ => Err(AuthReject::new("bad token")),
            }
        })
        // Stelar clients stay anonymous; the dialects authenticate in their own way.
        .configure(|c| c.auth.mode = AuthMode::Off)
        .transform(|t| {
            (t.event == "secret").then(|| ("redacted".to_owned(), Json::string(t.dialect)))
        })
        .on_leave(move |_ctx, room| {
            if room == "lobby" {
                leaves.fetch_add(1, Ordering::SeqCst);
            }
        })
        .on_request("hello", |_ctx, _| async move { Ok(Json::string("hi")) })
        .skip_auth()
        .on_request("auth", |_ctx, data| async move {
            let v: serde_json::Value = data.parse()?;
            Ok(if v["authKey"] == "k" {
                Json::string("success")
            } else {
                Json::null()
            })
        })
        .on_request("whoareyou", |ctx, _| async move {
            Ok(Json::string(&ctx.dialect()))
        })
        .start()
        .expect("server starts")
}

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str) -> Stream {
    within("connect", tokio_tungstenite::connect_async(url))
        .await
        .expect("connects")
        .0
}

async fn say(ws: &mut Stream, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

async fn line(ws: &mut Stream) -> String {
    loop {
        match within("a message", ws.next()).await {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedders_dialect_beside_stelar_and_stonyx() {
    let leaves = Arc::new(AtomicUsize::new(0));
    let running = start(leaves.clone());
    let addr = running.ws_addr();

    let mut a = open(&format!("ws://{addr}/lines")).await;
    say(&mut a, "ping").await;
    assert_eq!(line(&mut a).await, "pong", "answered before auth");
    say(&mut a, "join lobby").await;
    assert_eq!(line(&mut a).await, "error not_authenticated");
    say(&mut a, "auth nope").await;
    assert_eq!(line(&mut a).await, "denied bad token");
    say(&mut a, "auth good-a").await;
    assert_eq!(line(&mut a).await, "welcome good-a");
    say(&mut a, "join lobby").await;
    assert_eq!(line(&mut a).await, "joined lobby");

    // A stelar member joins: the dialect client hears of it (relay.member_events).
    let mut s = Ws::connect(&format!("ws://{addr}/chat")).await;
    s.join("lobby").await;
    let joined = line(&mut a).await;
    assert!(joined.starts_with("lobby member-joined {"), "{joined}");
    let v: serde_json::Value =
        serde_json::from_str(joined.trim_start_matches("lobby member-joined ")).unwrap();
    assert_eq!(v["room"], "lobby");
    assert_eq!(v["user"], serde_json::Value::Null);

    // stelar publishes: the line client gets it in its own shape; the transform rewrites
    // `secret` for it alone.
    s.emit(
        "publish",
        json!({"room": "lobby", "event": "chat", "data": {"t": 1}}),
    )
    .await;
    assert_eq!(line(&mut a).await, r#"lobby chat {"t":1}"#);
    s.emit(
        "publish",
        json!({"room": "lobby", "event": "secret", "data": "x"}),
    )
    .await;
    assert_eq!(line(&mut a).await, r#"lobby redacted "lines""#);

    // The line client publishes through the relay: the stelar member receives the event.
    say(&mut a, "say lobby hello").await;
    assert_eq!(s.recv().await, json!({"event": "line", "data": "hello"}));

    // Leaving: confirmed, the stelar member told, the leave hook run.
    say(&mut a, "leave lobby").await;
    assert_eq!(line(&mut a).await, "left lobby");
    let left = s.recv().await;
    assert_eq!(left["event"], "member-left");
    assert_eq!(left["data"]["user"], "good-a");
    assert_eq!(leaves.load(Ordering::SeqCst), 1);

    // stonyx: a skip_auth request before auth, the app's own auth handler, then a request
    // whose handler reads the connection's dialect.
    let mut st = open(&format!("ws://{addr}/stonyx")).await;
    say(&mut st, r#"{"request":"hello"}"#).await;
    assert_eq!(
        line(&mut st).await,
        r#"{"request":"hello","response":"hi"}"#
    );
    say(&mut st, r#"{"request":"auth","data":{"authKey":"k"}}"#).await;
    assert_eq!(
        line(&mut st).await,
        r#"{"request":"auth","response":"success"}"#
    );
    say(&mut st, r#"{"request":"whoareyou"}"#).await;
    assert_eq!(
        line(&mut st).await,
        r#"{"request":"whoareyou","response":"stonyx"}"#
    );
    // A stelar client disconnecting from the lobby: the stonyx client is not in it; the line
    // client left. Nobody hears; the hook runs for the stelar client's room too.
    drop(s);
    let mut st2 = open(&format!("ws://{addr}/stonyx")).await;
    say(&mut st2, r#"{"request":"auth","data":{"authKey":"wrong"}}"#).await;
    match within("the close", st2.next()).await {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 4003),
        other => panic!("expected close 4003, got {other:?}"),
    }
    within("the leave hook for the disconnect", async {
        while leaves.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    running.shutdown();
}

/// The rate limits count a dialect client's authentication attempts and joins as they count a
/// stelar client's messages: past the rate, an attempt is dropped and answered (once) in the
/// dialect's error shape, and it never reaches the authenticator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_count_dialect_authentication_attempts() {
    let running = Server::builder()
        .configure(|c| {
            c.host = [127, 0, 0, 1].into();
            c.port = 0;
            c.shards = 1;
            c.rate_limit.rate = Some(shardcast::config::Rate {
                count: 2,
                period_ms: 60_000,
            });
            c.rate_limit.burst = 2;
            c.rate_limit.strikes = 100;
        })
        .handle_signals(false)
        .dialect("/api/ws", "stellarstack")
        .authenticate(|_ctx, _token| async move { Err(AuthReject::new("bad token")) })
        .configure(|c| c.auth.mode = AuthMode::Off)
        .start()
        .expect("server starts");
    let mut ws = open(&format!("ws://{}/api/ws", running.ws_addr())).await;
    // One attempt at a time (an attempt while one is being checked is ignored anyway).
    let auth_error = r#"{"type":"auth_error","error":"bad token"}"#;
    for _ in 0..2 {
        say(&mut ws, r#"{"type":"auth","token":"t"}"#).await;
        assert_eq!(line(&mut ws).await, auth_error);
    }
    say(&mut ws, r#"{"type":"auth","token":"t"}"#).await;
    let limited = line(&mut ws).await;
    assert!(
        limited.starts_with(r#"{"type":"error","error":"rate limit"#),
        "{limited}"
    );
    say(&mut ws, r#"{"type":"auth","token":"t"}"#).await;
    say(&mut ws, r#"{"type":"ping"}"#).await;
    // The fourth attempt was dropped without a second answer; pings are not limited.
    assert_eq!(line(&mut ws).await, r#"{"type":"pong"}"#);
    running.shutdown();
}
