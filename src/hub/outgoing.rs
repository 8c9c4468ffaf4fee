//! Everything the server says to a client, encoded once per wire form and shared by every
//! recipient. This is the one place where the stelar / WebSocket frames the server sends are
//! built: events and binary messages, ACK replies, room confirmations, heartbeats, pongs,
//! close frames and the TCP CONNECT. A new transport or dialect adds its form here.
//!
//! An [`Outgoing`] holds the message's parts ([`Body`]) and builds each wire form the first
//! time a recipient needs it: the WebSocket frame, its permessage-deflate variants, and the
//! stelar TCP frame. Server frames are unmasked and (with `server_no_context_takeover`)
//! compressed independently of any connection, so one `Bytes` serves every WebSocket
//! subscriber on every shard, and one TCP frame every TCP subscriber (DESIGN.md "encoded
//! once"). A form a transport cannot carry is `None` (a CONNECT on WebSocket, an event name
//! stelar's TCP clients would reject, a raw bench frame on TCP).
//!
//! The forms are `OnceLock`s because an `Outgoing` crosses shards inside an `Arc`: the
//! first shard to need a form builds it, the others reuse it. A shard that fans a frame out
//! to many local sockets first copies it into its own allocation ([`Outgoing::local`]) so the
//! reference counts it bumps per recipient live in its own cache, not in another core's.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};

use super::client::CloseCause;
use crate::dialect::{DialectId, Dialects, Encoded, Outbound, MAX_DIALECTS};
use crate::protocol::stelar::json::{quoted_len, write_quoted};
use crate::protocol::stelar::{binary, names, OutFrame, TextEnvelope};
use crate::protocol::ws::close::{CloseCode, CloseFrame};
use crate::protocol::ws::codec::{server_close, server_frame, server_frame_from_parts, Compressor};
use crate::protocol::ws::frame::{FrameHeader, OpCode};

/// What is being sent.
#[derive(Debug)]
pub(crate) enum Body {
    /// An event with optional JSON data: `{"event":E,"data":D}` on WebSocket, a JSON frame on
    /// TCP. `data` is JSON text, forwarded verbatim.
    Event {
        /// Event name.
        event: Box<str>,
        /// JSON text of `data`; `None` omits the key (and sends `null` on TCP).
        data: Option<Bytes>,
    },
    /// A binary message: the WebSocket binary envelope, a BINARY frame on TCP.
    Binary {
        /// Event name.
        event: Box<str>,
        /// Raw bytes.
        payload: Bytes,
    },
    /// The reply to an ACK request: `{"event":E,"data":R,"_isAck":true,"_correlationId":C}` on
    /// WebSocket, ACK_RES named after the request's ACK name on TCP (PROTOCOL.md §2.2, §4.4).
    AckReply {
        /// The request's event.
        event: Box<str>,
        /// The request's ACK name (the TCP frame's event field).
        ack_name: Box<str>,
        /// Echoed correlation id.
        correlation_id: Option<Box<str>>,
        /// JSON text of the result.
        result: Bytes,
    },
    /// A raw WebSocket frame payload for the bench endpoints (`/echo`, `/broadcast`): sent
    /// as is, text or binary, never to TCP clients.
    RawWs {
        /// Text (true) or binary.
        text: bool,
        /// The message.
        payload: Bytes,
    },
    /// The server's heartbeat: a WebSocket ping, a TCP PING.
    Ping,
    /// The answer to a ping: a WebSocket pong carrying the ping's payload, a TCP PONG.
    Pong(Bytes),
    /// The server closes: a WebSocket close frame (`code` `None` = empty close, the echo of a
    /// close without a status), on TCP an ERROR frame with `reason`, or DISCONNECT when
    /// `disconnect` (a graceful shutdown, PROTOCOL.md §4.3).
    Close {
        /// WebSocket close code.
        code: Option<CloseCode>,
        /// Reason (WebSocket reason, cut to 123 bytes; TCP ERROR text).
        reason: Cow<'static, str>,
        /// TCP: DISCONNECT instead of ERROR.
        disconnect: bool,
    },
    /// TCP CONNECT with the client's id, the server's first frame (§4.3). WebSocket clients
    /// get no id frame.
    Connect(Box<str>),
    /// A non-fatal error about something the client sent: stelar's `server:error` event
    /// (`data` is its JSON), a dialect's own error message.
    Error {
        /// Machine-readable code.
        code: Box<str>,
        /// Human-readable text.
        message: Box<str>,
        /// The event it is about.
        about: Option<Box<str>>,
        /// The room it is about, if any.
        room: Option<Box<str>>,
        /// stelar's `data`: `{"code","message"[,"event"][,extra]}`.
        data: Bytes,
    },
    /// A room confirmation: stelar's `joined-room` / `left-room` with the room as a JSON
    /// string (`data`), a dialect's own (StellarStack `subscribed`, ...).
    Room {
        /// Joined (true) or left.
        joined: bool,
        /// The room.
        room: Box<str>,
        /// The room as a JSON string.
        data: Bytes,
    },
    /// Authentication succeeded: stelar's `auth-ok` (`data` = `{"id","user"}`, sent only with
    /// a user), a dialect's own answer.
    Authenticated {
        /// The client id.
        id: Box<str>,
        /// The user.
        user: Option<Box<str>>,
        /// stelar's `data`.
        data: Bytes,
    },
    /// Authentication failed on a dialect path (stelar closes with 4003 instead; never sent
    /// to stelar clients).
    AuthFailed(Box<str>),
}

/// Which permessage-deflate form a WebSocket client takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WsForm {
    /// No compression negotiated.
    Plain,
    /// Compressed with the full 32 KiB window.
    Deflate,
    /// Compressed for a peer that limited our window (`server_max_window_bits` < 15).
    DeflateNarrow,
}

/// A message with its lazily built wire forms.
#[derive(Debug)]
pub(crate) struct Outgoing {
    body: Body,
    /// The room it is published to (dialects that name it, e.g. StellarStack's `serverId`).
    room: Option<Arc<str>>,
    ws: OnceLock<Option<Bytes>>,
    ws_deflate: OnceLock<Option<Bytes>>,
    ws_deflate_narrow: OnceLock<Option<Bytes>>,
    tcp: OnceLock<Option<Bytes>>,
    /// Other dialects' WebSocket frames, per dialect and compression form; allocated when
    /// the first recipient of another dialect needs one.
    dialects: OnceLock<Box<DialectForms>>,
}

/// Frames for dialects 1.. (stelar's are the fields above), by [`WsForm`].
type DialectForms = [[OnceLock<DialectForm>; 3]; MAX_DIALECTS - 1];

/// A dialect's frame for one message, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DialectForm {
    /// Send this.
    Frame(Bytes),
    /// The dialect has no such message: nothing is sent, nothing counted.
    Silent,
    /// The dialect cannot carry it: dropped and counted.
    Unsendable,
}

/// The per-shard compressors used to build deflated forms (no context takeover, so one
/// serves every connection of the shard).
pub(crate) struct Compressors {
    /// Full window.
    pub(crate) full: Compressor,
    /// RLE-only, for peers with a narrowed window.
    pub(crate) narrow: Compressor,
}

impl Outgoing {
    /// Wraps a body.
    pub(crate) fn new(body: Body) -> Arc<Outgoing> {
        Self::new_in(body, None)
    }

    /// Wraps a body published to `room`.
    pub(crate) fn new_in(body: Body, room: Option<Arc<str>>) -> Arc<Outgoing> {
        Arc::new(Outgoing {
            body,
            room,
            ws: OnceLock::new(),
            ws_deflate: OnceLock::new(),
            ws_deflate_narrow: OnceLock::new(),
            tcp: OnceLock::new(),
            dialects: OnceLock::new(),
        })
    }

    /// An event published to `room`.
    pub(crate) fn event_in(room: Arc<str>, event: &str, data: Option<Bytes>) -> Arc<Outgoing> {
        Self::new_in(
            Body::Event {
                event: event.into(),
                data,
            },
            Some(room),
        )
    }

    /// A binary message published to `room`.
    pub(crate) fn binary_in(room: Arc<str>, event: &str, payload: Bytes) -> Arc<Outgoing> {
        Self::new_in(
            Body::Binary {
                event: event.into(),
                payload,
            },
            Some(room),
        )
    }

    /// The room it is published to, if any.
    pub(crate) fn room(&self) -> Option<&Arc<str>> {
        self.room.as_ref()
    }

    /// An event with JSON data.
    pub(crate) fn event(event: &str, data: Option<Bytes>) -> Arc<Outgoing> {
        Self::new(Body::Event {
            event: event.into(),
            data,
        })
    }

    /// A room confirmation: `joined-room` / `left-room` with the room as a JSON string (§6).
    pub(crate) fn room_confirmation(joined: bool, room: &str) -> Arc<Outgoing> {
        let mut quoted = BytesMut::with_capacity(quoted_len(room));
        write_quoted(&mut quoted, room);
        Self::new(Body::Room {
            joined,
            room: room.into(),
            data: quoted.freeze(),
        })
    }

    /// A failed authentication on a dialect path.
    pub(crate) fn auth_failed(reason: &str) -> Arc<Outgoing> {
        Self::new(Body::AuthFailed(reason.into()))
    }

    /// A binary message.
    pub(crate) fn binary(event: &str, payload: Bytes) -> Arc<Outgoing> {
        Self::new(Body::Binary {
            event: event.into(),
            payload,
        })
    }

    /// The reply to an ACK request.
    pub(crate) fn ack_reply(
        event: &str,
        ack_name: &str,
        correlation_id: Option<&str>,
        result: Bytes,
    ) -> Arc<Outgoing> {
        Self::new(Body::AckReply {
            event: event.into(),
            ack_name: ack_name.into(),
            correlation_id: correlation_id.map(Into::into),
            result,
        })
    }

    /// A close with `code` and `reason` (TCP: ERROR with the reason).
    pub(crate) fn close(code: CloseCode, reason: impl Into<Cow<'static, str>>) -> Arc<Outgoing> {
        Self::new(Body::Close {
            code: Some(code),
            reason: reason.into(),
            disconnect: false,
        })
    }

    /// [`Outgoing::closing_for`] with a dialect's own close code and reason for `cause`.
    pub(crate) fn closing_in(
        client: &super::client::Client,
        cause: CloseCause,
        own: Option<(u16, &'static str)>,
    ) -> Arc<Outgoing> {
        match own {
            Some((code, reason)) => Self::new(Body::Close {
                code: Some(CloseCode::new(code).unwrap_or(CloseCode::POLICY)),
                reason: Cow::Borrowed(reason),
                disconnect: false,
            }),
            None => Self::closing_for(client, cause),
        }
    }

    /// What the server sends when it closes a connection for `cause`: a WebSocket close
    /// frame with the cause's code and reason, a TCP ERROR with the reason (DISCONNECT for a
    /// shutdown).
    pub(crate) fn closing(cause: CloseCause) -> Arc<Outgoing> {
        Self::closing_with(cause, None)
    }

    /// [`Outgoing::closing`] for `client`: with the reason a backend gave, when it closed the
    /// client over the API.
    pub(crate) fn closing_for(client: &super::client::Client, cause: CloseCause) -> Arc<Outgoing> {
        match cause {
            CloseCause::Disconnected { .. }
            | CloseCause::Kicked { .. }
            | CloseCause::AuthRefused => Self::closing_with(cause, client.close_reason()),
            _ => Self::closing(cause),
        }
    }

    fn closing_with(cause: CloseCause, given: Option<Box<str>>) -> Arc<Outgoing> {
        let (code, reason) = match cause {
            CloseCause::SlowConsumer | CloseCause::OutputBudget => {
                (CloseCode::POLICY, "Slow consumer")
            }
            CloseCause::InputBudget => (CloseCode::TRY_AGAIN_LATER, "Server busy"),
            CloseCause::HeartbeatTimeout => (CloseCode::AWAY, "Heartbeat timeout"),
            CloseCause::HandshakeTimeout => (CloseCode::POLICY, "Handshake timeout"),
            CloseCause::Shutdown => (CloseCode::AWAY, "Shutting down"),
            CloseCause::AuthTimeout => (CloseCode::AUTH_TIMEOUT, "Authentication timeout"),
            CloseCause::RateLimited => (CloseCode::POLICY, "Rate limit exceeded"),
            CloseCause::AuthRefused => (CloseCode::AUTH_FAILED, "Authentication failed"),
            CloseCause::Kicked { code } => (CloseCode::new(code).unwrap_or(CloseCode::POLICY), ""),
            CloseCause::Disconnected { code } => (
                CloseCode::new(code).unwrap_or(CloseCode::POLICY),
                "Disconnected",
            ),
        };
        let reason = match given {
            Some(r) => Cow::Owned(r.into_string()),
            None => Cow::Borrowed(reason),
        };
        Self::new(Body::Close {
            code: Some(code),
            reason,
            disconnect: cause == CloseCause::Shutdown,
        })
    }

    /// The answer to a successful authentication: `auth-ok` with `{"id":ID,"user":USER}`
    /// (a dialect's own answer; stelar clients get it only with a user).
    pub(crate) fn auth_ok(id: &str, user: Option<&str>) -> Arc<Outgoing> {
        let u = user.unwrap_or("");
        let mut data = BytesMut::with_capacity(20 + quoted_len(id) + quoted_len(u));
        data.extend_from_slice(b"{\"id\":");
        write_quoted(&mut data, id);
        data.extend_from_slice(b",\"user\":");
        write_quoted(&mut data, u);
        data.extend_from_slice(b"}");
        Self::new(Body::Authenticated {
            id: id.into(),
            user: user.map(Into::into),
            data: data.freeze(),
        })
    }

    /// A refused authentication: close 4003 with `reason` (TCP: ERROR with the reason).
    pub(crate) fn auth_refused(reason: impl Into<Cow<'static, str>>) -> Arc<Outgoing> {
        Self::close(CloseCode::AUTH_FAILED, reason)
    }

    /// The non-fatal error event (PROTOCOL.md §10 Q12): `server:error` with
    /// `{"code":C,"message":M,"event":E}` (`event` omitted when not about one), plus one more
    /// string member in `extra`, e.g. `"to": ID` for a direct message whose recipient is gone.
    pub(crate) fn server_error(
        code: &str,
        message: &str,
        event: Option<&str>,
        extra: Option<(&str, &str)>,
    ) -> Arc<Outgoing> {
        let mut data = BytesMut::with_capacity(
            48 + quoted_len(code)
                + quoted_len(message)
                + event.map_or(0, quoted_len)
                + extra.map_or(0, |(k, v)| quoted_len(k) + quoted_len(v)),
        );
        data.extend_from_slice(b"{\"code\":");
        write_quoted(&mut data, code);
        data.extend_from_slice(b",\"message\":");
        write_quoted(&mut data, message);
        if let Some(e) = event {
            data.extend_from_slice(b",\"event\":");
            write_quoted(&mut data, e);
        }
        if let Some((k, v)) = extra {
            data.extend_from_slice(b",");
            write_quoted(&mut data, k);
            data.extend_from_slice(b":");
            write_quoted(&mut data, v);
        }
        data.extend_from_slice(b"}");
        let room = match extra {
            Some(("room", r)) => Some(r.into()),
            _ => None,
        };
        Self::new(Body::Error {
            code: code.into(),
            message: message.into(),
            about: event.map(Into::into),
            room,
            data: data.freeze(),
        })
    }

    /// What is being sent.
    pub(crate) fn body(&self) -> &Body {
        &self.body
    }

    /// Whether the body is a protocol control message (heartbeat, pong, close, CONNECT),
    /// which goes to a client whatever its phase and is never compressed.
    pub(crate) fn is_control(&self) -> bool {
        matches!(
            self.body,
            Body::Ping | Body::Pong(_) | Body::Close { .. } | Body::Connect(_)
        )
    }

    /// The stelar event this body is sent as (an error, a room confirmation and the
    /// authentication answer are events to stelar clients), or `None`.
    fn as_event(&self) -> Option<(&str, Option<&[u8]>)> {
        match &self.body {
            Body::Event { event, data } => Some((event, data.as_deref())),
            Body::Error { data, .. } => Some(("server:error", Some(data))),
            Body::Room { joined, data, .. } => Some((
                if *joined { "joined-room" } else { "left-room" },
                Some(data),
            )),
            Body::Authenticated { data, .. } => Some(("auth-ok", Some(data))),
            _ => None,
        }
    }

    /// The message as dialects see it (`None` for protocol control messages and raw bench
    /// frames, which dialects never encode).
    pub(crate) fn outbound(&self) -> Option<Outbound<'_>> {
        let room = self.room.as_deref();
        Some(match &self.body {
            Body::Event { event, data } => Outbound::Event {
                event,
                data: data.as_deref(),
                room,
            },
            Body::Binary { event, payload } => Outbound::Binary {
                event,
                payload,
                room,
            },
            Body::AckReply {
                ack_name, result, ..
            } => Outbound::Reply {
                request: ack_name,
                result,
            },
            Body::Error {
                code,
                message,
                about,
                room,
                ..
            } => Outbound::Error {
                code,
                message,
                about: about.as_deref(),
                room: room.as_deref(),
            },
            Body::Room {
                joined: true, room, ..
            } => Outbound::Joined { room },
            Body::Room { room, .. } => Outbound::Left { room },
            Body::Authenticated { id, user, .. } => Outbound::Authenticated {
                id,
                user: user.as_deref(),
            },
            Body::AuthFailed(reason) => Outbound::AuthFailed { reason },
            Body::RawWs { .. }
            | Body::Ping
            | Body::Pong(_)
            | Body::Close { .. }
            | Body::Connect(_) => return None,
        })
    }

    /// The frame for a WebSocket client of dialect `id` in `form`: stelar's own forms for
    /// stelar and for control messages, otherwise the dialect's encoding, built once per
    /// (dialect, form) and shared by every recipient.
    pub(crate) fn for_dialect(
        &self,
        dialects: &Dialects,
        id: DialectId,
        form: WsForm,
        c: &mut Compressors,
    ) -> DialectForm {
        let stelar = |c: &mut Compressors| match self.ws(form, c) {
            Some(f) => DialectForm::Frame(f.clone()),
            None => DialectForm::Unsendable,
        };
        let Some(dialect) = dialects.get(id) else {
            return stelar(c);
        };
        if self.is_control() {
            return stelar(c);
        }
        let forms = self.dialects.get_or_init(Default::default);
        let slot = &forms[id.0 as usize - 1][form as usize];
        if let Some(f) = slot.get() {
            return f.clone();
        }
        let built = match self.outbound().map(|o| dialect.encode(&o)) {
            Some(Encoded::AsStelar) => stelar(c),
            Some(Encoded::Text(text)) => DialectForm::Frame(Self::text_frame_in(&text, form, c)),
            Some(Encoded::Nothing) => DialectForm::Silent,
            Some(Encoded::Unsupported) | None => DialectForm::Unsendable,
        };
        slot.get_or_init(|| built).clone()
    }

    /// A text frame around `text` in `form`.
    pub(crate) fn text_frame_in(text: &[u8], form: WsForm, c: &mut Compressors) -> Bytes {
        match form {
            WsForm::Plain => server_frame(OpCode::Text, text),
            WsForm::Deflate => c.full.server_frame(OpCode::Text, text),
            WsForm::DeflateNarrow => c.narrow.server_frame(OpCode::Text, text),
        }
    }

    /// Bytes of content this message carries (event name and data, or payload).
    pub(crate) fn payload_len(&self) -> usize {
        if let Some((event, data)) = self.as_event() {
            return event.len() + data.map_or(0, <[u8]>::len);
        }
        match &self.body {
            Body::AuthFailed(reason) => reason.len(),
            Body::Event { .. }
            | Body::Error { .. }
            | Body::Room { .. }
            | Body::Authenticated { .. } => 0,
            Body::Binary { event, payload } => event.len() + payload.len(),
            Body::AckReply {
                event,
                ack_name,
                result,
                ..
            } => event.len() + ack_name.len() + result.len(),
            Body::RawWs { payload, .. } | Body::Pong(payload) => payload.len(),
            Body::Close { reason, .. } => reason.len(),
            Body::Connect(id) => id.len(),
            Body::Ping => 0,
        }
    }

    /// The uncompressed WebSocket frame, or `None` if WebSocket clients do not get this.
    pub(crate) fn ws_plain(&self) -> Option<&Bytes> {
        self.ws.get_or_init(|| self.build_ws()).as_ref()
    }

    fn build_ws(&self) -> Option<Bytes> {
        if let Some((event, data)) = self.as_event() {
            return Some(text_frame(&TextEnvelope::event(event, data)));
        }
        Some(match &self.body {
            Body::Event { .. }
            | Body::Error { .. }
            | Body::Room { .. }
            | Body::Authenticated { .. }
            | Body::AuthFailed(_) => return None,
            Body::AckReply {
                event,
                correlation_id,
                result,
                ..
            } => text_frame(&TextEnvelope::ack_reply(
                event,
                Some(result),
                correlation_id.as_deref(),
            )),
            Body::Binary { event, payload } => {
                let len = binary::server_len(event, payload.len());
                let header = FrameHeader::new(OpCode::Binary, len as u64);
                let mut out = BytesMut::with_capacity(header.encoded_len() + len);
                header.write(&mut out);
                binary::encode_server_into(&mut out, event, payload);
                out.freeze()
            }
            Body::RawWs { text, payload } => {
                let op = if *text { OpCode::Text } else { OpCode::Binary };
                server_frame_from_parts(op, &[payload])
            }
            Body::Ping => server_frame(OpCode::Ping, &[]),
            Body::Pong(payload) => server_frame(OpCode::Pong, payload),
            Body::Close { code, reason, .. } => server_close(
                code.map(|code| CloseFrame {
                    code,
                    reason: reason.clone(),
                })
                .as_ref(),
            ),
            Body::Connect(_) => return None,
        })
    }

    /// The WebSocket frame in `form`, compressing with the shard's compressors on first use.
    /// Control frames are never compressed (RFC 7692 §6.1).
    pub(crate) fn ws(&self, form: WsForm, c: &mut Compressors) -> Option<&Bytes> {
        if self.is_control() {
            return self.ws_plain();
        }
        match form {
            WsForm::Plain => self.ws_plain(),
            WsForm::Deflate => self
                .ws_deflate
                .get_or_init(|| self.compress(&mut c.full))
                .as_ref(),
            WsForm::DeflateNarrow => self
                .ws_deflate_narrow
                .get_or_init(|| self.compress(&mut c.narrow))
                .as_ref(),
        }
    }

    fn compress(&self, c: &mut Compressor) -> Option<Bytes> {
        if let Some((event, data)) = self.as_event() {
            let payload = TextEnvelope::event(event, data).encode();
            return Some(c.server_frame(OpCode::Text, &payload));
        }
        Some(match &self.body {
            Body::Event { .. }
            | Body::Error { .. }
            | Body::Room { .. }
            | Body::Authenticated { .. }
            | Body::AuthFailed(_) => return None,
            Body::AckReply {
                event,
                correlation_id,
                result,
                ..
            } => {
                let payload =
                    TextEnvelope::ack_reply(event, Some(result), correlation_id.as_deref())
                        .encode();
                c.server_frame(OpCode::Text, &payload)
            }
            Body::Binary { event, payload } => {
                let msg = binary::encode_server(event, payload);
                c.server_frame(OpCode::Binary, &msg)
            }
            Body::RawWs { text, payload } => {
                let op = if *text { OpCode::Text } else { OpCode::Binary };
                c.server_frame(op, payload)
            }
            // `ws` sends control messages uncompressed and never calls this for them.
            Body::Ping | Body::Pong(_) | Body::Close { .. } | Body::Connect(_) => {
                return self.ws_plain().cloned()
            }
        })
    }

    /// The stelar TCP frame, or `None` when this message cannot go to TCP clients.
    pub(crate) fn tcp(&self) -> Option<&Bytes> {
        self.tcp.get_or_init(|| self.build_tcp()).as_ref()
    }

    fn build_tcp(&self) -> Option<Bytes> {
        if let Some((event, data)) = self.as_event() {
            names::validate_outbound_event(event).ok()?;
            return OutFrame::Json {
                event,
                data: data.unwrap_or(b"null"),
            }
            .encode()
            .ok();
        }
        let frame = match &self.body {
            Body::Event { .. }
            | Body::Error { .. }
            | Body::Room { .. }
            | Body::Authenticated { .. }
            | Body::AuthFailed(_) => return None,
            Body::Binary { event, payload } => {
                names::validate_outbound_event(event).ok()?;
                OutFrame::Binary { event, payload }
            }
            Body::AckReply {
                ack_name,
                correlation_id,
                result,
                ..
            } => OutFrame::AckRes {
                ack_name,
                result,
                correlation_id: correlation_id.as_deref(),
            },
            Body::RawWs { .. } => return None,
            Body::Ping => OutFrame::Ping,
            Body::Pong(_) => OutFrame::Pong,
            Body::Close {
                disconnect: true, ..
            } => OutFrame::Disconnect,
            Body::Close { reason, .. } => OutFrame::Error { text: reason },
            Body::Connect(id) => OutFrame::Connect { id },
        };
        frame.encode().ok()
    }

    /// A copy of `frame` in this shard's own allocation (see the module docs).
    pub(crate) fn local(frame: &Bytes) -> Bytes {
        Bytes::copy_from_slice(frame)
    }
}

/// A text frame around an envelope, in one allocation: header, then the envelope in place.
fn text_frame(env: &TextEnvelope<'_>) -> Bytes {
    let len = env.encoded_len();
    let header = FrameHeader::new(OpCode::Text, len as u64);
    let mut out = BytesMut::with_capacity(header.encoded_len() + len);
    header.write(&mut out);
    env.encode_into(&mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ws::deflate::Deflater;

    fn compressors() -> Compressors {
        Compressors {
            full: Compressor::new(Deflater::new(true, 15), 0),
            narrow: Compressor::new(Deflater::new(true, 9), 0),
        }
    }

    #[test]
    fn event_forms() {
        let o = Outgoing::event("chat", Some(Bytes::from_static(b"{\"msg\":\"hi\"}")));
        let ws = o.ws_plain().unwrap();
        assert_eq!(&ws[..2], &[0x81, 36]);
        assert_eq!(&ws[2..], b"{\"event\":\"chat\",\"data\":{\"msg\":\"hi\"}}");
        // PROTOCOL.md §9: the TCP JSON frame for emit('chat', {msg:'hi'}).
        let tcp = o.tcp().unwrap();
        assert_eq!(
            tcp.as_ref(),
            b"\x00\x00\x00\x17\x01\x00\x04chat{\"msg\":\"hi\"}".as_slice()
        );
        let mut c = compressors();
        // Too small to shrink: sent uncompressed even to a deflate client (RSV1 is per message).
        assert_eq!(o.ws(WsForm::Deflate, &mut c).unwrap()[0], 0x81);
        let big = Outgoing::event(
            "chat",
            Some(Bytes::from(format!("\"{}\"", "ab".repeat(500)))),
        );
        let z = big.ws(WsForm::Deflate, &mut c).unwrap();
        assert_eq!(z[0], 0xc1, "FIN + RSV1 + text");
        assert!(z.len() < 200);
        let narrow = big.ws(WsForm::DeflateNarrow, &mut c).unwrap();
        assert_eq!(narrow[0], 0xc1);
    }

    #[test]
    fn binary_forms_match_protocol_examples() {
        let o = Outgoing::binary("bin", Bytes::from_static(&[1, 2, 3]));
        let ws = o.ws_plain().unwrap();
        let mut expected = vec![0x82, 0x25, 0, 0, 0, 0x1e];
        expected.extend_from_slice(b"{\"event\":\"bin\",\"_binary\":true}");
        expected.extend_from_slice(&[1, 2, 3]);
        assert_eq!(ws.as_ref(), expected.as_slice());
        let tcp = o.tcp().unwrap();
        assert_eq!(tcp[4], 0x02);
    }

    #[test]
    fn confirmations_and_ack_replies() {
        // §6: joined-room with the room as a JSON string, on both transports.
        let o = Outgoing::room_confirmation(true, "lo\"bby");
        assert_eq!(
            &o.ws_plain().unwrap()[2..],
            br#"{"event":"joined-room","data":"lo\"bby"}"#
        );
        assert_eq!(&o.tcp().unwrap()[18..], br#""lo\"bby""#);
        // §2.2 / §4.4: the reply to request('add', [1,2], 'sum') with correlation id c1.
        let o = Outgoing::ack_reply("add", "sum", Some("c1"), Bytes::from_static(b"3"));
        assert_eq!(
            &o.ws_plain().unwrap()[2..],
            br#"{"event":"add","data":3,"_isAck":true,"_correlationId":"c1"}"#
        );
        let tcp = o.tcp().unwrap();
        assert_eq!(tcp[4], 0x06, "ACK_RES");
        assert_eq!(&tcp[5..10], b"\x00\x03sum");
        assert_eq!(&tcp[10..], br#"{"data":3,"_correlationId":"c1"}"#);
    }

    #[test]
    fn control_forms() {
        let mut c = compressors();
        let ping = Outgoing::new(Body::Ping);
        assert_eq!(
            ping.ws(WsForm::Deflate, &mut c).unwrap().as_ref(),
            b"\x89\x00"
        );
        assert_eq!(
            ping.tcp().unwrap().as_ref(),
            b"\x00\x00\x00\x07\x03\x00\x00"
        );
        let pong = Outgoing::new(Body::Pong(Bytes::from_static(b"hi")));
        assert_eq!(pong.ws_plain().unwrap().as_ref(), b"\x8a\x02hi");
        assert_eq!(
            pong.tcp().unwrap().as_ref(),
            b"\x00\x00\x00\x07\x04\x00\x00"
        );
        let close = Outgoing::close(CloseCode::POLICY, "slow consumer");
        let ws = close.ws(WsForm::Deflate, &mut c).unwrap();
        assert_eq!(&ws[..4], b"\x88\x0f\x03\xf0", "uncompressed, 1008");
        assert_eq!(&ws[4..], b"slow consumer");
        assert_eq!(&close.tcp().unwrap()[4..12], b"\x0b\x00\x05error");
        let bye = Outgoing::new(Body::Close {
            code: Some(CloseCode::AWAY),
            reason: "Shutting down".into(),
            disconnect: true,
        });
        assert_eq!(bye.tcp().unwrap().as_ref(), b"\x00\x00\x00\x07\x08\x00\x00");
        let empty = Outgoing::new(Body::Close {
            code: None,
            reason: "".into(),
            disconnect: false,
        });
        assert_eq!(empty.ws_plain().unwrap().as_ref(), b"\x88\x00");
        let connect = Outgoing::new(Body::Connect("id".into()));
        assert!(connect.ws_plain().is_none());
        assert_eq!(&connect.tcp().unwrap()[4..], b"\x07\x00\x07connectid");
    }

    #[test]
    fn auth_answers() {
        let o = Outgoing::auth_ok("id-1", Some("al\"ice"));
        assert_eq!(
            &o.ws_plain().unwrap()[2..],
            br#"{"event":"auth-ok","data":{"id":"id-1","user":"al\"ice"}}"#
        );
        assert_eq!(&o.tcp().unwrap()[4..14], b"\x01\x00\x07auth-ok");
        let r = Outgoing::auth_refused("Token expired");
        assert_eq!(&r.ws_plain().unwrap()[2..4], &4003u16.to_be_bytes());
        assert_eq!(&r.tcp().unwrap()[4..], b"\x0b\x00\x05errorToken expired");
        let t = Outgoing::closing(CloseCause::AuthTimeout);
        assert_eq!(&t.ws_plain().unwrap()[2..4], &4001u16.to_be_bytes());
    }

    #[test]
    fn invalid_tcp_names_are_not_sent_to_tcp() {
        let o = Outgoing::event("has space", None);
        assert!(o.tcp().is_none());
        assert_eq!(&o.ws_plain().unwrap()[2..], b"{\"event\":\"has space\"}");
    }

    #[test]
    fn dialect_forms_are_built_once_per_dialect_and_form() {
        let dialects = Dialects::default();
        let (ss, ignis, stonyx) = (
            dialects.id("stellarstack").unwrap(),
            dialects.id("ignis").unwrap(),
            dialects.id("stonyx").unwrap(),
        );
        let mut c = compressors();
        let o = Outgoing::event_in(
            Arc::from("srv_1"),
            "server:sync",
            Some(Bytes::from_static(br#"{"id":"srv_1"}"#)),
        );
        let frame = |d, form, c: &mut Compressors| match o.for_dialect(&dialects, d, form, c) {
            DialectForm::Frame(f) => f,
            other => panic!("{other:?}"),
        };
        let a = frame(ss, WsForm::Plain, &mut c);
        assert_eq!(
            &a[2..],
            br#"{"type":"server:sync","serverId":"srv_1","data":{"id":"srv_1"}}"#
        );
        assert_eq!(
            a.as_ptr(),
            frame(ss, WsForm::Plain, &mut c).as_ptr(),
            "cached"
        );
        // ignis shares stelar's own frame.
        let i = frame(ignis, WsForm::Plain, &mut c);
        assert_eq!(i.as_ptr(), o.ws_plain().unwrap().as_ptr());
        assert_eq!(
            &frame(stonyx, WsForm::Plain, &mut c)[2..],
            br#"{"request":"server:sync","data":{"id":"srv_1"}}"#
        );
        assert_eq!(
            frame(DialectId::STELAR, WsForm::Plain, &mut c).as_ptr(),
            o.ws_plain().unwrap().as_ptr()
        );
        // A deflate form of a large message is compressed (RSV1).
        let big = Outgoing::event_in(
            Arc::from("r"),
            "e",
            Some(Bytes::from(format!("\"{}\"", "ab".repeat(500)))),
        );
        match big.for_dialect(&dialects, stonyx, WsForm::Deflate, &mut c) {
            DialectForm::Frame(f) => assert_eq!(f[0], 0xc1),
            other => panic!("{other:?}"),
        }
        // Binary is not part of these dialects; an ignis join confirmation does not exist.
        let bin = Outgoing::binary_in(Arc::from("r"), "b", Bytes::from_static(b"x"));
        assert_eq!(
            bin.for_dialect(&dialects, ss, WsForm::Plain, &mut c),
            DialectForm::Unsendable
        );
        let joined = Outgoing::room_confirmation(true, "r");
        assert_eq!(
            joined.for_dialect(&dialects, ignis, WsForm::Plain, &mut c),
            DialectForm::Silent
        );
        // Control frames are the engine's, whatever the dialect.
        let ping = Outgoing::new(Body::Ping);
        assert_eq!(
            ping.for_dialect(&dialects, stonyx, WsForm::Plain, &mut c),
            DialectForm::Frame(Bytes::from_static(b"\x89\x00"))
        );
        // The stelar forms of the new bodies are the events they replace.
        let err = Outgoing::server_error("unknown_event", "m", Some("x"), None);
        assert_eq!(
            &err.ws_plain().unwrap()[2..],
            br#"{"event":"server:error","data":{"code":"unknown_event","message":"m","event":"x"}}"#
        );
        assert!(Outgoing::auth_failed("no").ws_plain().is_none());
        assert!(Outgoing::auth_failed("no").tcp().is_none());
    }

    #[test]
    fn forms_are_built_once() {
        let o = Outgoing::event("e", Some(Bytes::from_static(b"1")));
        let a = o.ws_plain().unwrap().as_ptr();
        let b = o.ws_plain().unwrap().as_ptr();
        assert_eq!(a, b);
    }
}
