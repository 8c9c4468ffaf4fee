//! Event names and room names (PROTOCOL.md §2.4, §6, §10 Q13, Q14).
//!
//! Outbound event names (the ones we put in TCP JSON/BINARY frames) obey stelar's client
//! rule, §2.4. Inbound names are taken as they come, bounded only by UTF-8 and 256 bytes
//! (§10 Q13). Room names arrive either as the `data` of a `join-room`/`leave-room` event
//! (a JSON value: strings and JS-formatted integers accepted, §10 Q14) or as the raw UTF-8
//! payload of a TCP JOIN/LEAVE frame (§4.2). What a refused name leads to (silence, or a
//! `server:error` event) is the app layer's call; this file only says yes or no.

use std::borrow::Cow;

use super::json::{self, Document, Kind};
use super::Error;

/// Longest event name, in bytes, in either direction (§2.4 counts characters, but the
/// outbound alphabet is ASCII, so characters are bytes).
pub const MAX_EVENT_NAME_LEN: usize = 256;

/// Names stelar clients reserve for their own local events (§2.4).
pub const RESERVED_EVENT_NAMES: [&str; 5] = ["ping", "pong", "connect", "disconnect", "error"];

/// Default cap on a room name's length in bytes (§10 Q14).
pub const DEFAULT_MAX_ROOM_NAME_LEN: usize = 256;

/// Checks an event name we are about to send against §2.4: 1–256 characters, only
/// `A–Z a–z 0–9 - . / :`, not a reserved name.
pub fn validate_outbound_event(name: &str) -> Result<(), Error> {
    let ok_len = (1..=MAX_EVENT_NAME_LEN).contains(&name.len());
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'/' | b':'));
    if !(ok_len && ok_chars) {
        return Err(Error::InvalidEventName);
    }
    if RESERVED_EVENT_NAMES.contains(&name) {
        return Err(Error::ReservedEventName);
    }
    Ok(())
}

/// Checks an inbound event name taken from a JSON envelope: non-empty (§2.3 step 4) and at
/// most 256 bytes (§10 Q13). Anything else about it is the peer's business.
pub fn check_inbound_event(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        Err(Error::EmptyEvent)
    } else if name.len() > MAX_EVENT_NAME_LEN {
        Err(Error::EventTooLong)
    } else {
        Ok(())
    }
}

/// An inbound event name from a TCP frame's event field: UTF-8, non-empty, <= 256 bytes.
pub fn inbound_event(raw: &[u8]) -> Result<&str, Error> {
    let name = std::str::from_utf8(raw).map_err(|_| Error::EventNotUtf8)?;
    check_inbound_event(name)?;
    Ok(name)
}

/// The room named by a `join-room`/`leave-room` event's `data` (JSON text of one value).
///
/// A JSON string gives its (unescaped) text; a number that is a non-zero integer of at
/// most 2^53 − 1 in magnitude gives its decimal form, exactly as JS's `String(n)` writes it
/// (`5`, `5.0` and `5e0` all give `"5"`). JS-falsy values (`""`, `0`, `false`, `null`) are
/// [`Error::RoomNameEmpty`] (stelar ignores them); other values [`Error::RoomNameType`];
/// a name over `max_len` bytes [`Error::RoomNameTooLong`].
pub fn room_from_json(data: &[u8], max_len: usize) -> Result<Cow<'_, str>, Error> {
    let v = match json::walk(data, |_, _| Ok(()))? {
        Document::Object => return Err(Error::RoomNameType),
        Document::Other(v) => v,
    };
    let room = match v.kind {
        Kind::String => json::decode_str(data, v)?,
        Kind::Number => Cow::Owned(js_integer(v.span(data))?),
        Kind::False | Kind::Null => return Err(Error::RoomNameEmpty),
        Kind::True | Kind::Array | Kind::Object => return Err(Error::RoomNameType),
    };
    check_room(&room, max_len)?;
    Ok(room)
}

/// The room named by a TCP JOIN/LEAVE payload: raw UTF-8, not JSON (§4.2). Empty means
/// "ignore" ([`Error::RoomNameEmpty`]).
pub fn room_from_raw(payload: &[u8], max_len: usize) -> Result<&str, Error> {
    let room = std::str::from_utf8(payload).map_err(|_| Error::RoomNameNotUtf8)?;
    check_room(room, max_len)?;
    Ok(room)
}

fn check_room(room: &str, max_len: usize) -> Result<(), Error> {
    if room.is_empty() {
        Err(Error::RoomNameEmpty)
    } else if room.len() > max_len {
        Err(Error::RoomNameTooLong)
    } else {
        Ok(())
    }
}

/// `String(n)` for a JSON number that JS holds as a safe, non-zero integer.
fn js_integer(text: &[u8]) -> Result<String, Error> {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0; // 2^53 - 1, Number.MAX_SAFE_INTEGER
    let text = std::str::from_utf8(text).map_err(|_| Error::RoomNameType)?;
    let n: f64 = text.parse().map_err(|_| Error::RoomNameType)?;
    if n == 0.0 {
        return Err(Error::RoomNameEmpty);
    }
    if !n.is_finite() || n.fract() != 0.0 || n.abs() > MAX_SAFE {
        return Err(Error::RoomNameType);
    }
    // In range and integral, so the conversion is exact.
    Ok((n as i64).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn outbound_rule() {
        for ok in ["chat", "join-room", "a.b/c:d-E9", &"x".repeat(256)] {
            assert_eq!(validate_outbound_event(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a b", "a_b", "caf\u{e9}", "x\n", &"x".repeat(257)] {
            assert_eq!(
                validate_outbound_event(bad),
                Err(Error::InvalidEventName),
                "{bad}"
            );
        }
        for r in RESERVED_EVENT_NAMES {
            assert_eq!(validate_outbound_event(r), Err(Error::ReservedEventName));
        }
        assert_eq!(validate_outbound_event("Ping"), Ok(()));
    }

    #[test]
    fn inbound_rule() {
        assert_eq!(
            inbound_event(b"any name_at \xc3\xa9ll"),
            Ok("any name_at \u{e9}ll")
        );
        assert_eq!(inbound_event(b"ping"), Ok("ping"));
        assert_eq!(inbound_event(b""), Err(Error::EmptyEvent));
        assert_eq!(inbound_event(b"\xff"), Err(Error::EventNotUtf8));
        assert_eq!(inbound_event(&[b'a'; 256]), Ok(&"a".repeat(256)[..]));
        assert_eq!(inbound_event(&[b'a'; 257]), Err(Error::EventTooLong));
    }

    #[test]
    fn rooms_from_json() {
        let r = |s: &str| room_from_json(s.as_bytes(), 16).map(|c| c.into_owned());
        assert_eq!(r("\"lobby\""), Ok("lobby".into()));
        assert!(matches!(
            room_from_json(b"\"lobby\"", 16),
            Ok(Cow::Borrowed("lobby"))
        ));
        assert_eq!(r(r#" "lo\"bby\u00e9" "#), Ok("lo\"bby\u{e9}".into()));
        assert_eq!(r("5"), Ok("5".into()));
        assert_eq!(r("-42"), Ok("-42".into()));
        assert_eq!(r("5.0"), Ok("5".into()));
        assert_eq!(r("5e2"), Ok("500".into()));
        assert_eq!(r("9007199254740991"), Ok("9007199254740991".into()));
        assert_eq!(r("9007199254740993"), Err(Error::RoomNameType));
        assert_eq!(r("1.5"), Err(Error::RoomNameType));
        assert_eq!(r("1e400"), Err(Error::RoomNameType));
        for falsy in ["\"\"", "0", "-0", "0.0", "false", "null"] {
            assert_eq!(r(falsy), Err(Error::RoomNameEmpty), "{falsy}");
        }
        for other in ["true", "[]", "{}", "{\"a\":1}", "[\"a\"]"] {
            assert_eq!(r(other), Err(Error::RoomNameType), "{other}");
        }
        assert_eq!(r("\"0123456789abcdef\""), Ok("0123456789abcdef".into()));
        assert_eq!(r("\"0123456789abcdefg\""), Err(Error::RoomNameTooLong));
        assert_eq!(r("\"a"), Err(Error::JsonEof));
        assert_eq!(r(r#""\ud800""#), Err(Error::JsonLoneSurrogate));
    }

    #[test]
    fn rooms_from_raw() {
        assert_eq!(room_from_raw(b"lobby", 256), Ok("lobby"));
        assert_eq!(room_from_raw(b"\"not json\"", 256), Ok("\"not json\""));
        assert_eq!(room_from_raw(b"", 256), Err(Error::RoomNameEmpty));
        assert_eq!(room_from_raw(b"\xff", 256), Err(Error::RoomNameNotUtf8));
        assert_eq!(room_from_raw(b"abc", 2), Err(Error::RoomNameTooLong));
    }

    proptest! {
        #[test]
        fn integers_format_like_js(n in -9_007_199_254_740_991i64..=9_007_199_254_740_991i64) {
            prop_assume!(n != 0);
            let text = n.to_string();
            prop_assert_eq!(room_from_json(text.as_bytes(), 256).unwrap(), text.as_str());
        }

        #[test]
        fn arbitrary_data_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = room_from_json(&bytes, 8);
            let _ = room_from_raw(&bytes, 8);
            let _ = inbound_event(&bytes);
        }
    }
}
