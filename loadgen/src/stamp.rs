//! The stamp every measured message carries: who sent it, its sequence number and its
//! intended send time.
//!
//! Layout: `LG` then 40 lowercase hex digits: 8 for the publisher id (u32), 16 for the
//! sequence number (u64), 16 for the send time (ns on `CLOCK_MONOTONIC`, see `clock.rs`),
//! then `.` padding up to the message size asked for. It is plain ASCII, so the same bytes
//! travel as a JSON string inside a stelar envelope, as a raw WebSocket text message, or as
//! a binary message, and any echo or broadcast server returns it unchanged. Fixed width
//! makes parsing a bounds check and 40 table lookups.
//!
//! The send time is the *intended* send time in open-loop runs, so latency measured from it
//! includes any time the message waited behind a slow server (coordinated omission
//! corrected); in closed-loop runs it is the actual send time.

/// Bytes of a stamp.
pub const STAMP_LEN: usize = 42;
/// The two bytes that open a stamp.
pub const MAGIC: &[u8; 2] = b"LG";
/// Padding after the stamp.
pub const PAD: u8 = b'.';

const HEX: &[u8; 16] = b"0123456789abcdef";

/// What a stamp says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Global id of the connection that sent it (the plan's connection index).
    pub publisher: u32,
    /// Per-publisher sequence number, from 0.
    pub seq: u64,
    /// Intended (open loop) or actual (closed loop) send time, ns on `CLOCK_MONOTONIC`.
    pub sent_ns: u64,
}

#[inline]
fn put_hex(out: &mut [u8], mut v: u64) {
    for slot in out.iter_mut().rev() {
        *slot = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[inline]
fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        _ => None,
    }
}

#[inline]
fn get_hex(src: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &b in src {
        v = (v << 4) | hex_value(b)?;
    }
    Some(v)
}

impl Stamp {
    /// The 42 stamp bytes.
    #[inline]
    pub fn encode(&self) -> [u8; STAMP_LEN] {
        let mut out = [0u8; STAMP_LEN];
        out[..2].copy_from_slice(MAGIC);
        put_hex(&mut out[2..10], u64::from(self.publisher));
        put_hex(&mut out[10..26], self.seq);
        put_hex(&mut out[26..42], self.sent_ns);
        out
    }

    /// Appends the stamp, then padding so that at least `size` bytes are written in all.
    #[inline]
    pub fn write_padded<B: bytes::BufMut>(&self, out: &mut B, size: usize) {
        out.put_slice(&self.encode());
        if size > STAMP_LEN {
            out.put_bytes(PAD, size - STAMP_LEN);
        }
    }

    /// Parses a stamp at the very start of `src`.
    #[inline]
    pub fn parse(src: &[u8]) -> Option<Stamp> {
        let s = src.get(..STAMP_LEN)?;
        if &s[..2] != MAGIC {
            return None;
        }
        Some(Stamp {
            publisher: u32::try_from(get_hex(&s[2..10])?).ok()?,
            seq: get_hex(&s[10..26])?,
            sent_ns: get_hex(&s[26..42])?,
        })
    }

    /// Finds the first well-formed stamp anywhere in `msg` (an envelope around it, say).
    #[inline]
    pub fn find(msg: &[u8]) -> Option<Stamp> {
        let mut from = 0;
        while let Some(rel) = msg.get(from..)?.iter().position(|&b| b == b'L') {
            let at = from + rel;
            if let Some(s) = msg.get(at..).and_then(Stamp::parse) {
                return Some(s);
            }
            from = at + 1;
        }
        None
    }

    /// Where [`find`](Self::find) would find a stamp, and the stamp.
    pub fn find_at(msg: &[u8]) -> Option<(usize, Stamp)> {
        let mut from = 0;
        while let Some(rel) = msg.get(from..)?.iter().position(|&b| b == b'L') {
            let at = from + rel;
            if let Some(s) = msg.get(at..).and_then(Stamp::parse) {
                return Some((at, s));
            }
            from = at + 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fixed_layout() {
        let s = Stamp {
            publisher: 0x12,
            seq: 0xabc,
            sent_ns: 1,
        };
        assert_eq!(&s.encode(), b"LG000000120000000000000abc0000000000000001");
        let mut v = Vec::new();
        s.write_padded(&mut v, 50);
        assert_eq!(v.len(), 50);
        assert!(v.ends_with(b"........"));
        let mut short = Vec::new();
        s.write_padded(&mut short, 3);
        assert_eq!(short.len(), STAMP_LEN);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(Stamp::parse(b"LG00"), None);
        let mut bad = Stamp {
            publisher: 1,
            seq: 2,
            sent_ns: 3,
        }
        .encode();
        bad[20] = b'G';
        assert_eq!(Stamp::parse(&bad), None);
        bad[20] = b'A'; // uppercase is not ours
        assert_eq!(Stamp::parse(&bad), None);
        assert_eq!(Stamp::find(b"{\"event\":\"LGx\"}"), None);
    }

    #[test]
    fn found_inside_an_envelope() {
        let s = Stamp {
            publisher: 7,
            seq: 99,
            sent_ns: 123_456_789,
        };
        let mut msg = b"{\"event\":\"lg\",\"data\":\"".to_vec();
        s.write_padded(&mut msg, 64);
        msg.extend_from_slice(b"\"}");
        assert_eq!(Stamp::find(&msg), Some(s));
        assert_eq!(Stamp::find_at(&msg).map(|(at, _)| at), Some(22));
    }

    proptest! {
        #[test]
        fn round_trip(publisher: u32, seq: u64, sent_ns: u64, size in 0usize..300) {
            let s = Stamp { publisher, seq, sent_ns };
            let mut v = Vec::new();
            s.write_padded(&mut v, size);
            prop_assert_eq!(v.len(), size.max(STAMP_LEN));
            prop_assert_eq!(Stamp::parse(&v), Some(s));
            prop_assert_eq!(Stamp::find(&v), Some(s));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Stamp::parse(&bytes);
            let _ = Stamp::find(&bytes);
        }
    }
}
