//! Test harness: starts the real `shardcast` binary on free ports and talks to it with real
//! clients (tokio-tungstenite for WebSocket, a stelar TCP client on a tokio socket).
//!
//! Every wait has a deadline; nothing sleeps and hopes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use shardcast::protocol::stelar::{Frame, FrameDecoder, FrameType, OutFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expectation may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A running server process, stopped (SIGTERM, then kill) on drop.
pub struct ServerProc {
    child: Child,
    pub ws: SocketAddr,
    pub tcp: Option<SocketAddr>,
    pub shards: usize,
    /// Extra TLS ports (`--tls-ws-port`, `--tls-tcp-port`), when configured.
    pub tls_ws: Option<SocketAddr>,
    pub tls_tcp: Option<SocketAddr>,
    output: mpsc::Receiver<String>,
    /// What the server printed before its listening line (start-up warnings).
    early: Vec<String>,
}

impl ServerProc {
    /// Starts `shardcast` on 127.0.0.1 with free ports and `args`.
    pub fn start(args: &[&str]) -> ServerProc {
        Self::start_with(args, |_| {})
    }

    /// [`ServerProc::start`] with an open-file limit of `limit` descriptors (soft and hard).
    pub fn start_with_open_files(limit: u64, args: &[&str]) -> ServerProc {
        use std::os::unix::process::CommandExt;
        Self::start_with(args, |cmd| {
            // SAFETY: setrlimit is async-signal-safe; it runs in the child between fork and
            // exec and touches nothing else.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
    }

    /// [`ServerProc::start`], with `configure` applied to the command first.
    // The child is waited for by `Drop` once `ServerProc` exists; before that a failed start
    // panics the test, and the process exits with the test binary.
    #[allow(clippy::zombie_processes)]
    pub fn start_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> ServerProc {
        Self::start_program(env!("CARGO_BIN_EXE_shardcast").as_ref(), args, configure)
    }

    /// [`ServerProc::start_with`] for another program that takes `--host` and `--port` and
    /// prints the `shardcast listening ...` line (an example built on the library).
    #[allow(clippy::zombie_processes)]
    pub fn start_program(
        bin: &std::path::Path,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> ServerProc {
        let mut cmd = Command::new(bin);
        // With --port 0 the TCP port defaults to the WebSocket port + 1, as with any port.
        cmd.args(["--host", "127.0.0.1", "--port", "0"]);
        cmd.args(args)
            .env("SHARDCAST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
                let _ = tx2.send(format!("stderr: {line}"));
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut early = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("server did not print its listening line in 30 s");
            if let Some(rest) = line.strip_prefix("shardcast listening ") {
                let mut ws = None;
                let mut tcp = None;
                let mut shards = 0;
                let (mut tls_ws, mut tls_tcp) = (None, None);
                for part in rest.split_whitespace() {
                    if let Some(v) = part.strip_prefix("tls_ws=") {
                        tls_ws = v.parse().ok();
                    } else if let Some(v) = part.strip_prefix("tls_tcp=") {
                        tls_tcp = v.parse().ok();
                    }
                    if let Some(v) = part.strip_prefix("ws=") {
                        ws = v.parse().ok();
                    } else if let Some(v) = part.strip_prefix("tcp=") {
                        tcp = v.parse().ok();
                    } else if let Some(v) = part.strip_prefix("shards=") {
                        shards = v.parse().unwrap_or(0);
                    }
                }
                return ServerProc {
                    child,
                    ws: ws.expect("ws address"),
                    tcp,
                    shards,
                    tls_ws,
                    tls_tcp,
                    output: rx,
                    early,
                };
            }
            early.push(line);
        }
    }

    /// Starts `shardcast` with a TOML configuration file holding `toml`, plus `args`.
    pub fn start_with_toml(toml: &str, args: &[&str]) -> ServerProc {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "shardcast-test-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, toml).expect("write the test config");
        let path_s = path.to_str().expect("a UTF-8 temp path").to_owned();
        let mut all = vec!["--config", path_s.as_str()];
        all.extend_from_slice(args);
        let server = ServerProc::start(&all);
        let _ = std::fs::remove_file(&path);
        server
    }

    /// The value of one sample of `/metrics` (`name` with its labels, as printed), or 0 when
    /// the server does not print it (a labelled counter that never counted).
    /// `name` may carry labels exactly as printed: `name{label="x"}`. A gauge printed as a
    /// float (`1.0`) is read too (truncated).
    pub async fn metric(&self, name: &str) -> u64 {
        let (status, text) = http(self.ws, "GET", "/metrics", &[], "").await;
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| {
                let v = l.strip_prefix(name)?.strip_prefix(' ')?.trim();
                v.parse()
                    .ok()
                    .or_else(|| v.parse::<f64>().ok().map(|f| f as u64))
            })
            .unwrap_or(0)
    }

    /// Polls `/metrics` until [`ServerProc::metric`]`(name) == value`, with the harness
    /// deadline; panics with the last value seen.
    pub async fn wait_metric(&self, name: &str, value: u64) {
        self.wait_metric_where(name, &format!("== {value}"), |v| v == value)
            .await;
    }

    /// Polls `/metrics` until `ok(metric(name))`, with the harness deadline; returns the value.
    pub async fn wait_metric_where(&self, name: &str, what: &str, ok: impl Fn(u64) -> bool) -> u64 {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let v = self.metric(name).await;
            if ok(v) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} on {} is still {v} after {DEADLINE:?} (want {what})",
                self.ws
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Kills the process with SIGKILL (a crash: nothing is cleaned up) and reaps it.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }

    /// `ws://127.0.0.1:PORT{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.ws, path)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.ws, path)
    }

    /// Sends SIGTERM and waits for the exit status (with a deadline).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line the server printed, read until its output ends (call after
    /// [`ServerProc::terminate`]; waited for with the harness deadline).
    pub fn output_to_end(&self) -> Vec<String> {
        let mut lines = self.early.clone();
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.output.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return lines,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the server's output did not end within {DEADLINE:?}")
                }
            }
        }
    }

    /// A line of the server's output containing `needle`: one printed before its listening
    /// line, or the next one (waited for with the harness deadline). Stderr lines come
    /// prefixed with `stderr: `. Lines read while waiting are consumed.
    pub fn expect_output(&self, needle: &str) -> String {
        if let Some(line) = self.early.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.output.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the server printed no line with {needle:?} within {DEADLINE:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the server closed its output (exited?) before printing {needle:?}")
                }
            }
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if self.terminate().is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Runs `fut` with the harness deadline.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?}: {what}"),
    }
}

/// Waits (polling, without blocking past `within`) for `child` to exit; past the deadline
/// kills it, reaps it and panics naming `what`.
pub fn wait_exit(child: &mut Child, what: &str, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child process") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The Python with `websockets` the interop tests run: `$SHARDCAST_TEST_PYTHON`, else the
/// venv `./test.sh` creates (`target/venv/bin/python`).
pub fn python() -> String {
    if let Ok(p) = std::env::var("SHARDCAST_TEST_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/venv/bin/python");
    assert!(
        std::path::Path::new(venv).exists(),
        "Python with `websockets` not found: run ./test.sh once (it creates target/venv), \
         or set SHARDCAST_TEST_PYTHON"
    );
    venv.to_owned()
}

/// An HS256 token for `sub` signed with `secret`, valid for a minute, with `extra` claims
/// (which may replace `sub` and `exp`).
pub fn hs256_token(secret: &str, sub: &str, extra: Value) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let mut claims = json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 60});
    for (k, v) in extra.as_object().expect("extra claims: a JSON object") {
        claims[k] = v.clone();
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A WebSocket client speaking stelar envelopes (tokio-tungstenite).
pub struct Ws {
    pub inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let (inner, _) = within("ws connect", tokio_tungstenite::connect_async(url))
            .await
            .expect("ws connect");
        Ws { inner }
    }

    /// Connects with `Authorization: Bearer token`.
    pub async fn connect_bearer(url: &str, token: &str) -> Ws {
        Ws::connect_with(url, &[("Authorization", &format!("Bearer {token}"))]).await
    }

    /// Connects with extra request headers.
    pub async fn connect_with(url: &str, headers: &[(&'static str, &str)]) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url.into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(*k, v.parse().unwrap());
        }
        let (inner, _) = within("ws connect", tokio_tungstenite::connect_async(req))
            .await
            .expect("ws connect");
        Ws { inner }
    }

    /// Waits for the server's close frame (pings and pongs skipped): (code, reason).
    #[allow(dead_code)] // Not every test binary waits for a close frame.
    pub async fn close_frame(&mut self) -> (u16, String) {
        match self.next_message("close frame").await {
            Some(Ok(Message::Close(Some(f)))) => (u16::from(f.code), f.reason.to_string()),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// The next message that is not a ping or a pong (`None`: the stream ended), with the
    /// harness deadline (`what` names the wait).
    async fn next_message(
        &mut self,
        what: &str,
    ) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        within(what, async {
            loop {
                match self.inner.next().await {
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => return other,
                }
            }
        })
        .await
    }

    pub async fn send(&mut self, v: Value) {
        self.inner
            .send(Message::Text(v.to_string()))
            .await
            .expect("ws send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.inner
            .send(Message::Text(text.to_owned()))
            .await
            .expect("ws send");
    }

    pub async fn emit(&mut self, event: &str, data: Value) {
        self.send(json!({"event": event, "data": data})).await;
    }

    /// The next data message (text as JSON; pings/pongs skipped). Panics on close.
    pub async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).expect("server sent JSON")
    }

    /// The next text message, as the server wrote it (pings/pongs skipped). Panics on
    /// anything else.
    pub async fn recv_text(&mut self) -> String {
        match self.next_message("ws recv").await {
            Some(Ok(Message::Text(t))) => t.to_string(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next binary message.
    pub async fn recv_binary(&mut self) -> Vec<u8> {
        match self.next_message("ws recv binary").await {
            Some(Ok(Message::Binary(b))) => b.to_vec(),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }

    /// Joins and waits for the confirmation.
    pub async fn join(&mut self, room: &str) {
        self.emit("join-room", json!(room)).await;
        let v = self.recv().await;
        assert_eq!(v, json!({"event": "joined-room", "data": room}));
    }

    /// ACK request; returns the reply.
    pub async fn request(&mut self, ack: &str, event: &str, data: Value, corr: &str) -> Value {
        self.send(json!({"event": event, "data": data, "_ackName": ack, "_correlationId": corr}))
            .await;
        self.recv().await
    }

    /// This client's id (built-in `whoami` ACK).
    pub async fn whoami(&mut self) -> String {
        let v = self.request("whoami", "whoami", Value::Null, "who#1").await;
        v["data"].as_str().expect("id").to_owned()
    }

    /// Asserts no data message arrives within `wait` (used after a barrier message).
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(wait, self.inner.next()).await {
            if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
                panic!("expected nothing, got {m:?}");
            }
        }
    }
}

/// A stelar TCP client.
pub struct Tcp {
    pub sock: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
    pub id: String,
}

impl Tcp {
    /// Connects and reads the CONNECT frame.
    pub async fn connect(addr: SocketAddr) -> Tcp {
        let sock = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        sock.set_nodelay(true).unwrap();
        let mut t = Tcp {
            sock,
            buf: BytesMut::new(),
            decoder: FrameDecoder::default(),
            id: String::new(),
        };
        let f = t.recv().await;
        assert_eq!(f.frame_type, FrameType::Connect);
        assert_eq!(&f.event[..], b"connect");
        t.id = String::from_utf8(f.payload.to_vec()).unwrap();
        t
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.expect("tcp write");
    }

    pub async fn send(&mut self, frame: OutFrame<'_>) {
        let bytes = frame.encode().unwrap();
        self.send_raw(&bytes).await;
    }

    pub async fn emit(&mut self, event: &str, data: &Value) {
        let d = data.to_string();
        self.send(OutFrame::Json {
            event,
            data: d.as_bytes(),
        })
        .await;
    }

    /// The next frame; PINGs are answered and skipped.
    pub async fn recv(&mut self) -> Frame {
        within("tcp recv", async {
            loop {
                if let Some(f) = self.decoder.decode(&mut self.buf).expect("valid frames") {
                    if f.frame_type == FrameType::Ping {
                        let pong = OutFrame::Pong.encode().unwrap();
                        self.sock.write_all(&pong).await.unwrap();
                        continue;
                    }
                    return f;
                }
                let mut chunk = [0u8; 4096];
                let n = self.sock.read(&mut chunk).await.expect("tcp read");
                assert!(n > 0, "server closed the TCP connection");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
    }

    /// The next frame as (event, JSON payload).
    pub async fn recv_json(&mut self) -> (String, Value) {
        let f = self.recv().await;
        assert_eq!(
            f.frame_type,
            FrameType::Json,
            "expected a JSON frame: {f:?}"
        );
        (
            String::from_utf8(f.event.to_vec()).unwrap(),
            serde_json::from_slice(&f.payload).expect("JSON payload"),
        )
    }

    pub async fn join(&mut self, room: &str) {
        self.send(OutFrame::Join { room }).await;
        let (e, d) = self.recv_json().await;
        assert_eq!(e, "joined-room");
        assert_eq!(d, json!(room));
    }

    /// Reads until EOF (with the deadline); returns every byte received.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = self.buf.to_vec();
        within("tcp eof", async {
            let mut chunk = [0u8; 4096];
            loop {
                match self.sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => out.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        out
    }
}

/// The shard a client id names (ids are `SSSSSSSS-HHHH-...`: slot, then shard).
pub fn shard_of(id: &str) -> u16 {
    shardcast::app::ClientId::parse(id.as_bytes())
        .expect("a shardcast id")
        .location()
        .shard
}

/// A raw TCP socket to the WebSocket port that has completed the upgrade by hand.
pub async fn raw_ws(addr: SocketAddr, path: &str) -> (TcpStream, Vec<u8>) {
    let s = within("raw connect", TcpStream::connect(addr))
        .await
        .unwrap();
    upgrade(s, addr, path).await
}

/// [`raw_ws`] over a socket with a small receive buffer (a reader that stalls fills it fast).
pub async fn raw_ws_small_rcvbuf(addr: SocketAddr, path: &str) -> (TcpStream, Vec<u8>) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let s = within("raw connect", sock.connect(addr)).await.unwrap();
    upgrade(s, addr, path).await
}

async fn upgrade(mut s: TcpStream, addr: SocketAddr, path: &str) -> (TcpStream, Vec<u8>) {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    within("101", async {
        let mut chunk = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed during handshake");
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    (s, got[end..].to_vec())
}

/// A masked client frame.
pub fn client_frame(opcode: u8, payload: &[u8], fin: bool) -> Vec<u8> {
    let mut out = BytesMut::new();
    shardcast::protocol::ws::codec::write_frame(
        &mut out,
        shardcast::protocol::ws::frame::OpCode::from_bits(opcode),
        fin,
        false,
        payload,
        Some([0x12, 0x34, 0x56, 0x78]),
    );
    out.to_vec()
}

/// Reads everything until EOF and returns it (with the deadline).
pub async fn read_until_eof(s: &mut TcpStream, mut got: Vec<u8>) -> Vec<u8> {
    within("eof", async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    got
}

/// Parses server frames (unmasked) out of `bytes`: (opcode, payload).
pub fn server_frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut buf = BytesMut::from(bytes);
    let mut d = shardcast::protocol::ws::codec::Decoder::new(
        shardcast::protocol::ws::codec::DecoderConfig::new(
            shardcast::protocol::ws::codec::Role::Client,
        ),
    );
    let mut out = Vec::new();
    while let Ok(Some(m)) = d.decode(&mut buf) {
        use shardcast::protocol::ws::codec::Message as M;
        match m {
            M::Text(b) => out.push((1, b.to_vec())),
            M::Binary(b) => out.push((2, b.to_vec())),
            M::Close(c) => {
                let mut p = Vec::new();
                if let Some(c) = c {
                    p.extend_from_slice(&c.code.get().to_be_bytes());
                    p.extend_from_slice(c.reason.as_bytes());
                }
                out.push((8, p));
            }
            M::Ping(b) => out.push((9, b.to_vec())),
            M::Pong(b) => out.push((10, b.to_vec())),
        }
    }
    out
}

/// A plain HTTP/1.1 request; returns (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let r = http_response(addr, method, path, headers, body).await;
    (r.status, r.body)
}

/// An HTTP response as received.
pub struct HttpResponse {
    pub status: u16,
    /// The head (status line and header fields), as text.
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    /// A header field's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A plain HTTP/1.1 request on its own connection (`Connection: close`); the whole response.
pub async fn http_response(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let mut s = within("http connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let got = read_until_eof(&mut s, Vec::new()).await;
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text[9..12].parse().expect("status");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_owned(), b.to_owned()))
        .unwrap_or_default();
    HttpResponse { status, head, body }
}

/// A `redis-server` of its own on a free 127.0.0.1 port, without persistence; killed (by PID)
/// on drop. It can be stopped and restarted on the same port to play a Redis outage.
pub struct RedisProc {
    child: Option<Child>,
    pub port: u16,
}

impl RedisProc {
    /// Starts `redis-server` and waits (with the harness deadline) until it answers PING.
    /// Panics, saying how to install it, when `redis-server` is missing: the cluster tests
    /// need a real Redis and never skip.
    pub fn start() -> RedisProc {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut r = RedisProc { child: None, port };
        r.spawn();
        r
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: connections drop at once, as in a crash) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// Starts a fresh, empty server on the same port (after [`RedisProc::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `redis-cli -p PORT args...`: its standard output, trimmed. Panics if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("redis-cli: {e} (install redis-server: apt-get install redis-server)")
            });
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The number of subscribers (connections) of a sharded channel
    /// (`PUBSUB SHARDNUMSUB channel`).
    pub fn shard_subscribers(&self, channel: &str) -> u64 {
        Self::count(&self.cli(&["PUBSUB", "SHARDNUMSUB", channel]))
    }

    /// The number of subscribers of a classic channel (`PUBSUB NUMSUB channel`).
    pub fn subscribers(&self, channel: &str) -> u64 {
        Self::count(&self.cli(&["PUBSUB", "NUMSUB", channel]))
    }

    /// The sum of one numeric field of `CLIENT LIST` over every connection, e.g. `psub`
    /// (pattern subscriptions: `PUBSUB NUMPAT` counts distinct patterns, not subscribers).
    pub fn client_list_sum(&self, field: &str) -> u64 {
        let prefix = format!("{field}=");
        self.cli(&["CLIENT", "LIST"])
            .lines()
            .flat_map(|l| l.split_whitespace())
            .filter_map(|kv| kv.strip_prefix(prefix.as_str())?.parse::<u64>().ok())
            .sum()
    }

    /// Waits (with the harness deadline) until `count()` is at least `min`.
    pub async fn wait_count(&self, what: &str, min: u64, count: impl Fn(&Self) -> u64) {
        self.wait_until(&format!("{what} >= {min}"), |r| count(r) >= min)
            .await;
    }

    /// Waits (with the harness deadline) until `ok()` holds.
    pub async fn wait_until(&self, what: &str, ok: impl Fn(&Self) -> bool) {
        let deadline = std::time::Instant::now() + DEADLINE;
        while !ok(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "Redis on port {}: still not {what} after {DEADLINE:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The second line of a `channel\ncount` answer.
    fn count(answer: &str) -> u64 {
        answer
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected PUBSUB answer {answer:?}"))
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server: {e}; the cluster tests need it \
                     (apt-get install -y redis-server; test.sh installs it)"
                )
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + DEADLINE;
        while !self.answers_ping() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("redis-server on port {port} exited at start-up: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on port {port} did not answer PING within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One PING on a fresh connection, answered `+PONG`.
    pub fn answers_ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut got = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut got).is_ok() && &got == b"+PONG\r\n"
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A shardcast node of a cluster: `--redis URL --node-id ID` plus `args`.
pub fn start_node(redis: &RedisProc, node_id: &str, args: &[&str]) -> ServerProc {
    let url = redis.url();
    let mut all = vec!["--redis", url.as_str(), "--node-id", node_id];
    all.extend_from_slice(args);
    ServerProc::start(&all)
}

/// [`start_node`] with a TOML configuration file too (e.g. a `[cluster]` section).
pub fn start_node_with_toml(
    redis: &RedisProc,
    node_id: &str,
    toml: &str,
    args: &[&str],
) -> ServerProc {
    let url = redis.url();
    let mut all = vec!["--redis", url.as_str(), "--node-id", node_id];
    all.extend_from_slice(args);
    ServerProc::start_with_toml(toml, &all)
}

/// Bytes helper.
pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}
