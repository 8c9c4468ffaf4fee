//! The client side of the wire, sans-IO: what a load-generating connection writes and how
//! it reads what comes back, for each dialect it speaks.
//!
//! - [`Dialect::WsRelay`]: shardcast's relay over WebSocket (JSON envelopes, PROTOCOL.md §2,
//!   DESIGN.md "The standalone relay"): `echo`, ACK `echo`, `join-room`, `publish`,
//!   `broadcast`.
//! - [`Dialect::TcpRelay`]: the same relay events over stelar TCP frames (§4): JSON frames,
//!   JOIN, ACK_REQ / ACK_RES, PING → PONG, CONNECT first.
//! - [`Dialect::WsRaw`]: any plain WebSocket server that echoes or rebroadcasts: the message
//!   is the stamp itself (text, or binary with `--binary`).
//! - [`Dialect::Ws`]: shardcast's other dialects (StellarStack, ignis, stonyx) over WebSocket,
//!   spoken by receiving connections (`--dialect`): auth, join, deliveries (`dialects.rs`).
//!
//! Every measured message carries a [`Stamp`] as its data (a JSON string for the relay
//! dialects), so a reply or a delivery is recognised by finding the stamp, and the fast path
//! never builds a JSON tree: the server writes `{"event":` first (TextEnvelope order), so the
//! event name is read off the front and the stamp found right after it; anything else goes
//! through the full envelope parser (`shardcast::protocol::stelar::envelope::parse`).
//!
//! The frame codecs are shardcast's own (`protocol::ws::codec` in client role: masked frames
//! out, unmasked frames decoded in place; `protocol::stelar::FrameDecoder` / `OutFrame`).
//! Masking keys come from a per-connection xorshift generator: RFC 6455 §5.3 asks for
//! unpredictable keys to protect intermediaries from cache poisoning by hostile scripts,
//! which a load generator talking to a server under test is not; the server cannot tell.
//! Sockets, clocks and timers belong to `conn.rs`.

use bytes::{BufMut, Bytes, BytesMut};
use shardcast::protocol::stelar::{
    self, envelope, FrameDecoder, FrameType, OutFrame, TextEnvelope,
};
use shardcast::protocol::ws::close::{CloseCode, CloseFrame};
use shardcast::protocol::ws::codec::{self, Decoder, DecoderConfig, Message, Role};
use shardcast::protocol::ws::frame::OpCode;

use crate::dialects::{self, write_json_string, Kind};
use crate::fault::Fault;
use crate::stamp::{Stamp, PAD, STAMP_LEN};

/// The event name measured messages travel under.
pub const EVENT: &str = "lg";
/// The built-in ACK used for request/response.
pub const ACK_NAME: &str = "echo";

/// How a connection talks to its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// shardcast relay events in JSON envelopes over WebSocket.
    WsRelay,
    /// Raw messages (the stamp) over WebSocket; `binary` sends binary frames.
    WsRaw {
        /// Send binary instead of text messages.
        binary: bool,
    },
    /// shardcast relay events in stelar TCP frames.
    TcpRelay,
    /// One of shardcast's other dialects over WebSocket.
    Ws(Kind),
}

impl Dialect {
    /// Whether the transport is WebSocket.
    pub fn is_ws(self) -> bool {
        !matches!(self, Dialect::TcpRelay)
    }
}

/// A codec fault, as the server caused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A WebSocket rule broken by the server's frames.
    #[error("websocket: {0}")]
    Ws(codec::Error),
    /// A malformed stelar frame.
    #[error("stelar: {0}")]
    Stelar(stelar::Error),
}

impl WireError {
    /// Counter label (the codec's own).
    pub fn label(&self) -> &'static str {
        match self {
            WireError::Ws(e) => e.label(),
            WireError::Stelar(e) => e.label(),
        }
    }
}

impl From<WireError> for Fault {
    fn from(e: WireError) -> Fault {
        match e {
            WireError::Ws(_) => Fault::WsProtocol,
            WireError::Stelar(_) => Fault::StelarProtocol,
        }
    }
}

/// Something to send.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// Relay `echo` event (raw dialect: the bare message, which the server echoes).
    Echo(&'a Stamp),
    /// ACK request to the built-in `echo` ACK, with correlation number `corr`.
    Ack(&'a Stamp, u64),
    /// Relay `publish` to `room` (raw dialect: the bare message).
    Publish(&'a str, &'a Stamp),
    /// Relay `broadcast` (raw dialect: the bare message, for `/broadcast`-style servers).
    Broadcast(&'a Stamp),
    /// Join a room.
    Join(&'a str),
    /// Leave a room.
    Leave(&'a str),
    /// Authenticate with this token (the [`Dialect::Ws`] dialects; nothing for the others,
    /// which this tool runs without authentication).
    Auth(&'a str),
}

/// Something received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A stamped message: an echo, an ACK reply (`ack`) or a delivery.
    Data {
        /// The stamp it carried.
        stamp: Stamp,
        /// It was an ACK reply (`_isAck` / ACK_RES).
        ack: bool,
    },
    /// `joined-room`.
    Joined,
    /// `left-room`.
    Left,
    /// The dialect's authentication succeeded (`auth_success`, `connected`, stonyx `auth`
    /// response).
    Authenticated,
    /// The dialect's authentication was refused (`auth_error`, a `false`/`null` stonyx
    /// `auth` response).
    AuthFailed,
    /// `server:error` event or a stelar ERROR frame.
    ServerError,
    /// stelar CONNECT (the server's first frame on TCP).
    Connect,
    /// A ping; answer it with [`ClientCodec::encode_pong`].
    Ping(Bytes),
    /// A pong or another frame needing no action.
    Ignored,
    /// The server closed (WebSocket close frame, with its code; stelar DISCONNECT: `None`).
    /// On WebSocket answer with [`ClientCodec::encode_close`].
    Closed(Option<u16>),
    /// Something without a stamp that the dialect does not know.
    Unrecognized,
}

/// One connection's codec state.
pub struct ClientCodec {
    dialect: Dialect,
    ws: Decoder,
    tcp: FrameDecoder,
    rng: u64,
    /// Payload being built (the envelope around the stamp).
    scratch: BytesMut,
    /// Inner object of publish/broadcast.
    inner: BytesMut,
    /// Message size asked for (stamp + padding).
    size: usize,
    /// Correlation id text (`echo#N`).
    corr: Vec<u8>,
}

impl std::fmt::Debug for ClientCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCodec")
            .field("dialect", &self.dialect)
            .finish()
    }
}

impl ClientCodec {
    /// A codec for a freshly opened connection; `seed` varies the masking keys; `size` is
    /// the data size of measured messages (at least the stamp).
    pub fn new(dialect: Dialect, seed: u64, size: usize) -> ClientCodec {
        ClientCodec {
            dialect,
            ws: Decoder::new(DecoderConfig::new(Role::Client)),
            tcp: FrameDecoder::default(),
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            scratch: BytesMut::new(),
            inner: BytesMut::new(),
            size: size.max(STAMP_LEN),
            corr: Vec::new(),
        }
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Releases the build buffers (an idle connection keeps no memory it does not need).
    pub fn shrink(&mut self) {
        self.scratch = BytesMut::new();
        self.inner = BytesMut::new();
        self.corr = Vec::new();
    }

    #[inline]
    fn mask(&mut self) -> [u8; 4] {
        // xorshift64
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x as u32).to_ne_bytes()
    }

    /// `"<stamp><padding>"` (a JSON string) into `dst`.
    fn json_data(dst: &mut BytesMut, stamp: &Stamp, size: usize) {
        dst.put_u8(b'"');
        stamp.write_padded(dst, size);
        dst.put_u8(b'"');
    }

    fn ws_text(&mut self, out: &mut BytesMut) {
        let key = self.mask();
        codec::write_frame(out, OpCode::Text, true, false, &self.scratch, Some(key));
    }

    /// Appends `req` to `out`.
    pub fn encode(&mut self, out: &mut BytesMut, req: Request<'_>) {
        let size = self.size;
        self.scratch.clear();
        match (self.dialect, req) {
            (
                Dialect::WsRaw { binary },
                Request::Echo(s)
                | Request::Broadcast(s)
                | Request::Publish(_, s)
                | Request::Ack(s, _),
            ) => {
                s.write_padded(&mut self.scratch, size);
                let key = self.mask();
                let op = if binary { OpCode::Binary } else { OpCode::Text };
                codec::write_frame(out, op, true, false, &self.scratch, Some(key));
            }
            // Raw servers have no rooms: nothing to send.
            (Dialect::WsRaw { .. }, Request::Join(_) | Request::Leave(_)) => {}
            // Only the other dialects authenticate (stelar runs use an open server).
            (Dialect::WsRaw { .. } | Dialect::WsRelay | Dialect::TcpRelay, Request::Auth(_)) => {}
            (Dialect::Ws(kind), Request::Auth(token)) => {
                dialects::auth(&mut self.scratch, kind, token);
                self.ws_text(out);
            }
            (Dialect::Ws(kind), Request::Join(room) | Request::Leave(room)) => {
                let (msgs, _) = dialects::joins(kind, &[room], matches!(req, Request::Leave(_)));
                for m in msgs {
                    self.scratch = m;
                    self.ws_text(out);
                }
            }
            (Dialect::Ws(kind), Request::Echo(s) | Request::Ack(s, _)) => {
                self.inner.clear();
                Self::json_data(&mut self.inner, s, size);
                self.dialect_request(out, kind, "echo");
            }
            (Dialect::Ws(kind), Request::Publish(room, s)) => {
                self.relay_inner(Some(room), s);
                self.dialect_request(out, kind, "publish");
            }
            (Dialect::Ws(kind), Request::Broadcast(s)) => {
                self.relay_inner(None, s);
                self.dialect_request(out, kind, "broadcast");
            }
            (Dialect::WsRelay, Request::Echo(s)) => {
                self.inner.clear();
                Self::json_data(&mut self.inner, s, size);
                TextEnvelope::event("echo", Some(&self.inner)).encode_into(&mut self.scratch);
                self.ws_text(out);
            }
            (Dialect::WsRelay, Request::Ack(s, n)) => {
                self.inner.clear();
                Self::json_data(&mut self.inner, s, size);
                self.set_corr(n);
                let corr = std::str::from_utf8(&self.corr).unwrap_or("echo");
                TextEnvelope::ack_request(EVENT, Some(&self.inner), ACK_NAME, Some(corr))
                    .encode_into(&mut self.scratch);
                self.ws_text(out);
            }
            (Dialect::WsRelay, Request::Publish(room, s)) => {
                self.relay_inner(Some(room), s);
                TextEnvelope::event("publish", Some(&self.inner)).encode_into(&mut self.scratch);
                self.ws_text(out);
            }
            (Dialect::WsRelay, Request::Broadcast(s)) => {
                self.relay_inner(None, s);
                TextEnvelope::event("broadcast", Some(&self.inner)).encode_into(&mut self.scratch);
                self.ws_text(out);
            }
            (Dialect::WsRelay, Request::Join(room) | Request::Leave(room)) => {
                let event = if matches!(req, Request::Join(_)) {
                    "join-room"
                } else {
                    "leave-room"
                };
                self.inner.clear();
                write_json_string(&mut self.inner, room);
                TextEnvelope::event(event, Some(&self.inner)).encode_into(&mut self.scratch);
                self.ws_text(out);
            }
            (Dialect::TcpRelay, Request::Echo(s)) => {
                self.inner.clear();
                Self::json_data(&mut self.inner, s, size);
                put_frame(
                    out,
                    OutFrame::Json {
                        event: "echo",
                        data: &self.inner,
                    },
                );
            }
            (Dialect::TcpRelay, Request::Ack(s, n)) => {
                self.inner.clear();
                Self::json_data(&mut self.inner, s, size);
                self.set_corr(n);
                let corr = std::str::from_utf8(&self.corr).unwrap_or("echo");
                put_frame(
                    out,
                    OutFrame::AckReq {
                        ack_name: ACK_NAME,
                        event: EVENT,
                        data: Some(&self.inner),
                        correlation_id: Some(corr),
                    },
                );
            }
            (Dialect::TcpRelay, Request::Publish(room, s)) => {
                self.relay_inner(Some(room), s);
                put_frame(
                    out,
                    OutFrame::Json {
                        event: "publish",
                        data: &self.inner,
                    },
                );
            }
            (Dialect::TcpRelay, Request::Broadcast(s)) => {
                self.relay_inner(None, s);
                put_frame(
                    out,
                    OutFrame::Json {
                        event: "broadcast",
                        data: &self.inner,
                    },
                );
            }
            (Dialect::TcpRelay, Request::Join(room)) => put_frame(out, OutFrame::Join { room }),
            (Dialect::TcpRelay, Request::Leave(room)) => put_frame(out, OutFrame::Leave { room }),
        }
    }

    /// Appends the joins of `rooms` and returns how many confirmations to wait for (one per
    /// room, ignis one for all, none on raw servers).
    pub fn encode_joins(&mut self, out: &mut BytesMut, rooms: &[&str]) -> usize {
        match self.dialect {
            Dialect::WsRaw { .. } => 0,
            Dialect::WsRelay | Dialect::TcpRelay => {
                for room in rooms {
                    self.encode(out, Request::Join(room));
                }
                rooms.len()
            }
            Dialect::Ws(kind) => {
                let (msgs, pending) = dialects::joins(kind, rooms, false);
                for m in msgs {
                    self.scratch = m;
                    self.ws_text(out);
                }
                pending
            }
        }
    }

    /// `inner` as the data of request `name` in `kind`'s shape. StellarStack clients cannot
    /// publish or echo: the plan never gives them a sender (`scenario.rs` refuses it), so
    /// reaching this with one is a bug of this tool, reported and sent as nothing (the
    /// missing messages show up as loss).
    fn dialect_request(&mut self, out: &mut BytesMut, kind: Kind, name: &str) {
        if dialects::request(&mut self.scratch, kind, name, &self.inner) {
            self.ws_text(out);
        } else {
            tracing::error!(
                dialect = kind.name(),
                name,
                "this dialect cannot send requests"
            );
        }
    }

    /// `{"room":R,"event":"lg","data":"<stamp>"}` (room omitted for broadcast) into `inner`.
    fn relay_inner(&mut self, room: Option<&str>, s: &Stamp) {
        self.inner.clear();
        self.inner.put_u8(b'{');
        if let Some(room) = room {
            self.inner.extend_from_slice(b"\"room\":");
            write_json_string(&mut self.inner, room);
            self.inner.put_u8(b',');
        }
        self.inner.extend_from_slice(b"\"event\":\"");
        self.inner.extend_from_slice(EVENT.as_bytes());
        self.inner.extend_from_slice(b"\",\"data\":");
        Self::json_data(&mut self.inner, s, self.size);
        self.inner.put_u8(b'}');
    }

    fn set_corr(&mut self, n: u64) {
        use std::io::Write;
        self.corr.clear();
        let _ = write!(self.corr, "{ACK_NAME}#{n}");
    }

    /// Appends a pong answering a ping (WebSocket: masked pong echoing the payload; TCP: PONG).
    pub fn encode_pong(&mut self, out: &mut BytesMut, payload: &[u8]) {
        if self.dialect.is_ws() {
            let key = self.mask();
            codec::write_frame(out, OpCode::Pong, true, false, payload, Some(key));
        } else {
            put_frame(out, OutFrame::Pong);
        }
    }

    /// Appends a client close (WebSocket close 1000, or the echo of the server's code when
    /// answering its close) and records it in the decoder. Nothing on TCP (stelar clients
    /// just close the socket, PROTOCOL.md §8).
    pub fn encode_close(&mut self, out: &mut BytesMut, code: Option<u16>) {
        if !self.dialect.is_ws() {
            return;
        }
        let code = code.and_then(CloseCode::new).unwrap_or(CloseCode::NORMAL);
        let key = self.mask();
        codec::write_close(out, Some(&CloseFrame::new(code, "")), Some(key));
        self.ws.handle_close_sent();
    }

    /// Whether the WebSocket close handshake has completed (both closes exchanged).
    pub fn close_complete(&self) -> bool {
        matches!(self.ws.phase(), codec::ClosePhase::Closed)
    }

    /// Decodes the next inbound item from `buf`. `Ok(None)`: need more bytes.
    #[inline]
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, WireError> {
        match self.dialect {
            Dialect::TcpRelay => {
                let Some(frame) = self.tcp.decode(buf).map_err(WireError::Stelar)? else {
                    return Ok(None);
                };
                Ok(Some(match frame.frame_type {
                    FrameType::Json => classify_event(&frame.event, &frame.payload, false),
                    FrameType::Binary | FrameType::AckRes => match Stamp::find(&frame.payload) {
                        Some(stamp) => Inbound::Data {
                            stamp,
                            ack: frame.frame_type == FrameType::AckRes,
                        },
                        None => Inbound::Unrecognized,
                    },
                    FrameType::Ping => Inbound::Ping(Bytes::new()),
                    FrameType::Pong => Inbound::Ignored,
                    FrameType::Connect => Inbound::Connect,
                    FrameType::Error => Inbound::ServerError,
                    FrameType::Disconnect => Inbound::Closed(None),
                    _ => Inbound::Unrecognized,
                }))
            }
            Dialect::WsRaw { .. } | Dialect::WsRelay | Dialect::Ws(_) => {
                let Some(msg) = self.ws.decode(buf).map_err(WireError::Ws)? else {
                    return Ok(None);
                };
                Ok(Some(match msg {
                    Message::Text(t) => match self.dialect {
                        Dialect::Ws(kind) => dialects::classify(kind, &t),
                        Dialect::WsRelay => classify_envelope(&t),
                        _ => match Stamp::parse(&t).or_else(|| Stamp::find(&t)) {
                            Some(stamp) => Inbound::Data { stamp, ack: false },
                            None => Inbound::Unrecognized,
                        },
                    },
                    // Binary messages are never sent to these dialects.
                    Message::Binary(_) if matches!(self.dialect, Dialect::Ws(_)) => {
                        Inbound::Unrecognized
                    }
                    Message::Binary(b) if self.dialect == Dialect::WsRelay => {
                        match stelar::binary::parse(&b)
                            .ok()
                            .and_then(|m| Stamp::find(m.payload))
                        {
                            Some(stamp) => Inbound::Data { stamp, ack: false },
                            None => Inbound::Unrecognized,
                        }
                    }
                    Message::Binary(m) => match Stamp::parse(&m).or_else(|| Stamp::find(&m)) {
                        Some(stamp) => Inbound::Data { stamp, ack: false },
                        None => Inbound::Unrecognized,
                    },
                    Message::Ping(p) => Inbound::Ping(p),
                    Message::Pong(_) => Inbound::Ignored,
                    Message::Close(f) => Inbound::Closed(f.map(|f| f.code.get())),
                }))
            }
        }
    }
}

fn put_frame(out: &mut BytesMut, f: OutFrame<'_>) {
    // Our own frames are small and named by us; a failure would be a bug in this file, and
    // sending nothing is the safe answer (the missing reply shows up as loss).
    if let Err(e) = f.encode_into(out) {
        tracing::error!(error = %e, "cannot encode a stelar frame");
    }
}

/// Classifies a relay event by name, with its data (JSON text) or the part of the message
/// that holds it.
#[inline]
fn classify_event(name: &[u8], rest: &[u8], ack_hint: bool) -> Inbound {
    match name {
        b"joined-room" => Inbound::Joined,
        b"left-room" => Inbound::Left,
        b"server:error" => Inbound::ServerError,
        _ => match Stamp::find_at(rest) {
            Some((at, stamp)) => {
                let ack = ack_hint || {
                    let mut tail = &rest[at + STAMP_LEN..];
                    while let [PAD, more @ ..] = tail {
                        tail = more;
                    }
                    contains(tail, b"\"_isAck\":true")
                };
                Inbound::Data { stamp, ack }
            }
            None => Inbound::Unrecognized,
        },
    }
}

/// A relay text message: fast path on `{"event":"NAME"`, else the full envelope parser.
#[inline]
fn classify_envelope(msg: &[u8]) -> Inbound {
    const PREFIX: &[u8] = b"{\"event\":\"";
    if let Some(rest) = msg.strip_prefix(PREFIX) {
        if let Some(end) = rest.iter().position(|&b| b == b'"' || b == b'\\') {
            if rest[end] == b'"' {
                return classify_event(&rest[..end], &rest[end..], false);
            }
        }
    }
    match envelope::parse(msg) {
        Ok(env) => {
            let data = env.data.unwrap_or_default();
            match classify_event(env.event.as_bytes(), data, env.is_ack) {
                Inbound::Data { stamp, .. } => Inbound::Data {
                    stamp,
                    ack: env.is_ack,
                },
                other => other,
            }
        }
        Err(_) => Inbound::Unrecognized,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shardcast::protocol::stelar::envelope::parse_ack_payload;
    use shardcast::protocol::ws::codec::{server_frame, Decoder as WsDecoder};

    const S: Stamp = Stamp {
        publisher: 3,
        seq: 41,
        sent_ns: 1_000_000,
    };

    /// Decodes what a client wrote with a server-role decoder (unmasking it).
    fn server_reads(bytes: &[u8]) -> Vec<Message> {
        let mut d = WsDecoder::new(DecoderConfig::new(Role::Server));
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut buf).expect("valid client frames") {
            out.push(m);
        }
        out
    }

    fn text(m: &Message) -> &[u8] {
        match m {
            Message::Text(t) => t,
            other => panic!("not text: {other:?}"),
        }
    }

    /// Everything `c` decodes from `buf`.
    fn decode_all(c: &mut ClientCodec, buf: &mut BytesMut) -> Vec<Inbound> {
        let mut got = Vec::new();
        while let Some(i) = c.decode(buf).unwrap() {
            got.push(i);
        }
        got
    }

    #[test]
    fn ws_relay_requests_are_masked_envelopes() {
        let mut c = ClientCodec::new(Dialect::WsRelay, 1, 50);
        let mut out = BytesMut::new();
        c.encode(&mut out, Request::Echo(&S));
        c.encode(&mut out, Request::Join("r1"));
        c.encode(&mut out, Request::Publish("r1", &S));
        c.encode(&mut out, Request::Broadcast(&S));
        c.encode(&mut out, Request::Ack(&S, 7));
        assert_eq!(out[1] & 0x80, 0x80, "masked");
        let msgs = server_reads(&out);
        assert_eq!(msgs.len(), 5);
        let echo = envelope::parse(text(&msgs[0])).unwrap();
        assert_eq!(echo.event, "echo");
        let data = echo.data.unwrap();
        assert_eq!(data.len(), 52);
        assert_eq!(Stamp::parse(&data[1..]), Some(S));
        assert_eq!(text(&msgs[1]), br#"{"event":"join-room","data":"r1"}"#);
        let publish = envelope::parse(text(&msgs[2])).unwrap();
        assert_eq!(publish.event, "publish");
        assert!(publish
            .data
            .unwrap()
            .starts_with(br#"{"room":"r1","event":"lg","data":"LG"#));
        let bc = envelope::parse(text(&msgs[3])).unwrap();
        assert!(bc.data.unwrap().starts_with(br#"{"event":"lg","data":"LG"#));
        let ack = envelope::parse(text(&msgs[4])).unwrap();
        assert_eq!(ack.ack_name.as_deref(), Some("echo"));
        assert_eq!(ack.correlation_id.as_deref(), Some("echo#7"));
    }

    #[test]
    fn ws_relay_replies_are_classified() {
        let mut c = ClientCodec::new(Dialect::WsRelay, 1, 42);
        let data = format!("\"{}\"", std::str::from_utf8(&S.encode()).unwrap());
        let echo = TextEnvelope::event("echo", Some(data.as_bytes())).encode();
        let ack = TextEnvelope::ack_reply("lg", Some(data.as_bytes()), Some("echo#1")).encode();
        let joined = TextEnvelope::event("joined-room", Some(b"\"r\"")).encode();
        let err = TextEnvelope::event("server:error", Some(br#"{"code":"x"}"#)).encode();
        // Key order a server other than shardcast might use: full parser path.
        let reordered = format!("{{\"data\":{data},\"_isAck\":true,\"event\":\"lg\"}}");
        let mut buf = BytesMut::new();
        for m in [
            &echo[..],
            &ack[..],
            &joined[..],
            &err[..],
            reordered.as_bytes(),
            b"{\"event\":\"x\"}",
        ] {
            buf.extend_from_slice(&server_frame(OpCode::Text, m));
        }
        buf.extend_from_slice(&server_frame(OpCode::Ping, b"hb"));
        let got = decode_all(&mut c, &mut buf);
        assert_eq!(
            got,
            vec![
                Inbound::Data {
                    stamp: S,
                    ack: false
                },
                Inbound::Data {
                    stamp: S,
                    ack: true
                },
                Inbound::Joined,
                Inbound::ServerError,
                Inbound::Data {
                    stamp: S,
                    ack: true
                },
                Inbound::Unrecognized,
                Inbound::Ping(Bytes::from_static(b"hb")),
            ]
        );
    }

    #[test]
    fn ws_raw_round_trip_text_and_binary() {
        for binary in [false, true] {
            let mut c = ClientCodec::new(Dialect::WsRaw { binary }, 9, 64);
            let mut out = BytesMut::new();
            c.encode(&mut out, Request::Echo(&S));
            c.encode(&mut out, Request::Join("ignored"));
            let msgs = server_reads(&out);
            assert_eq!(msgs.len(), 1);
            let payload = match &msgs[0] {
                Message::Text(p) if !binary => p.clone(),
                Message::Binary(p) if binary => p.clone(),
                other => panic!("{other:?}"),
            };
            assert_eq!(payload.len(), 64);
            // An echo server sends the same bytes back unmasked.
            let op = if binary { OpCode::Binary } else { OpCode::Text };
            let mut back = BytesMut::from(&server_frame(op, &payload)[..]);
            assert_eq!(
                c.decode(&mut back).unwrap(),
                Some(Inbound::Data {
                    stamp: S,
                    ack: false
                })
            );
        }
    }

    #[test]
    fn tcp_relay_frames() {
        let mut c = ClientCodec::new(Dialect::TcpRelay, 1, 42);
        let mut out = BytesMut::new();
        c.encode(&mut out, Request::Join("lobby"));
        c.encode(&mut out, Request::Echo(&S));
        c.encode(&mut out, Request::Ack(&S, 1));
        c.encode(&mut out, Request::Publish("lobby", &S));
        let dec = FrameDecoder::default();
        let join = dec.decode(&mut out).unwrap().unwrap();
        assert_eq!(join.frame_type, FrameType::Join);
        assert_eq!(&join.payload[..], b"lobby");
        let echo = dec.decode(&mut out).unwrap().unwrap();
        assert_eq!(
            (&echo.event[..], echo.frame_type),
            (&b"echo"[..], FrameType::Json)
        );
        let ack = dec.decode(&mut out).unwrap().unwrap();
        assert_eq!(ack.frame_type, FrameType::AckReq);
        assert_eq!(&ack.event[..], b"echo");
        let p = envelope::parse(&ack.payload).unwrap();
        assert_eq!(p.correlation_id.as_deref(), Some("echo#1"));
        let publish = dec.decode(&mut out).unwrap().unwrap();
        assert!(publish
            .payload
            .starts_with(br#"{"room":"lobby","event":"lg","data":"LG"#));

        // Server side: CONNECT, joined-room, echo, ACK_RES, PING, ERROR, DISCONNECT.
        let data = format!("\"{}\"", std::str::from_utf8(&S.encode()).unwrap());
        let mut inb = BytesMut::new();
        for f in [
            OutFrame::Connect { id: "abc" },
            OutFrame::JsonString {
                event: "joined-room",
                value: "lobby",
            },
            OutFrame::Json {
                event: "echo",
                data: data.as_bytes(),
            },
            OutFrame::AckRes {
                ack_name: "echo",
                result: data.as_bytes(),
                correlation_id: Some("echo#1"),
            },
            OutFrame::Ping,
            OutFrame::Error { text: "bad" },
            OutFrame::Disconnect,
        ] {
            f.encode_into(&mut inb).unwrap();
        }
        let got = decode_all(&mut c, &mut inb);
        assert_eq!(
            got,
            vec![
                Inbound::Connect,
                Inbound::Joined,
                Inbound::Data {
                    stamp: S,
                    ack: false
                },
                Inbound::Data {
                    stamp: S,
                    ack: true
                },
                Inbound::Ping(Bytes::new()),
                Inbound::ServerError,
                Inbound::Closed(None),
            ]
        );
        // The ACK_RES payload is what stelar's client unwraps (§4.4).
        let mut res = BytesMut::new();
        OutFrame::AckRes {
            ack_name: "echo",
            result: data.as_bytes(),
            correlation_id: Some("c"),
        }
        .encode_into(&mut res)
        .unwrap();
        let f = dec.decode(&mut res).unwrap().unwrap();
        assert_eq!(parse_ack_payload(&f.payload).unwrap().data, data.as_bytes());
    }

    #[test]
    fn dialect_receivers_authenticate_join_and_read_deliveries() {
        let data = format!("\"{}\"", std::str::from_utf8(&S.encode()).unwrap());
        for (kind, auth_ok, joined, delivery) in [
            (
                Kind::StellarStack,
                r#"{"type":"auth_success","userId":"lg-1"}"#.to_string(),
                r#"{"type":"subscribed","serverId":"r1"}"#.to_string(),
                format!(r#"{{"type":"lg","serverId":"r1","data":{data}}}"#),
            ),
            (
                Kind::Ignis,
                r#"{"event":"connected","data":{"id":"c","userId":"lg-1","time":"t"}}"#.to_string(),
                r#"{"event":"echo","data":"lg-joined"}"#.to_string(),
                format!(r#"{{"event":"lg","data":{data}}}"#),
            ),
            (
                Kind::Stonyx,
                r#"{"request":"auth","response":"success"}"#.to_string(),
                r#"{"request":"join-room","response":"r1"}"#.to_string(),
                format!(r#"{{"request":"lg","data":{data}}}"#),
            ),
        ] {
            let mut c = ClientCodec::new(Dialect::Ws(kind), 3, 42);
            let mut out = BytesMut::new();
            c.encode(&mut out, Request::Auth("tok"));
            assert_eq!(c.encode_joins(&mut out, &["r1"]), 1);
            let msgs = server_reads(&out);
            let sent: Vec<&str> = msgs
                .iter()
                .map(|m| std::str::from_utf8(text(m)).unwrap())
                .collect();
            assert!(sent[0].contains("tok"), "{kind:?}: {sent:?}");
            assert!(sent[1].contains("\"r1\""), "{kind:?}: {sent:?}");
            let mut buf = BytesMut::new();
            for m in [&auth_ok, &joined, &delivery] {
                buf.extend_from_slice(&server_frame(OpCode::Text, m.as_bytes()));
            }
            buf.extend_from_slice(&server_frame(OpCode::Binary, b"\0\0\0\x02{}"));
            let got = decode_all(&mut c, &mut buf);
            assert_eq!(
                got,
                vec![
                    Inbound::Authenticated,
                    Inbound::Joined,
                    Inbound::Data {
                        stamp: S,
                        ack: false
                    },
                    Inbound::Unrecognized,
                ],
                "{kind:?}"
            );
        }
        // Publishing exists in ignis and stonyx (relay event names); not in StellarStack.
        let mut out = BytesMut::new();
        ClientCodec::new(Dialect::Ws(Kind::Stonyx), 1, 42)
            .encode(&mut out, Request::Publish("r", &S));
        let publish = server_reads(&out);
        assert!(text(&publish[0])
            .starts_with(br#"{"request":"publish","data":{"room":"r","event":"lg","data":"LG"#));
        let mut out = BytesMut::new();
        ClientCodec::new(Dialect::Ws(Kind::StellarStack), 1, 42)
            .encode(&mut out, Request::Publish("r", &S));
        assert!(out.is_empty());
    }

    #[test]
    fn close_handshake() {
        let mut c = ClientCodec::new(Dialect::WsRelay, 1, 42);
        let mut buf = BytesMut::from(
            &codec::server_close(Some(&CloseFrame::new(CloseCode::AWAY, "bye")))[..],
        );
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(Inbound::Closed(Some(1001)))
        );
        let mut out = BytesMut::new();
        c.encode_close(&mut out, Some(1001));
        assert!(c.close_complete());
        match &server_reads(&out)[0] {
            Message::Close(Some(f)) => assert_eq!(f.code.get(), 1001),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_faults_are_errors_not_panics() {
        let mut c = ClientCodec::new(Dialect::WsRelay, 1, 42);
        // A masked frame from a server is a protocol violation (RFC 6455 §5.1).
        let mut buf = BytesMut::from(&[0x81u8, 0x81, 1, 2, 3, 4, 5][..]);
        assert!(matches!(c.decode(&mut buf), Err(WireError::Ws(_))));
        let mut t = ClientCodec::new(Dialect::TcpRelay, 1, 42);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1, 0, 0][..]);
        assert!(matches!(t.decode(&mut buf), Err(WireError::Stelar(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_server_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), d in 0usize..6) {
            let dialect = [
                Dialect::WsRelay,
                Dialect::WsRaw { binary: false },
                Dialect::TcpRelay,
                Dialect::Ws(Kind::StellarStack),
                Dialect::Ws(Kind::Ignis),
                Dialect::Ws(Kind::Stonyx),
            ][d];
            let mut c = ClientCodec::new(dialect, 5, 42);
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..64 {
                match c.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }

        #[test]
        fn replies_split_at_every_offset(split in 0usize..200) {
            let mut c = ClientCodec::new(Dialect::WsRelay, 1, 42);
            let data = format!("\"{}\"", std::str::from_utf8(&S.encode()).unwrap());
            let mut all = BytesMut::new();
            for _ in 0..3 {
                all.extend_from_slice(&server_frame(OpCode::Text, &TextEnvelope::event("echo", Some(data.as_bytes())).encode()));
            }
            let split = split.min(all.len());
            let mut buf = BytesMut::from(&all[..split]);
            let mut n = 0;
            while let Some(i) = c.decode(&mut buf).unwrap() { prop_assert_eq!(i, Inbound::Data { stamp: S, ack: false }); n += 1; }
            buf.extend_from_slice(&all[split..]);
            while let Some(i) = c.decode(&mut buf).unwrap() { prop_assert_eq!(i, Inbound::Data { stamp: S, ack: false }); n += 1; }
            prop_assert_eq!(n, 3);
        }
    }
}
