//! The JSON envelope (PROTOCOL.md §2) and the JSON inside TCP ACK frames (§4.4): parsing
//! without materialising `data`, and encoding by concatenation.
//!
//! **Parsing.** [`parse`] validates the whole message as JSON (RFC 8259; invalid data is
//! never forwarded) and returns an [`Envelope`] that borrows the input: `event`,
//! `_ackName` and `_correlationId` as `Cow<str>` (borrowed unless they hold escapes), and
//! `data` as the exact bytes the client wrote, so the relay forwards it verbatim (DESIGN.md:
//! "Fan-out does not re-serialise data"). Key order and whitespace are free, unknown keys
//! are validated and ignored, duplicate keys: the last wins (as `JSON.parse` does).
//!
//! It runs on the structural scanner in `json.rs`, chosen by measurement
//! (`bench/benches/envelope.rs` has the method and the table: a 100-byte chat envelope in
//! ~120 ns against ~190 ns for serde_json and ~450 ns for simd-json) over the two other
//! candidates, kept in `candidates` for tests and benches only: serde_json with a borrowed
//! `&RawValue` for `data` (also the differential-test oracle), and simd-json (which cannot
//! give `data`'s span and is measured only for its validation + parse cost). simd-json remains the parser for
//! handlers that read `data`: [`DataParser`].
//!
//! Shape decisions (PROTOCOL.md §2.3, §10): the message must be an object (`null` and other
//! non-objects are [`Error::NotAnObject`], Q2); `event` must be a JSON string (stelar coerces
//! other types with `String()`; we refuse them), non-empty and at most 256 bytes (Q13);
//! `_ackName` and `_correlationId` count only when they are non-empty strings (JS-truthy
//! strings; a non-string `_correlationId` is dropped rather than echoed); `_isAck` follows
//! JS truthiness.
//!
//! **Encoding.** [`TextEnvelope`] writes `{"event":E,"data":D,...}` in §2.2's key order into
//! one buffer, `E` escaped as `JSON.stringify` does and `D` copied verbatim. TCP frames that
//! carry JSON are built in `frame.rs` ([`super::OutFrame`]); their payloads are parsed here
//! ([`parse_ack_payload`]). Event-name policy (§2.4) is `names.rs`'s.

use std::borrow::Cow;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::json::{self, Document, Kind, Value};
use super::names;
use super::Error;

/// A parsed text message. Borrows the message it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// `event`: non-empty, at most 256 bytes.
    pub event: Cow<'a, str>,
    /// The JSON text of `data`, exactly as received (no surrounding whitespace), or `None`
    /// when the key is absent. `Some(b"null")` for an explicit `null`.
    pub data: Option<&'a [u8]>,
    /// `_ackName`, if a non-empty string.
    pub ack_name: Option<Cow<'a, str>>,
    /// `_correlationId`, if a non-empty string.
    pub correlation_id: Option<Cow<'a, str>>,
    /// `_isAck` is JS-truthy (server → client replies; read by the client role).
    pub is_ack: bool,
}

impl Envelope<'_> {
    /// The byte range of `data` within `input`, the message this envelope was parsed from
    /// (for `Bytes::slice`). `None` if there is no `data` or `input` is another buffer.
    pub fn data_range(&self, input: &[u8]) -> Option<Range<usize>> {
        span_in(self.data?, input)
    }
}

/// Where `part` lies inside `whole`, if it does.
fn span_in(part: &[u8], whole: &[u8]) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

/// Parses one text message (§2). See the module doc for the accepted shape.
///
/// Errors: any JSON fault (`Error::Json*`), [`Error::NotAnObject`],
/// [`Error::MissingEvent`], [`Error::EventNotString`], [`Error::EmptyEvent`],
/// [`Error::EventTooLong`]. All are answered by dropping the message.
#[inline]
pub fn parse(input: &[u8]) -> Result<Envelope<'_>, Error> {
    parse_inner::<false>(input).map(|(e, _)| e)
}

/// [`parse`], also returning the [`Members`] of `data` when it is an object (spans relative
/// to `data`'s text), found by the same scan: the server routes relay requests on them
/// without walking `data` again.
#[inline]
pub fn parse_with_members(input: &[u8]) -> Result<(Envelope<'_>, Option<Members>), Error> {
    parse_inner::<true>(input)
}

#[inline(always)]
fn parse_inner<const MEMBERS: bool>(
    input: &[u8],
) -> Result<(Envelope<'_>, Option<Members>), Error> {
    let mut event: Option<Value> = None;
    let mut data: Option<Value> = None;
    let mut ack_name: Option<Value> = None;
    let mut correlation_id: Option<Value> = None;
    let mut is_ack: Option<Value> = None;
    // `data`'s members arrive (from `on_inner`) before `data` itself (from `on_member`);
    // a later duplicate `data` replaces both, as the last key wins.
    let inner = std::cell::Cell::new(Members::default());
    let mut data_members: Option<Members> = None;
    let on_member = |key: &[u8], v: Value| {
        match key {
            b"event" => event = Some(v),
            b"data" => {
                data = Some(v);
                data_members =
                    (MEMBERS && v.kind == Kind::Object).then(|| inner.take().rebased(v.start));
            }
            b"_ackName" => ack_name = Some(v),
            b"_correlationId" => correlation_id = Some(v),
            b"_isAck" => is_ack = Some(v),
            _ => {}
        }
        Ok(())
    };
    let doc = if MEMBERS {
        json::walk_nested(input, b"data", on_member, |key, v| {
            let mut m = inner.get();
            m.capture(key, v);
            inner.set(m);
            Ok(())
        })?
    } else {
        json::walk(input, on_member)?
    };
    if doc != Document::Object {
        return Err(Error::NotAnObject);
    }
    let event = match event {
        None => return Err(Error::MissingEvent),
        Some(v) if v.kind != Kind::String => return Err(Error::EventNotString),
        Some(v) => json::decode_str(input, v)?,
    };
    names::check_inbound_event(&event)?;
    let envelope = Envelope {
        event,
        data: data.map(|v| v.span(input)),
        ack_name: truthy_string(input, ack_name)?,
        correlation_id: truthy_string(input, correlation_id)?,
        is_ack: is_ack.is_some_and(|v| json::is_truthy(input, v)),
    };
    Ok((envelope, data_members))
}

/// The members of a request object the server routes on — `room`, `event`, `data`, `to`,
/// `user` —
/// as spans of the text they were scanned from: the relay's `publish` / `broadcast` /
/// `direct` data, and the HTTP API's request bodies. Duplicate keys: the last wins.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Members {
    room: Option<Value>,
    event: Option<Value>,
    data: Option<Value>,
    to: Option<Value>,
    user: Option<Value>,
}

impl Members {
    fn capture(&mut self, key: &[u8], v: Value) {
        match key {
            b"room" => self.room = Some(v),
            b"event" => self.event = Some(v),
            b"data" => self.data = Some(v),
            b"to" => self.to = Some(v),
            b"user" => self.user = Some(v),
            _ => {}
        }
    }

    /// The same members with spans relative to a text starting at `offset` of the scanned
    /// one.
    fn rebased(self, offset: usize) -> Members {
        let shift = |v: Option<Value>| {
            v.map(|v| Value {
                start: v.start - offset,
                end: v.end - offset,
                ..v
            })
        };
        Members {
            room: shift(self.room),
            event: shift(self.event),
            data: shift(self.data),
            to: shift(self.to),
            user: shift(self.user),
        }
    }

    /// `room`, if it is a JSON string, decoded. `text` is the object these members were
    /// found in.
    pub fn room<'a>(&self, text: &'a [u8]) -> Option<Cow<'a, str>> {
        string_member(text, self.room)
    }

    /// `event`, if it is a JSON string, decoded.
    pub fn event<'a>(&self, text: &'a [u8]) -> Option<Cow<'a, str>> {
        string_member(text, self.event)
    }

    /// `to`, if it is a JSON string, decoded.
    pub fn to<'a>(&self, text: &'a [u8]) -> Option<Cow<'a, str>> {
        string_member(text, self.to)
    }

    /// `user`, if it is a JSON string, decoded.
    pub fn user<'a>(&self, text: &'a [u8]) -> Option<Cow<'a, str>> {
        string_member(text, self.user)
    }

    /// Whether there is a `user` member (of any type).
    pub fn has_user(&self) -> bool {
        self.user.is_some()
    }

    /// Where `data`'s text lies in `text`, if there is a `data` member (any JSON value).
    pub fn data_range(&self) -> Option<Range<usize>> {
        self.data.map(|v| v.start..v.end)
    }
}

/// A member that is a JSON string, decoded (one that cannot be decoded, holding a lone
/// surrogate escape, counts as absent).
fn string_member(text: &[u8], v: Option<Value>) -> Option<Cow<'_, str>> {
    let v = v.filter(|v| v.kind == Kind::String)?;
    json::decode_str(text, v).ok()
}

/// Validates `text` as one JSON text and, if it is an object, returns its [`Members`] (a TCP
/// JSON frame's payload, an HTTP API body): one scan for both.
pub fn members(text: &[u8]) -> Result<Option<Members>, Error> {
    let mut m = Members::default();
    match json::walk(text, |key, v| {
        m.capture(key, v);
        Ok(())
    })? {
        Document::Object => Ok(Some(m)),
        Document::Other(_) => Ok(None),
    }
}

/// A non-empty JSON string value, decoded; other values count as absent.
fn truthy_string(input: &[u8], v: Option<Value>) -> Result<Option<Cow<'_, str>>, Error> {
    match v {
        Some(v) if v.kind == Kind::String && v.end - v.start > 2 => {
            json::decode_str(input, v).map(Some)
        }
        _ => Ok(None),
    }
}

/// The JSON payload of a TCP ACK_REQ (server side) or ACK_RES (client side), §4.4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckPayload<'a> {
    /// What the handler (or the pending request) gets: the `data` member's text if the
    /// payload is an object with a `data` key, else the whole payload (trimmed of
    /// whitespace). Verbatim bytes of the input.
    pub data: &'a [u8],
    /// `_correlationId`, if the payload is an object holding a non-empty string there.
    pub correlation_id: Option<Cow<'a, str>>,
}

/// Parses an ACK_REQ / ACK_RES payload (§4.4, Q19). The payload must be valid JSON.
pub fn parse_ack_payload(payload: &[u8]) -> Result<AckPayload<'_>, Error> {
    let mut data: Option<Value> = None;
    let mut correlation_id: Option<Value> = None;
    match json::walk(payload, |key, v| {
        match key {
            b"data" => data = Some(v),
            b"_correlationId" => correlation_id = Some(v),
            _ => {}
        }
        Ok(())
    })? {
        Document::Object => Ok(AckPayload {
            data: data.map_or_else(|| payload.trim_ascii(), |v| v.span(payload)),
            correlation_id: truthy_string(payload, correlation_id)?,
        }),
        Document::Other(v) => Ok(AckPayload {
            data: v.span(payload),
            correlation_id: None,
        }),
    }
}

/// A text envelope to send, written in §2.1/§2.2 key order:
/// `{"event":E,"data":D,"_ackName":A,"_isAck":true,"_correlationId":C}`, each member after
/// `event` present only when set.
///
/// `data` must already be valid JSON text (from [`parse`] or a serializer); it is copied
/// verbatim. Names are not checked here: the app layer applies
/// [`names::validate_outbound_event`] to the names it chooses (ACK replies echo the
/// client's own event name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextEnvelope<'a> {
    /// `event`.
    pub event: &'a str,
    /// JSON text of `data`; `None` omits the key (JS `undefined`).
    pub data: Option<&'a [u8]>,
    /// `_ackName` (client role: an ACK request).
    pub ack_name: Option<&'a str>,
    /// `_isAck: true` (server role: an ACK reply).
    pub is_ack: bool,
    /// `_correlationId`.
    pub correlation_id: Option<&'a str>,
}

impl<'a> TextEnvelope<'a> {
    /// `{"event":E,"data":D}` (or `{"event":E}` without data): emit, broadcast, to-room,
    /// joined-room / left-room (§2.2).
    pub fn event(event: &'a str, data: Option<&'a [u8]>) -> Self {
        Self {
            event,
            data,
            ack_name: None,
            is_ack: false,
            correlation_id: None,
        }
    }

    /// `{"event":E,"data":R,"_isAck":true,"_correlationId":C}` (C omitted when the request
    /// had none): the ACK reply (§2.2).
    pub fn ack_reply(
        event: &'a str,
        result: Option<&'a [u8]>,
        correlation_id: Option<&'a str>,
    ) -> Self {
        Self {
            event,
            data: result,
            ack_name: None,
            is_ack: true,
            correlation_id,
        }
    }

    /// `{"event":E,"data":D,"_ackName":A,"_correlationId":C}`: a client's ACK request (§2.1).
    pub fn ack_request(
        event: &'a str,
        data: Option<&'a [u8]>,
        ack_name: &'a str,
        correlation_id: Option<&'a str>,
    ) -> Self {
        Self {
            event,
            data,
            ack_name: Some(ack_name),
            is_ack: false,
            correlation_id,
        }
    }

    /// Exact encoded length in bytes.
    #[inline]
    pub fn encoded_len(&self) -> usize {
        9 + json::quoted_len(self.event)                          // {"event":E
            + self.data.map_or(0, |d| 8 + d.len())                 // ,"data":D
            + self.ack_name.map_or(0, |a| 12 + json::quoted_len(a)) // ,"_ackName":A
            + if self.is_ack { 14 } else { 0 }                     // ,"_isAck":true
            + self.correlation_id.map_or(0, |c| 18 + json::quoted_len(c)) // ,"_correlationId":C
            + 1 // }
    }

    /// Appends the envelope to `dst` (reserving exactly what it needs), e.g. right after a
    /// WebSocket frame header sized with [`encoded_len`](Self::encoded_len).
    #[inline]
    pub fn encode_into(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.extend_from_slice(b"{\"event\":");
        json::write_quoted(dst, self.event);
        if let Some(d) = self.data {
            dst.extend_from_slice(b",\"data\":");
            dst.extend_from_slice(d);
        }
        if let Some(a) = self.ack_name {
            dst.extend_from_slice(b",\"_ackName\":");
            json::write_quoted(dst, a);
        }
        if self.is_ack {
            dst.extend_from_slice(b",\"_isAck\":true");
        }
        if let Some(c) = self.correlation_id {
            dst.extend_from_slice(b",\"_correlationId\":");
            json::write_quoted(dst, c);
        }
        dst.put_u8(b'}');
    }

    /// The envelope in one allocation.
    #[inline]
    pub fn encode(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(self.encoded_len());
        self.encode_into(&mut dst);
        debug_assert_eq!(dst.len(), self.encoded_len());
        dst.freeze()
    }
}

/// Parses `data` into a simd-json DOM for handlers that read it. Keeps its scratch buffers
/// between calls (one per shard is enough); simd-json de-escapes in place, so the bytes are
/// first copied into the scratch buffer and the input stays untouched for forwarding.
#[derive(Default)]
pub struct DataParser {
    scratch: Vec<u8>,
    buffers: simd_json::Buffers,
}

impl std::fmt::Debug for DataParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParser")
            .field("scratch_capacity", &self.scratch.capacity())
            .finish_non_exhaustive()
    }
}

impl DataParser {
    /// A parser with empty scratch buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `data` (JSON text). The value borrows this parser's scratch buffer until the
    /// next call. Errors: [`Error::DataJson`].
    pub fn parse<'s>(&'s mut self, data: &[u8]) -> Result<simd_json::BorrowedValue<'s>, Error> {
        self.scratch.clear();
        self.scratch.extend_from_slice(data);
        simd_json::to_borrowed_value_with_buffers(&mut self.scratch, &mut self.buffers)
            .map_err(|_| Error::DataJson)
    }
}

/// The envelope parsers that lost the measurement, kept for `bench/benches/envelope.rs` and
/// as oracles in differential tests; compiled only for those (tests, and the
/// `bench-internals` feature the bench crate turns on). Not for the hot path.
#[cfg(any(test, feature = "bench-internals"))]
pub mod candidates {
    use std::borrow::Cow;
    use std::fmt;

    use super::super::{names, Error};
    use super::Envelope;
    use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
    use serde::Deserialize;
    use serde_json::value::RawValue;

    /// Candidate (a): serde_json, `data` as a borrowed `&RawValue`, strings as `Cow`.
    /// Same contract as [`super::parse`] (the differential proptest holds them equal), except
    /// that serde_json's `RawValue` accepts nesting of any depth.
    pub fn parse_serde(input: &[u8]) -> Result<Envelope<'_>, Error> {
        let text = std::str::from_utf8(input).map_err(|_| Error::JsonUtf8)?;
        let mut de = serde_json::Deserializer::from_str(text);
        let fields = de.deserialize_map(FieldsVisitor).map_err(map_err)?;
        de.end().map_err(map_err)?;
        let event = match fields.event {
            None => return Err(Error::MissingEvent),
            Some(raw) if !raw.get().starts_with('"') => return Err(Error::EventNotString),
            Some(raw) => decode(raw)?,
        };
        names::check_inbound_event(&event)?;
        Ok(Envelope {
            event,
            data: fields.data.map(|r| r.get().as_bytes()),
            ack_name: truthy_string(fields.ack_name)?,
            correlation_id: truthy_string(fields.correlation_id)?,
            is_ack: fields.is_ack.is_some_and(truthy),
        })
    }

    fn map_err(e: serde_json::Error) -> Error {
        match e.classify() {
            serde_json::error::Category::Eof => Error::JsonEof,
            serde_json::error::Category::Data => Error::NotAnObject,
            _ => Error::JsonSyntax,
        }
    }

    fn decode(raw: &RawValue) -> Result<Cow<'_, str>, Error> {
        serde_json::from_str::<Key<'_>>(raw.get())
            .map(|k| k.0)
            .map_err(|_| Error::JsonLoneSurrogate)
    }

    fn truthy_string(raw: Option<&RawValue>) -> Result<Option<Cow<'_, str>>, Error> {
        match raw {
            Some(r) if r.get().starts_with('"') && r.get().len() > 2 => decode(r).map(Some),
            _ => Ok(None),
        }
    }

    /// JS truthiness from the raw text, written independently of `json::is_truthy`.
    fn truthy(raw: &RawValue) -> bool {
        let t = raw.get();
        match t.as_bytes().first() {
            Some(b't' | b'{' | b'[') => true,
            Some(b'"') => t.len() > 2,
            Some(b'-' | b'0'..=b'9') => t.parse::<f64>().is_ok_and(|n| n != 0.0),
            _ => false,
        }
    }

    #[derive(Default)]
    struct Fields<'a> {
        event: Option<&'a RawValue>,
        data: Option<&'a RawValue>,
        ack_name: Option<&'a RawValue>,
        correlation_id: Option<&'a RawValue>,
        is_ack: Option<&'a RawValue>,
    }

    struct FieldsVisitor;

    impl<'de> Visitor<'de> for FieldsVisitor {
        type Value = Fields<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
            let mut fields = Fields::default();
            // Last duplicate wins, as JSON.parse does (serde's derive would refuse them).
            while let Some(key) = map.next_key::<Key<'de>>()? {
                let slot = match &*key.0 {
                    "event" => &mut fields.event,
                    "data" => &mut fields.data,
                    "_ackName" => &mut fields.ack_name,
                    "_correlationId" => &mut fields.correlation_id,
                    "_isAck" => &mut fields.is_ack,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                };
                *slot = Some(map.next_value::<&'de RawValue>()?);
            }
            Ok(fields)
        }
    }

    /// A string that stays borrowed when it holds no escapes (serde's `Cow<str>` impl always
    /// copies outside a derive).
    struct Key<'a>(Cow<'a, str>);

    impl<'de> Deserialize<'de> for Key<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct KeyVisitor;
            impl<'de> Visitor<'de> for KeyVisitor {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v.to_owned())))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v)))
                }
            }
            d.deserialize_str(KeyVisitor)
        }
    }

    /// What candidate (c) can give: simd-json has no span for `data`, only its DOM.
    #[derive(Debug)]
    pub struct SimdEnvelope<'s> {
        /// `event`.
        pub event: Cow<'s, str>,
        /// `data`, parsed (not forwardable verbatim).
        pub data: Option<simd_json::BorrowedValue<'s>>,
    }

    /// Candidate (c): copy the message into `scratch` (simd-json rewrites its input) and
    /// parse it to a borrowed DOM. Measures what validation + parse costs with simd-json.
    pub fn parse_simd<'s>(
        input: &[u8],
        scratch: &'s mut Vec<u8>,
        buffers: &mut simd_json::Buffers,
    ) -> Result<SimdEnvelope<'s>, Error> {
        scratch.clear();
        scratch.extend_from_slice(input);
        let value = simd_json::to_borrowed_value_with_buffers(scratch, buffers)
            .map_err(|_| Error::JsonSyntax)?;
        let simd_json::BorrowedValue::Object(mut obj) = value else {
            return Err(Error::NotAnObject);
        };
        let event = match obj.remove("event") {
            None => return Err(Error::MissingEvent),
            Some(simd_json::BorrowedValue::String(s)) => s,
            Some(_) => return Err(Error::EventNotString),
        };
        names::check_inbound_event(&event)?;
        let data = obj.remove("data");
        Ok(SimdEnvelope { event, data })
    }
}

#[cfg(test)]
mod tests {
    use super::candidates::{parse_serde, parse_simd};
    use super::*;
    use proptest::prelude::*;

    fn env(s: &str) -> Result<Envelope<'_>, Error> {
        parse(s.as_bytes())
    }

    #[test]
    fn section_2_shapes() {
        let e = env(r#"{"event":"chat","data":{"msg":"hi"}}"#).unwrap();
        assert_eq!(e.event, "chat");
        assert!(matches!(e.event, Cow::Borrowed(_)));
        assert_eq!(e.data, Some(&br#"{"msg":"hi"}"#[..]));
        assert_eq!(
            (e.ack_name, e.correlation_id, e.is_ack),
            (None, None, false)
        );

        let e = env(r#"{"event":"getUser","data":{"id":1},"_ackName":"getUser","_correlationId":"getUser#1"}"#)
            .unwrap();
        assert_eq!(e.ack_name.as_deref(), Some("getUser"));
        assert_eq!(e.correlation_id.as_deref(), Some("getUser#1"));

        let e = env(r#"{"event":"join-room","data":"lobby"}"#).unwrap();
        assert_eq!(e.data, Some(&br#""lobby""#[..]));
        assert_eq!(
            names::room_from_json(e.data.unwrap(), 256).unwrap(),
            "lobby"
        );

        let e = env(r#"{"event":"pong","data":1718000000000}"#).unwrap();
        assert_eq!(e.data, Some(&b"1718000000000"[..]));

        let e = env(r#"{"event":"getUser","data":{"id":1,"name":"John"},"_isAck":true,"_correlationId":"getUser#1"}"#)
            .unwrap();
        assert!(e.is_ack);
    }

    #[test]
    fn data_is_the_exact_span() {
        let input = b"  {\n\t\"data\" :  [1, {\"a\" : \"\\u00e9\"} ]  ,\r\n \"zz\":{}, \"event\" : \"e\\u0078\" }  ";
        let e = parse(input).unwrap();
        assert_eq!(e.event, "ex");
        assert!(matches!(e.event, Cow::Owned(_)));
        assert_eq!(e.data, Some(&b"[1, {\"a\" : \"\\u00e9\"} ]"[..]));
        let r = e.data_range(input).unwrap();
        assert_eq!(&input[r], e.data.unwrap());
        assert_eq!(e.data_range(b"other"), None);
        // Absent data and explicit null differ.
        assert_eq!(env(r#"{"event":"x"}"#).unwrap().data, None);
        assert_eq!(
            env(r#"{"event":"x","data":null}"#).unwrap().data,
            Some(&b"null"[..])
        );
    }

    #[test]
    fn shape_errors() {
        assert_eq!(env("null"), Err(Error::NotAnObject));
        assert_eq!(env("[]"), Err(Error::NotAnObject));
        assert_eq!(env("\"event\""), Err(Error::NotAnObject));
        assert_eq!(env("{}"), Err(Error::MissingEvent));
        assert_eq!(env(r#"{"data":1}"#), Err(Error::MissingEvent));
        assert_eq!(env(r#"{"event":5}"#), Err(Error::EventNotString));
        assert_eq!(env(r#"{"event":null}"#), Err(Error::EventNotString));
        assert_eq!(env(r#"{"event":""}"#), Err(Error::EmptyEvent));
        let long = format!(r#"{{"event":"{}"}}"#, "a".repeat(257));
        assert_eq!(env(&long), Err(Error::EventTooLong));
        let ok = format!(r#"{{"event":"{}"}}"#, "a".repeat(256));
        assert!(env(&ok).is_ok());
        assert_eq!(env(r#"{"event":"\ud800"}"#), Err(Error::JsonLoneSurrogate));
        // Invalid JSON anywhere, even in ignored members, refuses the message.
        assert_eq!(env(r#"{"event":"x","junk":[1,]}"#), Err(Error::JsonSyntax));
        assert_eq!(env(r#"{"event":"x","data":01}"#), Err(Error::JsonSyntax));
        assert_eq!(env(r#"{"event":"x"} {}"#), Err(Error::JsonSyntax));
        assert_eq!(env(r#"{"event":"x""#), Err(Error::JsonEof));
        assert_eq!(parse(b"{\"event\":\"\xff\"}"), Err(Error::JsonUtf8));
    }

    #[test]
    fn duplicates_last_wins() {
        let e = env(r#"{"event":"a","data":1,"event":"b","data":2}"#).unwrap();
        assert_eq!((e.event.as_ref(), e.data), ("b", Some(&b"2"[..])));
        // An earlier bad value is overridden, as in JS.
        assert_eq!(env(r#"{"event":5,"event":"b"}"#).unwrap().event, "b");
        assert_eq!(
            env(r#"{"event":"b","event":5}"#),
            Err(Error::EventNotString)
        );
    }

    #[test]
    fn ack_fields() {
        let e = env(r#"{"event":"x","_ackName":"","_correlationId":7,"_isAck":1}"#).unwrap();
        assert_eq!((e.ack_name, e.correlation_id, e.is_ack), (None, None, true));
        for (v, want) in [
            ("true", true),
            ("false", false),
            ("0", false),
            ("\"\"", false),
            ("\"no\"", true),
            ("{}", true),
            ("null", false),
        ] {
            let s = format!(r#"{{"event":"x","_isAck":{v}}}"#);
            assert_eq!(env(&s).unwrap().is_ack, want, "{v}");
        }
        let e = env(r#"{"event":"x","_correlationId":"a\"b"}"#).unwrap();
        assert_eq!(e.correlation_id.as_deref(), Some("a\"b"));
    }

    #[test]
    fn ack_payloads() {
        // §9's ACK_REQ payload.
        let p = parse_ack_payload(
            br#"{"event":"getUser","data":{"id":7},"_correlationId":"getUser#1"}"#,
        )
        .unwrap();
        assert_eq!(p.data, br#"{"id":7}"#);
        assert_eq!(p.correlation_id.as_deref(), Some("getUser#1"));
        // No data key: the whole (trimmed) payload.
        let p = parse_ack_payload(b" {\"x\":1} ").unwrap();
        assert_eq!((p.data, p.correlation_id), (&b"{\"x\":1}"[..], None));
        let p = parse_ack_payload(br#"{"_correlationId":"c"}"#).unwrap();
        assert_eq!(p.data, br#"{"_correlationId":"c"}"#);
        assert_eq!(p.correlation_id.as_deref(), Some("c"));
        // Non-object: the whole value (Q19, bare result).
        let p = parse_ack_payload(b" [1,2] ").unwrap();
        assert_eq!((p.data, p.correlation_id), (&b"[1,2]"[..], None));
        assert_eq!(parse_ack_payload(b"5").unwrap().data, b"5");
        assert_eq!(parse_ack_payload(b"{\"data\":}"), Err(Error::JsonSyntax));
        assert_eq!(parse_ack_payload(b""), Err(Error::JsonEof));
    }

    #[test]
    fn encode_shapes() {
        let s = |t: TextEnvelope<'_>| {
            let b = t.encode();
            assert_eq!(b.len(), t.encoded_len());
            String::from_utf8(b.to_vec()).unwrap()
        };
        assert_eq!(
            s(TextEnvelope::event("joined-room", Some(br#""lobby""#))),
            r#"{"event":"joined-room","data":"lobby"}"#
        );
        assert_eq!(s(TextEnvelope::event("x", None)), r#"{"event":"x"}"#);
        // §9's WS ACK reply text.
        assert_eq!(
            s(TextEnvelope::ack_reply(
                "getUser",
                Some(br#"{"id":1,"name":"John"}"#),
                Some("getUser#1")
            )),
            r#"{"event":"getUser","data":{"id":1,"name":"John"},"_isAck":true,"_correlationId":"getUser#1"}"#
        );
        assert_eq!(
            s(TextEnvelope::ack_reply("a", Some(b"1"), None)),
            r#"{"event":"a","data":1,"_isAck":true}"#
        );
        assert_eq!(
            s(TextEnvelope::ack_request(
                "getUser",
                Some(br#"{"id":1}"#),
                "getUser",
                Some("getUser#1")
            )),
            r#"{"event":"getUser","data":{"id":1},"_ackName":"getUser","_correlationId":"getUser#1"}"#
        );
        assert_eq!(
            s(TextEnvelope::event("q\"\\\n\u{1}\u{e9}", Some(b"null"))),
            "{\"event\":\"q\\\"\\\\\\n\\u0001\u{e9}\",\"data\":null}"
        );
        let mut buf = BytesMut::from(&b"\x81\x26"[..]);
        TextEnvelope::event("joined-room", Some(br#""lobby""#)).encode_into(&mut buf);
        assert_eq!(
            &buf[..],
            b"\x81\x26{\"event\":\"joined-room\",\"data\":\"lobby\"}"
        );
    }

    #[test]
    fn data_parser_reads_data() {
        use simd_json::prelude::*;
        let input = br#"{"event":"chat","data":{"msg":"h\u00e9","n":[1,2]}}"#;
        let e = parse(input).unwrap();
        let mut p = DataParser::new();
        {
            let v = p.parse(e.data.unwrap()).unwrap();
            assert_eq!(v.get("msg").and_then(|m| m.as_str()), Some("h\u{e9}"));
            assert_eq!(
                v.get("n").and_then(|n| n.as_array()).map(|a| a.len()),
                Some(2)
            );
        }
        // The input was not touched, and the parser is reusable.
        assert_eq!(e.data.unwrap(), br#"{"msg":"h\u00e9","n":[1,2]}"#);
        assert_eq!(p.parse(b"[1,").err(), Some(Error::DataJson));
        assert!(p.parse(b"\"x\"").unwrap().is_str());
    }

    #[test]
    fn simd_candidate_agrees_on_samples() {
        let mut scratch = Vec::new();
        let mut buffers = simd_json::Buffers::default();
        for s in samples() {
            let ours = parse(s.as_bytes());
            let simd = parse_simd(s.as_bytes(), &mut scratch, &mut buffers);
            match (&ours, &simd) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.event, b.event, "{s}");
                    assert_eq!(a.data.is_some(), b.data.is_some(), "{s}");
                }
                (Err(_), Err(_)) => {}
                _ => panic!("{s}: ours {ours:?} simd {simd:?}"),
            }
        }
    }

    fn samples() -> Vec<String> {
        vec![
            r#"{"event":"chat","data":{"msg":"hello there","from":"alice","ts":1718000000000}}"#.into(),
            r#"{"event":"getUser","data":{"id":1},"_ackName":"getUser","_correlationId":"getUser#1"}"#.into(),
            r#"{"event":"n\u00e9\"w","data":"line\nbreak \ud83d\ude00"}"#.into(),
            r#"{"event":"x"}"#.into(),
            r#"null"#.into(),
            r#"{"event":1}"#.into(),
            r#"{"event":"x","data":[1,2,{"a":null}]} "#.into(),
            r#"{"event":"x","data":tru}"#.into(),
            r#"{"event":"x",}"#.into(),
        ]
    }

    /// Compares our parser with the serde_json oracle on one input.
    fn differential(input: &[u8]) -> Result<(), TestCaseError> {
        let ours = parse(input);
        let oracle = parse_serde(input);
        match (&ours, &oracle) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a, b);
                // Both spans point into the input, at the same place.
                prop_assert_eq!(a.data_range(input), b.data_range(input));
            }
            (Err(a), Err(b)) => {
                // Both refuse; shape faults must agree exactly, JSON faults only in kind.
                prop_assert_eq!(
                    a.is_json_syntax() || *a == Error::NotAnObject,
                    b.is_json_syntax() || *b == Error::NotAnObject,
                    "{:?} vs {:?}",
                    a,
                    b
                );
                if !a.is_json_syntax() && *a != Error::NotAnObject {
                    prop_assert_eq!(a, b);
                }
            }
            (Err(Error::JsonDepth), Ok(_)) => {
                // The one intended difference: serde_json's RawValue has no depth cap.
                prop_assert!(depth(input) > json::MAX_DEPTH);
            }
            _ => prop_assert!(
                false,
                "ours {:?} oracle {:?} on {:?}",
                ours,
                oracle,
                String::from_utf8_lossy(input)
            ),
        }
        Ok(())
    }

    /// Max nesting of brackets outside strings (rough, for valid JSON).
    fn depth(input: &[u8]) -> usize {
        let (mut d, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
        for &b in input {
            if in_str {
                match (esc, b) {
                    (true, _) => esc = false,
                    (false, b'\\') => esc = true,
                    (false, b'"') => in_str = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => in_str = true,
                    b'{' | b'[' => {
                        d += 1;
                        max = max.max(d);
                    }
                    b'}' | b']' => d = d.saturating_sub(1),
                    _ => {}
                }
            }
        }
        max
    }

    /// Arbitrary JSON values, serialised by serde_json (so valid, with escapes).
    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value as J;
        let leaf = prop_oneof![
            Just(J::Null),
            any::<bool>().prop_map(J::Bool),
            any::<i64>().prop_map(J::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(J::from),
            any::<String>().prop_map(J::String),
            "[a-z\"\\\\\u{0}-\u{1f}\u{e9}\u{1F600}]{0,8}".prop_map(J::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(J::Array),
                proptest::collection::vec((arb_key(), inner), 0..6)
                    .prop_map(|kv| J::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("event".to_string()),
            Just("data".to_string()),
            Just("_ackName".to_string()),
            Just("_correlationId".to_string()),
            Just("_isAck".to_string()),
            "[a-z_\"\u{e9}]{0,6}",
        ]
    }

    /// Envelope-shaped text: members in any order, some duplicated, free whitespace, keys
    /// and string values sometimes spelled with escapes.
    fn arb_envelope_text() -> impl Strategy<Value = String> {
        let member = (arb_key(), arb_json(), any::<bool>(), "[ \t\r\n]{0,2}");
        let event = (
            Just("event".to_string()),
            "[a-z\"\\\\\u{1}\u{e9}\u{1F600}]{0,6}".prop_map(serde_json::Value::String),
            any::<bool>(),
            "[ \t\r\n]{0,2}",
        );
        (
            proptest::collection::vec(member, 0..6),
            proptest::option::weighted(0.8, event),
            any::<usize>(),
        )
            .prop_map(|(mut members, event, at)| {
                if let Some(e) = event {
                    members.insert(at % (members.len() + 1), e);
                }
                members
            })
            .prop_map(|members| {
                let parts: Vec<String> = members
                    .into_iter()
                    .map(|(k, v, escape_key, ws)| {
                        let key = if escape_key {
                            k.chars()
                                .map(|c| format!("\\u{:04x}", c as u32))
                                .collect::<String>()
                        } else {
                            let quoted = serde_json::to_string(&k).unwrap();
                            quoted[1..quoted.len() - 1].to_string()
                        };
                        format!(
                            "{ws}\"{key}\"{ws}:{ws}{}{ws}",
                            serde_json::to_string(&v).unwrap()
                        )
                    })
                    .collect();
                format!("{{{}}}", parts.join(","))
            })
    }

    /// Small mutations of valid text: delete, insert or replace one byte, or truncate.
    fn mutate(text: String, op: u8, at: usize, byte: u8) -> Vec<u8> {
        let mut b = text.into_bytes();
        let at = if b.is_empty() { 0 } else { at % (b.len() + 1) };
        match op % 4 {
            0 if at < b.len() => {
                b.remove(at);
            }
            1 => b.insert(at, byte),
            2 if at < b.len() => b[at] = byte,
            _ => b.truncate(at),
        }
        b
    }

    const INTERESTING: &[u8] = b"{}[]\",:\\u0123456789-+.eEtrfalsnu \t\n\r\x00\x1f\x7f\xc3\xa9\xff";

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        #[test]
        fn differential_envelopes(text in arb_envelope_text()) {
            differential(text.as_bytes())?;
        }

        #[test]
        fn differential_event_and_data(event in any::<String>(), data in arb_json(), extra in arb_json()) {
            let data_text = serde_json::to_string(&data).unwrap();
            let text = format!(
                r#"{{"x":{},"event":{},"data":{}}}"#,
                serde_json::to_string(&extra).unwrap(),
                serde_json::to_string(&event).unwrap(),
                data_text,
            );
            differential(text.as_bytes())?;
            if (1..=256).contains(&event.len()) {
                let e = parse(text.as_bytes()).unwrap();
                prop_assert_eq!(&e.event, &event);
                prop_assert_eq!(e.data, Some(data_text.as_bytes()));
            }
        }

        #[test]
        fn differential_any_json(v in arb_json()) {
            differential(serde_json::to_string(&v).unwrap().as_bytes())?;
        }

        #[test]
        fn differential_mutated(text in arb_envelope_text(), op in any::<u8>(), at in any::<usize>(), pick in any::<usize>()) {
            let byte = INTERESTING[pick % INTERESTING.len()];
            differential(&mutate(text, op, at, byte))?;
        }

        #[test]
        fn differential_garbage(bytes in proptest::collection::vec(proptest::sample::select(INTERESTING.to_vec()), 0..40)) {
            differential(&bytes)?;
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
            let _ = parse_ack_payload(&bytes);
            differential(&bytes)?;
        }

        #[test]
        fn encode_then_parse_round_trips(
            event in "[^\u{0}]{1,40}".prop_filter("<= 256 bytes", |e| e.len() <= 256),
            data in proptest::option::of(arb_json()),
            corr in proptest::option::of(".{1,20}"),
            ack in proptest::option::of(".{1,20}"),
            is_ack in any::<bool>(),
        ) {
            let data_text = data.as_ref().map(|d| serde_json::to_string(d).unwrap());
            let t = TextEnvelope {
                event: &event,
                data: data_text.as_deref().map(str::as_bytes),
                ack_name: ack.as_deref(),
                is_ack,
                correlation_id: corr.as_deref(),
            };
            let bytes = t.encode();
            prop_assert_eq!(bytes.len(), t.encoded_len());
            // serde_json reads back the original strings...
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(v["event"].as_str(), Some(event.as_str()));
            prop_assert_eq!(v.get("_correlationId").and_then(|c| c.as_str()), corr.as_deref());
            // ... and so does our parser, with data byte for byte.
            let e = parse(&bytes).unwrap();
            prop_assert_eq!(&e.event, &event);
            prop_assert_eq!(e.data, data_text.as_deref().map(str::as_bytes));
            prop_assert_eq!(e.ack_name.as_deref(), ack.as_deref());
            prop_assert_eq!(e.correlation_id.as_deref(), corr.as_deref());
            prop_assert_eq!(e.is_ack, is_ack);
        }
    }
}
