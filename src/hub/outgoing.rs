//! A message on its way to clients, encoded once per wire form and shared by every recipient.
//!
//! An [`Outgoing`] holds the message's parts (event name and the JSON text of `data`, or
//! a binary payload) and builds each wire form the first time a recipient needs it: the
//! WebSocket text frame, its permessage-deflate variants, and the stelar TCP frame. Server
//! frames are unmasked and (with `server_no_context_takeover`) compressed independently of
//! any connection, so one `Bytes` serves every WebSocket subscriber on every shard, and one
//! TCP frame every TCP subscriber (DESIGN.md "encoded once").
//!
//! The forms are `OnceLock`s because an `Outgoing` crosses shards inside an `Arc`: the
//! first shard to need a form builds it, the others reuse it. A shard that fans a frame out
//! to many local sockets first copies it into its own allocation ([`Outgoing::local`]) so the
//! reference counts it bumps per recipient live in its own cache, not in another core's.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::protocol::stelar::{binary, names, OutFrame, TextEnvelope};
use crate::protocol::ws::codec::{server_frame_from_parts, Compressor};
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
    /// A raw WebSocket frame payload for the bench endpoints (`/broadcast`): sent as is,
    /// text or binary, never to TCP clients.
    RawWs {
        /// Text (true) or binary.
        text: bool,
        /// The message.
        payload: Bytes,
    },
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
    ws: OnceLock<Bytes>,
    ws_deflate: OnceLock<Bytes>,
    ws_deflate_narrow: OnceLock<Bytes>,
    /// `None` once built means: not sendable on TCP (an event name stelar's TCP clients
    /// would reject, PROTOCOL.md §2.4, or a raw bench frame).
    tcp: OnceLock<Option<Bytes>>,
}

/// The per-shard compressors used to build deflated forms (no context takeover, so one
/// serves every connection of the shard).
pub(crate) struct Compressors {
    /// Full window.
    pub full: Compressor,
    /// RLE-only, for peers with a narrowed window.
    pub narrow: Compressor,
}

impl Outgoing {
    /// Wraps a body.
    pub(crate) fn new(body: Body) -> Arc<Outgoing> {
        Arc::new(Outgoing {
            body,
            ws: OnceLock::new(),
            ws_deflate: OnceLock::new(),
            ws_deflate_narrow: OnceLock::new(),
            tcp: OnceLock::new(),
        })
    }

    /// An event with JSON data.
    pub(crate) fn event(event: &str, data: Option<Bytes>) -> Arc<Outgoing> {
        Self::new(Body::Event {
            event: event.into(),
            data,
        })
    }

    /// A binary message.
    pub(crate) fn binary(event: &str, payload: Bytes) -> Arc<Outgoing> {
        Self::new(Body::Binary {
            event: event.into(),
            payload,
        })
    }

    /// The non-fatal error event (PROTOCOL.md §10 Q12): `server:error` with
    /// `{"code":C,"message":M,"event":E}` (`event` omitted when not about one).
    pub(crate) fn server_error(code: &str, message: &str, event: Option<&str>) -> Arc<Outgoing> {
        Self::server_error_with(code, message, event, None)
    }

    /// [`Outgoing::server_error`] with one more string member, e.g. `"to": ID` for a direct
    /// message whose recipient is gone.
    pub(crate) fn server_error_with(
        code: &str,
        message: &str,
        event: Option<&str>,
        extra: Option<(&str, &str)>,
    ) -> Arc<Outgoing> {
        use crate::protocol::stelar::json::{quoted_len, write_quoted};
        let mut data = bytes::BytesMut::with_capacity(
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
        Self::event("server:error", Some(data.freeze()))
    }

    /// Bytes of content this message carries (event name and data, or payload).
    pub(crate) fn payload_len(&self) -> usize {
        match &self.body {
            Body::Event { event, data } => event.len() + data.as_ref().map_or(0, Bytes::len),
            Body::Binary { event, payload } => event.len() + payload.len(),
            Body::RawWs { payload, .. } => payload.len(),
        }
    }

    /// The uncompressed WebSocket frame.
    pub(crate) fn ws_plain(&self) -> &Bytes {
        self.ws.get_or_init(|| match &self.body {
            Body::Event { event, data } => {
                let env = TextEnvelope::event(event, data.as_deref());
                // One allocation: header, then the envelope written in place.
                let len = env.encoded_len();
                let header = FrameHeader::new(OpCode::Text, len as u64);
                let mut out = bytes::BytesMut::with_capacity(header.encoded_len() + len);
                header.write(&mut out);
                env.encode_into(&mut out);
                out.freeze()
            }
            Body::Binary { event, payload } => {
                let len = binary::server_len(event, payload.len());
                let header = FrameHeader::new(OpCode::Binary, len as u64);
                let mut out = bytes::BytesMut::with_capacity(header.encoded_len() + len);
                header.write(&mut out);
                binary::encode_server_into(&mut out, event, payload);
                out.freeze()
            }
            Body::RawWs { text, payload } => {
                let op = if *text { OpCode::Text } else { OpCode::Binary };
                server_frame_from_parts(op, &[payload])
            }
        })
    }

    /// The WebSocket frame in `form`, compressing with the shard's compressors on first use.
    pub(crate) fn ws(&self, form: WsForm, c: &mut Compressors) -> &Bytes {
        match form {
            WsForm::Plain => self.ws_plain(),
            WsForm::Deflate => self.ws_deflate.get_or_init(|| self.compress(&mut c.full)),
            WsForm::DeflateNarrow => self
                .ws_deflate_narrow
                .get_or_init(|| self.compress(&mut c.narrow)),
        }
    }

    fn compress(&self, c: &mut Compressor) -> Bytes {
        match &self.body {
            Body::Event { event, data } => {
                let payload = TextEnvelope::event(event, data.as_deref()).encode();
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
        }
    }

    /// The stelar TCP frame, or `None` when this message cannot go to TCP clients.
    pub(crate) fn tcp(&self) -> Option<&Bytes> {
        self.tcp
            .get_or_init(|| match &self.body {
                Body::Event { event, data } => {
                    names::validate_outbound_event(event).ok()?;
                    OutFrame::Json {
                        event,
                        data: data.as_deref().unwrap_or(b"null"),
                    }
                    .encode()
                    .ok()
                }
                Body::Binary { event, payload } => {
                    names::validate_outbound_event(event).ok()?;
                    OutFrame::Binary { event, payload }.encode().ok()
                }
                Body::RawWs { .. } => None,
            })
            .as_ref()
    }

    /// A copy of `frame` in this shard's own allocation (see the module docs).
    pub(crate) fn local(frame: &Bytes) -> Bytes {
        Bytes::copy_from_slice(frame)
    }
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
        let ws = o.ws_plain();
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
        assert_eq!(o.ws(WsForm::Deflate, &mut c)[0], 0x81);
        let big = Outgoing::event(
            "chat",
            Some(Bytes::from(format!("\"{}\"", "ab".repeat(500)))),
        );
        let z = big.ws(WsForm::Deflate, &mut c);
        assert_eq!(z[0], 0xc1, "FIN + RSV1 + text");
        assert!(z.len() < 200);
        let narrow = big.ws(WsForm::DeflateNarrow, &mut c);
        assert_eq!(narrow[0], 0xc1);
    }

    #[test]
    fn binary_forms_match_protocol_examples() {
        let o = Outgoing::binary("bin", Bytes::from_static(&[1, 2, 3]));
        let ws = o.ws_plain();
        let mut expected = vec![0x82, 0x25, 0, 0, 0, 0x1e];
        expected.extend_from_slice(b"{\"event\":\"bin\",\"_binary\":true}");
        expected.extend_from_slice(&[1, 2, 3]);
        assert_eq!(ws.as_ref(), expected.as_slice());
        let tcp = o.tcp().unwrap();
        assert_eq!(tcp[4], 0x02);
    }

    #[test]
    fn invalid_tcp_names_are_not_sent_to_tcp() {
        let o = Outgoing::event("has space", None);
        assert!(o.tcp().is_none());
        assert_eq!(&o.ws_plain()[2..], b"{\"event\":\"has space\"}");
    }

    #[test]
    fn forms_are_built_once() {
        let o = Outgoing::event("e", Some(Bytes::from_static(b"1")));
        let a = o.ws_plain().as_ptr();
        let b = o.ws_plain().as_ptr();
        assert_eq!(a, b);
    }
}
