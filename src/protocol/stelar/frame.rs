//! stelar's binary TCP framing (PROTOCOL.md §4): the 7-byte header, the frame types, a
//! decoder that works in place on the caller's read buffer, and an encoder that builds each
//! frame in one allocation.
//!
//! ```text
//! offset 0  u32 BE  totalLen   whole frame, header included (7 ..= max frame size)
//! offset 4  u8      type       FrameType code (0x01..=0x0B; others kept as Unknown)
//! offset 5  u16 BE  eventLen   0 ..= 256
//! offset 7          event      eventLen bytes, UTF-8
//!                   payload    totalLen - 7 - eventLen bytes
//! ```
//!
//! Decoding splits each whole frame off the front of a `BytesMut` and hands out its event
//! and payload as `Bytes` views of the same memory (no copy). `Ok(None)` means "need more
//! bytes"; frames may be split or coalesced arbitrarily across reads. Encoding writes
//! header, event and payload contiguously into one buffer, so one `Bytes` serves every TCP
//! subscriber of a publish.
//!
//! Left to others: what each frame type *does* (conn/ and app/), JSON inside payloads
//! (`envelope.rs`), names (`names.rs`).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::json;
use super::names;
use super::Error;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 7;
/// Longest event field (`MAX_EVENT_LENGTH` in stelar).
pub const MAX_EVENT_LEN: usize = 256;
/// Default largest frame accepted, header included (§7.1: 10 MiB).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 10 * 1024 * 1024;
/// Largest frame a stelar client reads (§8, "Inbound limits"): we never send a bigger one.
pub const CLIENT_MAX_FRAME_SIZE: usize = 10 * 1024 * 1024;

/// A frame type, with the codes stelar's code uses (§4.2: 1–11, not the README's 0–10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// 0x01: event + JSON text of `data`.
    Json,
    /// 0x02: event + raw bytes.
    Binary,
    /// 0x03: liveness probe; answered with PONG.
    Ping,
    /// 0x04: answer to PING.
    Pong,
    /// 0x05: ACK name + `{"event","data","_correlationId"}` (client → server).
    AckReq,
    /// 0x06: ACK name + `{"data","_correlationId"}` or the bare result (server → client).
    AckRes,
    /// 0x07: `connect` + the client id as raw UTF-8 (server's first frame).
    Connect,
    /// 0x08: server shutting down.
    Disconnect,
    /// 0x09: `join-room` + room name as raw UTF-8.
    Join,
    /// 0x0A: `leave-room` + room name as raw UTF-8.
    Leave,
    /// 0x0B: `error` + human-readable text.
    Error,
    /// Any other code. The server ignores such frames (after a rate point, §4.3). Never
    /// holds a code in 0x01..=0x0B when produced by [`FrameType::from_code`].
    Unknown(u8),
}

impl FrameType {
    /// The type for a wire code.
    pub const fn from_code(code: u8) -> Self {
        match code {
            0x01 => Self::Json,
            0x02 => Self::Binary,
            0x03 => Self::Ping,
            0x04 => Self::Pong,
            0x05 => Self::AckReq,
            0x06 => Self::AckRes,
            0x07 => Self::Connect,
            0x08 => Self::Disconnect,
            0x09 => Self::Join,
            0x0A => Self::Leave,
            0x0B => Self::Error,
            other => Self::Unknown(other),
        }
    }

    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            Self::Json => 0x01,
            Self::Binary => 0x02,
            Self::Ping => 0x03,
            Self::Pong => 0x04,
            Self::AckReq => 0x05,
            Self::AckRes => 0x06,
            Self::Connect => 0x07,
            Self::Disconnect => 0x08,
            Self::Join => 0x09,
            Self::Leave => 0x0A,
            Self::Error => 0x0B,
            Self::Unknown(code) => code,
        }
    }
}

impl From<u8> for FrameType {
    fn from(code: u8) -> Self {
        Self::from_code(code)
    }
}

impl From<FrameType> for u8 {
    fn from(t: FrameType) -> u8 {
        t.code()
    }
}

/// One decoded frame. `event` and `payload` share the read buffer's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The type byte.
    pub frame_type: FrameType,
    /// The event field (<= 256 bytes, not yet checked as UTF-8).
    pub event: Bytes,
    /// Everything after the event field.
    pub payload: Bytes,
}

impl Frame {
    /// The event field as an inbound event name: UTF-8, non-empty, <= 256 bytes (§10 Q13).
    pub fn event_name(&self) -> Result<&str, Error> {
        names::inbound_event(&self.event)
    }
}

/// Splits stelar TCP frames off a read buffer (§4.1, §4.3).
///
/// Stateless apart from its limit: after an error the connection answers with
/// [`Error::error_frame`] and closes, as stelar's parser stops at the first error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    /// Largest `totalLen` accepted, header included. Buffered bytes are capped at twice this.
    max_frame_size: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder accepting frames of up to `max_frame_size` bytes, header included
    /// (stelar's `maxFrameSize`; capped at `u32::MAX`, the format's limit).
    pub fn new(max_frame_size: usize) -> Self {
        Self {
            max_frame_size: max_frame_size.min(u32::MAX as usize),
        }
    }

    /// Largest frame accepted, header included.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Most bytes the read buffer may hold (2 × max frame size, stelar's overflow limit).
    /// A caller that reads at most `buffer_limit() - buf.len()` bytes at a time and calls
    /// [`decode`](Self::decode) until `Ok(None)` after every read never exceeds it: a
    /// partial frame is at most `max_frame_size` bytes.
    pub fn buffer_limit(&self) -> usize {
        self.max_frame_size.saturating_mul(2)
    }

    /// Takes the next whole frame off the front of `buf`.
    ///
    /// `Ok(None)`: `buf` holds no whole frame yet; read more and call again (nothing is
    /// consumed). Errors (§4.3), each answered by an ERROR frame and a close:
    /// - [`Error::BufferOverflow`]: more than [`buffer_limit`](Self::buffer_limit) bytes
    ///   are buffered;
    /// - [`Error::InvalidFrameSize`]: `totalLen` < 7 or > max frame size, decided from the
    ///   header alone, before the body arrives;
    /// - [`Error::InvalidEventLength`]: `eventLen` > 256 or 7 + `eventLen` > `totalLen`.
    ///   Stelar checks this once the whole frame is buffered; we check it from the header
    ///   too, so a hostile header can't make us wait for (and buffer) its body. The answer
    ///   is the same ERROR frame, only sooner.
    #[inline]
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if buf.len() > self.buffer_limit() {
            return Err(Error::BufferOverflow {
                limit: self.buffer_limit(),
            });
        }
        let Some(&[l0, l1, l2, l3, code, e0, e1]) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let total_len = u32::from_be_bytes([l0, l1, l2, l3]);
        let total = total_len as usize;
        if total < HEADER_LEN || total > self.max_frame_size {
            return Err(Error::InvalidFrameSize { len: total_len });
        }
        let event_len = usize::from(u16::from_be_bytes([e0, e1]));
        if event_len > MAX_EVENT_LEN || HEADER_LEN + event_len > total {
            return Err(Error::InvalidEventLength);
        }
        if buf.len() < total {
            return Ok(None);
        }
        let mut frame = buf.split_to(total).freeze();
        frame.advance(HEADER_LEN);
        let event = frame.split_to(event_len);
        Ok(Some(Frame {
            frame_type: FrameType::from_code(code),
            event,
            payload: frame,
        }))
    }
}

/// A frame to send, described by its parts. [`encode`](Self::encode) builds it in one
/// allocation; [`encode_into`](Self::encode_into) appends it to a buffer.
///
/// JSON payload parts (`data`, `result`) must already be valid JSON text (they come from the
/// envelope parser or a serializer); they are copied verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFrame<'a> {
    /// JSON (0x01): payload = `data`, the JSON text of the event's data (§4.2: not an
    /// envelope). The event name must pass §2.4.
    Json {
        /// Event name (§2.4 checked).
        event: &'a str,
        /// JSON text, copied verbatim.
        data: &'a [u8],
    },
    /// JSON (0x01) whose payload is `value` written as a JSON string, e.g. `joined-room`
    /// with `"lobby"` (§6). The event name must pass §2.4.
    JsonString {
        /// Event name (§2.4 checked).
        event: &'a str,
        /// Text to quote and escape.
        value: &'a str,
    },
    /// BINARY (0x02): raw payload. The event name must pass §2.4.
    Binary {
        /// Event name (§2.4 checked).
        event: &'a str,
        /// Raw bytes.
        payload: &'a [u8],
    },
    /// PING (0x03), no event, no payload.
    Ping,
    /// PONG (0x04), no event, no payload.
    Pong,
    /// ACK_REQ (0x05, client role): event field = ACK name, payload
    /// `{"event":E,"data":D,"_correlationId":C}` (`data` / `_correlationId` omitted if absent).
    AckReq {
        /// ACK name (event field).
        ack_name: &'a str,
        /// Event inside the payload.
        event: &'a str,
        /// JSON text of the request data.
        data: Option<&'a [u8]>,
        /// Correlation id.
        correlation_id: Option<&'a str>,
    },
    /// ACK_RES (0x06): event field = the request's ACK name, payload
    /// `{"data":R,"_correlationId":C}`, or bare `R` without a correlation id (§4.4, Q19).
    AckRes {
        /// ACK name (event field), echoed from the request.
        ack_name: &'a str,
        /// JSON text of the handler's result.
        result: &'a [u8],
        /// Correlation id echoed from the request.
        correlation_id: Option<&'a str>,
    },
    /// CONNECT (0x07): event `connect`, payload = client id as raw UTF-8.
    Connect {
        /// The new client's id.
        id: &'a str,
    },
    /// DISCONNECT (0x08), no event, no payload.
    Disconnect,
    /// JOIN (0x09, client role): event `join-room`, payload = room as raw UTF-8.
    Join {
        /// Room name.
        room: &'a str,
    },
    /// LEAVE (0x0A, client role): event `leave-room`, payload = room as raw UTF-8.
    Leave {
        /// Room name.
        room: &'a str,
    },
    /// ERROR (0x0B): event `error`, payload = text.
    Error {
        /// Human-readable text.
        text: &'a str,
    },
    /// Any type with an arbitrary event field and payload; only lengths are checked.
    Raw {
        /// Type byte.
        frame_type: FrameType,
        /// Event field.
        event: &'a [u8],
        /// Payload.
        payload: &'a [u8],
    },
}

const PING: &[u8] = &[0, 0, 0, 7, 0x03, 0, 0];
const PONG: &[u8] = &[0, 0, 0, 7, 0x04, 0, 0];
const DISCONNECT: &[u8] = &[0, 0, 0, 7, 0x08, 0, 0];

impl OutFrame<'_> {
    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::Json { .. } | Self::JsonString { .. } => FrameType::Json,
            Self::Binary { .. } => FrameType::Binary,
            Self::Ping => FrameType::Ping,
            Self::Pong => FrameType::Pong,
            Self::AckReq { .. } => FrameType::AckReq,
            Self::AckRes { .. } => FrameType::AckRes,
            Self::Connect { .. } => FrameType::Connect,
            Self::Disconnect => FrameType::Disconnect,
            Self::Join { .. } => FrameType::Join,
            Self::Leave { .. } => FrameType::Leave,
            Self::Error { .. } => FrameType::Error,
            Self::Raw { frame_type, .. } => *frame_type,
        }
    }

    fn event_field(&self) -> &[u8] {
        match self {
            Self::Json { event, .. }
            | Self::JsonString { event, .. }
            | Self::Binary { event, .. } => event.as_bytes(),
            Self::AckReq { ack_name, .. } | Self::AckRes { ack_name, .. } => ack_name.as_bytes(),
            Self::Ping | Self::Pong | Self::Disconnect => b"",
            Self::Connect { .. } => b"connect",
            Self::Join { .. } => b"join-room",
            Self::Leave { .. } => b"leave-room",
            Self::Error { .. } => b"error",
            Self::Raw { event, .. } => event,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Self::Json { data, .. } => data.len(),
            Self::JsonString { value, .. } => json::quoted_len(value),
            Self::Binary { payload, .. } | Self::Raw { payload, .. } => payload.len(),
            Self::Ping | Self::Pong | Self::Disconnect => 0,
            Self::AckReq {
                event,
                data,
                correlation_id,
                ..
            } => {
                // {"event":E[,"data":D][,"_correlationId":C]}
                9 + json::quoted_len(event)
                    + data.map_or(0, |d| 8 + d.len())
                    + correlation_id.map_or(0, |c| 18 + json::quoted_len(c))
                    + 1
            }
            Self::AckRes {
                result,
                correlation_id,
                ..
            } => match correlation_id {
                // {"data":R,"_correlationId":C}
                Some(c) => 8 + result.len() + 18 + json::quoted_len(c) + 1,
                None => result.len(),
            },
            Self::Connect { id } => id.len(),
            Self::Join { room } | Self::Leave { room } => room.len(),
            Self::Error { text } => text.len(),
        }
    }

    fn write_payload(&self, dst: &mut BytesMut) {
        match self {
            Self::Json { data, .. } => dst.extend_from_slice(data),
            Self::JsonString { value, .. } => json::write_quoted(dst, value),
            Self::Binary { payload, .. } | Self::Raw { payload, .. } => {
                dst.extend_from_slice(payload)
            }
            Self::Ping | Self::Pong | Self::Disconnect => {}
            Self::AckReq {
                event,
                data,
                correlation_id,
                ..
            } => {
                dst.extend_from_slice(b"{\"event\":");
                json::write_quoted(dst, event);
                if let Some(d) = data {
                    dst.extend_from_slice(b",\"data\":");
                    dst.extend_from_slice(d);
                }
                if let Some(c) = correlation_id {
                    dst.extend_from_slice(b",\"_correlationId\":");
                    json::write_quoted(dst, c);
                }
                dst.put_u8(b'}');
            }
            Self::AckRes {
                result,
                correlation_id,
                ..
            } => match correlation_id {
                Some(c) => {
                    dst.extend_from_slice(b"{\"data\":");
                    dst.extend_from_slice(result);
                    dst.extend_from_slice(b",\"_correlationId\":");
                    json::write_quoted(dst, c);
                    dst.put_u8(b'}');
                }
                None => dst.extend_from_slice(result),
            },
            Self::Connect { id } => dst.extend_from_slice(id.as_bytes()),
            Self::Join { room } | Self::Leave { room } => dst.extend_from_slice(room.as_bytes()),
            Self::Error { text } => dst.extend_from_slice(text.as_bytes()),
        }
    }

    /// Total encoded length, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.event_field().len() + self.payload_len()
    }

    /// Checks the frame can be sent: outbound names (§2.4) for JSON/BINARY, event field
    /// <= 256 bytes (§4.1), total <= what a stelar client reads. Returns the total length.
    fn check(&self) -> Result<usize, Error> {
        if let Self::Json { event, .. }
        | Self::JsonString { event, .. }
        | Self::Binary { event, .. } = self
        {
            names::validate_outbound_event(event)?;
        }
        if self.event_field().len() > MAX_EVENT_LEN {
            return Err(Error::EventFieldTooLong);
        }
        let len = self.encoded_len();
        if len > CLIENT_MAX_FRAME_SIZE {
            return Err(Error::FrameTooLarge { len });
        }
        Ok(len)
    }

    fn write(&self, dst: &mut BytesMut, total: usize) {
        let event = self.event_field();
        // check() bounded total by CLIENT_MAX_FRAME_SIZE (< u32::MAX) and the event by 256.
        dst.put_u32(total as u32);
        dst.put_u8(self.frame_type().code());
        dst.put_u16(event.len() as u16);
        dst.extend_from_slice(event);
        self.write_payload(dst);
    }

    /// The whole frame in one allocation (none at all for PING, PONG and DISCONNECT).
    pub fn encode(&self) -> Result<Bytes, Error> {
        match self {
            Self::Ping => return Ok(Bytes::from_static(PING)),
            Self::Pong => return Ok(Bytes::from_static(PONG)),
            Self::Disconnect => return Ok(Bytes::from_static(DISCONNECT)),
            _ => {}
        }
        let total = self.check()?;
        let mut dst = BytesMut::with_capacity(total);
        self.write(&mut dst, total);
        debug_assert_eq!(dst.len(), total);
        Ok(dst.freeze())
    }

    /// Appends the frame to `dst` (reserving exactly what it needs). On error `dst` is
    /// unchanged.
    pub fn encode_into(&self, dst: &mut BytesMut) -> Result<(), Error> {
        let total = self.check()?;
        dst.reserve(total);
        self.write(dst, total);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    fn decode_all(dec: &FrameDecoder, bytes: &[u8]) -> Result<Vec<Frame>, Error> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = dec.decode(&mut buf)? {
            out.push(f);
        }
        assert!(buf.is_empty(), "leftover {buf:?}");
        Ok(out)
    }

    #[test]
    fn codes_round_trip() {
        for code in 0..=255u8 {
            let t = FrameType::from_code(code);
            assert_eq!(t.code(), code);
            assert_eq!(
                matches!(t, FrameType::Unknown(_)),
                !(1..=11).contains(&code)
            );
        }
    }

    // PROTOCOL.md §9 vectors.
    const CHAT: &str = "00 00 00 17 01 00 04 63 68 61 74 7b 22 6d 73 67 22 3a 22 68 69 22 7d";
    const JOIN: &str = "00 00 00 15 09 00 09 6a 6f 69 6e 2d 72 6f 6f 6d 6c 6f 62 62 79";
    const JOINED: &str =
        "00 00 00 19 01 00 0b 6a 6f 69 6e 65 64 2d 72 6f 6f 6d 22 6c 6f 62 62 79 22";

    fn ack_req_bytes() -> Vec<u8> {
        let mut v = hex("00 00 00 4e 05 00 07");
        v.extend_from_slice(b"getUser");
        v.extend_from_slice(br#"{"event":"getUser","data":{"id":7},"_correlationId":"getUser#1"}"#);
        v
    }

    fn ack_res_bytes() -> Vec<u8> {
        let mut v = hex("00 00 00 4a 06 00 07");
        v.extend_from_slice(b"getUser");
        v.extend_from_slice(br#"{"data":{"id":7,"name":"John"},"_correlationId":"getUser#1"}"#);
        v
    }

    #[test]
    fn section_9_decode() {
        let dec = FrameDecoder::default();
        let f = decode_all(&dec, &hex(CHAT)).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].frame_type, FrameType::Json);
        assert_eq!(f[0].event_name(), Ok("chat"));
        assert_eq!(&f[0].payload[..], br#"{"msg":"hi"}"#);

        let f = decode_all(&dec, &hex(JOIN)).unwrap();
        assert_eq!(f[0].frame_type, FrameType::Join);
        assert_eq!(&f[0].event[..], b"join-room");
        assert_eq!(&f[0].payload[..], b"lobby");

        let f = decode_all(&dec, &ack_req_bytes()).unwrap();
        assert_eq!(f[0].frame_type, FrameType::AckReq);
        assert_eq!(&f[0].event[..], b"getUser");

        let f = decode_all(&dec, &hex("00 00 00 07 08 00 00")).unwrap();
        assert_eq!(f[0].frame_type, FrameType::Disconnect);
        assert!(f[0].event.is_empty() && f[0].payload.is_empty());
    }

    #[test]
    fn section_9_encode() {
        let chat = OutFrame::Json {
            event: "chat",
            data: br#"{"msg":"hi"}"#,
        };
        assert_eq!(&chat.encode().unwrap()[..], &hex(CHAT)[..]);
        assert_eq!(
            &OutFrame::Join { room: "lobby" }.encode().unwrap()[..],
            &hex(JOIN)[..]
        );
        let joined = OutFrame::JsonString {
            event: "joined-room",
            value: "lobby",
        };
        assert_eq!(&joined.encode().unwrap()[..], &hex(JOINED)[..]);
        let req = OutFrame::AckReq {
            ack_name: "getUser",
            event: "getUser",
            data: Some(br#"{"id":7}"#),
            correlation_id: Some("getUser#1"),
        };
        assert_eq!(&req.encode().unwrap()[..], &ack_req_bytes()[..]);
        let res = OutFrame::AckRes {
            ack_name: "getUser",
            result: br#"{"id":7,"name":"John"}"#,
            correlation_id: Some("getUser#1"),
        };
        assert_eq!(&res.encode().unwrap()[..], &ack_res_bytes()[..]);
        assert_eq!(
            &OutFrame::Disconnect.encode().unwrap()[..],
            &hex("00 00 00 07 08 00 00")[..]
        );
        assert_eq!(
            &OutFrame::Ping.encode().unwrap()[..],
            &hex("00 00 00 07 03 00 00")[..]
        );
        assert_eq!(
            &OutFrame::Pong.encode().unwrap()[..],
            &hex("00 00 00 07 04 00 00")[..]
        );

        let id = "0f8e7a52-9c3b-4d1e-8f2a-6b5c4d3e2f10";
        let connect = OutFrame::Connect { id }.encode().unwrap();
        let mut want = hex("00 00 00 32 07 00 07 63 6f 6e 6e 65 63 74");
        want.extend_from_slice(id.as_bytes());
        assert_eq!(&connect[..], &want[..]);
        assert_eq!(connect.len(), 50);

        let err = OutFrame::Error {
            text: "Invalid event length",
        };
        let mut want = hex("00 00 00 20 0b 00 05");
        want.extend_from_slice(b"errorInvalid event length");
        assert_eq!(&err.encode().unwrap()[..], &want[..]);
    }

    #[test]
    fn encode_variants() {
        let res = OutFrame::AckRes {
            ack_name: "n",
            result: b"[1]",
            correlation_id: None,
        };
        assert_eq!(&res.encode().unwrap()[7..], b"n[1]");
        let req = OutFrame::AckReq {
            ack_name: "a",
            event: "e\"",
            data: None,
            correlation_id: None,
        };
        assert_eq!(&req.encode().unwrap()[8..], br#"{"event":"e\""}"#);
        let bin = OutFrame::Binary {
            event: "bin",
            payload: &[1, 2, 3],
        };
        assert_eq!(
            &bin.encode().unwrap()[..],
            &hex("00 00 00 0d 02 00 03 62 69 6e 01 02 03")[..]
        );
        let leave = OutFrame::Leave { room: "" }.encode().unwrap();
        assert_eq!(
            &leave[..],
            &hex("00 00 00 11 0a 00 0a 6c 65 61 76 65 2d 72 6f 6f 6d")[..]
        );

        // encode_into appends, and matches encode.
        let mut buf = BytesMut::from(&b"xy"[..]);
        OutFrame::Json {
            event: "chat",
            data: br#"{"msg":"hi"}"#,
        }
        .encode_into(&mut buf)
        .unwrap();
        assert_eq!(&buf[2..], &hex(CHAT)[..]);
        OutFrame::Ping.encode_into(&mut buf).unwrap();
        assert_eq!(&buf[2 + 23..], PING);
    }

    #[test]
    fn encode_refusals() {
        let json = |event| OutFrame::Json { event, data: b"1" }.encode();
        assert_eq!(json("bad name"), Err(Error::InvalidEventName));
        assert_eq!(json("error"), Err(Error::ReservedEventName));
        assert_eq!(json(""), Err(Error::InvalidEventName));
        let long = "x".repeat(257);
        let raw = OutFrame::Raw {
            frame_type: FrameType::Json,
            event: long.as_bytes(),
            payload: b"",
        };
        assert_eq!(raw.encode(), Err(Error::EventFieldTooLong));
        let res = OutFrame::AckRes {
            ack_name: &long,
            result: b"1",
            correlation_id: None,
        };
        assert_eq!(res.encode(), Err(Error::EventFieldTooLong));
        let big = vec![0u8; CLIENT_MAX_FRAME_SIZE - 7 - 3 + 1];
        let bin = OutFrame::Binary {
            event: "bin",
            payload: &big,
        };
        assert_eq!(
            bin.encode(),
            Err(Error::FrameTooLarge {
                len: CLIENT_MAX_FRAME_SIZE + 1
            })
        );
        let fits = OutFrame::Binary {
            event: "bin",
            payload: &big[1..],
        };
        assert_eq!(fits.encode().unwrap().len(), CLIENT_MAX_FRAME_SIZE);
        let mut buf = BytesMut::new();
        assert!(bin.encode_into(&mut buf).is_err());
        assert!(buf.is_empty());
    }

    #[test]
    fn decode_rejections() {
        let dec = FrameDecoder::new(1000);
        let one = |b: &[u8]| dec.decode(&mut BytesMut::from(b));
        assert_eq!(
            one(&hex("00 00 00 06 01 00 00")),
            Err(Error::InvalidFrameSize { len: 6 })
        );
        assert_eq!(
            one(&hex("00 00 00 00 01 00 00")),
            Err(Error::InvalidFrameSize { len: 0 })
        );
        assert_eq!(
            one(&hex("00 00 03 e9 01 00 00")),
            Err(Error::InvalidFrameSize { len: 1001 })
        );
        assert_eq!(
            one(&hex("ff ff ff ff 01 00 00")),
            Err(Error::InvalidFrameSize { len: u32::MAX })
        );
        // Size accepted at exactly the limit: waits for the body.
        assert_eq!(one(&hex("00 00 03 e8 01 00 00")), Ok(None));
        // Event length checks, from the header alone.
        assert_eq!(
            one(&hex("00 00 03 e8 01 01 01")),
            Err(Error::InvalidEventLength)
        );
        assert_eq!(
            one(&hex("00 00 00 0a 01 00 04 61 62 63")),
            Err(Error::InvalidEventLength)
        );
        assert_eq!(
            one(&hex("00 00 00 0a 01 00 03 61 62 63"))
                .unwrap()
                .unwrap()
                .payload
                .len(),
            0
        );
        // 256-byte event accepted.
        let mut f = hex("00 00 01 07 02 01 00");
        f.extend_from_slice(&[b'e'; 256]);
        assert_eq!(one(&f).unwrap().unwrap().event.len(), 256);
        // Fewer than 7 bytes: nothing decided yet, even if they look wrong already.
        assert_eq!(one(&hex("00 00 00 00 01 00")), Ok(None));
        // Overflow.
        let mut big = BytesMut::from(&vec![0u8; 2001][..]);
        assert_eq!(
            dec.decode(&mut big),
            Err(Error::BufferOverflow { limit: 2000 })
        );
        let dflt = FrameDecoder::default();
        assert_eq!(dflt.max_frame_size(), 10_485_760);
        assert_eq!(dflt.buffer_limit(), 20_971_520);
    }

    #[test]
    fn decoded_parts_share_the_read_buffer() {
        let mut buf = BytesMut::from(&hex(CHAT)[..]);
        let base = buf.as_ptr() as usize;
        let f = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.event.as_ptr() as usize, base + 7);
        assert_eq!(f.payload.as_ptr() as usize, base + 11);
    }

    #[test]
    fn unknown_types_pass_through() {
        let f = decode_all(&FrameDecoder::default(), &hex("00 00 00 08 2a 00 00 ff")).unwrap();
        assert_eq!(f[0].frame_type, FrameType::Unknown(0x2a));
        assert_eq!(&f[0].payload[..], &[0xff]);
    }

    fn arb_frame() -> impl Strategy<Value = (u8, Vec<u8>, Vec<u8>)> {
        (
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..=MAX_EVENT_LEN),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
    }

    proptest! {
        #[test]
        fn round_trip_split_at_every_offset(frames in proptest::collection::vec(arb_frame(), 1..5)) {
            let mut stream = BytesMut::new();
            for (code, event, payload) in &frames {
                OutFrame::Raw { frame_type: FrameType::from_code(*code), event, payload }
                    .encode_into(&mut stream)
                    .unwrap();
            }
            let dec = FrameDecoder::default();
            for cut in 0..=stream.len() {
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                for piece in [&stream[..cut], &stream[cut..]] {
                    buf.extend_from_slice(piece);
                    while let Some(f) = dec.decode(&mut buf).unwrap() {
                        got.push((f.frame_type.code(), f.event.to_vec(), f.payload.to_vec()));
                    }
                }
                prop_assert!(buf.is_empty());
                prop_assert_eq!(&got, &frames);
            }
        }

        #[test]
        fn byte_at_a_time(frames in proptest::collection::vec(arb_frame(), 1..4)) {
            let mut stream = BytesMut::new();
            for (code, event, payload) in &frames {
                OutFrame::Raw { frame_type: FrameType::from_code(*code), event, payload }
                    .encode_into(&mut stream)
                    .unwrap();
            }
            let dec = FrameDecoder::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for b in stream.iter() {
                buf.put_u8(*b);
                while let Some(f) = dec.decode(&mut buf).unwrap() {
                    got.push((f.frame_type.code(), f.event.to_vec(), f.payload.to_vec()));
                }
            }
            prop_assert_eq!(got, frames);
        }

        /// Arbitrary bytes in arbitrary chunks: never a panic, and with reads sized by
        /// `buffer_limit()` the buffer never exceeds it.
        #[test]
        fn arbitrary_bytes_stay_bounded(
            max in 7usize..64,
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..20),
        ) {
            let dec = FrameDecoder::new(max);
            let mut buf = BytesMut::new();
            'outer: for chunk in chunks {
                let room = dec.buffer_limit() - buf.len();
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                prop_assert!(buf.len() <= dec.buffer_limit());
                loop {
                    match dec.decode(&mut buf) {
                        Ok(Some(f)) => {
                            prop_assert!(7 + f.event.len() + f.payload.len() <= max);
                            prop_assert!(f.event.len() <= MAX_EVENT_LEN);
                        }
                        Ok(None) => {
                            // A pending partial frame is always smaller than a max frame.
                            prop_assert!(buf.len() < max || buf.len() < 7);
                            break;
                        }
                        Err(e) => {
                            prop_assert!(e.error_frame().is_some());
                            break 'outer;
                        }
                    }
                }
            }
        }
    }
}
