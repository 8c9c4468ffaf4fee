//! Protection (issue 9, item 4) against the real binary with real clients: the origin
//! allow-list (403), connections per IP (429 / TCP ERROR) and trusted proxies, handshakes per
//! IP, message rate limits answered and then enforced on WebSocket and TCP, a 50 000-message
//! flood served at the configured rate; and the library hooks in-process.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use shardcast::app::{Refusal, RejectReason, Server};
use shardcast::protocol::stelar::{FrameDecoder, FrameType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket upgrade request with extra headers over a raw socket. Returns the status, the
/// socket (still open after a 101) and the response text (head, plus the body of a refusal).
async fn upgrade(addr: SocketAddr, headers: &[(&str, &str)]) -> (u16, TcpStream, String) {
    let mut s = within("connect", TcpStream::connect(addr)).await.unwrap();
    let mut req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    within("response head", async {
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut b).await.unwrap();
            assert!(n > 0, "closed before the response head: {head:?}");
            head.push(b[0]);
        }
    })
    .await;
    let mut text = String::from_utf8(head).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    if status != 101 {
        // Refusals close the connection: read the body to the end.
        let mut body = Vec::new();
        within("refusal body", s.read_to_end(&mut body))
            .await
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&body));
    }
    (status, s, text)
}

/// A TCP connection that is refused at accept: every frame received until the server closes.
async fn tcp_refused(addr: SocketAddr) -> Vec<(FrameType, String)> {
    let mut s = within("tcp connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let mut bytes = Vec::new();
    within("tcp eof", s.read_to_end(&mut bytes)).await.unwrap();
    let mut buf = BytesMut::from(&bytes[..]);
    let decoder = FrameDecoder::default();
    let mut frames = Vec::new();
    while let Some(f) = decoder.decode(&mut buf).unwrap() {
        frames.push((
            f.frame_type,
            String::from_utf8_lossy(&f.payload).into_owned(),
        ));
    }
    frames
}

fn refused(reason: &str) -> String {
    format!("shardcast_refused_total{{reason=\"{reason}\"}}")
}

/// Polls `/metrics` until `name` reaches `at_least` (within the deadline).
async fn metric_reaches(server: &ServerProc, name: &str, at_least: u64) -> u64 {
    within(&format!("{name} >= {at_least}"), async {
        loop {
            let v = server.metric(name).await;
            if v >= at_least {
                return v;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

#[tokio::test]
async fn origins_exact_and_wildcard_others_get_403() {
    let server = ServerProc::start(&[
        "--allowed-origin",
        "https://app.example.com",
        "--allowed-origin",
        "https://*.example.org",
    ]);
    let cases = [
        (Some("https://app.example.com"), 101),
        (Some("https://APP.example.com"), 101),
        (Some("https://chat.eu.example.org"), 101),
        (Some("https://evil.example.net"), 403),
        (Some("https://example.org"), 403),
        (Some("http://app.example.com"), 403),
        // Non-browser clients send no Origin: allowed unless --require-origin.
        (None, 101),
    ];
    let mut held = Vec::new();
    for (origin, want) in cases {
        let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("Origin", *o)).collect();
        let (status, sock, text) = upgrade(server.ws, &headers).await;
        assert_eq!(status, want, "{origin:?}: {text}");
        if status == 403 {
            assert!(text.ends_with("Origin not allowed"), "{text}");
        }
        held.push(sock);
    }
    assert_eq!(server.metric(&refused("origin_not_allowed")).await, 3);
    // A real client library gets through with an allowed origin.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        server.ws_url("/"),
    )
    .unwrap();
    req.headers_mut()
        .insert("Origin", "https://x.example.org".parse().unwrap());
    let (mut ws, _) = within("ws connect", tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    ws.send(Message::Text(r#"{"event":"echo","data":1}"#.into()))
        .await
        .unwrap();
    let got = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(got.into_text().unwrap(), r#"{"event":"echo","data":1}"#);
}

#[tokio::test]
async fn require_origin_refuses_clients_without_one() {
    let server = ServerProc::start(&["--require-origin"]);
    let (status, _, text) = upgrade(server.ws, &[]).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.ends_with("Origin required"), "{text}");
    // An empty allow-list is any origin.
    let (status, _s, _) = upgrade(server.ws, &[("Origin", "https://anything.example")]).await;
    assert_eq!(status, 101);
    assert_eq!(server.metric(&refused("origin_missing")).await, 1);
}

#[tokio::test]
async fn origins_from_the_config_file_top_level_and_security_section() {
    let server = ServerProc::start_with_toml(
        "allowed_origins = [\"https://a.example\"]\n\
         [security]\nallowed_origins = [\"https://*.b.example\"]\n",
        &[],
    );
    for (origin, want) in [
        ("https://a.example", 101),
        ("https://x.b.example", 101),
        ("https://c.example", 403),
    ] {
        let (status, _s, text) = upgrade(server.ws, &[("Origin", origin)]).await;
        assert_eq!(status, want, "{origin}: {text}");
    }
}

#[tokio::test]
async fn per_ip_limit_refuses_the_next_client_on_both_ports_and_admits_after_one_closes() {
    let server = ServerProc::start(&["--max-connections-per-ip", "2"]);
    let tcp = server.tcp.unwrap();
    let mut first = Ws::connect(&server.ws_url("/")).await;
    let _second = Tcp::connect(tcp).await;
    // Counted process-wide, WebSocket and TCP together.
    let (status, _, text) = upgrade(server.ws, &[]).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("Retry-After: 1\r\n"), "{text}");
    assert!(text.ends_with("Too many connections"), "{text}");
    let frames = tcp_refused(tcp).await;
    assert_eq!(
        frames,
        [(FrameType::Error, "Too many connections".to_owned())]
    );
    assert_eq!(server.metric(&refused("per_ip_limit")).await, 2);
    // HTTP requests are not clients: /health still answers.
    let (status, _) = http(server.ws, "GET", "/health", &[], "").await;
    assert_eq!(status, 200);

    // One closes; once the server has let it go, a new client is admitted.
    first.inner.close(None).await.unwrap();
    while let Some(Ok(_)) = within("close", first.inner.next()).await {}
    within("the closed client is gone", async {
        while server
            .metric("shardcast_connections_active{transport=\"ws\"}")
            .await
            > 0
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let (status, _third, text) = upgrade(server.ws, &[]).await;
    assert_eq!(status, 101, "{text}");
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    // The test client (127.0.0.1) is the trusted proxy: each forwarded address has its own
    // limit.
    let server = ServerProc::start(&[
        "--max-connections-per-ip",
        "1",
        "--trusted-proxy",
        "127.0.0.0/8",
    ]);
    let mut held = Vec::new();
    for (h, v, want) in [
        ("X-Forwarded-For", "203.0.113.1", 101),
        ("X-Forwarded-For", "203.0.113.2, 127.0.0.1", 101),
        ("X-Real-IP", "203.0.113.3", 101),
        ("X-Forwarded-For", "203.0.113.1", 429),
        ("X-Forwarded-For", "198.51.100.9, 203.0.113.2", 429),
    ] {
        let (status, sock, text) = upgrade(server.ws, &[(h, v)]).await;
        assert_eq!(status, want, "{h}: {v}: {text}");
        held.push(sock);
    }
    // Without a header the proxy's own address is the client.
    let (status, _s, _) = upgrade(server.ws, &[]).await;
    assert_eq!(status, 101);

    // From a peer that is not a trusted proxy the headers are ignored: every client is
    // 127.0.0.1.
    let server = ServerProc::start(&[
        "--max-connections-per-ip",
        "1",
        "--trusted-proxy",
        "10.0.0.0/8",
    ]);
    let (status, _a, _) = upgrade(server.ws, &[("X-Forwarded-For", "203.0.113.1")]).await;
    assert_eq!(status, 101);
    let (status, _b, text) = upgrade(server.ws, &[("X-Forwarded-For", "203.0.113.2")]).await;
    assert_eq!(status, 429, "{text}");
}

#[tokio::test]
async fn handshake_rate_per_ip_gets_429_and_a_tcp_error() {
    let server = ServerProc::start(&["--handshake-rate-per-ip", "3/m"]);
    let mut held = Vec::new();
    for _ in 0..3 {
        let (status, s, text) = upgrade(server.ws, &[]).await;
        assert_eq!(status, 101, "{text}");
        held.push(s);
    }
    let (status, _, text) = upgrade(server.ws, &[]).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.ends_with("Too many handshakes"), "{text}");
    let frames = tcp_refused(server.tcp.unwrap()).await;
    assert_eq!(
        frames,
        [(FrameType::Error, "Too many handshakes".to_owned())]
    );
    assert_eq!(server.metric(&refused("handshake_rate")).await, 2);
    // Plain HTTP requests are not handshakes.
    let (status, _) = http(server.ws, "GET", "/health", &[], "").await;
    assert_eq!(status, 200);
}

fn echo(i: usize) -> Message {
    Message::Text(json!({"event": "echo", "data": i}).to_string())
}

/// Reads until the `rate_limited` answer; returns how many echoes came before it.
async fn echoes_until_rate_limited(ws: &mut Ws) -> usize {
    let mut echoes = 0;
    loop {
        let v = ws.recv().await;
        match v["event"].as_str() {
            Some("echo") => echoes += 1,
            Some("server:error") => {
                assert_eq!(v["data"]["code"], "rate_limited", "{v}");
                assert_eq!(v["data"]["event"], "echo", "{v}");
                return echoes;
            }
            _ => panic!("unexpected {v}"),
        }
    }
}

#[tokio::test]
async fn rate_limit_is_answered_then_enforced_with_strikes_on_websocket() {
    // Answer and drop: the client stays.
    let server = ServerProc::start(&["--rate-limit", "10/s", "--rate-burst", "5"]);
    let mut ws = Ws::connect(&server.ws_url("/")).await;
    for i in 0..50 {
        ws.inner.feed(echo(i)).await.unwrap();
    }
    ws.inner.flush().await.unwrap();
    let echoes = echoes_until_rate_limited(&mut ws).await;
    assert!((5..50).contains(&echoes), "{echoes} echoes");
    metric_reaches(&server, "shardcast_messages_received_total", 50).await;
    let dropped = server.metric(&refused("rate_limited")).await;
    assert!(dropped >= 30, "{dropped} dropped");
    // Answers never outnumber what the limit let through.
    let answered = 50 - dropped;
    let mut errors = 1;
    let mut got = echoes;
    while got < answered as usize {
        let v = ws.recv().await;
        match v["event"].as_str() {
            Some("echo") => got += 1,
            _ => errors += 1,
        }
    }
    assert!(
        errors <= answered as usize,
        "{errors} answers for {answered} let through"
    );
    assert_eq!(server.metric(&refused("rate_limit_strikes")).await, 0);

    // With strikes: cut after 3 excesses in a row, close 1008.
    let server = ServerProc::start(&[
        "--rate-limit",
        "10/s",
        "--rate-burst",
        "5",
        "--rate-limit-strikes",
        "3",
    ]);
    let mut ws = Ws::connect(&server.ws_url("/")).await;
    for i in 0..50 {
        ws.inner.feed(echo(i)).await.unwrap();
    }
    ws.inner.flush().await.unwrap();
    let echoes = echoes_until_rate_limited(&mut ws).await;
    assert!(echoes < 10, "{echoes}");
    let close = within("close 1008", async {
        loop {
            match ws.inner.next().await {
                Some(Ok(Message::Close(Some(f)))) => return f,
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert!(v["event"] == "echo" || v["data"]["code"] == "rate_limited");
                }
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason, "Rate limit exceeded");
    assert_eq!(server.metric(&refused("rate_limit_strikes")).await, 1);
    assert_eq!(
        server
            .metric("shardcast_disconnects_total{reason=\"rate_limited\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn rate_limit_is_answered_then_enforced_with_strikes_on_tcp() {
    let server = ServerProc::start(&[
        "--rate-limit",
        "10/s",
        "--rate-burst",
        "5",
        "--rate-limit-strikes",
        "3",
    ]);
    let mut tcp = Tcp::connect(server.tcp.unwrap()).await;
    let mut burst = Vec::new();
    for i in 0..50 {
        let d = i.to_string();
        burst.extend_from_slice(
            &shardcast::protocol::stelar::OutFrame::Json {
                event: "echo",
                data: d.as_bytes(),
            }
            .encode()
            .unwrap(),
        );
    }
    tcp.send_raw(&burst).await;
    let mut echoes = 0;
    loop {
        let (event, data) = tcp.recv_json().await;
        if event == "server:error" {
            assert_eq!(data["code"], "rate_limited", "{data}");
            break;
        }
        assert_eq!(event, "echo");
        echoes += 1;
    }
    assert!((5..10).contains(&echoes), "{echoes}");
    // Then the ERROR frame and the close.
    let rest = tcp.read_to_end().await;
    let mut buf = BytesMut::from(&rest[..]);
    let mut last = None;
    while let Some(f) = FrameDecoder::default().decode(&mut buf).unwrap() {
        last = Some((
            f.frame_type,
            String::from_utf8_lossy(&f.payload).into_owned(),
        ));
    }
    assert_eq!(
        last,
        Some((FrameType::Error, "Rate limit exceeded".to_owned()))
    );
    assert_eq!(server.metric(&refused("rate_limit_strikes")).await, 1);
}

#[tokio::test]
async fn a_flood_of_50000_messages_is_served_at_the_rate() {
    const FLOOD: usize = 50_000;
    const RATE: f64 = 200.0;
    let server = ServerProc::start(&["--rate-limit", "200/s"]);
    let mut receiver = Ws::connect(&server.ws_url("/")).await;
    receiver.join("r").await;
    let mut flooder = Ws::connect(&server.ws_url("/")).await;
    let started = Instant::now();
    for i in 0..FLOOD {
        let m = json!({"event": "publish", "data": {"room": "r", "event": "m", "data": i}});
        flooder
            .inner
            .feed(Message::Text(m.to_string()))
            .await
            .unwrap();
        if i % 1000 == 999 {
            flooder.inner.flush().await.unwrap();
        }
    }
    flooder.inner.flush().await.unwrap();
    // Every message of the flood has reached the server (the join was one more).
    metric_reaches(
        &server,
        "shardcast_messages_received_total",
        FLOOD as u64 + 1,
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let dropped = server.metric(&refused("rate_limited")).await as usize;
    let served = FLOOD - dropped;
    // The burst (200) plus the rate over the time the flood took, and no more.
    let bound = (RATE + RATE * elapsed).ceil() as usize + 1;
    assert!(
        served <= bound,
        "{served} served in {elapsed:.2}s; bound {bound}"
    );
    assert!(served >= 200, "{served} served: the burst passes");
    // The other member of the room receives exactly what was served.
    let mut got = 0;
    while got < served {
        let v = receiver.recv().await;
        assert_eq!(v["event"], "m", "{v}");
        got += 1;
    }
    // The flooder was told.
    let v = flooder.recv().await;
    assert_eq!(v["event"], "server:error");
    assert_eq!(v["data"]["code"], "rate_limited");
}

#[tokio::test]
async fn per_event_limits_from_the_config_file() {
    let server = ServerProc::start_with_toml("[rate_limit.events]\npublish = \"3/m\"\n", &[]);
    let mut receiver = Ws::connect(&server.ws_url("/")).await;
    receiver.join("r").await;
    let mut sender = Ws::connect(&server.ws_url("/")).await;
    for i in 0..5 {
        sender
            .emit("publish", json!({"room": "r", "event": "m", "data": i}))
            .await;
    }
    let v = sender.recv().await;
    assert_eq!(v["event"], "server:error", "{v}");
    assert_eq!(v["data"]["code"], "rate_limited");
    assert_eq!(v["data"]["event"], "publish");
    // Other events are not limited.
    sender.emit("echo", json!("still here")).await;
    assert_eq!(
        sender.recv().await,
        json!({"event": "echo", "data": "still here"})
    );
    for i in 0..3 {
        assert_eq!(receiver.recv().await, json!({"event": "m", "data": i}));
    }
    assert_eq!(server.metric(&refused("rate_limited")).await, 2);
}

#[tokio::test]
async fn library_hooks_observe_rejections_and_veto_handshakes() {
    let rejected = Arc::new(AtomicUsize::new(0));
    let seen = rejected.clone();
    let running = Server::builder()
        .configure(|c| {
            c.host = [127, 0, 0, 1].into();
            c.port = 0;
            c.shards = 1;
            c.timeouts.shutdown_timeout_ms = 2000;
            c.security.allowed_origins = vec!["https://ok.example".into()];
        })
        .handle_signals(false)
        .relay(true)
        .on_reject(move |r| {
            if r.reason == RejectReason::OriginNotAllowed && r.origin == Some("https://bad.example")
            {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        })
        .check_handshake(|h| match h.header("x-ticket") {
            Some(b"let-me-in") => Ok(()),
            _ if h.path == Some("/open") => Ok(()),
            _ => Err(Refusal::new(401, "ticket required")),
        })
        .start()
        .unwrap();
    let addr = running.ws_addr();
    let (status, _, _) = upgrade(addr, &[("Origin", "https://bad.example")]).await;
    assert_eq!(status, 403);
    assert_eq!(rejected.load(Ordering::SeqCst), 1);
    let (status, _, text) = upgrade(addr, &[]).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.ends_with("ticket required"), "{text}");
    let (status, _s, text) = upgrade(addr, &[("X-Ticket", "let-me-in")]).await;
    assert_eq!(status, 101, "{text}");
    // TCP connections pass the same vetoes: no headers, so refused with an ERROR frame.
    let frames = tcp_refused(running.tcp_addr().unwrap()).await;
    assert_eq!(frames, [(FrameType::Error, "ticket required".to_owned())]);
    drop(_s);
    running.shutdown();
    running.join().unwrap();
}

/// Python `websockets` (what a browser-like client library does): the `Origin` it sends is
/// checked, a refused handshake surfaces as HTTP 403 / 429, and a rate-limit strike-out as
/// close 1008.
const PY_CLIENT: &str = r#"
import asyncio, json, sys
import websockets
from websockets.exceptions import InvalidStatus, ConnectionClosed

async def handshake(uri, origin):
    try:
        async with websockets.connect(uri, origin=origin) as ws:
            await ws.send(json.dumps({"event": "echo", "data": origin}))
            reply = json.loads(await ws.recv())
            return "101 " + str(reply["data"])
    except InvalidStatus as e:
        return str(e.response.status_code)

async def flood(uri, origin):
    async with websockets.connect(uri, origin=origin) as ws:
        for i in range(50):
            await ws.send(json.dumps({"event": "echo", "data": i}))
        codes = []
        try:
            while True:
                m = json.loads(await ws.recv())
                if m["event"] == "server:error":
                    codes.append(m["data"]["code"])
        except ConnectionClosed as e:
            return "closed %s %s %s" % (e.rcvd.code, e.rcvd.reason, codes[:1])

async def main(uri):
    print(await handshake(uri, "https://app.example.com"), flush=True)
    print(await handshake(uri, "https://evil.example.net"), flush=True)
    print(await flood(uri, "https://app.example.com"), flush=True)

asyncio.run(main(sys.argv[1]))
"#;

#[tokio::test]
async fn python_websockets_sees_403_and_the_rate_limit_close() {
    let server = ServerProc::start(&[
        "--allowed-origin",
        "https://app.example.com",
        "--rate-limit",
        "10/s",
        "--rate-burst",
        "5",
        "--rate-limit-strikes",
        "3",
    ]);
    let url = server.ws_url("/");
    // The script's own waits are bounded by the server (replies, the close); the deadline
    // here catches a hung run.
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .args(["-c", PY_CLIENT, &url])
            .output()
    });
    let out = within("python client", run)
        .await
        .unwrap()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "101 https://app.example.com",
            "403",
            "closed 1008 Rate limit exceeded ['rate_limited']"
        ]
    );
}
