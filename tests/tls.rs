//! TLS (issue 9, item 1): wss and stelar TCP over TLS against the real binary, with a test CA
//! and leaf certificates made at test time (rcgen) and real clients (tokio-rustls under
//! tokio-tungstenite and a stelar TCP client; Python `websockets`; the load generator).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;
use common::{python, within, ServerProc, Tcp, Ws, DEADLINE};
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SerialNumber};
use serde_json::{json, Value};
use shardcast::protocol::stelar::{Frame, FrameDecoder, FrameType, OutFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A test CA and the files of the server's current leaf certificate.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("shardcast-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "shardcast test CA");
        let ca = p.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let pki = Pki {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
            ca,
            ca_key,
        };
        pki.issue(1);
        pki
    }

    /// Writes a new leaf for localhost / 127.0.0.1 with `serial` to the cert and key files;
    /// returns its DER.
    fn issue(&self, serial: u64) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, format!("shardcast test leaf {serial}"));
        p.serial_number = Some(SerialNumber::from(serial));
        let leaf = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(&self.cert, leaf.pem()).unwrap();
        std::fs::write(&self.key, key.serialize_pem()).unwrap();
        leaf.der().to_vec()
    }

    fn ca_file(&self) -> String {
        path(&self.dir.join("ca.pem"))
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            path(&self.cert),
            "--tls-key".into(),
            path(&self.key),
        ]
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.der().to_vec()))
            .unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    async fn connect(&self, addr: SocketAddr) -> TlsStream<TcpStream> {
        within("TLS connect", async {
            let tcp = TcpStream::connect(addr).await.expect("tcp connect");
            tcp.set_nodelay(true).unwrap();
            self.connector()
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .expect("TLS handshake")
        })
        .await
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn peer_cert(s: &TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

fn start(pki: &Pki, extra: &[&str]) -> ServerProc {
    let mut args: Vec<String> = pki.args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProc::start(&refs)
}

/// A stelar WebSocket client over TLS.
struct Wss {
    inner: WebSocketStream<TlsStream<TcpStream>>,
    cert: Vec<u8>,
}

impl Wss {
    async fn connect(pki: &Pki, addr: SocketAddr, path: &str) -> Wss {
        let tls = pki.connect(addr).await;
        let cert = peer_cert(&tls);
        let url = format!("wss://localhost:{}{path}", addr.port());
        let (inner, _) = within("wss upgrade", tokio_tungstenite::client_async(url, tls))
            .await
            .expect("wss upgrade");
        Wss { inner, cert }
    }

    async fn send_text(&mut self, text: String) {
        self.inner
            .send(Message::Text(text))
            .await
            .expect("wss send");
    }

    async fn emit(&mut self, event: &str, data: Value) {
        self.send_text(json!({"event": event, "data": data}).to_string())
            .await;
    }

    async fn recv_text(&mut self) -> String {
        within("wss recv", async {
            loop {
                match self.inner.next().await {
                    Some(Ok(Message::Text(t))) => return t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a text message, got {other:?}"),
                }
            }
        })
        .await
    }

    async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).expect("JSON")
    }

    async fn join(&mut self, room: &str) {
        self.emit("join-room", json!(room)).await;
        assert_eq!(
            self.recv().await,
            json!({"event": "joined-room", "data": room})
        );
    }
}

/// A stelar TCP client over TLS.
struct TcpTls {
    s: TlsStream<TcpStream>,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl TcpTls {
    async fn connect(pki: &Pki, addr: SocketAddr) -> TcpTls {
        let s = pki.connect(addr).await;
        let mut t = TcpTls {
            s,
            buf: BytesMut::new(),
            decoder: FrameDecoder::default(),
        };
        let f = t.recv().await;
        assert_eq!(f.frame_type, FrameType::Connect, "CONNECT first: {f:?}");
        t
    }

    async fn send(&mut self, frame: OutFrame<'_>) {
        let bytes = frame.encode().unwrap();
        self.s.write_all(&bytes).await.expect("tls write");
        self.s.flush().await.unwrap();
    }

    async fn recv(&mut self) -> Frame {
        within("tcp+tls recv", async {
            loop {
                if let Some(f) = self.decoder.decode(&mut self.buf).expect("valid frames") {
                    if f.frame_type == FrameType::Ping {
                        continue;
                    }
                    return f;
                }
                let mut chunk = [0u8; 4096];
                let n = self.s.read(&mut chunk).await.expect("tls read");
                assert!(n > 0, "server closed the connection");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
    }

    async fn recv_json(&mut self) -> (String, Value) {
        let f = self.recv().await;
        assert_eq!(f.frame_type, FrameType::Json, "{f:?}");
        (
            String::from_utf8(f.event.to_vec()).unwrap(),
            serde_json::from_slice(&f.payload).unwrap(),
        )
    }

    async fn join(&mut self, room: &str) {
        self.send(OutFrame::Join { room }).await;
        let (e, d) = self.recv_json().await;
        assert_eq!((e.as_str(), d), ("joined-room", json!(room)));
    }

    async fn publish(&mut self, room: &str, data: Value) {
        let d = json!({"room": room, "event": "chat", "data": data}).to_string();
        self.send(OutFrame::Json {
            event: "publish",
            data: d.as_bytes(),
        })
        .await;
    }
}

/// `GET path` over TLS; the body.
async fn https_get(pki: &Pki, addr: SocketAddr, path: &str) -> String {
    let mut s = pki.connect(addr).await;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    within("https response", async {
        let mut chunk = [0u8; 8192];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
            if let Some(i) = find(&out, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..i]).to_ascii_lowercase();
                if let Some(len) = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                {
                    if out.len() >= i + 4 + len {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").unwrap().1.to_owned()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (with the deadline) until the metric sample reaches `at_least` on the plain port.
async fn metric_reaches(server: &ServerProc, name: &str, at_least: u64) -> u64 {
    within(&format!("{name} >= {at_least}"), async {
        loop {
            let v = server.metric(name).await;
            if v >= at_least {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_echoes_and_relays_on_the_main_port() {
    let pki = Pki::new("wss");
    let server = start(&pki, &["--shards", "2", "--bench-endpoints"]);
    // Raw echo, small and large (several TLS records) messages.
    let mut echo = Wss::connect(&pki, server.ws, "/echo").await;
    for size in [1usize, 100, 70_000] {
        let text: String = "é".repeat(size);
        echo.send_text(text.clone()).await;
        assert_eq!(echo.recv_text().await, text);
    }
    // The stelar relay between two wss clients.
    let mut a = Wss::connect(&pki, server.ws, "/").await;
    let mut b = Wss::connect(&pki, server.ws, "/").await;
    a.join("r").await;
    b.join("r").await;
    for i in 0..20 {
        let data = json!({"i": i, "pad": "x".repeat(i * 500)});
        b.emit(
            "publish",
            json!({"room": "r", "event": "chat", "data": data}),
        )
        .await;
        assert_eq!(a.recv().await, json!({"event": "chat", "data": data}));
    }
    // /metrics over https counts the handshakes (echo, a, b, this request's own).
    let metrics = https_get(&pki, server.ws, "/metrics").await;
    assert!(
        sample(&metrics, "shardcast_tls_handshakes_total") >= 3,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stelar_tcp_over_tls_connects_joins_and_publishes() {
    let pki = Pki::new("tcp");
    let server = start(&pki, &["--shards", "2"]);
    let tcp = server.tcp.expect("tcp port");
    let mut a = TcpTls::connect(&pki, tcp).await;
    let mut b = TcpTls::connect(&pki, tcp).await;
    a.join("room").await;
    b.join("room").await;
    for i in 0..20 {
        let data = json!({"i": i, "pad": "y".repeat(i * 1000)});
        a.publish("room", data.clone()).await;
        let (event, got) = b.recv_json().await;
        assert_eq!((event.as_str(), got), ("chat", data));
    }
    // A wss client of the same server hears a TCP publish.
    let mut w = Wss::connect(&pki, server.ws, "/").await;
    w.join("room").await;
    a.publish("room", json!("to all")).await;
    assert_eq!(w.recv().await, json!({"event": "chat", "data": "to all"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_tls_ports_serve_side_by_side() {
    let pki = Pki::new("side");
    let server = start(&pki, &["--tls-ws-port", "0", "--tls-tcp-port", "0"]);
    let (tls_ws, tls_tcp) = (server.tls_ws.unwrap(), server.tls_tcp.unwrap());
    // Plain on the main ports, TLS on the extra ones, all in one room.
    let mut plain_ws = Ws::connect(&server.ws_url("/")).await;
    let mut plain_tcp = Tcp::connect(server.tcp.unwrap()).await;
    let mut wss = Wss::connect(&pki, tls_ws, "/").await;
    let mut tcps = TcpTls::connect(&pki, tls_tcp).await;
    plain_ws.join("mix").await;
    plain_tcp.join("mix").await;
    wss.join("mix").await;
    tcps.join("mix").await;
    wss.emit(
        "publish",
        json!({"room": "mix", "event": "chat", "data": "from wss"}),
    )
    .await;
    assert_eq!(
        plain_ws.recv().await,
        json!({"event": "chat", "data": "from wss"})
    );
    assert_eq!(
        plain_tcp.recv_json().await,
        ("chat".to_owned(), json!("from wss"))
    );
    assert_eq!(
        tcps.recv_json().await,
        ("chat".to_owned(), json!("from wss"))
    );
    plain_ws
        .emit(
            "publish",
            json!({"room": "mix", "event": "chat", "data": "from ws"}),
        )
        .await;
    assert_eq!(
        wss.recv().await,
        json!({"event": "chat", "data": "from ws"})
    );
    assert_eq!(
        tcps.recv_json().await,
        ("chat".to_owned(), json!("from ws"))
    );
    // A TLS client on a plain port is not served; a plain client on a TLS port neither.
    assert!(tokio::time::timeout(DEADLINE, async {
        let tcp = TcpStream::connect(server.ws).await.unwrap();
        pki.connector()
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    })
    .await
    .expect("an answer within the deadline")
    .is_err());
    metric_reaches(&server, "shardcast_tls_handshakes_total", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_silence_instead_of_a_client_hello_is_counted_and_closed() {
    let pki = Pki::new("garbage");
    let server = start(
        &pki,
        &[
            "--shards",
            "1",
            "--tls-ws-port",
            "0",
            "--tls-tcp-port",
            "0",
            "--handshake-timeout-ms",
            "500",
        ],
    );
    let tls_ws = server.tls_ws.unwrap();
    // A silent client holds a socket; a garbage client sends HTTP in clear.
    let silent = TcpStream::connect(tls_ws).await.unwrap();
    let mut garbage = TcpStream::connect(tls_ws).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Meanwhile another client on the same (single) shard is served.
    let mut good = Wss::connect(&pki, tls_ws, "/").await;
    good.join("ok").await;
    // The garbage client gets at most an alert, then EOF.
    let got = within("the garbage client is closed", async {
        let mut all = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match garbage.read(&mut chunk).await {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        got.is_empty() || got[0] == 0x15,
        "an alert record at most: {got:?}"
    );
    metric_reaches(
        &server,
        "shardcast_tls_handshake_failures_total{reason=\"bad_record\"}",
        1,
    )
    .await;
    // The silent one is closed by the handshake timeout and counted.
    let mut silent = silent;
    within("the silent client is closed", async {
        let mut chunk = [0u8; 64];
        let _ = silent.read(&mut chunk).await;
    })
    .await;
    metric_reaches(
        &server,
        "shardcast_tls_handshake_failures_total{reason=\"timeout\"}",
        1,
    )
    .await;
    // The good client still works.
    good.emit("publish", json!({"room": "ok", "event": "e", "data": 1}))
        .await;
    let mut other = Wss::connect(&pki, tls_ws, "/").await;
    other.join("ok").await;
    good.emit("publish", json!({"room": "ok", "event": "e", "data": 2}))
        .await;
    assert_eq!(other.recv().await, json!({"event": "e", "data": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_and_a_bad_file_keeps_the_old_one() {
    let pki = Pki::new("reload");
    let first = std::fs::read(&pki.cert).unwrap();
    let server = start(&pki, &["--shards", "2", "--tls-ws-port", "0"]);
    let tls_ws = server.tls_ws.unwrap();
    let mut old = Wss::connect(&pki, tls_ws, "/").await;
    old.join("stay").await;
    let first_der = old.cert.clone();
    assert!(!first.is_empty());

    let second_der = pki.issue(2);
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(server.pid() as i32, libc::SIGHUP);
    }
    // New connections see the new certificate once the reload is applied.
    let fresh = within("a new connection sees the new certificate", async {
        loop {
            let c = Wss::connect(&pki, tls_ws, "/").await;
            if c.cert == second_der {
                return c;
            }
            assert_eq!(c.cert, first_der);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut fresh = fresh;
    fresh.join("stay").await;
    // The old connection stays open and working, both ways.
    fresh
        .emit(
            "publish",
            json!({"room": "stay", "event": "e", "data": "new→old"}),
        )
        .await;
    assert_eq!(old.recv().await, json!({"event": "e", "data": "new→old"}));
    old.emit(
        "publish",
        json!({"room": "stay", "event": "e", "data": "old→new"}),
    )
    .await;
    assert_eq!(fresh.recv().await, json!({"event": "e", "data": "old→new"}));

    // A broken certificate file: the reload is refused, naming the file; the second
    // certificate stays.
    std::fs::write(&pki.cert, "not a certificate\n").unwrap();
    unsafe {
        libc::kill(server.pid() as i32, libc::SIGHUP);
    }
    let line = server.expect_output("reload refused");
    assert!(line.contains("cert.pem"), "{line}");
    let again = Wss::connect(&pki, tls_ws, "/").await;
    assert_eq!(again.cert, second_der);
    old.emit(
        "publish",
        json!({"room": "stay", "event": "e", "data": "still"}),
    )
    .await;
    assert_eq!(fresh.recv().await, json!({"event": "e", "data": "still"}));
}

#[test]
fn cert_without_key_and_bad_files_are_refused_at_start_naming_them() {
    let pki = Pki::new("bad");
    let bin = env!("CARGO_BIN_EXE_shardcast");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("SHARDCAST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cert = path(&pki.cert);
    let key = path(&pki.key);
    let (code, err) = run(&["--tls-cert", &cert]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("tls.key") && err.contains("--tls-key"),
        "{err}"
    );
    let (code, err) = run(&["--tls-key", &key]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-cert"), "{err}");
    let (code, err) = run(&["--tls-ws-port", "0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-ws-port"), "{err}");
    let missing = path(&pki.dir.join("missing.pem"));
    let (code, err) = run(&["--tls-cert", &missing, "--tls-key", &key]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("missing.pem") && err.contains("cannot read"),
        "{err}"
    );
    let (code, err) = run(&["--tls-cert", &key, "--tls-key", &key]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("key.pem") && err.contains("no CERTIFICATE"),
        "{err}"
    );
}

/// A TLS reader that stops reading while a lot is sent to it gets everything, in order, once
/// it reads again (the full-socket path: records held by rustls, frames left in the queue,
/// woken by write readiness).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_pauses_reading_gets_everything_after() {
    let pki = Pki::new("pause");
    // Room for the whole burst in the queue: this is about order and wake-ups, not limits.
    let server = start(&pki, &["--shards", "1", "--max-queued-bytes", "67108864"]);
    let tcp = server.tcp.unwrap();
    let mut reader = TcpTls::connect(&pki, tcp).await;
    let mut writer = TcpTls::connect(&pki, tcp).await;
    reader.join("big").await;
    // ~12 MB while the reader is not reading: more than the socket buffers hold.
    const N: usize = 600;
    let pad = "z".repeat(20_000);
    for i in 0..N {
        writer.publish("big", json!({"i": i, "pad": pad})).await;
    }
    for i in 0..N {
        let (event, data) = reader.recv_json().await;
        assert_eq!(event, "chat");
        assert_eq!(data["i"], json!(i));
        assert_eq!(data["pad"].as_str().unwrap().len(), pad.len());
    }
}

/// The load generator's wss and tcp+tls transports drive the server cleanly (a short,
/// bounded run; no errors, nothing lost).
#[test]
fn the_load_generator_drives_wss_and_tcp_over_tls() {
    let pki = Pki::new("loadgen");
    let server = start(&pki, &["--shards", "1"]);
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("shardcast-loadgen");
    assert!(
        bin.exists(),
        "{} not found: `cargo build --workspace` (or `cargo test --workspace`) builds it",
        bin.display()
    );
    let ca = pki.ca_file();
    for url in [
        format!("wss://localhost:{}", server.ws.port()),
        format!("tcp+tls://localhost:{}", server.tcp.unwrap().port()),
    ] {
        let json = pki.dir.join("report.json");
        let mut child = std::process::Command::new(&bin)
            .args(["echo", "--url", &url, "--ca", &ca, "-c", "8", "-D", "4"])
            .args(["--duration", "1s", "--warmup", "200ms", "--drain", "1s"])
            .args(["--no-progress", "--json", &path(&json)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the load generator");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the load generator did not finish within 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{url}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let r = &report["results"];
        assert_eq!(r["connections"]["established"], json!(8), "{url}: {r}");
        assert_eq!(r["connections"]["failed"], json!(0), "{url}: {r}");
        let m = &r["messages"];
        assert!(m["received"].as_u64().unwrap() > 0, "{url}: {m}");
        assert_eq!(m["lost"], json!(0), "{url}: {m}");
        assert!(
            r["errors"].as_object().is_none_or(|e| e.is_empty())
                && r["errors"].as_array().is_none_or(|e| e.is_empty()),
            "{url}: {r}"
        );
    }
}

/// Python `websockets` with an SSL context trusting the test CA talks to a stelar TCP client
/// over TLS through a room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_over_wss_talks_to_a_tls_tcp_client() {
    const SCRIPT: &str = r#"
import asyncio, json, ssl, sys
import websockets

async def main():
    url, ca = sys.argv[1], sys.argv[2]
    ctx = ssl.create_default_context(cafile=ca)
    async with websockets.connect(url, ssl=ctx) as ws:
        await ws.send(json.dumps({"event": "join-room", "data": "py"}))
        print(json.dumps(json.loads(await ws.recv())), flush=True)
        msg = json.loads(await ws.recv())
        print(json.dumps(msg), flush=True)
        await ws.send(json.dumps({"event": "publish",
                                  "data": {"room": "py", "event": "chat", "data": "from python"}}))
        await ws.close()

asyncio.run(main())
"#;
    let python = python();
    let pki = Pki::new("py");
    let server = start(&pki, &["--shards", "2"]);
    let url = format!("wss://localhost:{}/", server.ws.port());
    let mut child = std::process::Command::new(&python)
        .args(["-c", SCRIPT, &url, &pki.ca_file()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start python");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("a line from python within the deadline");
        serde_json::from_str::<Value>(&line).unwrap()
    };
    assert_eq!(next(), json!({"event": "joined-room", "data": "py"}));
    let mut tcp = TcpTls::connect(&pki, server.tcp.unwrap()).await;
    tcp.join("py").await;
    tcp.publish("py", json!({"to": "python"})).await;
    assert_eq!(next(), json!({"event": "chat", "data": {"to": "python"}}));
    assert_eq!(
        tcp.recv_json().await,
        ("chat".to_owned(), json!("from python"))
    );
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("python did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// TLS 1.2 clients are served as well as 1.3 ones; a client that does not trust the
/// certificate aborts with an alert, which is counted under `alert`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_is_served_and_a_distrusting_client_is_counted_as_an_alert() {
    let pki = Pki::new("versions");
    let server = start(&pki, &["--tls-tcp-port", "0"]);
    let addr = server.tls_tcp.unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca.der().to_vec()))
        .unwrap();
    let tls12 = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&tokio_rustls::rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut s = within(
        "TLS 1.2 handshake",
        TlsConnector::from(Arc::new(tls12))
            .connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("TLS 1.2 is accepted");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(tokio_rustls::rustls::ProtocolVersion::TLSv1_2)
    );
    // The CONNECT frame arrives over TLS 1.2.
    let mut buf = BytesMut::new();
    let decoder = FrameDecoder::default();
    let frame = within("CONNECT over TLS 1.2", async {
        loop {
            if let Some(f) = decoder.decode(&mut buf).unwrap() {
                return f;
            }
            let mut chunk = [0u8; 1024];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert_eq!(frame.frame_type, FrameType::Connect);

    let distrusting = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let r = within(
        "a distrusting handshake ends",
        TlsConnector::from(Arc::new(distrusting))
            .connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await;
    assert!(r.is_err());
    metric_reaches(
        &server,
        "shardcast_tls_handshake_failures_total{reason=\"alert\"}",
        1,
    )
    .await;
    assert_eq!(
        server
            .metric("shardcast_tls_handshake_failures_total{reason=\"bad_record\"}")
            .await,
        0
    );
}
