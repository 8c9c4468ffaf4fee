//! The standalone relay against real clients: rooms across shards and transports, direct
//! messages, ACKs, leave, disconnect cleanup, binary relay, the HTTP API.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use shardcast::protocol::stelar::{FrameType, OutFrame};

/// Connects WebSocket clients until both shards hold at least `per_shard` of them (the kernel
/// spreads connections over the SO_REUSEPORT listeners by hash; bounded attempts).
async fn ws_clients_on_every_shard(server: &ServerProc, per_shard: usize) -> Vec<(Ws, String)> {
    let mut out = Vec::new();
    let mut counts = vec![0usize; server.shards];
    for _ in 0..200 {
        if counts.iter().all(|c| *c >= per_shard) {
            break;
        }
        let mut ws = Ws::connect(&server.ws_url("/")).await;
        let id = ws.whoami().await;
        let shard = shard_of(&id) as usize;
        if counts[shard] < per_shard {
            counts[shard] += 1;
            out.push((ws, id));
        }
    }
    assert!(
        counts.iter().all(|c| *c >= per_shard),
        "clients per shard: {counts:?}"
    );
    out
}

async fn tcp_clients_on_every_shard(server: &ServerProc, per_shard: usize) -> Vec<Tcp> {
    let mut out = Vec::new();
    let mut counts = vec![0usize; server.shards];
    for _ in 0..200 {
        if counts.iter().all(|c| *c >= per_shard) {
            break;
        }
        let t = Tcp::connect(server.tcp.unwrap()).await;
        let shard = shard_of(&t.id) as usize;
        if counts[shard] < per_shard {
            counts[shard] += 1;
            out.push(t);
        }
    }
    assert!(
        counts.iter().all(|c| *c >= per_shard),
        "tcp clients per shard: {counts:?}"
    );
    out
}

/// WebSocket and TCP clients spread over both shards, one room, two publishers (one per
/// transport): every other member sees every publish exactly once, in order per publisher,
/// with `data` byte for byte; publishers never see their own messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_publish_reaches_every_member_once_in_order_across_shards_and_transports() {
    let server = ServerProc::start(&["--shards", "2"]);
    let mut ws = ws_clients_on_every_shard(&server, 2).await;
    let mut tcp = tcp_clients_on_every_shard(&server, 2).await;
    for (c, _) in ws.iter_mut() {
        c.join("lobby").await;
    }
    for t in tcp.iter_mut() {
        t.join("lobby").await;
    }
    const N: usize = 40;
    // Publisher A: the first WebSocket client. Publisher B: the first TCP client.
    for i in 0..N {
        let data = json!({"from": "ws", "seq": i, "text": "héllo \"world\""});
        ws[0]
            .0
            .emit(
                "publish",
                json!({"room": "lobby", "event": "chat", "data": data}),
            )
            .await;
        let d = json!({"room": "lobby", "event": "chat", "data": {"from": "tcp", "seq": i}});
        tcp[0].emit("publish", &d).await;
    }
    let check = |seen: &mut HashMap<String, usize>, v: &Value| {
        let from = v["from"].as_str().unwrap().to_owned();
        let seq = v["seq"].as_u64().unwrap() as usize;
        let next = seen.entry(from.clone()).or_insert(0);
        assert_eq!(seq, *next, "publisher {from}: out of order or duplicate");
        *next += 1;
    };
    for (i, (c, _)) in ws.iter_mut().enumerate() {
        let mut seen = HashMap::new();
        let expected = if i == 0 { N } else { 2 * N };
        for _ in 0..expected {
            let v = c.recv().await;
            assert_eq!(v["event"], "chat");
            check(&mut seen, &v["data"]);
            if v["data"]["from"] == "ws" {
                assert_eq!(v["data"]["text"], "héllo \"world\"");
            }
        }
        assert_eq!(
            seen.get("ws").copied().unwrap_or(0),
            if i == 0 { 0 } else { N }
        );
        assert_eq!(seen["tcp"], N);
    }
    for (i, t) in tcp.iter_mut().enumerate() {
        let mut seen = HashMap::new();
        let expected = if i == 0 { N } else { 2 * N };
        for _ in 0..expected {
            let (event, data) = t.recv_json().await;
            assert_eq!(event, "chat");
            check(&mut seen, &data);
        }
        assert_eq!(seen["ws"], N);
        assert_eq!(
            seen.get("tcp").copied().unwrap_or(0),
            if i == 0 { 0 } else { N }
        );
    }
    // Nothing extra arrived: a barrier echo comes back next on every client.
    for (c, _) in ws.iter_mut() {
        c.emit("echo", json!("barrier")).await;
        assert_eq!(c.recv().await, json!({"event": "echo", "data": "barrier"}));
    }
}

/// `data` is forwarded byte for byte, whitespace and key order included.
#[tokio::test]
async fn publish_forwards_data_verbatim() {
    let server = ServerProc::start(&["--shards", "1"]);
    let mut a = Ws::connect(&server.ws_url("/")).await;
    let mut b = Ws::connect(&server.ws_url("/")).await;
    a.join("r").await;
    b.send_text(r#"{"event":"publish","data":{"data": { "z":1,  "a" : [1.50, "\u00e9"] } ,"room":"r","event":"e"}}"#)
        .await;
    let raw = match within("raw", futures_util::StreamExt::next(&mut a.inner)).await {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        raw.as_str(),
        r#"{"event":"e","data":{ "z":1,  "a" : [1.50, "\u00e9"] }}"#
    );
}

/// Direct messages reach a client on the other shard, over either transport; an unknown id is
/// answered with `server:error` to the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reaches_clients_on_other_shards() {
    let server = ServerProc::start(&["--shards", "2"]);
    let mut ws = ws_clients_on_every_shard(&server, 1).await;
    let mut tcp = tcp_clients_on_every_shard(&server, 1).await;
    let ws_ids: Vec<String> = ws.iter().map(|(_, id)| id.clone()).collect();
    // Every WS client sends to every other client (WS and TCP), whichever shard.
    for (i, (c, _)) in ws.iter_mut().enumerate() {
        for (j, id) in ws_ids.iter().enumerate() {
            if i != j {
                c.emit(
                    "direct",
                    json!({"to": id, "event": "dm", "data": {"from": i}}),
                )
                .await;
            }
        }
        for t in &tcp {
            c.emit(
                "direct",
                json!({"to": t.id, "event": "dm", "data": {"from": i}}),
            )
            .await;
        }
    }
    for (j, (c, _)) in ws.iter_mut().enumerate() {
        let mut froms: Vec<u64> = Vec::new();
        for _ in 0..ws_ids.len() - 1 {
            let v = c.recv().await;
            assert_eq!(v["event"], "dm");
            froms.push(v["data"]["from"].as_u64().unwrap());
        }
        froms.sort();
        let expected: Vec<u64> = (0..ws_ids.len() as u64)
            .filter(|i| *i != j as u64)
            .collect();
        assert_eq!(froms, expected);
    }
    for t in tcp.iter_mut() {
        let mut froms = Vec::new();
        for _ in 0..ws_ids.len() {
            let (e, d) = t.recv_json().await;
            assert_eq!(e, "dm");
            froms.push(d["from"].as_u64().unwrap());
        }
        froms.sort();
        assert_eq!(froms, (0..ws_ids.len() as u64).collect::<Vec<_>>());
    }
    // A TCP client sends a direct message to a WebSocket client on the other shard.
    let target = ws
        .iter()
        .position(|(_, id)| shard_of(id) != shard_of(&tcp[0].id))
        .unwrap();
    let to = ws[target].1.clone();
    tcp[0]
        .emit(
            "direct",
            &json!({"to": to, "event": "dm", "data": "from tcp"}),
        )
        .await;
    assert_eq!(
        ws[target].0.recv().await,
        json!({"event": "dm", "data": "from tcp"})
    );

    // Gone clients: an id on the other shard whose client disconnected.
    let (gone, gone_id) = ws.pop().unwrap();
    let open_before = active_connections(&server).await;
    drop(gone);
    // Until the server has seen the disconnect, a direct message to that id is still
    // delivered (to a closing socket) and answers nothing: wait (with a deadline) for it.
    within("the disconnect seen", async {
        while active_connections(&server).await >= open_before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (c, _) = ws
        .iter_mut()
        .find(|(_, id)| shard_of(id) != shard_of(&gone_id))
        .expect("a client on the other shard");
    c.emit("direct", json!({"to": gone_id, "event": "dm", "data": 1}))
        .await;
    let v = c.recv().await;
    assert_eq!(v["event"], "server:error", "{v}");
    assert_eq!(v["data"]["code"], "unknown_client");
    assert_eq!(v["data"]["event"], "direct");
    assert_eq!(v["data"]["to"], json!(gone_id));
}

/// The server's count of open connections (`/health`).
async fn active_connections(server: &ServerProc) -> u64 {
    let (_, body) = http(server.ws, "GET", "/health", &[], "").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    v["activeConnections"].as_u64().expect("activeConnections")
}

/// ACKs on both transports: correlation ids echoed, built-ins answered; an unknown ACK name
/// falls through to the plain event.
#[tokio::test]
async fn acks_on_both_transports() {
    let server = ServerProc::start(&["--shards", "1"]);
    let mut ws = Ws::connect(&server.ws_url("/")).await;
    let v = ws
        .request("echo", "getUser", json!({"id": 7}), "getUser#1")
        .await;
    assert_eq!(
        v,
        json!({"event": "getUser", "data": {"id": 7}, "_isAck": true, "_correlationId": "getUser#1"})
    );
    let v = ws.request("time", "t", Value::Null, "time#2").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((v["data"].as_i64().unwrap() - now).abs() < 60_000);
    let v = ws.request("stats", "s", Value::Null, "stats#3").await;
    assert_eq!(v["data"]["status"], "ok");
    assert_eq!(v["data"]["wsConnections"], 1);
    // No correlation id: the reply has none either.
    ws.send(json!({"event": "x", "data": 5, "_ackName": "echo"}))
        .await;
    assert_eq!(
        ws.recv().await,
        json!({"event": "x", "data": 5, "_isAck": true})
    );
    // Unknown ACK name falls through to the plain event `echo`.
    ws.send(json!({"event": "echo", "data": "hi", "_ackName": "nope", "_correlationId": "n#1"}))
        .await;
    assert_eq!(ws.recv().await, json!({"event": "echo", "data": "hi"}));

    // TCP: PROTOCOL.md §9's ACK round trip, byte for byte.
    let mut t = Tcp::connect(server.tcp.unwrap()).await;
    t.send(OutFrame::AckReq {
        ack_name: "echo",
        event: "getUser",
        data: Some(br#"{"id":7}"#),
        correlation_id: Some("getUser#1"),
    })
    .await;
    let f = t.recv().await;
    assert_eq!(f.frame_type, FrameType::AckRes);
    assert_eq!(&f.event[..], b"echo");
    assert_eq!(
        &f.payload[..],
        br#"{"data":{"id":7},"_correlationId":"getUser#1"}"#
    );
    // whoami over TCP returns the id from CONNECT.
    t.send(OutFrame::AckReq {
        ack_name: "whoami",
        event: "whoami",
        data: None,
        correlation_id: Some("w#1"),
    })
    .await;
    let f = t.recv().await;
    let v: Value = serde_json::from_slice(&f.payload).unwrap();
    assert_eq!(v["data"], json!(t.id));
    // ACK without correlation id: the bare result (§4.4, Q19).
    t.send(OutFrame::AckReq {
        ack_name: "echo",
        event: "e",
        data: Some(b"[1,2]"),
        correlation_id: None,
    })
    .await;
    let f = t.recv().await;
    assert_eq!(&f.payload[..], b"[1,2]");
}

/// Leave stops delivery and is confirmed; leaving a room you're not in is confirmed too.
#[tokio::test]
async fn leave_stops_delivery() {
    let server = ServerProc::start(&["--shards", "2"]);
    let mut a = Ws::connect(&server.ws_url("/")).await;
    let mut b = Tcp::connect(server.tcp.unwrap()).await;
    let mut p = Ws::connect(&server.ws_url("/")).await;
    a.join("r").await;
    b.join("r").await;
    p.emit("publish", json!({"room": "r", "event": "m", "data": 1}))
        .await;
    assert_eq!(a.recv().await, json!({"event": "m", "data": 1}));
    assert_eq!(b.recv_json().await, ("m".to_owned(), json!(1)));
    a.emit("leave-room", json!("r")).await;
    assert_eq!(a.recv().await, json!({"event": "left-room", "data": "r"}));
    b.send(OutFrame::Leave { room: "r" }).await;
    assert_eq!(b.recv_json().await, ("left-room".to_owned(), json!("r")));
    p.emit("publish", json!({"room": "r", "event": "m", "data": 2}))
        .await;
    a.emit("leave-room", json!("never-joined")).await;
    assert_eq!(
        a.recv().await,
        json!({"event": "left-room", "data": "never-joined"})
    );
    // b: a barrier through PING shows nothing else was queued before it.
    b.send(OutFrame::AckReq {
        ack_name: "echo",
        event: "e",
        data: Some(b"0"),
        correlation_id: Some("c"),
    })
    .await;
    assert_eq!(b.recv().await.frame_type, FrameType::AckRes);
}

/// When clients go, their rooms go, on every shard's view; counts return to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_cleans_up_rooms_and_counts() {
    let server = ServerProc::start(&["--shards", "2", "--api-key", "k"]);
    let key = [("X-API-Key", "k")];
    {
        let mut clients = ws_clients_on_every_shard(&server, 2).await;
        for (i, (c, _)) in clients.iter_mut().enumerate() {
            c.join("shared").await;
            c.join(&format!("own-{i}")).await;
        }
        let mut t = Tcp::connect(server.tcp.unwrap()).await;
        t.join("shared").await;
        let (status, body) = http(server.ws, "GET", "/api/rooms", &key, "").await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        let rooms = v["rooms"].as_array().unwrap();
        let shared = rooms.iter().find(|r| r["name"] == "shared").unwrap();
        assert_eq!(shared["members"], clients.len() + 1);
        assert_eq!(rooms.len(), clients.len() + 1);
        let (_, body) = http(server.ws, "GET", "/api/rooms/shared", &key, "").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["members"].as_array().unwrap().len(), clients.len() + 1);
        assert!(v["members"].as_array().unwrap().contains(&json!(t.id)));
    }
    // All clients dropped: wait (with a deadline) for the server to see it.
    within("cleanup", async {
        loop {
            let (_, body) = http(server.ws, "GET", "/health", &[], "").await;
            let v: Value = serde_json::from_str(&body).unwrap();
            if v["activeConnections"] == 0 && v["totalRooms"] == 0 {
                let (_, rooms) = http(server.ws, "GET", "/api/rooms", &key, "").await;
                assert_eq!(rooms, r#"{"rooms":[]}"#);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Binary relay: `ROOM:NAME` goes to the room's other members, unchanged, on both transports.
#[tokio::test]
async fn binary_messages_relay_to_rooms() {
    let server = ServerProc::start(&["--shards", "2"]);
    let mut a = Ws::connect(&server.ws_url("/")).await;
    let mut b = Tcp::connect(server.tcp.unwrap()).await;
    let mut sender = Ws::connect(&server.ws_url("/")).await;
    a.join("game").await;
    b.join("game").await;
    sender.join("game").await;
    let header = br#"{"event":"game:move"}"#;
    let mut msg = (header.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(header);
    msg.extend_from_slice(&[0, 1, 2, 255]);
    futures_util::SinkExt::send(
        &mut sender.inner,
        tokio_tungstenite::tungstenite::Message::Binary(msg),
    )
    .await
    .unwrap();
    let got = a.recv_binary().await;
    let server_header = br#"{"event":"game:move","_binary":true}"#;
    let mut expected = (server_header.len() as u32).to_be_bytes().to_vec();
    expected.extend_from_slice(server_header);
    expected.extend_from_slice(&[0, 1, 2, 255]);
    assert_eq!(got, expected);
    let f = b.recv().await;
    assert_eq!(f.frame_type, FrameType::Binary);
    assert_eq!(&f.event[..], b"game:move");
    assert_eq!(&f.payload[..], &[0, 1, 2, 255]);
    // And from TCP to WebSocket.
    b.send(OutFrame::Binary {
        event: "game:state",
        payload: &[9, 9],
    })
    .await;
    let got = a.recv_binary().await;
    assert!(got.ends_with(&[9, 9]));
    // A binary event that names no room is an error to the sender.
    b.send(OutFrame::Binary {
        event: "noroom",
        payload: &[1],
    })
    .await;
    let (e, d) = b.recv_json().await;
    assert_eq!(e, "server:error");
    assert_eq!(d["code"], "unknown_event");
}

/// Unknown events and malformed envelopes get `server:error`, on both transports.
#[tokio::test]
async fn errors_are_answered_not_silent() {
    let server = ServerProc::start(&["--shards", "1"]);
    let mut ws = Ws::connect(&server.ws_url("/")).await;
    ws.emit("no-such-event", json!(1)).await;
    let v = ws.recv().await;
    assert_eq!(v["event"], "server:error");
    assert_eq!(v["data"]["code"], "unknown_event");
    assert_eq!(v["data"]["event"], "no-such-event");
    for bad in [
        "not json",
        "null",
        "[1,2]",
        r#"{"data":1}"#,
        r#"{"event":""}"#,
    ] {
        ws.send_text(bad).await;
        let v = ws.recv().await;
        assert_eq!(v["data"]["code"], "invalid_message", "for {bad}");
    }
    ws.emit(
        "publish",
        json!({"room": "r", "event": "bad name!", "data": 1}),
    )
    .await;
    assert_eq!(ws.recv().await["data"]["code"], "invalid_event_name");
    ws.emit("publish", json!({"event": "e"})).await;
    assert_eq!(ws.recv().await["data"]["code"], "invalid_room");
    ws.emit("direct", json!({"to": "nobody", "event": "e"}))
        .await;
    assert_eq!(ws.recv().await["data"]["code"], "invalid_data");

    let mut t = Tcp::connect(server.tcp.unwrap()).await;
    t.send(OutFrame::Raw {
        frame_type: FrameType::Json,
        event: b"chat",
        payload: b"{not json",
    })
    .await;
    let (e, d) = t.recv_json().await;
    assert_eq!(e, "server:error");
    assert_eq!(d["code"], "invalid_message");
    t.emit("mystery", &json!(1)).await;
    let (_, d) = t.recv_json().await;
    assert_eq!(d["code"], "unknown_event");
}

/// The HTTP API publishes into rooms, broadcasts, and sends to a client; the API key is
/// enforced when set; bad bodies are 400s.
#[tokio::test]
async fn http_api_publishes_and_checks_the_key() {
    let server = ServerProc::start(&["--shards", "2", "--api-key", "s3cret"]);
    let mut a = Ws::connect(&server.ws_url("/")).await;
    let mut t = Tcp::connect(server.tcp.unwrap()).await;
    a.join("news").await;
    let auth = [("Authorization", "Bearer s3cret")];
    let (status, _) = http(
        server.ws,
        "POST",
        "/api/publish",
        &[],
        r#"{"room":"news","event":"n","data":1}"#,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = http(
        server.ws,
        "POST",
        "/api/publish",
        &[("X-API-Key", "wrong")],
        "{}",
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = http(
        server.ws,
        "POST",
        "/api/publish",
        &auth,
        r#"{"room":"news","event":"n","data":{"k":[1]}}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (202, r#"{"ok":true}"#));
    assert_eq!(a.recv().await, json!({"event": "n", "data": {"k": [1]}}));
    let (status, _) = http(
        server.ws,
        "POST",
        "/api/broadcast",
        &[("X-API-Key", "s3cret")],
        r#"{"event":"all","data":"x"}"#,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(a.recv().await, json!({"event": "all", "data": "x"}));
    assert_eq!(t.recv_json().await, ("all".to_owned(), json!("x")));
    let body = format!(r#"{{"to":"{}","event":"you","data":null}}"#, t.id);
    let (status, _) = http(server.ws, "POST", "/api/send", &auth, &body).await;
    assert_eq!(status, 202);
    assert_eq!(t.recv_json().await, ("you".to_owned(), Value::Null));
    for bad in [
        "",
        "[]",
        r#"{"room":"news"}"#,
        r#"{"room":"news","event":"bad event"}"#,
    ] {
        let (status, body) = http(server.ws, "POST", "/api/publish", &auth, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"error\""));
    }
    let (status, _) = http(server.ws, "GET", "/api/publish", &auth, "").await;
    assert_eq!(status, 405);
    let (status, _) = http(server.ws, "GET", "/nope", &[], "").await;
    assert_eq!(status, 404);
    // /health and /metrics need no key.
    let (status, body) = http(server.ws, "GET", "/health?x=1", &[], "").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["activeConnections"], 2);
    let (status, body) = http(server.ws, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("shardcast_connections_active{transport=\"tcp\"} 1"),
        "{body}"
    );
}

/// `--max-connections`: a client over the limit gets the 101, then close 1008 "Server full"
/// (PROTOCOL.md §7.3); TCP gets an ERROR frame.
#[tokio::test]
async fn max_connections_refuses_with_1008() {
    let server = ServerProc::start(&["--shards", "2", "--max-connections", "2"]);
    let mut a = Ws::connect(&server.ws_url("/")).await;
    let _b = Tcp::connect(server.tcp.unwrap()).await;
    a.whoami().await;
    let (mut s, rest) = raw_ws(server.ws, "/").await;
    let got = read_until_eof(&mut s, rest).await;
    let frames = server_frames(&got);
    let mut expected = 1008u16.to_be_bytes().to_vec();
    expected.extend_from_slice(b"Server full");
    assert_eq!(frames, vec![(8, expected)]);
    let mut t = Tcp::connect(server.tcp.unwrap()).await;
    let f = t.recv().await;
    assert_eq!(f.frame_type, FrameType::Error);
    assert_eq!(&f.payload[..], b"Server full");
}
