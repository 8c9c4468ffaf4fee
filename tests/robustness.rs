//! Bad input, timeouts and shutdown: every fault gets the protocol's answer (close code,
//! ERROR frame, HTTP status) and the server keeps serving everyone else.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use shardcast::protocol::stelar::FrameType;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A client that stays connected through every bad-input case below and must keep receiving.
struct Witness {
    ws: Ws,
    publisher: Ws,
    n: u64,
}

impl Witness {
    async fn new(server: &ServerProc) -> Witness {
        let mut ws = Ws::connect(&server.ws_url("/")).await;
        ws.join("witness").await;
        let publisher = Ws::connect(&server.ws_url("/")).await;
        Witness {
            ws,
            publisher,
            n: 0,
        }
    }

    /// The server still relays for others.
    async fn check(&mut self) {
        self.n += 1;
        self.publisher
            .emit(
                "publish",
                json!({"room": "witness", "event": "tick", "data": self.n}),
            )
            .await;
        assert_eq!(
            self.ws.recv().await,
            json!({"event": "tick", "data": self.n})
        );
    }
}

fn close_payload(code: u16) -> Vec<u8> {
    code.to_be_bytes().to_vec()
}

/// Runs one raw WebSocket exchange: send `bytes` after the upgrade, return the server frames
/// received until it closed the connection.
async fn ws_fault(server: &ServerProc, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let (mut s, rest) = raw_ws(server.ws, "/").await;
    s.write_all(bytes).await.unwrap();
    let got = read_until_eof(&mut s, rest).await;
    server_frames(&got)
}

fn assert_closed_with(frames: &[(u8, Vec<u8>)], code: u16) {
    // Summaries only: payloads can be megabytes.
    let summary: Vec<(u8, usize)> = frames.iter().map(|(op, p)| (*op, p.len())).collect();
    let last = frames.last().expect("a close frame");
    assert_eq!(
        last.0, 8,
        "last frame is a close; frames (opcode, len): {summary:?}"
    );
    assert_eq!(
        &last.1[..2],
        &close_payload(code)[..],
        "close code; frames: {summary:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_websocket_input_gets_the_right_close_code() {
    let server = ServerProc::start(&[
        "--shards",
        "2",
        "--max-frame-size",
        "1024",
        "--max-message-size",
        "4096",
    ]);
    let mut witness = Witness::new(&server).await;

    // Unmasked client frame: 1002 (RFC 6455 §5.1).
    let frames = ws_fault(&server, &[0x81, 0x02, b'h', b'i']).await;
    assert_closed_with(&frames, 1002);
    witness.check().await;

    // Oversize frame, refused from its header: 1009.
    let mut big = vec![0x82, 0xFE, 0x10, 0x00, 1, 2, 3, 4];
    big.extend_from_slice(&[0u8; 16]);
    assert_closed_with(&ws_fault(&server, &big).await, 1009);
    witness.check().await;

    // Message over the limit across fragments: 1009.
    let mut frags = Vec::new();
    for i in 0..5 {
        let op = if i == 0 { 2 } else { 0 };
        frags.extend(client_frame(op, &[7u8; 1000], i == 4));
    }
    assert_closed_with(&ws_fault(&server, &frags).await, 1009);
    witness.check().await;

    // Invalid UTF-8 in a text message: 1007.
    assert_closed_with(
        &ws_fault(&server, &client_frame(1, &[0xce, 0xba, 0xff], true)).await,
        1007,
    );
    witness.check().await;

    // Invalid UTF-8 detected mid-fragment (fail fast), before the message ends: 1007.
    let first = client_frame(1, &[b'a', 0xed, 0xa0, 0x80], false);
    assert_closed_with(&ws_fault(&server, &first).await, 1007);
    witness.check().await;

    // A close frame with a code that must not appear on the wire: 1002.
    assert_closed_with(
        &ws_fault(&server, &client_frame(8, &close_payload(1005), true)).await,
        1002,
    );
    // ... and a 1-byte close payload: 1002.
    assert_closed_with(&ws_fault(&server, &client_frame(8, &[3], true)).await, 1002);
    witness.check().await;

    // Reserved opcode, RSV bits, fragmented ping: 1002.
    assert_closed_with(&ws_fault(&server, &client_frame(3, b"x", true)).await, 1002);
    let mut rsv = client_frame(1, b"{}", true);
    rsv[0] |= 0x20;
    assert_closed_with(&ws_fault(&server, &rsv).await, 1002);
    assert_closed_with(
        &ws_fault(&server, &client_frame(9, b"p", false)).await,
        1002,
    );
    witness.check().await;

    // A clean close is echoed with the same code.
    let frames = ws_fault(&server, &client_frame(8, &close_payload(4000), true)).await;
    assert_eq!(frames, vec![(8, close_payload(4000))]);

    // Ping gets a pong with the same payload.
    let (mut s, _) = raw_ws(server.ws, "/").await;
    s.write_all(&client_frame(9, b"abc", true)).await.unwrap();
    s.write_all(&client_frame(8, &close_payload(1000), true))
        .await
        .unwrap();
    let frames = server_frames(&read_until_eof(&mut s, Vec::new()).await);
    assert_eq!(
        frames,
        vec![(10, b"abc".to_vec()), (8, close_payload(1000))]
    );
    witness.check().await;

    // The faults were counted.
    let (_, metrics) = http(server.ws, "GET", "/metrics", &[], "").await;
    for label in [
        "unmasked_client_frame",
        "frame_too_large",
        "message_too_large",
        "invalid_utf8",
        "invalid_close_code",
        "reserved_opcode",
    ] {
        assert!(
            metrics.contains(&format!("kind=\"{label}\"")),
            "{label} not counted:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn bad_http_and_handshakes_get_http_answers() {
    let server = ServerProc::start(&["--shards", "1", "--handshake-timeout-ms", "300"]);
    let mut witness = Witness::new(&server).await;

    // Garbage bytes: 400 and close.
    let mut s = TcpStream::connect(server.ws).await.unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        .await
        .unwrap();
    let got = String::from_utf8_lossy(&read_until_eof(&mut s, Vec::new()).await).to_string();
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    witness.check().await;

    // Wrong WebSocket version: 426 with Sec-WebSocket-Version: 13.
    let mut s = TcpStream::connect(server.ws).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n").await.unwrap();
    let got = String::from_utf8_lossy(&read_until_eof(&mut s, Vec::new()).await).to_string();
    assert!(got.starts_with("HTTP/1.1 426"), "{got}");
    assert!(got.contains("Sec-WebSocket-Version: 13"), "{got}");

    // Bad key: 400.
    let mut s = TcpStream::connect(server.ws).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let got = String::from_utf8_lossy(&read_until_eof(&mut s, Vec::new()).await).to_string();
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");

    // A head larger than the limit: 431, without waiting for the rest.
    let mut s = TcpStream::connect(server.ws).await.unwrap();
    let mut huge = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 9000));
    s.write_all(&huge).await.unwrap();
    let got = String::from_utf8_lossy(&read_until_eof(&mut s, Vec::new()).await).to_string();
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    witness.check().await;

    // A half-sent handshake is closed after the handshake timeout (300 ms), and the
    // connection's slot is released.
    let started = Instant::now();
    let mut s = TcpStream::connect(server.ws).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr")
        .await
        .unwrap();
    let got = read_until_eof(&mut s, Vec::new()).await;
    let waited = started.elapsed();
    assert!(got.is_empty(), "{got:?}");
    assert!(
        waited >= Duration::from_millis(250),
        "closed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "closed too late: {waited:?}"
    );
    // An idle socket that sends nothing at all is closed too.
    let mut s = TcpStream::connect(server.ws).await.unwrap();
    assert!(read_until_eof(&mut s, Vec::new()).await.is_empty());
    witness.check().await;
    let (_, metrics) = http(server.ws, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("reason=\"handshake_timeout\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_stelar_frames_get_error_frames() {
    let server = ServerProc::start(&["--shards", "2", "--max-frame-size", "65536"]);
    let mut witness = Witness::new(&server).await;
    let tcp = server.tcp.unwrap();

    // A lying length (over the max frame size): ERROR "Invalid frame size: n", then close,
    // decided from the header alone.
    let mut t = Tcp::connect(tcp).await;
    t.send_raw(&[0x7f, 0xff, 0xff, 0xff, 0x01, 0x00, 0x04])
        .await;
    let f = t.recv().await;
    assert_eq!(f.frame_type, FrameType::Error);
    assert_eq!(
        &f.payload[..],
        format!("Invalid frame size: {}", 0x7fff_ffffu32).as_bytes()
    );
    assert!(t.read_to_end().await.is_empty());
    witness.check().await;

    // totalLen < 7.
    let mut t = Tcp::connect(tcp).await;
    t.send_raw(&[0, 0, 0, 3, 1, 0, 0]).await;
    let f = t.recv().await;
    assert_eq!(&f.payload[..], b"Invalid frame size: 3");

    // An event length larger than the frame: ERROR "Invalid event length" (PROTOCOL.md §9).
    let mut t = Tcp::connect(tcp).await;
    t.send_raw(&[0, 0, 0, 10, 1, 0x01, 0x00, b'a', b'b', b'c'])
        .await;
    let f = t.recv().await;
    assert_eq!(f.frame_type, FrameType::Error);
    assert_eq!(&f.payload[..], b"Invalid event length");
    witness.check().await;

    // Garbage bytes: whatever the first 7 say, the answer is an ERROR frame and a close.
    let mut t = Tcp::connect(tcp).await;
    t.send_raw(b"GET / HTTP/1.1\r\n\r\n").await;
    let f = t.recv().await;
    assert_eq!(f.frame_type, FrameType::Error);
    witness.check().await;

    // A frame split into single bytes is still one frame.
    let mut t = Tcp::connect(tcp).await;
    let frame = shardcast::protocol::stelar::OutFrame::Json {
        event: "echo",
        data: b"\"x\"",
    }
    .encode()
    .unwrap();
    for byte in frame.iter() {
        t.send_raw(&[*byte]).await;
    }
    assert_eq!(t.recv_json().await, ("echo".to_owned(), json!("x")));
}

#[tokio::test]
async fn silent_clients_are_dropped_after_the_heartbeat_timeout() {
    let server = ServerProc::start(&[
        "--shards",
        "2",
        "--heartbeat-interval-ms",
        "150",
        "--heartbeat-timeout-ms",
        "500",
    ]);
    // Live clients keep reading (tungstenite answers pings as it reads; the TCP helper
    // answers PINGs), in their own tasks, until told to stop; then they must still work.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut alive = Ws::connect(&server.ws_url("/")).await;
    let mut stop = stop_rx.clone();
    let alive_task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                m = futures_util::StreamExt::next(&mut alive.inner) => {
                    assert!(matches!(m, Some(Ok(_))), "live ws client dropped: {m:?}");
                }
            }
        }
        alive.emit("echo", json!(1)).await;
        assert_eq!(alive.recv().await, json!({"event": "echo", "data": 1}));
    });
    let mut alive_tcp = Tcp::connect(server.tcp.unwrap()).await;
    let mut stop = stop_rx.clone();
    let alive_tcp_task = tokio::spawn(async move {
        // `recv` answers PINGs while it waits; no other frame is expected.
        tokio::select! {
            _ = stop.changed() => {}
            f = alive_tcp.recv() => panic!("unexpected frame {f:?}"),
        }
        alive_tcp.emit("echo", &json!(2)).await;
        assert_eq!(alive_tcp.recv_json().await, ("echo".to_owned(), json!(2)));
    });

    // A raw WebSocket client that never answers: pings arrive, then close 1001.
    let started = Instant::now();
    let (mut s, rest) = raw_ws(server.ws, "/").await;
    let frames = server_frames(&read_until_eof(&mut s, rest).await);
    let waited = started.elapsed();
    assert!(
        frames.iter().any(|(op, _)| *op == 9),
        "pinged first: {frames:?}"
    );
    assert_closed_with(&frames, 1001);
    assert!(waited >= Duration::from_millis(450), "{waited:?}");

    // A raw TCP client that never answers: PINGs, then ERROR "Heartbeat timeout" and close.
    let mut raw = TcpStream::connect(server.tcp.unwrap()).await.unwrap();
    let got = read_until_eof(&mut raw, Vec::new()).await;
    let mut buf = bytes::BytesMut::from(&got[..]);
    let d = shardcast::protocol::stelar::FrameDecoder::default();
    let mut types = Vec::new();
    let mut last = None;
    while let Ok(Some(f)) = d.decode(&mut buf) {
        types.push(f.frame_type);
        last = Some(f);
    }
    assert_eq!(types.first(), Some(&FrameType::Connect));
    assert!(types.contains(&FrameType::Ping), "{types:?}");
    let last = last.unwrap();
    assert_eq!(last.frame_type, FrameType::Error);
    assert_eq!(&last.payload[..], b"Heartbeat timeout");

    // The live clients outlived several timeouts.
    assert!(started.elapsed() > Duration::from_millis(900));
    stop_tx.send(true).unwrap();
    within("live ws", alive_task).await.unwrap();
    within("live tcp", alive_tcp_task).await.unwrap();
    let (_, metrics) = http(server.ws, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("shardcast_disconnects_total{reason=\"heartbeat_timeout\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn graceful_shutdown_closes_clients_with_1001_and_disconnect() {
    let mut server = ServerProc::start(&["--shards", "2"]);
    let mut ws = Ws::connect(&server.ws_url("/")).await;
    ws.whoami().await;
    let mut t = Tcp::connect(server.tcp.unwrap()).await;
    let status = server.terminate().expect("server exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    // WebSocket: close 1001 "Shutting down".
    let msg = within("close", futures_util::StreamExt::next(&mut ws.inner)).await;
    match msg {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1001);
            assert_eq!(&*f.reason, "Shutting down");
        }
        other => panic!("expected close 1001, got {other:?}"),
    }
    // TCP: DISCONNECT, then EOF.
    let rest = t.read_to_end().await;
    assert_eq!(rest, vec![0, 0, 0, 7, 0x08, 0, 0]);
}

/// `/echo` frames its answers to one batch of input into one buffer: a burst written at once
/// (so it is decoded as one batch) comes back whole and in order, with answers of every header
/// size, and the close (the client's, or a fault's) comes after every answer before it.
#[tokio::test]
async fn echo_answers_a_burst_in_order_and_closes_after_the_answers() {
    let server = ServerProc::start(&["--shards", "1", "--bench-endpoints"]);
    // Payloads with 2-, 4- and 10-byte server headers, text and binary, and a ping among them.
    let messages: Vec<(u8, Vec<u8>)> = (0..60)
        .map(|i| {
            let len = match i % 4 {
                0 => 5,
                1 => 125,
                2 => 126 + i,
                _ if i == 7 => 70_000,
                _ => 3000,
            };
            let op = if i % 3 == 0 { 2 } else { 1 };
            let payload: Vec<u8> = (0..len).map(|k| b'a' + ((i + k) % 26) as u8).collect();
            (op, payload)
        })
        .collect();
    let burst = |tail: &[u8]| {
        let mut bytes = Vec::new();
        for (i, (op, payload)) in messages.iter().enumerate() {
            bytes.extend(client_frame(*op, payload, true));
            if i == 30 {
                bytes.extend(client_frame(9, b"ping", true));
            }
        }
        bytes.extend_from_slice(tail);
        bytes
    };
    let check = |frames: Vec<(u8, Vec<u8>)>, code: u16| {
        let (pongs, rest): (Vec<_>, Vec<_>) = frames.into_iter().partition(|(op, _)| *op == 10);
        assert_eq!(pongs, vec![(10, b"ping".to_vec())]);
        let summary: Vec<(u8, usize)> = rest.iter().map(|(op, p)| (*op, p.len())).collect();
        assert_eq!(rest.len(), messages.len() + 1, "{summary:?}");
        for (i, (got, want)) in rest.iter().zip(&messages).enumerate() {
            assert!(got == want, "answer {i} differs: {:?}", summary[i]);
        }
        assert_closed_with(&rest, code);
    };

    // A normal close: every answer, then the close reply echoing 1000.
    let (mut s, rest) = raw_ws(server.ws, "/echo").await;
    s.write_all(&burst(&client_frame(8, &close_payload(1000), true)))
        .await
        .unwrap();
    check(server_frames(&read_until_eof(&mut s, rest).await), 1000);

    // A fault after the burst (invalid UTF-8): the answers before it still go out, then 1007.
    let (mut s, rest) = raw_ws(server.ws, "/echo").await;
    s.write_all(&burst(&client_frame(1, &[0xff, 0xfe], true)))
        .await
        .unwrap();
    check(server_frames(&read_until_eof(&mut s, rest).await), 1007);

    // Counted per message, not per batch (the counter is final: both connections have ended).
    let sent = server.metric("shardcast_messages_sent_total").await;
    assert_eq!(sent, 2 * messages.len() as u64);
}
