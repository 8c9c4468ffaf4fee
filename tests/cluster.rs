//! Issue 11: shardcast nodes joined by one Redis (sharded pub/sub). Real `shardcast`
//! processes, a real `redis-server` per test (the tests fail, never skip, without one), real
//! WebSocket and stelar TCP clients. Node A runs 2 shards and node B one, so messages cross
//! shards and nodes on one path. Every wait has a deadline; where delivery depends on a Redis
//! subscription that no reply confirms, the test first waits (with a deadline) for Redis to
//! report the subscriber (`PUBSUB SHARDNUMSUB` / `NUMSUB`, `psub` in `CLIENT LIST`).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use shardcast::protocol::stelar::FrameType;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "cluster-test-key-0001";
const SECRET: &str = "cluster-secret-cluster-secret-cluster!";
const AUTH: [(&str, &str); 1] = [("Authorization", "Bearer cluster-test-key-0001")];

/// How long "nothing more arrives" is watched for after a barrier.
const QUIET: Duration = Duration::from_millis(150);

/// An HS256 token for `sub`, valid for ten minutes.
fn token(sub: &str) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    hs256_token(SECRET, sub, json!({ "exp": exp }))
}

/// Flags that turn JWT authentication on (`required`): clients carry users.
const JWT: [&str; 2] = [
    "--auth=required",
    "--jwt-secret=cluster-secret-cluster-secret-cluster!",
];

/// One Redis, node A (`--shards 2`) and node B (`--shards 1`), both with the API key and
/// `extra`, both connected to Redis.
// Fields drop in order: the nodes stop before their Redis does.
struct Cluster {
    a: ServerProc,
    b: ServerProc,
    redis: RedisProc,
}

impl Cluster {
    async fn start(extra: &[&str]) -> Cluster {
        Self::start_with_toml("", extra).await
    }

    /// With a TOML file too (`toml` empty: none).
    async fn start_with_toml(toml: &str, extra: &[&str]) -> Cluster {
        let redis = RedisProc::start();
        let node = |id: &str, shards: &str| {
            let mut args = vec!["--shards", shards, "--api-key", KEY];
            args.extend_from_slice(extra);
            if toml.is_empty() {
                start_node(&redis, id, &args)
            } else {
                start_node_with_toml(&redis, id, toml, &args)
            }
        };
        let a = node("node-a", "2");
        let b = node("node-b", "1");
        let c = Cluster { a, b, redis };
        c.connected().await;
        c
    }

    /// Waits until both nodes report `shardcast_cluster_connected 1`.
    async fn connected(&self) {
        self.a.wait_metric("shardcast_cluster_connected", 1).await;
        self.b.wait_metric("shardcast_cluster_connected", 1).await;
    }

    /// Waits until Redis reports at least `n` subscribers of the sharded channel.
    async fn shard_subscribers(&self, channel: &str, n: u64) {
        self.redis
            .wait_count(&format!("SHARDNUMSUB {channel}"), n, |r| {
                r.shard_subscribers(channel)
            })
            .await;
    }
}

/// A connection of either transport, with its client id.
enum Conn {
    Ws(Box<Ws>),
    Tcp(Tcp),
}

struct Client {
    conn: Conn,
    id: String,
}

impl Client {
    /// A WebSocket client (its id from `whoami`).
    async fn ws(node: &ServerProc) -> Client {
        let mut ws = Ws::connect(&node.ws_url("/")).await;
        let id = ws.whoami().await;
        Client {
            conn: Conn::Ws(Box::new(ws)),
            id,
        }
    }

    /// A WebSocket client on `shard` of `node` (bounded retries: the kernel spreads
    /// connections over the shards' listeners by hash).
    async fn ws_on_shard(node: &ServerProc, shard: u16) -> Client {
        for _ in 0..200 {
            let c = Client::ws(node).await;
            if shard_of(&c.id) == shard {
                return c;
            }
        }
        panic!("no WebSocket connection landed on shard {shard} in 200 attempts");
    }

    /// A stelar TCP client (its id from CONNECT).
    async fn tcp(node: &ServerProc) -> Client {
        let t = Tcp::connect(node.tcp.expect("a TCP port")).await;
        Client {
            id: t.id.clone(),
            conn: Conn::Tcp(t),
        }
    }

    /// A WebSocket client authenticated as `user` (`auth-ok` names its id).
    async fn ws_user(node: &ServerProc, user: &str) -> Client {
        let mut ws = Ws::connect_bearer(&node.ws_url("/"), &token(user)).await;
        let v = ws.recv().await;
        assert_eq!(v["event"], "auth-ok", "{v}");
        assert_eq!(v["data"]["user"], user, "{v}");
        Client {
            id: v["data"]["id"].as_str().unwrap().to_owned(),
            conn: Conn::Ws(Box::new(ws)),
        }
    }

    /// A stelar TCP client authenticated as `user` (the `auth` JSON frame).
    async fn tcp_user(node: &ServerProc, user: &str) -> Client {
        let mut t = Tcp::connect(node.tcp.expect("a TCP port")).await;
        t.emit("auth", &json!({"token": token(user)})).await;
        let (e, d) = t.recv_json().await;
        assert_eq!(e, "auth-ok");
        assert_eq!(d, json!({"id": t.id, "user": user}));
        Client {
            id: t.id.clone(),
            conn: Conn::Tcp(t),
        }
    }

    async fn join(&mut self, room: &str) {
        match &mut self.conn {
            Conn::Ws(ws) => ws.join(room).await,
            Conn::Tcp(t) => t.join(room).await,
        }
    }

    async fn emit(&mut self, event: &str, data: Value) {
        match &mut self.conn {
            Conn::Ws(ws) => ws.emit(event, data).await,
            Conn::Tcp(t) => t.emit(event, &data).await,
        }
    }

    async fn publish(&mut self, room: &str, event: &str, data: Value) {
        self.emit(
            "publish",
            json!({"room": room, "event": event, "data": data}),
        )
        .await;
    }

    /// The next (event, data), or `None` when nothing arrives within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<(String, Value)> {
        match &mut self.conn {
            Conn::Ws(ws) => {
                use futures_util::StreamExt;
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    let m = tokio::time::timeout_at(deadline, ws.inner.next())
                        .await
                        .ok()?;
                    match m {
                        Some(Ok(Message::Text(t))) => {
                            let v: Value = serde_json::from_str(&t).expect("JSON");
                            return Some((
                                v["event"].as_str().unwrap().to_owned(),
                                v["data"].clone(),
                            ));
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        other => panic!("expected a text message, got {other:?}"),
                    }
                }
            }
            Conn::Tcp(t) => tokio::time::timeout(wait, t.recv_json()).await.ok(),
        }
    }

    /// The next message is exactly `{"event": event, "data": data}`.
    async fn expect(&mut self, event: &str, data: Value) {
        let got = self.next_within(DEADLINE).await;
        assert_eq!(
            got,
            Some((event.to_owned(), data.clone())),
            "client {} expected {event} {data}",
            self.id
        );
    }

    /// The next message is a binary message `event` with `bytes` (a WebSocket binary
    /// envelope, or a TCP BINARY frame).
    async fn expect_binary(&mut self, event: &str, bytes: &[u8]) {
        match &mut self.conn {
            Conn::Ws(ws) => {
                let got = ws.recv_binary().await;
                let header_len = u32::from_be_bytes(got[..4].try_into().unwrap()) as usize;
                let header: Value = serde_json::from_slice(&got[4..4 + header_len]).unwrap();
                assert_eq!(header["event"], event, "{header}");
                assert_eq!(&got[4 + header_len..], bytes);
            }
            Conn::Tcp(t) => {
                let f = t.recv().await;
                assert_eq!(f.frame_type, FrameType::Binary, "{f:?}");
                assert_eq!(&f.event[..], event.as_bytes());
                assert_eq!(&f.payload[..], bytes);
            }
        }
    }

    /// The next message, as the exact text the server wrote (WebSocket) or the exact JSON
    /// payload (TCP).
    async fn recv_raw(&mut self) -> String {
        match &mut self.conn {
            Conn::Ws(ws) => ws.recv_text().await,
            Conn::Tcp(t) => {
                let f = t.recv().await;
                assert_eq!(f.frame_type, FrameType::Json, "{f:?}");
                String::from_utf8(f.payload.to_vec()).unwrap()
            }
        }
    }

    /// Nothing arrives within [`QUIET`].
    async fn expect_quiet(&mut self) {
        if let Some(m) = self.next_within(QUIET).await {
            panic!("client {} expected nothing, got {m:?}", self.id);
        }
    }
}

/// `publisher` sends `seq` {"tag","i"} for i in 1..=n to `room`; every member receives each
/// exactly once, in order, and nothing more; the publisher (a member too) gets none of its own.
async fn sequence(
    publisher: &mut Client,
    room: &str,
    members: &mut [&mut Client],
    n: u64,
    tag: &str,
) {
    for i in 1..=n {
        publisher
            .publish(room, "seq", json!({"tag": tag, "i": i}))
            .await;
    }
    for m in members.iter_mut() {
        for i in 1..=n {
            m.expect("seq", json!({"tag": tag, "i": i})).await;
        }
    }
    publisher.expect_quiet().await;
    for m in members.iter_mut() {
        m.expect_quiet().await;
    }
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The node tag a client id names: its characters 24..28.
fn tag(id: &str) -> &str {
    assert_eq!(id.len(), 36, "a 36-character client id: {id}");
    &id[24..28]
}

/// The harness itself: Redis answers, stops (connections refused), restarts empty on the same
/// port; `redis-cli` talks to it.
#[tokio::test]
async fn redis_harness_stops_and_restarts_on_the_same_port() {
    let mut redis = RedisProc::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port));
    assert_eq!(redis.cli(&["PING"]), "PONG");
    assert_eq!(redis.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(redis.cli(&["GET", "k"]), "v");
    assert_eq!(redis.shard_subscribers("shardcast:broadcast"), 0);
    redis.stop();
    assert!(!redis.answers_ping(), "stopped Redis still answers");
    let port = redis.port;
    redis.restart();
    assert_eq!(redis.port, port);
    assert!(redis.answers_ping());
    assert_eq!(
        redis.cli(&["GET", "k"]),
        "",
        "a restarted Redis starts empty"
    );
}

/// Room publishes cross nodes and shards, from WebSocket and TCP publishers, to WebSocket and
/// TCP members: each other member gets each message once, in order per publisher; nobody
/// gets their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_publish_crosses_nodes_over_websocket_and_tcp() {
    let c = Cluster::start(&[]).await;
    let mut a0 = Client::ws_on_shard(&c.a, 0).await;
    let mut a1 = Client::ws_on_shard(&c.a, 1).await;
    let mut at = Client::tcp(&c.a).await;
    let mut b0 = Client::ws(&c.b).await;
    let mut bt = Client::tcp(&c.b).await;
    for m in [&mut a0, &mut a1, &mut at, &mut b0, &mut bt] {
        m.join("lobby").await;
    }
    // joined-room comes after Redis confirmed the node's subscription.
    let subscribed = c.redis.shard_subscribers("shardcast:room:lobby");
    assert!(subscribed >= 2, "both nodes subscribed: {subscribed}");
    // A WebSocket publisher on A, then a TCP publisher on B.
    a0.publish("lobby", "chat", json!({"from": "a0", "text": "hi"}))
        .await;
    for m in [&mut a1, &mut at, &mut b0, &mut bt] {
        m.expect("chat", json!({"from": "a0", "text": "hi"})).await;
    }
    for i in 0..20 {
        bt.publish("lobby", "tick", json!(i)).await;
    }
    for m in [&mut a0, &mut a1, &mut at, &mut b0] {
        for i in 0..20 {
            m.expect("tick", json!(i)).await;
        }
    }
    // `data` crosses nodes byte for byte.
    if let Conn::Ws(ws) = &mut a0.conn {
        ws.send_text(r#"{"event":"publish","data":{"room":"lobby","event":"raw","data":{"b" : [1,  2.50]}}}"#)
            .await;
    }
    assert_eq!(
        b0.recv_raw().await,
        r#"{"event":"raw","data":{"b" : [1,  2.50]}}"#
    );
    assert_eq!(bt.recv_raw().await, r#"{"b" : [1,  2.50]}"#);
    assert_eq!(
        a1.recv_raw().await,
        r#"{"event":"raw","data":{"b" : [1,  2.50]}}"#
    );
    assert_eq!(at.recv_raw().await, r#"{"b" : [1,  2.50]}"#);
    // Binary messages to a room (`ROOM:NAME`) cross nodes too, from either transport.
    let header = br#"{"event":"lobby:move"}"#;
    let mut msg = (header.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(header);
    msg.extend_from_slice(&[0, 1, 2, 255]);
    if let Conn::Ws(ws) = &mut a0.conn {
        futures_util::SinkExt::send(&mut ws.inner, Message::Binary(msg))
            .await
            .unwrap();
    }
    for m in [&mut a1, &mut at, &mut b0, &mut bt] {
        m.expect_binary("lobby:move", &[0, 1, 2, 255]).await;
    }
    if let Conn::Tcp(t) = &mut bt.conn {
        t.send(shardcast::protocol::stelar::OutFrame::Binary {
            event: "lobby:state",
            payload: &[9, 9],
        })
        .await;
    }
    for m in [&mut a0, &mut a1, &mut at, &mut b0] {
        m.expect_binary("lobby:state", &[9, 9]).await;
    }
    for m in [&mut a0, &mut a1, &mut at, &mut b0, &mut bt] {
        m.expect_quiet().await;
    }
    assert!(c.a.metric("shardcast_cluster_published_total").await >= 1);
    assert!(c.b.metric("shardcast_cluster_received_total").await >= 1);
    assert!(c.a.metric("shardcast_cluster_received_total").await >= 20);
    // A node leaves the room's channel once its last member left (and its gauge drops by one).
    let subs = "shardcast_cluster_subscriptions";
    let b_subs = c.b.metric(subs).await;
    assert!(b_subs >= 3, "broadcast, node and room channels: {b_subs}");
    b0.emit("leave-room", json!("lobby")).await;
    b0.expect("left-room", json!("lobby")).await;
    if let Conn::Tcp(t) = &mut bt.conn {
        t.send(shardcast::protocol::stelar::OutFrame::Leave { room: "lobby" })
            .await;
    }
    bt.expect("left-room", json!("lobby")).await;
    c.redis
        .wait_until("B unsubscribed from lobby", |r| {
            r.shard_subscribers("shardcast:room:lobby") < subscribed
        })
        .await;
    assert!(
        c.redis.shard_subscribers("shardcast:room:lobby") >= 1,
        "A still has members"
    );
    c.b.wait_metric(subs, b_subs - 1).await;
}

/// Broadcasts (relay event) reach every client of every node, except the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_crosses_nodes() {
    let c = Cluster::start(&[]).await;
    c.shard_subscribers("shardcast:broadcast", 2).await;
    let mut a0 = Client::ws_on_shard(&c.a, 0).await;
    let mut a1 = Client::ws_on_shard(&c.a, 1).await;
    let mut b0 = Client::ws(&c.b).await;
    let mut bt = Client::tcp(&c.b).await;
    a0.emit("broadcast", json!({"event": "all", "data": {"n": 1}}))
        .await;
    for m in [&mut a1, &mut b0, &mut bt] {
        m.expect("all", json!({"n": 1})).await;
    }
    bt.emit("broadcast", json!({"event": "all", "data": {"n": 2}}))
        .await;
    for m in [&mut a0, &mut a1, &mut b0] {
        m.expect("all", json!({"n": 2})).await;
    }
    for m in [&mut a0, &mut a1, &mut b0, &mut bt] {
        m.expect_quiet().await;
    }
}

/// `direct` to a client id of another node, WebSocket (id from `whoami`) and TCP (id from
/// CONNECT), from either transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_to_a_client_on_another_node() {
    let c = Cluster::start(&[]).await;
    let mut a0 = Client::ws_on_shard(&c.a, 0).await;
    let mut a1 = Client::ws_on_shard(&c.a, 1).await;
    let mut at = Client::tcp(&c.a).await;
    let mut b0 = Client::ws(&c.b).await;
    let mut bt = Client::tcp(&c.b).await;
    assert_ne!(tag(&a0.id), tag(&b0.id), "each node has its own tag");
    assert_eq!(
        tag(&a0.id),
        tag(&a1.id),
        "one tag per node, whatever the shard"
    );
    assert_eq!(tag(&b0.id), tag(&bt.id));
    c.shard_subscribers(&format!("shardcast:node:{}", tag(&b0.id)), 1)
        .await;
    c.shard_subscribers(&format!("shardcast:node:{}", tag(&a0.id)), 1)
        .await;
    // A (WS) -> B (WS and TCP).
    a0.emit(
        "direct",
        json!({"to": b0.id, "event": "dm", "data": "to b0"}),
    )
    .await;
    b0.expect("dm", json!("to b0")).await;
    a0.emit(
        "direct",
        json!({"to": bt.id, "event": "dm", "data": "to bt"}),
    )
    .await;
    bt.expect("dm", json!("to bt")).await;
    // B (TCP) -> A on both shards and A's TCP client; B (WS) -> A.
    for (to, n) in [(&a0.id, 0), (&a1.id, 1), (&at.id, 2)] {
        bt.emit("direct", json!({"to": to, "event": "dm", "data": n}))
            .await;
    }
    b0.emit("direct", json!({"to": a1.id, "event": "dm", "data": 3}))
        .await;
    a0.expect("dm", json!(0)).await;
    a1.expect("dm", json!(1)).await;
    at.expect("dm", json!(2)).await;
    a1.expect("dm", json!(3)).await;
    for m in [&mut a0, &mut a1, &mut at, &mut b0, &mut bt] {
        m.expect_quiet().await;
    }
}

/// Users (JWT `sub`): `direct` with `{"user"}` and `POST /api/send {"user"}` reach every
/// connection of the user on every node, except the sending connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_to_a_user_cross_nodes() {
    let c = Cluster::start(&JWT).await;
    let mut alice_a = Client::ws_user(&c.a, "alice").await;
    let mut alice_b = Client::tcp_user(&c.b, "alice").await;
    let mut bob_b = Client::ws_user(&c.b, "bob").await;
    let mut carol_a = Client::ws_user(&c.a, "carol").await;
    c.shard_subscribers("shardcast:user:alice", 2).await;
    c.shard_subscribers("shardcast:user:bob", 1).await;
    // bob (B) -> alice: both of her connections, one per node.
    bob_b
        .emit(
            "direct",
            json!({"user": "alice", "event": "dm", "data": {"x": 1}}),
        )
        .await;
    alice_a.expect("dm", json!({"x": 1})).await;
    alice_b.expect("dm", json!({"x": 1})).await;
    // alice (A) -> alice: her other connection only, on B.
    alice_a
        .emit(
            "direct",
            json!({"user": "alice", "event": "self", "data": 2}),
        )
        .await;
    alice_b.expect("self", json!(2)).await;
    // carol (A) -> bob, who has no connection on A.
    carol_a
        .emit("direct", json!({"user": "bob", "event": "dm", "data": 3}))
        .await;
    bob_b.expect("dm", json!(3)).await;
    // The API on A: to bob (no connection on A) is forwarded; to alice reaches both.
    let (status, body) = http(
        c.a.ws,
        "POST",
        "/api/send",
        &AUTH,
        r#"{"user":"bob","event":"api","data":4}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], true, "{body}");
    assert_eq!(v["forwarded"], true, "{body}");
    bob_b.expect("api", json!(4)).await;
    let (status, body) = http(
        c.a.ws,
        "POST",
        "/api/send",
        &AUTH,
        r#"{"user":"alice","event":"api","data":5}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    alice_a.expect("api", json!(5)).await;
    alice_b.expect("api", json!(5)).await;
    // An outside publisher on the user's channel.
    let n = c.redis.cli(&[
        "SPUBLISH",
        "shardcast:user:alice",
        r#"{"event":"ext","data":6}"#,
    ]);
    assert_eq!(n, "2", "both nodes hold a connection of alice");
    alice_a.expect("ext", json!(6)).await;
    alice_b.expect("ext", json!(6)).await;
    for m in [&mut alice_a, &mut alice_b, &mut bob_b, &mut carol_a] {
        m.expect_quiet().await;
    }
}

/// The HTTP API of node A reaches clients of node B: a room whose members are all on B, a
/// client id of B (202 forwarded), a broadcast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_on_one_node_reaches_another() {
    let c = Cluster::start(&[]).await;
    let mut b0 = Client::ws(&c.b).await;
    let mut bt = Client::tcp(&c.b).await;
    b0.join("news").await;
    bt.join("news").await;
    let (status, body) = http(
        c.a.ws,
        "POST",
        "/api/publish",
        &AUTH,
        r#"{"room":"news","event":"n","data":{"k":[1]}}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    b0.expect("n", json!({"k": [1]})).await;
    bt.expect("n", json!({"k": [1]})).await;
    // A client id of B, from A: forwarded (A cannot know whether it arrives).
    c.shard_subscribers(&format!("shardcast:node:{}", tag(&bt.id)), 1)
        .await;
    let body = format!(r#"{{"to":"{}","event":"you","data":null}}"#, bt.id);
    let (status, answer) = http(c.a.ws, "POST", "/api/send", &AUTH, &body).await;
    assert_eq!(status, 202, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v, json!({"ok": true, "forwarded": true}));
    bt.expect("you", Value::Null).await;
    c.shard_subscribers("shardcast:broadcast", 2).await;
    let (status, body) = http(
        c.a.ws,
        "POST",
        "/api/broadcast",
        &[("X-API-Key", KEY)],
        r#"{"event":"all","data":"x"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    b0.expect("all", json!("x")).await;
    bt.expect("all", json!("x")).await;
    b0.expect_quiet().await;
    bt.expect_quiet().await;
}

/// A publisher on A sends 1..500 to a room with members on both shards of A and on B, over
/// both transports: every member gets each exactly once, in order; the publisher none. Then
/// a publisher on A and one on B (TCP) interleave 1..300 each: every member gets both
/// sequences whole, each in its publisher's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_across_nodes_is_exact_and_in_order() {
    let c = Cluster::start(&[]).await;
    let mut p = Client::ws_on_shard(&c.a, 0).await;
    let mut a1 = Client::ws_on_shard(&c.a, 1).await;
    let mut at = Client::tcp(&c.a).await;
    let mut b0 = Client::ws(&c.b).await;
    let mut bt = Client::tcp(&c.b).await;
    for m in [&mut p, &mut a1, &mut at, &mut b0, &mut bt] {
        m.join("seq").await;
    }
    sequence(
        &mut p,
        "seq",
        &mut [&mut a1, &mut at, &mut b0, &mut bt],
        500,
        "run",
    )
    .await;

    const N: u64 = 300;
    for i in 1..=N {
        p.publish("seq", "two", json!({"from": "p", "i": i})).await;
        bt.publish("seq", "two", json!({"from": "bt", "i": i}))
            .await;
    }
    // (client, publishers it hears from)
    for (m, from) in [
        (&mut p, &["bt"][..]),
        (&mut a1, &["p", "bt"][..]),
        (&mut at, &["p", "bt"][..]),
        (&mut b0, &["p", "bt"][..]),
        (&mut bt, &["p"][..]),
    ] {
        let mut last = std::collections::HashMap::new();
        for _ in 0..N * from.len() as u64 {
            let (event, data) = m.next_within(DEADLINE).await.expect("a message");
            assert_eq!(event, "two", "{data}");
            let who = data["from"].as_str().unwrap().to_owned();
            assert!(from.contains(&who.as_str()), "{} got its own: {data}", m.id);
            let prev = last.insert(who, data["i"].as_u64().unwrap()).unwrap_or(0);
            assert_eq!(data["i"].as_u64().unwrap(), prev + 1, "{}: {data}", m.id);
        }
        assert!(last.values().all(|i| *i == N), "{last:?}");
        m.expect_quiet().await;
    }
}

/// Redis goes away mid-test: local delivery on A never stops, messages for B are dropped and
/// counted (not buffered), joins are confirmed locally; Redis comes back on the same port:
/// both nodes reconnect, restore their subscriptions (including one made while Redis was
/// away) and cross-node delivery resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_local_delivery_and_recovers() {
    let mut c = Cluster::start_with_toml("[cluster]\nreconnect_max_ms = 400\n", &[]).await;
    let mut p = Client::ws_on_shard(&c.a, 0).await;
    let mut a1 = Client::ws_on_shard(&c.a, 1).await;
    let mut b0 = Client::ws(&c.b).await;
    let mut bt = Client::tcp(&c.b).await;
    for m in [&mut p, &mut a1, &mut b0, &mut bt] {
        m.join("r").await;
    }
    sequence(&mut p, "r", &mut [&mut a1, &mut b0, &mut bt], 50, "before").await;

    c.redis.stop();
    c.a.wait_metric("shardcast_cluster_connected", 0).await;
    c.b.wait_metric("shardcast_cluster_connected", 0).await;
    let dropped = "shardcast_cluster_dropped_total{reason=\"redis_unavailable\"}";
    let dropped_before = c.a.metric(dropped).await;
    // Local delivery (across A's shards) keeps working.
    sequence(&mut p, "r", &mut [&mut a1], 30, "during").await;
    c.a.wait_metric_where(dropped, "more than before the outage", |v| {
        v > dropped_before
    })
    .await;
    // A join on B while Redis is away is confirmed locally.
    let mut b2 = Client::ws(&c.b).await;
    b2.join("r2").await;
    // The API answers for this node alone (it cannot ask Redis), and does not hang.
    let (status, body) = http(c.a.ws, "GET", "/api/rooms/r", &AUTH, "").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(ids(&v["members"]).contains(&a1.id), "{v}");

    c.redis.restart();
    c.connected().await;
    assert!(c.a.metric("shardcast_cluster_reconnects_total").await >= 1);
    assert!(c.b.metric("shardcast_cluster_reconnects_total").await >= 1);
    // Subscriptions restored on the new Redis (nothing survived in it).
    c.shard_subscribers("shardcast:room:r", 2).await;
    c.shard_subscribers("shardcast:room:r2", 1).await;
    // Nothing published during the outage arrives on B: the first message B's clients see is
    // the first one published after the restart.
    p.publish("r2", "back", json!(1)).await;
    b2.expect("back", json!(1)).await;
    sequence(&mut p, "r", &mut [&mut a1, &mut b0, &mut bt], 100, "after").await;
    // The node and broadcast channels are back too.
    c.shard_subscribers(&format!("shardcast:node:{}", tag(&bt.id)), 1)
        .await;
    c.shard_subscribers("shardcast:broadcast", 2).await;
    p.emit("direct", json!({"to": bt.id, "event": "dm", "data": 1}))
        .await;
    bt.expect("dm", json!(1)).await;
    bt.emit("broadcast", json!({"event": "all", "data": 2}))
        .await;
    for m in [&mut p, &mut a1, &mut b0, &mut b2] {
        m.expect("all", json!(2)).await;
    }

    // A quick bounce (stopped and started at once; the nodes may not even see `connected`
    // drop): cross-node delivery comes back, probed with a deadline, then a clean run.
    c.redis.restart();
    c.shard_subscribers("shardcast:room:r", 2).await;
    probe(&mut p, "r", &mut [&mut b0, &mut a1, &mut bt]).await;
    sequence(&mut p, "r", &mut [&mut a1, &mut b0, &mut bt], 100, "bounce").await;
}

/// Publishes `probe` k = 1, 2, ... from `publisher` until `members[0]` receives one (with the
/// harness deadline), then a `barrier`; every member reads up to the barrier, skipping probes
/// (a late probe may still arrive), so the next message each sees is a fresh one.
async fn probe(publisher: &mut Client, room: &str, members: &mut [&mut Client]) {
    let deadline = Instant::now() + DEADLINE;
    let mut k = 0;
    loop {
        k += 1;
        publisher.publish(room, "probe", json!(k)).await;
        match members[0].next_within(Duration::from_millis(200)).await {
            Some((e, _)) if e == "probe" => break,
            None => assert!(
                Instant::now() < deadline,
                "no probe reached {} within {DEADLINE:?} ({k} sent)",
                members[0].id
            ),
            Some(other) => panic!("expected a probe, got {other:?}"),
        }
    }
    publisher.publish(room, "barrier", json!(k)).await;
    for m in members.iter_mut() {
        loop {
            match m.next_within(DEADLINE).await {
                Some((e, _)) if e == "probe" => continue,
                Some((e, d)) if e == "barrier" && d == json!(k) => break,
                other => panic!("{}: expected probes then the barrier, got {other:?}", m.id),
            }
        }
    }
}

/// The channel prefix (`cluster.prefix`) separates clusters sharing one Redis: a node with
/// another prefix neither receives nor sends on `shardcast:*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_separates_clusters_on_one_redis() {
    let redis = RedisProc::start();
    let a = start_node(&redis, "node-a", &["--shards", "2"]);
    let b = start_node(&redis, "node-b", &["--shards", "1"]);
    let x = start_node_with_toml(&redis, "node-x", "[cluster]\nprefix = \"other\"\n", &[]);
    for n in [&a, &b, &x] {
        n.wait_metric("shardcast_cluster_connected", 1).await;
    }
    let mut a0 = Client::ws(&a).await;
    let mut b0 = Client::ws(&b).await;
    let mut x0 = Client::ws(&x).await;
    for m in [&mut a0, &mut b0, &mut x0] {
        m.join("lobby").await;
    }
    assert_eq!(redis.shard_subscribers("shardcast:room:lobby"), 2);
    assert_eq!(redis.shard_subscribers("other:room:lobby"), 1);
    a0.publish("lobby", "chat", json!(1)).await;
    b0.expect("chat", json!(1)).await;
    let n = redis.cli(&["SPUBLISH", "other:room:lobby", r#"{"event":"o","data":2}"#]);
    assert_eq!(n, "1");
    x0.expect("o", json!(2)).await;
    a0.expect_quiet().await;
    b0.expect_quiet().await;
    x0.expect_quiet().await;
}

/// An outside publisher (`redis-cli SPUBLISH`) reaches rooms on every node and client ids via
/// `P:node:{tag}`; `exclude` and the origin `node` are honoured; a bad envelope is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_publisher_with_spublish() {
    let c = Cluster::start(&[]).await;
    let mut a0 = Client::ws_on_shard(&c.a, 0).await;
    let mut a1 = Client::ws_on_shard(&c.a, 1).await;
    let mut b0 = Client::ws(&c.b).await;
    let mut bt = Client::tcp(&c.b).await;
    for m in [&mut a0, &mut a1, &mut b0, &mut bt] {
        m.join("lobby").await;
    }
    let spublish = |channel: &str, envelope: &str| {
        let n: u64 = c
            .redis
            .cli(&["SPUBLISH", channel, envelope])
            .parse()
            .unwrap();
        assert!(n >= 1, "SPUBLISH {channel}: no subscriber");
    };
    spublish(
        "shardcast:room:lobby",
        r#"{"event":"chat","data":{"text":"hi"}}"#,
    );
    for m in [&mut a0, &mut a1, &mut b0, &mut bt] {
        m.expect("chat", json!({"text": "hi"})).await;
    }
    // An envelope carrying node-a as its origin is ignored by A (it delivered locally).
    spublish(
        "shardcast:room:lobby",
        r#"{"node":"node-a","event":"from-a","data":1}"#,
    );
    spublish(
        "shardcast:room:lobby",
        &format!(
            r#"{{"event":"ex","data":2,"exclude":["{}","{}"]}}"#,
            a1.id, bt.id
        ),
    );
    spublish("shardcast:room:lobby", r#"{"event":"end","data":3}"#);
    b0.expect("from-a", json!(1)).await;
    bt.expect("from-a", json!(1)).await;
    a0.expect("ex", json!(2)).await;
    b0.expect("ex", json!(2)).await;
    for m in [&mut a0, &mut a1, &mut b0, &mut bt] {
        m.expect("end", json!(3)).await;
    }
    // To a client id, on its node's channel.
    c.shard_subscribers(&format!("shardcast:node:{}", tag(&bt.id)), 1)
        .await;
    c.shard_subscribers(&format!("shardcast:node:{}", tag(&a1.id)), 1)
        .await;
    spublish(
        &format!("shardcast:node:{}", tag(&bt.id)),
        &format!(r#"{{"event":"dm","data":"tcp","to":"{}"}}"#, bt.id),
    );
    spublish(
        &format!("shardcast:node:{}", tag(&a1.id)),
        &format!(r#"{{"event":"dm","data":"ws","to":"{}"}}"#, a1.id),
    );
    bt.expect("dm", json!("tcp")).await;
    a1.expect("dm", json!("ws")).await;
    // A binary message to the room: a TCP BINARY frame with the event name and the bytes.
    spublish(
        "shardcast:room:lobby",
        r#"{"event":"lobby:bin","binary":"AAFoaQ=="}"#,
    );
    for m in [&mut a0, &mut a1, &mut b0, &mut bt] {
        m.expect_binary("lobby:bin", b"\x00\x01hi").await;
    }
    // A broadcast with `exclude`, then a barrier through the room.
    c.shard_subscribers("shardcast:broadcast", 2).await;
    spublish(
        "shardcast:broadcast",
        &format!(r#"{{"event":"all","data":4,"exclude":["{}"]}}"#, a0.id),
    );
    spublish("shardcast:room:lobby", r#"{"event":"end","data":5}"#);
    for m in [&mut a1, &mut b0, &mut bt] {
        m.expect("all", json!(4)).await;
    }
    for m in [&mut a0, &mut a1, &mut b0, &mut bt] {
        m.expect("end", json!(5)).await;
    }
    // Not an envelope: dropped and counted by each node that received it.
    spublish("shardcast:room:lobby", "not json");
    let bad = "shardcast_cluster_dropped_total{reason=\"bad_envelope\"}";
    c.a.wait_metric_where(bad, ">= 1", |v| v >= 1).await;
    c.b.wait_metric_where(bad, ">= 1", |v| v >= 1).await;
    for m in [&mut a0, &mut a1, &mut b0, &mut bt] {
        m.expect_quiet().await;
    }
}

/// `--redis-compat ignis`: ignis' WebSocketEmitter (classic PUBLISH) reaches rooms (with
/// `exclude`), every client, a client id and a user, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignis_compat_channels() {
    let mut extra = vec!["--redis-compat", "ignis"];
    extra.extend_from_slice(&JWT);
    let c = Cluster::start(&extra).await;
    let mut a0 = Client::ws_user(&c.a, "ua").await;
    let mut at = Client::tcp_user(&c.a, "ut").await;
    let mut b0 = Client::ws_user(&c.b, "ub").await;
    for m in [&mut a0, &mut at, &mut b0] {
        m.join("room1").await;
    }
    // One subscribing connection per node: both nodes on the room and broadcast channels,
    // two patterns (ws:client:*, ws:user:*) each.
    for channel in ["ws:room:room1", "ws:broadcast"] {
        c.redis
            .wait_count(&format!("NUMSUB {channel}"), 2, |r| r.subscribers(channel))
            .await;
    }
    c.redis
        .wait_count("pattern subscriptions (CLIENT LIST psub)", 4, |r| {
            r.client_list_sum("psub")
        })
        .await;
    let publish = |channel: &str, msg: Value| {
        let n: u64 = c
            .redis
            .cli(&["PUBLISH", channel, &msg.to_string()])
            .parse()
            .unwrap();
        assert!(n >= 1, "PUBLISH {channel}: no subscriber");
    };
    let barrier = || json!({"serverId": "ext", "type": "broadcast", "target": "", "event": "barrier", "data": 0});
    publish(
        "ws:room:room1",
        json!({"serverId": "ext", "type": "room", "target": "room1", "event": "r", "data": {"k": 1}, "exclude": [b0.id]}),
    );
    // `exclude` may be one id as a string.
    publish(
        "ws:room:room1",
        json!({"serverId": "ext", "type": "room", "target": "room1", "event": "r", "data": 2, "exclude": a0.id}),
    );
    publish("ws:broadcast", barrier());
    a0.expect("r", json!({"k": 1})).await;
    at.expect("r", json!({"k": 1})).await;
    at.expect("r", json!(2)).await;
    b0.expect("r", json!(2)).await;
    for m in [&mut a0, &mut at, &mut b0] {
        m.expect("barrier", json!(0)).await;
    }
    publish(
        &format!("ws:client:{}", b0.id),
        json!({"serverId": "ext", "type": "client", "target": b0.id, "event": "c", "data": "b0"}),
    );
    publish(
        &format!("ws:client:{}", at.id),
        json!({"serverId": "ext", "type": "client", "target": at.id, "event": "c", "data": "at"}),
    );
    publish(
        "ws:user:ua",
        json!({"serverId": "ext", "type": "user", "target": "ua", "event": "u", "data": "ua"}),
    );
    publish(
        "ws:user:ub",
        json!({"serverId": "ext", "type": "user", "target": "ub", "event": "u", "data": "ub"}),
    );
    publish("ws:broadcast", barrier());
    b0.expect("c", json!("b0")).await;
    at.expect("c", json!("at")).await;
    a0.expect("u", json!("ua")).await;
    b0.expect("u", json!("ub")).await;
    for m in [&mut a0, &mut at, &mut b0] {
        m.expect("barrier", json!(0)).await;
        m.expect_quiet().await;
    }
}

/// Presence: `GET /api/rooms` and `/api/rooms/{room}` and the relay's `members` ACK answer
/// cluster-wide; a node killed with SIGKILL vanishes from the answers within presence_ttl_ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_cluster_wide_and_a_dead_node_expires() {
    const TTL_MS: u64 = 1500;
    let toml = format!("[cluster]\npresence_ttl_ms = {TTL_MS}\n[relay]\nmembers = true\n");
    let mut c = Cluster::start_with_toml(&toml, &JWT).await;
    let mut a0 = Client::ws_user(&c.a, "alice").await;
    let mut at = Client::tcp_user(&c.a, "tom").await;
    let mut b0 = Client::ws_user(&c.b, "bob").await;
    let mut bt = Client::tcp_user(&c.b, "bert").await;
    for m in [&mut a0, &mut at, &mut b0, &mut bt] {
        m.join("p").await;
    }
    let everyone = set(&[&a0.id, &at.id, &b0.id, &bt.id]);
    let room = |node: &ServerProc| {
        let addr = node.ws;
        async move {
            let (status, body) = http(addr, "GET", "/api/rooms/p", &AUTH, "").await;
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };
    // Both nodes list every member (polled: presence is refreshed every ttl/3).
    for node in [&c.a, &c.b] {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let v = room(node).await;
            if ids(&v["members"]) == everyone {
                assert_eq!(v["room"], "p");
                let users: BTreeSet<(String, String)> = v["clients"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| {
                        (
                            c["id"].as_str().unwrap().to_owned(),
                            c["user"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect();
                let want: BTreeSet<(String, String)> = [
                    (&a0.id, "alice"),
                    (&at.id, "tom"),
                    (&b0.id, "bob"),
                    (&bt.id, "bert"),
                ]
                .iter()
                .map(|(id, u)| ((*id).clone(), (*u).to_owned()))
                .collect();
                assert_eq!(users, want, "{v}");
                break;
            }
            assert!(Instant::now() < deadline, "members on {}: {v}", node.ws);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (status, body) = http(c.a.ws, "GET", "/api/rooms", &AUTH, "").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let p = v["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "p")
        .unwrap_or_else(|| panic!("room p in {v}"));
    assert_eq!(p["members"], 4, "{v}");
    // The relay's members ACK, cluster-wide.
    let Conn::Ws(ws) = &mut a0.conn else {
        unreachable!()
    };
    let v = ws.request("members", "members", json!("p"), "m#1").await;
    assert_eq!(v["data"]["room"], "p", "{v}");
    assert_eq!(ids(&v["data"]["members"]), everyone, "{v}");
    assert_eq!(
        ids(&v["data"]["users"]),
        set(&["alice", "tom", "bob", "bert"]),
        "{v}"
    );

    // A client of B in two rooms disconnects: it leaves both, on A's answers too.
    let mut gone = Client::ws_user(&c.b, "gone").await;
    gone.join("p").await;
    gone.join("p2").await;
    let rooms_on_a = |addr| async move {
        let (status, body) = http(addr, "GET", "/api/rooms", &AUTH, "").await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_owned(),
                    r["members"].as_u64().unwrap(),
                )
            })
            .collect::<std::collections::BTreeMap<String, u64>>()
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        let rooms = rooms_on_a(c.a.ws).await;
        if rooms.get("p") == Some(&5) && rooms.get("p2") == Some(&1) {
            break;
        }
        assert!(Instant::now() < deadline, "B's new member on A: {rooms:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(gone);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let rooms = rooms_on_a(c.a.ws).await;
        if rooms.get("p") == Some(&4) && !rooms.contains_key("p2") {
            break;
        }
        assert!(Instant::now() < deadline, "B's gone member on A: {rooms:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ids(&room(&c.a).await["members"]), everyone);

    // B crashes: its members leave A's answers within presence_ttl_ms.
    c.b.kill();
    let killed = Instant::now();
    let only_a = set(&[&a0.id, &at.id]);
    loop {
        let v = room(&c.a).await;
        if ids(&v["members"]) == only_a {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_millis(TTL_MS + 1000),
            "B's members still listed {:?} after the kill: {v}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "B's members gone from A's answer {:?} after SIGKILL",
        killed.elapsed()
    );
    let (_, body) = http(c.a.ws, "GET", "/api/rooms", &AUTH, "").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let p = v["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "p");
    assert_eq!(p.unwrap()["members"], 2, "{v}");
}

/// Redis down at start-up is not an error: the node logs its cluster line, serves local
/// clients, and connects (restoring the subscriptions of rooms joined meanwhile) once Redis
/// is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_up_is_not_an_error() {
    let mut redis = RedisProc::start();
    redis.stop();
    let url = redis.url();
    let a = ServerProc::start_with(
        &["--redis", &url, "--node-id", "node-s", "--shards", "2"],
        |cmd| {
            cmd.env("SHARDCAST_LOG", "info");
        },
    );
    let line = a.expect_output("cluster node=node-s");
    assert!(line.contains(&format!("redis={url}")), "{line}");
    let tag_in_log = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tag="))
        .unwrap_or_else(|| panic!("tag= in {line}"))
        .to_owned();
    assert_eq!(a.metric("shardcast_cluster_connected").await, 0);
    // Local delivery, across A's shards, while Redis has never been seen.
    let mut a0 = Client::ws_on_shard(&a, 0).await;
    let mut a1 = Client::ws_on_shard(&a, 1).await;
    assert_eq!(tag(&a0.id), tag_in_log, "client ids carry the logged tag");
    a0.join("early").await;
    a1.join("early").await;
    sequence(&mut a0, "early", &mut [&mut a1], 20, "local").await;

    redis.restart();
    a.wait_metric("shardcast_cluster_connected", 1).await;
    let b = start_node(&redis, "node-t", &["--shards", "1", "--api-key", KEY]);
    b.wait_metric("shardcast_cluster_connected", 1).await;
    let mut b0 = Client::ws(&b).await;
    b0.join("early").await;
    redis
        .wait_count("SHARDNUMSUB shardcast:room:early", 2, |r| {
            r.shard_subscribers("shardcast:room:early")
        })
        .await;
    b0.publish("early", "from-b", json!(1)).await;
    a0.expect("from-b", json!(1)).await;
    a1.expect("from-b", json!(1)).await;
    sequence(&mut a0, "early", &mut [&mut a1, &mut b0], 50, "cluster").await;
    // A's presence, gathered while Redis was away, was written once it came: B lists A's
    // members.
    let everyone = set(&[&a0.id, &a1.id, &b0.id]);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = http(b.ws, "GET", "/api/rooms/early", &AUTH, "").await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if ids(&v["members"]) == everyone {
            break;
        }
        assert!(Instant::now() < deadline, "A's members on B: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `--max-connections-per-user` counts the user's connections on every live node: with a cap
/// of 2 and one connection on each node, a third is refused on either node (WebSocket close
/// 4003, TCP ERROR); once one closes, the user may connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_cap_counts_every_node() {
    let mut extra = vec!["--max-connections-per-user", "2"];
    extra.extend_from_slice(&JWT);
    let c = Cluster::start(&extra).await;
    let users_on = |node: &str| {
        let key = format!("shardcast:users:{node}");
        move |r: &RedisProc| r.cli(&["HGET", &key, "alice"]).parse().unwrap_or(0)
    };
    let _alice_a = Client::ws_user(&c.a, "alice").await;
    let alice_b = Client::ws_user(&c.b, "alice").await;
    c.redis
        .wait_count("alice on node-a in Redis", 1, users_on("node-a"))
        .await;
    c.redis
        .wait_count("alice on node-b in Redis", 1, users_on("node-b"))
        .await;
    let mut third = Ws::connect_bearer(&c.b.ws_url("/"), &token("alice")).await;
    assert_eq!(
        third.close_frame().await,
        (4003, "too many connections for this user".to_owned())
    );
    let mut t = Tcp::connect(c.a.tcp.unwrap()).await;
    t.emit("auth", &json!({"token": token("alice")})).await;
    let f = t.recv().await;
    assert_eq!(f.frame_type, FrameType::Error, "{f:?}");
    assert_eq!(&f.payload[..], b"too many connections for this user");
    // Another user is not affected.
    Client::ws_user(&c.b, "bob").await;
    // One of alice's connections closes: once Redis shows it, she may connect again.
    drop(alice_b);
    c.redis
        .wait_until("alice gone from node-b in Redis", |r| {
            users_on("node-b")(r) == 0
        })
        .await;
    Client::ws_user(&c.b, "alice").await;
}

/// Interest churn: a node's only member leaves and joins again, over and over, on both of
/// A's shards; after each `joined-room` a publish from B reaches it (the unsubscribe of the
/// leave never wins over the subscribe of the join). Then one client joins 100 rooms, each
/// confirmed only once subscribed (`--max-rooms-per-client 200`), and a publish from B to each
/// arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_after_leave_and_many_rooms() {
    let c = Cluster::start(&["--max-rooms-per-client", "200"]).await;
    let mut a0 = Client::ws_on_shard(&c.a, 0).await;
    let mut a1 = Client::ws_on_shard(&c.a, 1).await;
    let mut b0 = Client::ws(&c.b).await;
    for round in 0..20 {
        let m = if round % 2 == 0 { &mut a0 } else { &mut a1 };
        m.join("churn").await;
        m.emit("leave-room", json!("churn")).await;
        m.expect("left-room", json!("churn")).await;
        m.join("churn").await;
        b0.publish("churn", "r", json!(round)).await;
        m.expect("r", json!(round)).await;
        m.emit("leave-room", json!("churn")).await;
        m.expect("left-room", json!("churn")).await;
    }
    // The other shard joins while this one leaves: the node stays subscribed throughout.
    a0.join("handover").await;
    a1.join("handover").await;
    a0.emit("leave-room", json!("handover")).await;
    a0.expect("left-room", json!("handover")).await;
    b0.publish("handover", "h", json!(1)).await;
    a1.expect("h", json!(1)).await;

    let mut t = Client::tcp(&c.a).await;
    for i in 0..100 {
        t.join(&format!("many:{i}")).await;
    }
    for i in 0..100 {
        b0.publish(&format!("many:{i}"), "m", json!(i)).await;
    }
    for i in 0..100 {
        t.expect("m", json!(i)).await;
    }
    for m in [&mut a0, &mut a1, &mut b0, &mut t] {
        m.expect_quiet().await;
    }
}

/// Redis restarts under users and presence: user channels are subscribed again and each node
/// writes its presence again, so messages to a user and member lists cross nodes as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_presence_survive_a_redis_restart() {
    let toml = "[cluster]\npresence_ttl_ms = 1500\nreconnect_max_ms = 400\n";
    let mut c = Cluster::start_with_toml(toml, &JWT).await;
    let mut alice_a = Client::ws_user(&c.a, "alice").await;
    let mut alice_b = Client::tcp_user(&c.b, "alice").await;
    let mut bob_b = Client::ws_user(&c.b, "bob").await;
    for m in [&mut alice_a, &mut alice_b, &mut bob_b] {
        m.join("p").await;
    }
    let everyone = set(&[&alice_a.id, &alice_b.id, &bob_b.id]);
    let members_on_a = |c: &Cluster| {
        let addr = c.a.ws;
        async move {
            let (status, body) = http(addr, "GET", "/api/rooms/p", &AUTH, "").await;
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            ids(&v["members"])
        }
    };
    let deadline = Instant::now() + DEADLINE;
    while members_on_a(&c).await != everyone {
        assert!(Instant::now() < deadline, "presence before the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Both nodes must see the loss first: a `connected` of 1 read right after a quick restart
    // may still be the old connection's.
    c.redis.stop();
    c.a.wait_metric("shardcast_cluster_connected", 0).await;
    c.b.wait_metric("shardcast_cluster_connected", 0).await;
    c.redis.restart();
    c.connected().await;
    c.shard_subscribers("shardcast:user:alice", 2).await;
    c.shard_subscribers("shardcast:user:bob", 1).await;
    bob_b
        .emit("direct", json!({"user": "alice", "event": "dm", "data": 1}))
        .await;
    alice_a.expect("dm", json!(1)).await;
    alice_b.expect("dm", json!(1)).await;
    alice_a
        .emit("direct", json!({"user": "bob", "event": "dm", "data": 2}))
        .await;
    bob_b.expect("dm", json!(2)).await;
    // Presence is written again: A lists B's members.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = members_on_a(&c).await;
        if got == everyone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "presence after the restart: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for m in [&mut alice_a, &mut alice_b, &mut bob_b] {
        m.expect_quiet().await;
    }
}

/// A node shut down cleanly (SIGTERM) takes its presence with it at once, long before the TTL
/// (60 s here) would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_removes_presence_at_once() {
    let mut c = Cluster::start_with_toml("[cluster]\npresence_ttl_ms = 60000\n", &[]).await;
    let mut a0 = Client::ws(&c.a).await;
    let mut b0 = Client::ws(&c.b).await;
    a0.join("q").await;
    b0.join("q").await;
    let members = |addr| async move {
        let (status, body) = http(addr, "GET", "/api/rooms/q", &AUTH, "").await;
        assert_eq!(status, 200, "{body}");
        ids(&serde_json::from_str::<Value>(&body).unwrap()["members"])
    };
    let both = set(&[&a0.id, &b0.id]);
    let deadline = Instant::now() + DEADLINE;
    while members(c.a.ws).await != both {
        assert!(Instant::now() < deadline, "B's member never listed on A");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.redis.cli(&["EXISTS", "shardcast:members:node-b:q"]), "1");
    assert_ne!(c.redis.cli(&["ZSCORE", "shardcast:nodes", "node-b"]), "");
    // b0 reads on, so it answers the server's close at once (the shutdown waits for that).
    let Conn::Ws(mut ws) = b0.conn else {
        unreachable!()
    };
    let reader = tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = ws.inner.next().await {}
    });
    let status = c.b.terminate().expect("B exits on SIGTERM");
    reader.abort();
    assert!(status.success(), "{status}");
    let deadline = Instant::now() + DEADLINE;
    while members(c.a.ws).await != set(&[&a0.id]) {
        assert!(
            Instant::now() < deadline,
            "B's member still listed {DEADLINE:?} after its clean shutdown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.redis.cli(&["EXISTS", "shardcast:members:node-b:q"]), "0");
    assert_eq!(c.redis.cli(&["ZSCORE", "shardcast:nodes", "node-b"]), "");
}

/// Room names with non-ASCII characters, braces (Redis Cluster hash-tag syntax) and colons,
/// and messages from 1 kB to 900 kB, cross nodes unchanged; nothing is dropped on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_room_names_and_large_messages_cross_nodes() {
    let c = Cluster::start(&[]).await;
    let mut a0 = Client::ws_on_shard(&c.a, 0).await;
    let mut b0 = Client::ws(&c.b).await;
    let mut bt = Client::tcp(&c.b).await;
    for room in ["café ☕", "x{y}z", "a:b:c"] {
        a0.join(room).await;
        b0.join(room).await;
        a0.publish(room, "u", json!(room)).await;
        b0.expect("u", json!(room)).await;
    }
    a0.join("big").await;
    b0.join("big").await;
    bt.join("big").await;
    for size in [1000usize, 60_000, 200_000, 900_000] {
        let big = "x".repeat(size);
        a0.publish("big", "big", json!(big)).await;
        b0.expect("big", json!(big)).await;
        bt.expect("big", json!(big)).await;
    }
    for node in [&c.a, &c.b] {
        for reason in [
            "queue_full",
            "redis_unavailable",
            "publish_failed",
            "bad_envelope",
        ] {
            let name = format!("shardcast_cluster_dropped_total{{reason=\"{reason}\"}}");
            assert_eq!(node.metric(&name).await, 0, "{name} on {}", node.ws);
        }
    }
    for m in [&mut a0, &mut b0, &mut bt] {
        m.expect_quiet().await;
    }
}

/// The cluster settings also come from the environment (`SHARDCAST_REDIS`,
/// `SHARDCAST_NODE_ID`, `SHARDCAST_REDIS_COMPAT`) and from the TOML `[cluster]` section; both
/// nodes register under their ids (`P:nodes`) and exchange messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_from_the_environment_and_the_file() {
    let redis = RedisProc::start();
    let url = redis.url();
    let env_node = ServerProc::start_with(&["--shards", "1"], |cmd| {
        cmd.env("SHARDCAST_REDIS", &url)
            .env("SHARDCAST_NODE_ID", "node-env")
            .env("SHARDCAST_REDIS_COMPAT", "ignis");
    });
    let toml = format!("[cluster]\nredis = \"{url}\"\nnode_id = \"node-toml\"\n");
    let toml_node = ServerProc::start_with_toml(&toml, &["--shards", "1"]);
    for n in [&env_node, &toml_node] {
        n.wait_metric("shardcast_cluster_connected", 1).await;
    }
    for id in ["node-env", "node-toml"] {
        redis
            .wait_until(&format!("{id} in shardcast:nodes"), |r| {
                !r.cli(&["ZSCORE", "shardcast:nodes", id]).is_empty()
            })
            .await;
    }
    let mut e = Client::ws(&env_node).await;
    let mut t = Client::ws(&toml_node).await;
    e.join("cfg").await;
    t.join("cfg").await;
    e.publish("cfg", "x", json!(1)).await;
    t.expect("x", json!(1)).await;
    t.publish("cfg", "y", json!(2)).await;
    e.expect("y", json!(2)).await;
    // Only the node with the ignis setting listens on ws:room:*.
    assert_eq!(redis.subscribers("ws:room:cfg"), 1);
}

/// The library's Context reaches other nodes too: an embedded server (2 shards, its own
/// handlers, users from its middleware) joined to a `shardcast` binary node through Redis.
/// `ctx.to(room)`, `ctx.broadcast`, `ctx.to_id` and `ctx.to_user` from a handler on the
/// embedded node reach clients of the binary node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_context_reaches_other_nodes() {
    use shardcast::app::{Json, Server};
    let redis = RedisProc::start();
    let url = redis.url();
    let lib = Server::builder()
        .configure(move |c| {
            c.host = [127, 0, 0, 1].into();
            c.port = 0;
            c.shards = 2;
            c.cluster.redis = Some(url.clone());
            c.cluster.node_id = Some("node-lib".into());
        })
        .relay(true)
        .handle_signals(false)
        .middleware(|ctx| async move {
            if let Some(user) = ctx.query("user") {
                let _ = ctx.set_user(&user);
            }
            Ok(())
        })
        .on("lib", |ctx, data| async move {
            let v: Value = data.parse().unwrap();
            let d = Json::from_value(&v["data"]);
            match v["how"].as_str().unwrap() {
                "room" => {
                    let _ = ctx.to(v["room"].as_str().unwrap()).emit("lib-room", &d);
                }
                "all" => {
                    let _ = ctx.broadcast("lib-all", &d);
                }
                "id" => {
                    let id = v["to"].as_str().unwrap();
                    let id = shardcast::app::ClientId::parse(id.as_bytes()).unwrap();
                    let _ = ctx.to_id(id, "lib-id", &d);
                }
                "user" => {
                    let _ = ctx
                        .to_user(v["user"].as_str().unwrap())
                        .emit("lib-user", &d);
                }
                other => panic!("{other}"),
            }
        })
        .start()
        .expect("the embedded node starts");
    let b = start_node(&redis, "node-b", &JWT);
    b.wait_metric("shardcast_cluster_connected", 1).await;
    let lib_addr = lib.ws_addr();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, text) = http(lib_addr, "GET", "/metrics", &[], "").await;
        if text.lines().any(|l| l == "shardcast_cluster_connected 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the embedded node never connected"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut ws = Ws::connect(&format!("ws://{lib_addr}/?user=libby")).await;
    let mut b0 = Client::ws_user(&b, "bob").await;
    let mut bt = Client::tcp_user(&b, "bert").await;
    b0.join("libroom").await;
    ws.join("libroom").await;
    let lib_tag = tag(&ws.whoami().await).to_owned();
    redis
        .wait_count("broadcast subscribers", 2, |r| {
            r.shard_subscribers("shardcast:broadcast")
        })
        .await;
    redis
        .wait_count("node-lib's channel", 1, |r| {
            r.shard_subscribers(&format!("shardcast:node:{lib_tag}"))
        })
        .await;
    redis
        .wait_count("bob's channel", 1, |r| {
            r.shard_subscribers("shardcast:user:bob")
        })
        .await;
    let call = |v: Value| json!({"event": "lib", "data": v});
    ws.send(call(json!({"how": "room", "room": "libroom", "data": 1})))
        .await;
    b0.expect("lib-room", json!(1)).await;
    ws.send(call(json!({"how": "all", "data": 2}))).await;
    b0.expect("lib-all", json!(2)).await;
    bt.expect("lib-all", json!(2)).await;
    ws.send(call(json!({"how": "id", "to": bt.id, "data": 3})))
        .await;
    bt.expect("lib-id", json!(3)).await;
    ws.send(call(json!({"how": "user", "user": "bob", "data": 4})))
        .await;
    b0.expect("lib-user", json!(4)).await;
    // And back: the binary node's relay reaches the embedded node's client.
    b0.publish("libroom", "from-b", json!(5)).await;
    assert_eq!(ws.recv().await, json!({"event": "from-b", "data": 5}));
    b0.expect_quiet().await;
    bt.expect_quiet().await;
    drop((b0, bt, ws));
    drop(b);
    lib.shutdown();
    tokio::task::spawn_blocking(move || lib.join())
        .await
        .unwrap()
        .expect("the embedded node ends cleanly");
}

/// The queue toward Redis is bounded (`queue_bytes`): while Redis holds writes
/// (`CLIENT PAUSE ... WRITE`), a burst from A still reaches A's own members at once and in
/// full; what does not fit is dropped and counted, never blocking. Afterwards B has received
/// what was queued, in order, and every message is accounted for: received on B or counted
/// as dropped on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_queue_while_redis_holds_writes() {
    let c = Cluster::start_with_toml("[cluster]\nqueue_bytes = 65536\n", &[]).await;
    let mut p = Client::ws_on_shard(&c.a, 0).await;
    let mut a1 = Client::ws_on_shard(&c.a, 1).await;
    let mut b0 = Client::ws(&c.b).await;
    for m in [&mut p, &mut a1, &mut b0] {
        m.join("q").await;
    }
    let dropped = |node: &ServerProc| {
        let addr = node.ws;
        async move {
            let (_, text) = http(addr, "GET", "/metrics", &[], "").await;
            text.lines()
                .filter(|l| l.starts_with("shardcast_cluster_dropped_total"))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .sum::<u64>()
        }
    };
    assert_eq!(dropped(&c.a).await, 0);
    assert_eq!(c.redis.cli(&["CLIENT", "PAUSE", "1500", "WRITE"]), "OK");
    let paused = Instant::now();
    const N: u64 = 200;
    let pad = "x".repeat(2000);
    for i in 1..=N {
        p.publish("q", "burst", json!({"i": i, "pad": pad})).await;
    }
    // Local delivery does not wait for Redis.
    for i in 1..=N {
        a1.expect("burst", json!({"i": i, "pad": pad})).await;
    }
    let local = paused.elapsed();
    assert!(
        local < Duration::from_millis(1500),
        "local delivery took {local:?}, as long as Redis held writes"
    );
    let lost =
        c.a.wait_metric_where(
            "shardcast_cluster_dropped_total{reason=\"queue_full\"}",
            ">= 1",
            |v| v >= 1,
        )
        .await;
    assert!(lost < N, "{lost}");
    // After the pause (a write waits for its end): B gets what was queued, in order, then a
    // marker published after it.
    assert_eq!(c.redis.cli(&["SET", "after-the-pause", "1"]), "OK");
    c.connected().await;
    p.publish("q", "marker", json!(0)).await;
    a1.expect("marker", json!(0)).await;
    let mut got = Vec::new();
    loop {
        match b0.next_within(DEADLINE).await {
            Some((e, d)) if e == "burst" => got.push(d["i"].as_u64().unwrap()),
            Some((e, _)) if e == "marker" => break,
            other => panic!("expected bursts then the marker, got {other:?}"),
        }
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    let drops = dropped(&c.a).await;
    assert_eq!(
        got.len() as u64 + drops,
        N,
        "{} received on B + {drops} dropped on A ({lost} queue_full)",
        got.len()
    );
    assert!(
        !got.is_empty(),
        "what fitted in the queue went out after the pause"
    );
    eprintln!(
        "Redis held writes: {} of {N} reached B, {drops} dropped on A ({lost} queue_full)",
        got.len()
    );
    b0.expect_quiet().await;
}

/// A user's interest is per node, not per shard: with connections of alice on both of A's
/// shards, the one on shard 0 closing keeps A subscribed to her channel, and messages from B
/// still reach the one on shard 1; once that closes too, A unsubscribes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_interest_survives_one_of_two_shards_leaving() {
    let c = Cluster::start(&JWT).await;
    async fn alice_on(node: &ServerProc, shard: u16) -> Client {
        for _ in 0..200 {
            let cl = Client::ws_user(node, "alice").await;
            if shard_of(&cl.id) == shard {
                return cl;
            }
        }
        panic!("no connection of alice landed on shard {shard}");
    }
    let alice0 = alice_on(&c.a, 0).await;
    let mut alice1 = alice_on(&c.a, 1).await;
    let mut bob = Client::ws_user(&c.b, "bob").await;
    c.shard_subscribers("shardcast:user:alice", 1).await;
    drop(alice0);
    // Wait until A has seen alice0 go: the user's connection count on A drops to 1.
    c.redis
        .wait_until("alice down to one connection on node-a", |r| {
            r.cli(&["HGET", "shardcast:users:node-a", "alice"]) == "1"
        })
        .await;
    assert_eq!(c.redis.shard_subscribers("shardcast:user:alice"), 1);
    bob.emit("direct", json!({"user": "alice", "event": "dm", "data": 1}))
        .await;
    alice1.expect("dm", json!(1)).await;
    drop(alice1);
    c.redis
        .wait_until("node-a unsubscribed from alice", |r| {
            r.shard_subscribers("shardcast:user:alice") == 0
        })
        .await;
    bob.expect_quiet().await;
}

/// The bridge never waits for Redis to take a write before serving the next join: while Redis
/// holds writes (`CLIENT PAUSE ... WRITE`; subscriptions are not held), presence writes and
/// publishes wait beside the bridge's loop, so joins on A are confirmed long before the pause
/// ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_are_not_held_while_redis_holds_writes() {
    let c = Cluster::start_with_toml("", &[]).await;
    let mut p = Client::ws_on_shard(&c.a, 0).await;
    p.join("warm").await;
    assert_eq!(c.redis.cli(&["CLIENT", "PAUSE", "3000", "WRITE"]), "OK");
    let paused = Instant::now();
    // A publish and a presence write go toward the paused Redis first.
    p.publish("warm", "x", json!(1)).await;
    let mut q = Client::ws_on_shard(&c.a, 1).await;
    // Each join is its own bridge turn (subscribe, then write presence): the second must not
    // wait for the first one's presence write.
    for room in ["fresh-1", "fresh-2", "fresh-3"] {
        q.join(room).await;
    }
    let took = paused.elapsed();
    assert!(
        took < Duration::from_millis(2000),
        "the join waited {took:?} for Redis to take writes (paused for 3 s)"
    );
}

/// A second node started with an id that is already live says so (nodes sharing an id would
/// ignore each other's messages); a node with its own id does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_already_live_is_reported() {
    let c = Cluster::start(&[]).await;
    let twin = start_node(&c.redis, "node-a", &["--shards", "1"]);
    let line = twin.expect_output("already live");
    assert!(line.contains("node-a"), "{line}");
    twin.wait_metric("shardcast_cluster_connected", 1).await;
    let mut other = start_node(&c.redis, "node-c", &["--shards", "1"]);
    other.wait_metric("shardcast_cluster_connected", 1).await;
    other.terminate();
    let lines = other.output_to_end();
    assert!(
        !lines.iter().any(|l| l.contains("already live")),
        "a fresh id is not reported: {lines:?}"
    );
}
