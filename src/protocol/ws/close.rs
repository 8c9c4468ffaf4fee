//! Close status codes (RFC 6455 §7.4) and close-frame payloads (§5.5.1).
//!
//! A close payload is either empty or a 2-byte big-endian status code followed by a UTF-8
//! reason. This file parses and validates such payloads and encodes them; which code to answer
//! a fault with is decided by [`super::codec::Error::close_code`], and the close handshake
//! (who sent what, whether to reply) is tracked by the decoder in [`super::codec`].

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, BytesMut};

use super::codec::Error;

/// Longest close reason that fits a control frame: 125 payload bytes minus the 2-byte code.
pub const MAX_REASON_LEN: usize = 123;

/// A close status code that may appear on the wire.
///
/// Invariant: the value is one an endpoint may send, so holding a `CloseCode` means it can be
/// encoded. RFC 6455 §7.4.1/§7.4.2 and the IANA registry allow 1000-1003, 1007-1014 and
/// 3000-4999. Codes below 1000, 1004 (reserved), 1005/1006/1015 ("MUST NOT be set as a status
/// code in a Close control frame by an endpoint"), 1016-2999 (unassigned) and 5000 and above
/// are refused by [`CloseCode::new`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: normal closure; the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: going away (server shutting down, browser leaving the page).
    pub const AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL: CloseCode = CloseCode(1002);
    /// 1003: received a type of data it cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1007: data inconsistent with the message type (e.g. non-UTF-8 text).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy violation.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: message too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: (client) the server did not negotiate a required extension.
    pub const MANDATORY_EXT: CloseCode = CloseCode(1010);
    /// 1011: (server) unexpected condition.
    pub const INTERNAL: CloseCode = CloseCode(1011);
    /// 1012: service restart (IANA registry).
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (IANA registry).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: bad gateway (IANA registry).
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 4001 (private use, RFC 6455 §7.4.2): the client did not authenticate in time.
    pub const AUTH_TIMEOUT: CloseCode = CloseCode(4001);
    /// 4003 (private use): authentication failed or was required.
    pub const AUTH_FAILED: CloseCode = CloseCode(4003);

    /// The code if it may appear on the wire, `None` otherwise (see the type's invariant).
    pub const fn new(code: u16) -> Option<CloseCode> {
        match code {
            1000..=1003 | 1007..=1014 | 3000..=4999 => Some(CloseCode(code)),
            _ => None,
        }
    }

    /// The numeric value.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The RFC / IANA name, or "application" (3000-3999) / "private" (4000-4999).
    pub const fn name(self) -> &'static str {
        match self.0 {
            1000 => "normal",
            1001 => "going away",
            1002 => "protocol error",
            1003 => "unsupported data",
            1007 => "invalid payload data",
            1008 => "policy violation",
            1009 => "message too big",
            1010 => "mandatory extension",
            1011 => "internal error",
            1012 => "service restart",
            1013 => "try again later",
            1014 => "bad gateway",
            3000..=3999 => "application",
            _ => "private",
        }
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({} {})", self.0, self.name())
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

/// The body of a close frame that carries a status code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason: UTF-8, at most [`MAX_REASON_LEN`] bytes on the wire (longer reasons are
    /// cut at a character boundary when encoded).
    pub reason: Cow<'static, str>,
}

impl CloseFrame {
    /// A close frame with a code and a static reason (no allocation).
    pub const fn new(code: CloseCode, reason: &'static str) -> CloseFrame {
        CloseFrame {
            code,
            reason: Cow::Borrowed(reason),
        }
    }

    /// Parses a close payload. Empty means "no status code" (`Ok(None)`).
    ///
    /// RFC 6455 §5.5.1: "If there is a body, the first two bytes of the body MUST be a 2-byte
    /// unsigned integer ... representing a status code", so a 1-byte body is a protocol error;
    /// a code that may not appear on the wire is a protocol error (§7.4); and the reason is
    /// UTF-8 ("the data ... is not guaranteed to be human readable" but it is UTF-8 text), a
    /// non-UTF-8 reason is answered with 1007 like any invalid text (§8.1).
    pub fn parse(payload: &[u8]) -> Result<Option<CloseFrame>, Error> {
        let (hi, lo, reason) = match payload {
            [] => return Ok(None),
            [_] => return Err(Error::InvalidClosePayload),
            [hi, lo, reason @ ..] => (*hi, *lo, reason),
        };
        let code = CloseCode::new(u16::from_be_bytes([hi, lo])).ok_or(Error::InvalidCloseCode)?;
        let reason = std::str::from_utf8(reason).map_err(|_| Error::InvalidCloseReason)?;
        Ok(Some(CloseFrame {
            code,
            reason: Cow::Owned(reason.to_owned()),
        }))
    }

    /// The reason as it will be encoded: cut to [`MAX_REASON_LEN`] bytes at a char boundary.
    pub fn wire_reason(&self) -> &str {
        truncate_reason(&self.reason)
    }
}

/// Cuts `reason` to at most [`MAX_REASON_LEN`] bytes without splitting a character.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    // `end` is a char boundary <= len, so this cannot fail.
    &reason[..end]
}

/// The payload length [`write_close_payload`] will produce.
pub fn close_payload_len(frame: Option<&CloseFrame>) -> usize {
    frame.map_or(0, |f| 2 + f.wire_reason().len())
}

/// Appends a close payload: nothing for `None`, else the code and the (truncated) reason.
pub fn write_close_payload(frame: Option<&CloseFrame>, out: &mut BytesMut) {
    if let Some(frame) = frame {
        out.put_u16(frame.code.get());
        out.put_slice(frame.wire_reason().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wire_validity_of_every_code() {
        for code in 0..=u16::MAX {
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(CloseCode::new(code).is_some(), allowed, "code {code}");
        }
        for forbidden in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert_eq!(CloseCode::new(forbidden), None);
        }
    }

    #[test]
    fn parse_payloads() {
        assert_eq!(CloseFrame::parse(&[]), Ok(None));
        assert_eq!(CloseFrame::parse(&[0x03]), Err(Error::InvalidClosePayload));
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xe8]),
            Ok(Some(CloseFrame::new(CloseCode::NORMAL, "")))
        );
        // PROTOCOL.md §9: close 1008 "Server full".
        let server_full = [
            0x03, 0xf0, 0x53, 0x65, 0x72, 0x76, 0x65, 0x72, 0x20, 0x66, 0x75, 0x6c, 0x6c,
        ];
        assert_eq!(
            CloseFrame::parse(&server_full),
            Ok(Some(CloseFrame::new(CloseCode::POLICY, "Server full")))
        );
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xed]),
            Err(Error::InvalidCloseCode)
        );
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xe8, 0xff]),
            Err(Error::InvalidCloseReason)
        );
        assert_eq!(
            CloseFrame::parse(&[0x13, 0x88]),
            Err(Error::InvalidCloseCode)
        ); // 5000
        assert_eq!(
            CloseFrame::parse(&[0x0f, 0xa0, b'x']).map(|f| f.map(|f| f.code.get())),
            Ok(Some(4000))
        );
    }

    #[test]
    fn encode_truncates_reason_at_char_boundary() {
        let long = "é".repeat(100); // 200 bytes
        let frame = CloseFrame {
            code: CloseCode::AWAY,
            reason: Cow::Owned(long),
        };
        let mut out = BytesMut::new();
        write_close_payload(Some(&frame), &mut out);
        assert_eq!(out.len(), close_payload_len(Some(&frame)));
        assert!(out.len() <= 125);
        assert_eq!(out.len(), 2 + 122); // 61 two-byte chars
        let back = CloseFrame::parse(&out).unwrap().unwrap();
        assert_eq!(back.code, CloseCode::AWAY);
        assert_eq!(back.reason.len(), 122);
        let mut none = BytesMut::new();
        write_close_payload(None, &mut none);
        assert!(none.is_empty());
    }

    proptest! {
        #[test]
        fn round_trip(code in 0u16.., reason in ".{0,80}") {
            let Some(code) = CloseCode::new(code) else { return Ok(()); };
            let frame = CloseFrame { code, reason: Cow::Owned(reason) };
            let mut out = BytesMut::new();
            write_close_payload(Some(&frame), &mut out);
            let back = CloseFrame::parse(&out).unwrap().unwrap();
            prop_assert_eq!(back.code, frame.code);
            prop_assert_eq!(&*back.reason, frame.wire_reason());
        }

        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..130)) {
            let _ = CloseFrame::parse(&bytes);
        }
    }
}
