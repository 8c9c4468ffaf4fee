//! The WebSocket binary-message envelope (PROTOCOL.md §3).
//!
//! ```text
//! u32 BE headerLen | headerLen bytes of UTF-8 JSON header | payload (rest of the message)
//! ```
//! Client → server header `{"event":"<name>"}`; server → client
//! `{"event":"<name>","_binary":true}`. Receivers need >= 4 bytes, `headerLen <= len − 4`
//! and a parseable header; anything else is dropped silently (every error here answers
//! [`super::Answer::Drop`]). Only `header.event` is read.
//!
//! The WebSocket frame around it is `ws/`'s; the payload limit and rate costs are conn/'s.

use std::borrow::Cow;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::json::{self, Document, Kind, Value};
use super::names;
use super::Error;

/// A parsed binary message. Borrows the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryMessage<'a> {
    /// `header.event` if it is a non-empty string (<= 256 bytes). stelar charges one more
    /// rate point and dispatches only when there is one (§3, §7.2).
    pub event: Option<Cow<'a, str>>,
    /// The bytes after the header.
    pub payload: &'a [u8],
    /// Where `payload` starts in the message (for `Bytes::slice(payload_start..)`).
    pub payload_start: usize,
}

impl BinaryMessage<'_> {
    /// The payload's range in the message it was parsed from.
    pub fn payload_range(&self) -> Range<usize> {
        self.payload_start..self.payload_start + self.payload.len()
    }
}

/// Parses a binary message (§3), in either direction (the server's extra `_binary` key is
/// ignored like any unknown key).
///
/// Errors: [`Error::BinaryTooShort`], [`Error::BinaryHeaderLength`], a JSON fault in the
/// header, [`Error::NotAnObject`] for a header that is valid JSON but not an object, and
/// [`Error::EventTooLong`] for an event over 256 bytes.
pub fn parse(msg: &[u8]) -> Result<BinaryMessage<'_>, Error> {
    let Some((&len_bytes, rest)) = msg.split_first_chunk::<4>() else {
        return Err(Error::BinaryTooShort);
    };
    let header_len = u32::from_be_bytes(len_bytes) as usize;
    if header_len > rest.len() {
        return Err(Error::BinaryHeaderLength);
    }
    let (header, payload) = rest.split_at(header_len);
    let mut event: Option<Value> = None;
    let doc = json::walk(header, |key, v| {
        if key == b"event" {
            event = Some(v);
        }
        Ok(())
    })?;
    if doc != Document::Object {
        return Err(Error::NotAnObject);
    }
    let event = match event {
        Some(v) if v.kind == Kind::String && v.end - v.start > 2 => {
            let name = json::decode_str(header, v)?;
            names::check_inbound_event(&name)?;
            Some(name)
        }
        _ => None,
    };
    Ok(BinaryMessage {
        event,
        payload,
        payload_start: 4 + header_len,
    })
}

const SERVER_TAIL: &[u8] = b",\"_binary\":true}";

/// Length of the server form of a binary message: 4 + header + payload.
pub fn server_len(event: &str, payload_len: usize) -> usize {
    4 + server_header_len(event) + payload_len
}

fn server_header_len(event: &str) -> usize {
    // {"event":E,"_binary":true}
    9 + json::quoted_len(event) + SERVER_TAIL.len()
}

/// Appends the server form `u32 | {"event":E,"_binary":true} | payload` to `dst`.
/// The event name is the caller's to check (`names::validate_outbound_event`).
pub fn encode_server_into(dst: &mut BytesMut, event: &str, payload: &[u8]) {
    let header_len = server_header_len(event);
    dst.reserve(4 + header_len + payload.len());
    // A header longer than u32::MAX would need an event name of 4 GiB; names are at most
    // 256 bytes by policy (names.rs). A saturated length would frame garbage, so panic.
    dst.put_u32(u32::try_from(header_len).expect("a binary header fits a u32 length"));
    dst.extend_from_slice(b"{\"event\":");
    json::write_quoted(dst, event);
    dst.extend_from_slice(SERVER_TAIL);
    dst.extend_from_slice(payload);
}

/// The server form in one allocation, shared by every WebSocket subscriber.
pub fn encode_server(event: &str, payload: &[u8]) -> Bytes {
    let mut dst = BytesMut::with_capacity(server_len(event, payload.len()));
    encode_server_into(&mut dst, event, payload);
    dst.freeze()
}

/// The client form `u32 | {"event":E} | payload` in one allocation (load generator).
pub fn encode_client(event: &str, payload: &[u8]) -> Bytes {
    let header_len = 10 + json::quoted_len(event);
    let mut dst = BytesMut::with_capacity(4 + header_len + payload.len());
    // As in encode_server_into: the client's event names are short.
    dst.put_u32(u32::try_from(header_len).expect("a binary header fits a u32 length"));
    dst.extend_from_slice(b"{\"event\":");
    json::write_quoted(&mut dst, event);
    dst.put_u8(b'}');
    dst.extend_from_slice(payload);
    dst.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn section_9_vectors() {
        // Server binary `bin` [01 02 03]: `00 00 00 1e` + header + payload.
        let s = encode_server("bin", &[1, 2, 3]);
        let mut want = vec![0, 0, 0, 0x1e];
        want.extend_from_slice(br#"{"event":"bin","_binary":true}"#);
        want.extend_from_slice(&[1, 2, 3]);
        assert_eq!(&s[..], &want[..]);
        assert_eq!(s.len(), server_len("bin", 3));
        // The client's version: header `00 00 00 0f` + `{"event":"bin"}` + payload.
        let c = encode_client("bin", &[1, 2, 3]);
        let mut want = vec![0, 0, 0, 0x0f];
        want.extend_from_slice(br#"{"event":"bin"}"#);
        want.extend_from_slice(&[1, 2, 3]);
        assert_eq!(&c[..], &want[..]);
        // Both parse back.
        for m in [&s[..], &c[..]] {
            let p = parse(m).unwrap();
            assert_eq!(p.event.as_deref(), Some("bin"));
            assert_eq!(p.payload, &[1, 2, 3]);
            assert_eq!(&m[p.payload_range()], &[1, 2, 3]);
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(b""), Err(Error::BinaryTooShort));
        assert_eq!(parse(b"\0\0\0"), Err(Error::BinaryTooShort));
        assert_eq!(parse(b"\0\0\0\x01"), Err(Error::BinaryHeaderLength));
        assert_eq!(parse(b"\xff\xff\xff\xff{}"), Err(Error::BinaryHeaderLength));
        assert_eq!(parse(b"\0\0\0\0"), Err(Error::JsonEof));
        assert_eq!(parse(b"\0\0\0\x04null"), Err(Error::NotAnObject));
        assert_eq!(parse(b"\0\0\0\x03{\"e"), Err(Error::JsonEof));
        let long = format!("{{\"event\":\"{}\"}}", "a".repeat(257));
        let mut m = (long.len() as u32).to_be_bytes().to_vec();
        m.extend_from_slice(long.as_bytes());
        assert_eq!(parse(&m), Err(Error::EventTooLong));
    }

    #[test]
    fn header_without_event() {
        for h in [
            &b"{}"[..],
            b"{\"event\":\"\"}",
            b"{\"event\":5}",
            b"{\"x\":1}",
        ] {
            let mut m = (h.len() as u32).to_be_bytes().to_vec();
            m.extend_from_slice(h);
            m.push(9);
            let p = parse(&m).unwrap();
            assert_eq!(p.event, None);
            assert_eq!(p.payload, &[9]);
        }
        // Empty payload is fine; escapes in the event decode.
        let h = br#"{"_binary":true,"event":"b\u0069n"}"#;
        let mut m = (h.len() as u32).to_be_bytes().to_vec();
        m.extend_from_slice(h);
        let p = parse(&m).unwrap();
        assert_eq!(p.event.as_deref(), Some("bin"));
        assert!(p.payload.is_empty());
    }

    proptest! {
        #[test]
        fn round_trip(event in "[^\u{0}]{1,30}", payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            for m in [encode_server(&event, &payload), encode_client(&event, &payload)] {
                let p = parse(&m).unwrap();
                prop_assert_eq!(p.event.as_deref(), Some(event.as_str()));
                prop_assert_eq!(p.payload, &payload[..]);
            }
            let mut into = BytesMut::from(&b"pre"[..]);
            encode_server_into(&mut into, &event, &payload);
            prop_assert_eq!(&into[3..], &encode_server(&event, &payload)[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = parse(&bytes) {
                prop_assert_eq!(&bytes[p.payload_range()], p.payload);
            }
        }
    }
}
