//! `shardcast-loadgen sink`: a deliberately trivial server to measure the load generator
//! against (its headroom), thread-per-core on the same runtime as shardcast.
//!
//! WebSocket port (RFC 6455 via `shardcast::protocol::ws`, server role):
//! - `/echo`: every text/binary message is sent back unchanged (the same behaviour as
//!   shardcast's `--bench-endpoints` `/echo`);
//! - `/broadcast`: every message goes to every other `/broadcast` client, on every shard
//!   (the mesh carries it across);
//! - any other path: a minimal stelar relay for echo and ACK round trips: `echo` → `echo`,
//!   ACK requests → ACK replies (`_isAck`, correlation id echoed), `join-room` →
//!   `joined-room`, `leave-room` → `left-room`; anything else gets `server:error`.
//!
//! stelar TCP port: CONNECT first, then JSON `echo` frames are sent back, ACK_REQ gets
//! ACK_RES, JOIN/LEAVE are confirmed, PING gets PONG.
//!
//! With `--tls` both ports speak TLS with a self-signed certificate made at start
//! (`--cert-out` writes it for the client's `--ca`). It prints one line,
//! `sink listening ws=ADDR tcp=ADDR shards=N tls=on|off`, then serves until SIGINT/SIGTERM
//! or `--exit-after`.
//!
//! Per connection: one task, a read buffer released when drained, and an output buffer that
//! other connections (broadcast) append to; a client whose output passes 16 MiB is cut off.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::Write as _;
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Buf, Bytes, BytesMut};
use futures_lite::AsyncWrite;
use glommio::net::TcpStream;
use shardcast::protocol::http::{parse_request, Limits};
use shardcast::protocol::stelar::envelope::{self, parse_ack_payload};
use shardcast::protocol::stelar::{FrameDecoder, FrameType, OutFrame, TextEnvelope};
use shardcast::protocol::ws::close::CloseFrame;
use shardcast::protocol::ws::codec::{self, Decoder, DecoderConfig, Message, Role};
use shardcast::protocol::ws::frame::OpCode;
use shardcast::protocol::ws::handshake::{accept, DeflateConfig, ServerConfig};
use shardcast_shards::{Runtime, Shard};

use crate::cli::SinkArgs;
use crate::net::tcp::Tcp;
use crate::net::{tls, Stream};

/// Output bytes beyond which a client is cut off (slow consumer).
const MAX_QUEUED: usize = 16 * 1024 * 1024;
/// Reads per poll before yielding.
const READ_BUDGET: usize = 16;

/// A message crossing shards.
#[derive(Debug, Clone)]
enum SinkMsg {
    /// A ready-made server frame for every `/broadcast` client of the receiving shard.
    Broadcast(Bytes),
}

/// A connection's output, reachable by other connections of its shard.
#[derive(Default)]
struct Outbox {
    buf: RefCell<BytesMut>,
    waker: RefCell<Option<Waker>>,
    overflow: Cell<bool>,
}

impl Outbox {
    fn push(&self, frame: &[u8]) {
        let mut b = self.buf.borrow_mut();
        if b.len() + frame.len() > MAX_QUEUED {
            self.overflow.set(true);
        } else {
            b.extend_from_slice(frame);
        }
        drop(b);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// One shard's sink state.
struct SinkShard {
    broadcast: RefCell<Vec<(u64, Rc<Outbox>)>>,
    next_id: Cell<u64>,
    scratch: RefCell<Box<[u8]>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    handshake: ServerConfig,
}

impl SinkShard {
    fn deliver(&self, frame: &[u8], except: Option<u64>) {
        for (id, out) in self.broadcast.borrow().iter() {
            if Some(*id) != except {
                out.push(frame);
            }
        }
    }
}

enum Mode {
    Echo,
    Broadcast,
    Relay,
}

/// Runs `sink`.
pub fn run(args: SinkArgs) -> anyhow::Result<ExitCode> {
    let _ = crate::usage::raise_nofile();
    let tls_identity = if args.tls {
        Some(tls::self_signed()?)
    } else {
        None
    };
    if let (Some(path), Some(id)) = (&args.cert_out, &tls_identity) {
        std::fs::write(path, &id.cert_pem)
            .with_context(|| format!("cannot write {}", path.display()))?;
    } else if args.cert_out.is_some() {
        anyhow::bail!("--cert-out needs --tls");
    }
    let tcp_port = match (args.tcp_port, args.port) {
        (Some(p), _) => p,
        (None, 0) => 0,
        (None, p) => p
            .checked_add(1)
            .context("--port + 1 overflows; give --tcp-port")?,
    };
    let tls_config = tls_identity.map(|i| i.config);
    let runtime = Runtime::builder()
        .messages::<SinkMsg>()
        .shards(usize::from(args.shards))
        .thread_name("sink")
        .listen("ws", (args.host, args.port))
        .listen("tcp", (args.host, tcp_port))
        .handle_signals(true)
        .drain_timeout(Duration::from_millis(500))
        .start(move |shard: Shard<SinkMsg>| {
            let tls = tls_config.clone();
            async move { shard_main(shard, tls).await }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the sink: {e}"))?;
    let addr = |n: &str| {
        runtime
            .bound_addr(n)
            .map_or_else(|| "?".to_string(), |a| a.to_string())
    };
    println!(
        "sink listening ws={} tcp={} shards={} tls={}",
        addr("ws"),
        addr("tcp"),
        runtime.shards(),
        if args.tls { "on" } else { "off" }
    );
    let _ = std::io::stdout().flush();
    if let Some(after) = args.exit_after {
        let handle = runtime.shutdown_handle().clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            handle.trigger();
        });
    }
    runtime.join().map_err(|e| anyhow::anyhow!("sink: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

async fn shard_main(shard: Shard<SinkMsg>, tls: Option<Arc<rustls::ServerConfig>>) {
    let ctx = Rc::new(SinkShard {
        broadcast: RefCell::new(Vec::new()),
        next_id: Cell::new(0),
        scratch: RefCell::new(vec![0u8; 64 * 1024].into_boxed_slice()),
        tls,
        handshake: ServerConfig {
            subprotocols: Vec::new(),
            deflate: DeflateConfig {
                enabled: false,
                ..DeflateConfig::default()
            },
        },
    });
    if let Some(mut inbox) = shard.take_inbox() {
        let c = ctx.clone();
        shard
            .spawn(async move {
                let mut batch = Vec::new();
                loop {
                    batch.clear();
                    inbox.recv_batch(&mut batch).await;
                    for SinkMsg::Broadcast(frame) in batch.drain(..) {
                        c.deliver(&frame, None);
                    }
                }
            })
            .detach();
    }
    let mesh = shard.mesh().clone();
    let (Some(ws), Some(tcp)) = (shard.take_listener("ws"), shard.take_listener("tcp")) else {
        return;
    };
    let c1 = ctx.clone();
    let s1 = shard.clone();
    let m1 = mesh.clone();
    let ws_loop = ws.accept_loop(move |stream| {
        let c = c1.clone();
        let m = m1.clone();
        s1.spawn(async move { serve_ws(c, m, stream).await })
            .detach();
    });
    let c2 = ctx.clone();
    let s2 = shard.clone();
    let tcp_loop = tcp.accept_loop(move |stream| {
        let c = c2.clone();
        s2.spawn(async move { serve_tcp(c, stream).await }).detach();
    });
    let _ = futures_lite::future::zip(ws_loop, tcp_loop).await;
}

async fn wrap(ctx: &SinkShard, tcp: TcpStream) -> Option<Stream> {
    let _ = tcp.set_nodelay(true);
    let tcp = Tcp::from_glommio(tcp).ok()?;
    match &ctx.tls {
        Some(cfg) => {
            let s = futures_rustls::TlsAcceptor::from(cfg.clone())
                .accept(tcp)
                .await
                .ok()?;
            Some(Stream::Tls(Box::new(futures_rustls::TlsStream::Server(s))))
        }
        None => Some(Stream::Plain(tcp)),
    }
}

fn poll_read_into(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    ctx: &SinkShard,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    stream.poll_read_buf(cx, rbuf, &mut ctx.scratch.borrow_mut()[..])
}

/// Writes the outbox; Ready(Ok) when empty.
fn poll_flush(
    stream: &mut Stream,
    out: &Outbox,
    tls: bool,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    loop {
        let mut b = out.buf.borrow_mut();
        if b.is_empty() {
            if b.capacity() > 256 * 1024 {
                *b = BytesMut::new();
            }
            drop(b);
            return if tls {
                Pin::new(stream).poll_flush(cx)
            } else {
                Poll::Ready(Ok(()))
            };
        }
        match Pin::new(&mut *stream).poll_write(cx, &b) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => b.advance(n),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// The open phase shared by both ports: flush, read, hand input to `handle` (which returns
/// false to end the connection), until EOF, error or overflow.
async fn drive(
    ctx: &SinkShard,
    stream: &mut Stream,
    out: &Outbox,
    rbuf: &mut BytesMut,
    mut handle: impl FnMut(&mut BytesMut, &Outbox) -> bool,
) {
    let tls = matches!(stream, Stream::Tls(_));
    if !rbuf.is_empty() && !handle(rbuf, out) {
        return;
    }
    let mut done = false;
    poll_fn(|cx| {
        let mut budget = READ_BUDGET;
        loop {
            if out.overflow.get() {
                return Poll::Ready(());
            }
            match poll_flush(stream, out, tls, cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) if done => return Poll::Ready(()),
                _ => {}
            }
            if done {
                break;
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                break;
            }
            budget -= 1;
            match poll_read_into(stream, rbuf, ctx, cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {
                    if !handle(rbuf, out) {
                        done = true;
                    }
                    if rbuf.is_empty() {
                        *rbuf = BytesMut::new();
                    }
                }
                Poll::Pending => break,
            }
        }
        *out.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    })
    .await
}

async fn serve_ws(ctx: Rc<SinkShard>, mesh: shardcast_shards::ShardMesh<SinkMsg>, tcp: TcpStream) {
    let Some(mut stream) = wrap(&ctx, tcp).await else {
        return;
    };
    let limits = Limits::default();
    let mut rbuf = BytesMut::new();
    let out = Rc::new(Outbox::default());
    // Upgrade.
    let mode = loop {
        let n = poll_fn(|cx| poll_read_into(&mut stream, &mut rbuf, &ctx, cx)).await;
        if !matches!(n, Ok(n) if n > 0) {
            return;
        }
        match parse_request(&rbuf, &limits) {
            Ok(None) => continue,
            Ok(Some(req)) => {
                let mut resp = BytesMut::new();
                let mode = match req.path() {
                    "/echo" => Mode::Echo,
                    "/broadcast" => Mode::Broadcast,
                    _ => Mode::Relay,
                };
                match accept(&req, &ctx.handshake, &[], &mut resp) {
                    Ok(neg) => {
                        let consumed = neg.consumed;
                        out.buf.borrow_mut().extend_from_slice(&resp);
                        rbuf.advance(consumed);
                        break mode;
                    }
                    Err(e) => {
                        let mut answer = BytesMut::new();
                        e.write_response(&mut answer);
                        let _ = futures_lite::AsyncWriteExt::write_all(&mut stream, &answer).await;
                        return;
                    }
                }
            }
            Err(_) => return,
        }
    };
    let id = ctx.next_id.get();
    ctx.next_id.set(id + 1);
    if matches!(mode, Mode::Broadcast) {
        ctx.broadcast.borrow_mut().push((id, out.clone()));
    }
    let mut dec = Decoder::new(DecoderConfig::new(Role::Server));
    let shards = mesh.shards();
    let me = mesh.id();
    drive(&ctx, &mut stream, &out, &mut rbuf, |buf, out| loop {
        let msg = match dec.decode(buf) {
            Ok(Some(m)) => m,
            Ok(None) => return true,
            Err(e) => {
                let frame = CloseFrame::new(e.close_code(), "");
                codec::write_close(&mut out.buf.borrow_mut(), Some(&frame), None);
                return false;
            }
        };
        let (op, payload) = match msg {
            Message::Text(p) => (OpCode::Text, p),
            Message::Binary(p) => (OpCode::Binary, p),
            Message::Ping(p) => {
                codec::write_frame(
                    &mut out.buf.borrow_mut(),
                    OpCode::Pong,
                    true,
                    false,
                    &p,
                    None,
                );
                continue;
            }
            Message::Pong(_) => continue,
            Message::Close(f) => {
                // RFC 6455 §5.5.1: reply with a close echoing the code, then end.
                let reply = f.map(|f| CloseFrame::new(f.code, ""));
                codec::write_close(&mut out.buf.borrow_mut(), reply.as_ref(), None);
                return false;
            }
        };
        match mode {
            Mode::Echo => {
                codec::write_frame(&mut out.buf.borrow_mut(), op, true, false, &payload, None)
            }
            Mode::Broadcast => {
                let frame = codec::server_frame(op, &payload);
                ctx.deliver(&frame, Some(id));
                for other in (0..shards).filter(|s| *s != me) {
                    let _ = mesh.send(other, SinkMsg::Broadcast(frame.clone()));
                }
            }
            Mode::Relay => {
                let reply = relay_reply(op, &payload);
                if let Some(r) = reply {
                    codec::write_frame(
                        &mut out.buf.borrow_mut(),
                        OpCode::Text,
                        true,
                        false,
                        &r,
                        None,
                    );
                }
            }
        }
    })
    .await;
    if matches!(mode, Mode::Broadcast) {
        ctx.broadcast.borrow_mut().retain(|(i, _)| *i != id);
    }
}

/// The relay's answer to a WebSocket message (PROTOCOL.md §2.2 shapes).
fn relay_reply(op: OpCode, payload: &[u8]) -> Option<Bytes> {
    if op != OpCode::Text {
        return None;
    }
    let Ok(env) = envelope::parse(payload) else {
        return Some(
            TextEnvelope::event(
                "server:error",
                Some(br#"{"code":"invalid_message","message":"not a stelar envelope"}"#),
            )
            .encode(),
        );
    };
    if let Some(_ack) = &env.ack_name {
        return Some(
            TextEnvelope::ack_reply(
                &env.event,
                Some(env.data.unwrap_or(b"null")),
                env.correlation_id.as_deref(),
            )
            .encode(),
        );
    }
    Some(match &*env.event {
        "echo" => TextEnvelope::event("echo", env.data).encode(),
        "join-room" => TextEnvelope::event("joined-room", env.data).encode(),
        "leave-room" => TextEnvelope::event("left-room", env.data).encode(),
        _ => TextEnvelope::event(
            "server:error",
            Some(br#"{"code":"unknown_event","message":"the sink answers echo, ACKs and joins only"}"#),
        )
        .encode(),
    })
}

async fn serve_tcp(ctx: Rc<SinkShard>, tcp: TcpStream) {
    let Some(mut stream) = wrap(&ctx, tcp).await else {
        return;
    };
    let id = ctx.next_id.get();
    ctx.next_id.set(id + 1);
    let out = Outbox::default();
    let name = format!("sink-{id:032}");
    let _ = OutFrame::Connect {
        id: &name[..36.min(name.len())],
    }
    .encode_into(&mut out.buf.borrow_mut());
    let dec = FrameDecoder::default();
    let mut rbuf = BytesMut::new();
    drive(&ctx, &mut stream, &out, &mut rbuf, |buf, out| loop {
        let frame = match dec.decode(buf) {
            Ok(Some(f)) => f,
            Ok(None) => return true,
            Err(e) => {
                if let Some(f) = e.error_frame() {
                    out.buf.borrow_mut().extend_from_slice(&f);
                }
                return false;
            }
        };
        let mut b = out.buf.borrow_mut();
        let _ = match frame.frame_type {
            FrameType::Json => {
                // `echo` and anything else: sent back as it came (event and payload).
                let event = std::str::from_utf8(&frame.event).unwrap_or("echo");
                OutFrame::Json {
                    event,
                    data: &frame.payload,
                }
                .encode_into(&mut b)
            }
            FrameType::AckReq => match parse_ack_payload(&frame.payload) {
                Ok(p) => OutFrame::AckRes {
                    ack_name: std::str::from_utf8(&frame.event).unwrap_or("echo"),
                    result: p.data,
                    correlation_id: p.correlation_id.as_deref(),
                }
                .encode_into(&mut b),
                Err(_) => Ok(()),
            },
            FrameType::Join | FrameType::Leave => {
                let room = std::str::from_utf8(&frame.payload).unwrap_or("");
                let event = if frame.frame_type == FrameType::Join {
                    "joined-room"
                } else {
                    "left-room"
                };
                OutFrame::JsonString { event, value: room }.encode_into(&mut b)
            }
            FrameType::Ping => OutFrame::Pong.encode_into(&mut b),
            _ => Ok(()),
        };
    })
    .await;
}
