//! The HTTP side of the WebSocket port against the real binary: the API is off unless an
//! operator turns it on, CORS only for configured origins, member lists only with the key,
//! `/api/send` answered by the shard that owns the client, `HEAD` without a body.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PUBLISH: &str = r#"{"room":"news","event":"n","data":1}"#;

#[tokio::test]
async fn the_api_is_off_unless_configured() {
    let server = ServerProc::start(&["--shards", "1"]);
    let mut member = Ws::connect(&server.ws_url("/")).await;
    member.join("news").await;
    for (method, path, body) in [
        ("POST", "/api/publish", PUBLISH),
        ("POST", "/api/broadcast", r#"{"event":"n"}"#),
        ("GET", "/api/rooms", ""),
        ("GET", "/api/rooms/news", ""),
        ("GET", "/api/stats", ""),
    ] {
        let r = http_response(
            server.ws,
            method,
            path,
            &[("Origin", "https://evil.example")],
            body,
        )
        .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert!(r.body.contains("--api-key"), "says how: {}", r.body);
        assert_eq!(r.header("Access-Control-Allow-Origin"), None);
    }
    // Nothing was published; /health still answers, without CORS for a stranger's page.
    member.emit("echo", json!("barrier")).await;
    assert_eq!(member.recv().await["data"], "barrier");
    let r = http_response(
        server.ws,
        "GET",
        "/health",
        &[("Origin", "https://evil.example")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Access-Control-Allow-Origin"), None, "{}", r.head);
    let r = http_response(
        server.ws,
        "OPTIONS",
        "/api/publish",
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
}

#[tokio::test]
async fn an_insecure_api_publishes_but_lists_no_members_and_says_so_at_start() {
    let server = ServerProc::start(&["--shards", "1", "--api-insecure"]);
    server.expect_output("HTTP API is on without a key");
    let mut member = Ws::connect(&server.ws_url("/")).await;
    member.join("news").await;
    let (status, _) = http(server.ws, "POST", "/api/publish", &[], PUBLISH).await;
    assert_eq!(status, 202);
    assert_eq!(member.recv().await, json!({"event": "n", "data": 1}));
    let (status, body) = http(server.ws, "GET", "/api/rooms", &[], "").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"news\""), "{body}");
    // Member ids are the capability for direct messages: only with a key.
    let (status, body) = http(server.ws, "GET", "/api/rooms/news", &[], "").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--api-key"), "{body}");
}

#[tokio::test]
async fn cors_headers_go_only_to_configured_origins() {
    let server = ServerProc::start(&[
        "--shards",
        "1",
        "--api-key",
        "k",
        "--api-cors-origin",
        "https://app.example",
    ]);
    let allowed = [("Origin", "https://app.example"), ("X-API-Key", "k")];
    let r = http_response(server.ws, "POST", "/api/publish", &allowed, PUBLISH).await;
    assert_eq!(r.status, 202);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("Vary"), Some("Origin"));
    let r = http_response(
        server.ws,
        "POST",
        "/api/publish",
        &[("Origin", "https://evil.example"), ("X-API-Key", "k")],
        PUBLISH,
    )
    .await;
    assert_eq!(
        r.status, 202,
        "the key is what authorises; CORS only gates browsers"
    );
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
    let r = preflight(server.ws, "https://app.example").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    assert!(r
        .header("Access-Control-Allow-Headers")
        .is_some_and(|h| h.contains("X-API-Key")));
    let r = preflight(server.ws, "https://app.example.evil").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
}

async fn preflight(addr: std::net::SocketAddr, origin: &str) -> HttpResponse {
    http_response(
        addr,
        "OPTIONS",
        "/api/publish",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    )
    .await
}

/// `/api/send` to a client that has gone is a 404 whichever shard takes the request (the
/// one that owns the id is asked), and a 202 for a connected one.
#[tokio::test]
async fn api_send_answers_404_for_a_gone_client_from_every_shard() {
    let server = ServerProc::start(&["--shards", "2", "--api-key", "k"]);
    let key = [("X-API-Key", "k")];
    // A client on each shard; one of them goes.
    let mut on_shard: Vec<Option<(Ws, String)>> = vec![None, None];
    within("a client on each shard", async {
        while on_shard.iter().any(Option::is_none) {
            let mut ws = Ws::connect(&server.ws_url("/")).await;
            let id = ws.whoami().await;
            let shard = shard_of(&id) as usize;
            if on_shard[shard].is_none() {
                on_shard[shard] = Some((ws, id));
            }
        }
    })
    .await;
    let (mut alive, alive_id) = on_shard[0].take().unwrap();
    let (gone, gone_id) = on_shard[1].take().unwrap();
    drop(gone);
    within("the server sees the client go", async {
        loop {
            let (_, body) = http(server.ws, "GET", "/health", &[], "").await;
            let v: Value = serde_json::from_str(&body).unwrap();
            if v["activeConnections"] == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Each request is a new connection, which the kernel hands to either shard: 20 of them
    // reach both (a wrong 202 used to come from the shard that does not own the id).
    for i in 0..20 {
        let gone = format!(r#"{{"to":"{gone_id}","event":"e","data":{i}}}"#);
        let (status, body) = http(server.ws, "POST", "/api/send", &key, &gone).await;
        assert_eq!(status, 404, "request {i}: {body}");
        assert!(body.contains("no client with this id"), "{body}");
        let live = format!(r#"{{"to":"{alive_id}","event":"e","data":{i}}}"#);
        let (status, _) = http(server.ws, "POST", "/api/send", &key, &live).await;
        assert_eq!(status, 202, "request {i}");
        assert_eq!(alive.recv().await, json!({"event": "e", "data": i}));
    }
}

/// Reads from `s` until `n` complete responses (heads with Content-Length bodies, or none for
/// `HEAD`s as told by `bodies`) have arrived; returns (head, body) of each. Fails if bytes
/// are left over, i.e. a response carried more than its head said.
async fn read_responses(s: &mut TcpStream, bodies: &[bool]) -> Vec<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    within("responses", async {
        let mut chunk = [0u8; 8192];
        loop {
            let mut rest = &buf[..];
            out.clear();
            for &has_body in bodies {
                let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
                    break;
                };
                let head = String::from_utf8_lossy(&rest[..end]).to_string();
                assert!(
                    head.starts_with("HTTP/1.1 "),
                    "a response starts here: {head}"
                );
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .expect("Content-Length")
                    .parse()
                    .unwrap();
                let body_len = if has_body { len } else { 0 };
                if rest.len() < end + 4 + body_len {
                    break;
                }
                out.push((head, rest[end + 4..end + 4 + body_len].to_vec()));
                rest = &rest[end + 4 + body_len..];
            }
            if out.len() == bodies.len() {
                assert!(
                    rest.is_empty(),
                    "{} bytes more than the heads said",
                    rest.len()
                );
                return;
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    out
}

#[tokio::test]
async fn head_answers_have_no_body_so_keep_alive_stays_in_step() {
    let server = ServerProc::start(&["--shards", "1"]);
    let mut s = TcpStream::connect(server.ws).await.unwrap();
    let host = server.ws;
    let req = format!(
        "HEAD /health HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n\
         HEAD /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let got = read_responses(&mut s, &[false, true, false, true]).await;
    for (head, body) in &got {
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let _ = body;
    }
    // The HEAD answers announce the GET bodies' type and a length like theirs.
    assert!(got[0].0.contains("application/json"));
    assert!(serde_json::from_slice::<Value>(&got[1].1).is_ok());
    assert!(got[2].0.contains("text/plain"));
    assert!(String::from_utf8_lossy(&got[3].1).contains("shardcast_connections_total"));
}
