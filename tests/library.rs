//! The library API in-process: handlers, async ACKs, middleware, hooks, binary handlers,
//! disconnects, and a panicking handler that must not take the shard down.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use shardcast::app::{AckError, Json, Reject, Server};

fn start() -> shardcast::server::Running {
    Server::builder()
        .configure(|c| {
            c.host = [127, 0, 0, 1].into();
            c.port = 0;
            c.shards = 2;
        })
        .handle_signals(false)
        .middleware(|ctx| async move {
            if ctx.request().is_some() {
                let token = ctx.query("token");
                if token.as_deref() != Some("ok") {
                    return Err(Reject {
                        code: 4001,
                        reason: "bad token".into(),
                    });
                }
                let ua = ctx.header("user-agent").unwrap_or_default();
                ctx.set_meta("ua", String::from_utf8_lossy(&ua).into_owned());
            }
            ctx.set_meta("user", format!("u-{}", ctx.id()));
            Ok(())
        })
        .on_connect(|ctx| async move {
            let _ = ctx.emit_value(
                "welcome",
                &json!({"id": ctx.id().to_string(), "user": ctx.meta("user")}),
            );
        })
        .on_disconnect(|ctx| async move {
            let _ = ctx
                .server()
                .to("watchers")
                .emit("gone", &Json::string(&ctx.id().to_string()));
        })
        .on("shout", |ctx, data| async move {
            let _ = ctx.broadcast("shouted", &data.to_json().unwrap_or_else(Json::null));
        })
        .on("say", |ctx, data| async move {
            let v: Value = data.parse().unwrap();
            let room = v["room"].as_str().unwrap().to_owned();
            let _ = ctx.to(&room).emit("said", &Json::from_value(&v["text"]));
            let _ = ctx.emit("rooms", &Json::from_value(&ctx.rooms()));
        })
        .on("tell", |ctx, data| async move {
            let v: Value = data.parse().unwrap();
            let to = shardcast::app::ClientId::parse(v["to"].as_str().unwrap().as_bytes()).unwrap();
            let _ = ctx.to_id(to, "told", &Json::from_value(&v["text"]));
        })
        .on(
            "kick-me",
            |ctx, _| async move { ctx.disconnect(4002, "kicked") },
        )
        .on("panic", |_, _| async move { panic!("a handler bug") })
        .on_ack("add", |_ctx, data| async move {
            let v: Vec<i64> = data.parse()?;
            Ok(Json::from_value(&v.iter().sum::<i64>()))
        })
        .on_ack("slow", |_ctx, _| async move {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            Ok(Json::string("done"))
        })
        .on_ack("fail", |_ctx, _| async move {
            Err(AckError::new("nope", "it failed"))
        })
        .on_join(|_ctx, room| room != "forbidden")
        .on_binary("blob", |ctx, data| async move {
            let _ = ctx.emit_binary("blob-back", data.raw().unwrap().clone());
        })
        .start()
        .expect("server starts")
}

async fn connect(addr: SocketAddr, token: &str) -> (Ws, String) {
    let mut ws = Ws::connect(&format!("ws://{addr}/app?token={token}")).await;
    let welcome = ws.recv().await;
    assert_eq!(welcome["event"], "welcome");
    let id = welcome["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(welcome["data"]["user"], format!("u-{id}"));
    (ws, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_api_end_to_end() {
    let running = start();
    let addr = running.ws_addr();

    // Middleware refuses a bad token: 101, then close 4001 "bad token".
    let (mut s, rest) = raw_ws(addr, "/app?token=no").await;
    let frames = server_frames(&read_until_eof(&mut s, rest).await);
    let mut expected = 4001u16.to_be_bytes().to_vec();
    expected.extend_from_slice(b"bad token");
    assert_eq!(frames, vec![(8, expected)]);

    let (mut a, a_id) = connect(addr, "ok").await;
    let (mut b, b_id) = connect(addr, "ok").await;
    let mut tcp = Tcp::connect(running.tcp_addr().unwrap()).await;
    assert_eq!(tcp.recv_json().await.0, "welcome");

    // Handlers: broadcast excluding the sender, to both transports.
    a.emit("shout", json!({"hi": 1})).await;
    assert_eq!(
        b.recv().await,
        json!({"event": "shouted", "data": {"hi": 1}})
    );
    assert_eq!(
        tcp.recv_json().await,
        ("shouted".to_owned(), json!({"hi": 1}))
    );

    // Rooms: the join hook vetoes "forbidden" silently; ctx.to(room) excludes the sender.
    a.join("r1").await;
    b.emit("join-room", json!("forbidden")).await;
    b.join("r1").await;
    b.emit("say", json!({"room": "r1", "text": "hello"})).await;
    assert_eq!(a.recv().await, json!({"event": "said", "data": "hello"}));
    assert_eq!(b.recv().await, json!({"event": "rooms", "data": ["r1"]}));

    // to_id across shards (whichever shard each landed on).
    a.emit("tell", json!({"to": b_id, "text": "psst"})).await;
    assert_eq!(b.recv().await, json!({"event": "told", "data": "psst"}));
    tcp.emit("tell", &json!({"to": a_id, "text": "from tcp"}))
        .await;
    assert_eq!(a.recv().await, json!({"event": "told", "data": "from tcp"}));

    // ACKs: sync result, async result, error, bad data.
    assert_eq!(
        a.request("add", "sum", json!([1, 2, 3]), "add#1").await,
        json!({"event": "sum", "data": 6, "_isAck": true, "_correlationId": "add#1"})
    );
    assert_eq!(
        a.request("slow", "s", Value::Null, "slow#1").await["data"],
        "done"
    );
    let v = a.request("fail", "f", Value::Null, "fail#1").await;
    assert_eq!(v["event"], "server:error");
    assert_eq!(v["data"]["code"], "nope");
    let v = a.request("add", "sum", json!("not a list"), "add#2").await;
    assert_eq!(v["data"]["code"], "invalid_data");

    // Binary handler.
    let header = br#"{"event":"blob"}"#;
    let mut msg = (header.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(header);
    msg.extend_from_slice(b"\x00\x01");
    futures_util::SinkExt::send(
        &mut a.inner,
        tokio_tungstenite::tungstenite::Message::Binary(msg),
    )
    .await
    .unwrap();
    let back = a.recv_binary().await;
    assert!(back.ends_with(b"\x00\x01"));
    assert!(String::from_utf8_lossy(&back).contains("blob-back"));

    // A panicking handler is contained: the client and the shard carry on.
    a.emit("panic", Value::Null).await;
    a.emit("echo-missing", Value::Null).await;
    assert_eq!(a.recv().await["data"]["code"], "unknown_event");

    // Disconnect from a handler, and the disconnect hook.
    let (mut w, _) = connect(addr, "ok").await;
    w.join("watchers").await;
    b.emit("kick-me", Value::Null).await;
    match within("kick", futures_util::StreamExt::next(&mut b.inner)).await {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 4002);
            assert_eq!(&*f.reason, "kicked");
        }
        other => panic!("expected close 4002, got {other:?}"),
    }
    assert_eq!(w.recv().await, json!({"event": "gone", "data": b_id}));

    running.shutdown();
    tokio::task::spawn_blocking(move || running.join().unwrap())
        .await
        .unwrap();
}
