//! RFC 6455 §5.2 base framing: opcodes and frame headers.
//!
//! Parses a frame header from the front of the caller's read buffer (`Ok(None)` = need more
//! bytes) and writes headers into caller buffers with the minimal length encoding. This file
//! knows nothing about messages: which opcode may follow which, control-frame limits, masking
//! policy per role, RSV1 meaning and size limits are enforced by [`super::codec`]; masking
//! itself is [`super::mask`].
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

use bytes::{BufMut, BytesMut};

use super::codec::Error;

/// The longest possible frame header: 2 fixed bytes, 8 bytes of 64-bit length, 4 of mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// Which end of the connection a codec speaks for.
///
/// RFC 6455 §5.1: a client MUST mask every frame it sends; a server MUST NOT mask any frame it
/// sends. So a [`Role::Server`] decoder expects masked frames and a [`Role::Client`] decoder
/// expects unmasked ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// We are the client: we mask what we send and refuse masked frames.
    Client,
    /// We are the server: we send unmasked frames and refuse unmasked ones.
    Server,
}

/// A frame opcode (RFC 6455 §5.2, §11.8).
///
/// Reserved values are kept (not mapped to an error here) so the codec can refuse them with
/// the right close code while still knowing whether the reserved value is in the control
/// range (0xB-0xF) or the data range (0x3-0x7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: first frame of a text (UTF-8) message.
    Text,
    /// 0x2: first frame of a binary message.
    Binary,
    /// 0x8: connection close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
    /// 0x3-0x7 (reserved data) or 0xB-0xF (reserved control); holds the 4-bit value.
    Reserved(u8),
}

impl OpCode {
    /// Maps the low 4 bits of `bits` to an opcode; never fails.
    #[inline]
    pub const fn from_bits(bits: u8) -> OpCode {
        match bits & 0x0F {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => OpCode::Reserved(other),
        }
    }

    /// The 4-bit wire value.
    #[inline]
    pub const fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
            OpCode::Reserved(bits) => bits & 0x0F,
        }
    }

    /// RFC 6455 §5.5: "Control frames are identified by opcodes where the most significant bit
    /// of the opcode is 1." True for reserved control opcodes too.
    #[inline]
    pub const fn is_control(self) -> bool {
        self.bits() & 0x08 != 0
    }
}

/// A parsed frame header. `payload_len` is what the header says; nothing here checks it
/// against limits (the codec does, before the payload arrives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of a message.
    pub fin: bool,
    /// RSV1: "Per-Message Compressed" when permessage-deflate is negotiated (RFC 7692 §6).
    pub rsv1: bool,
    /// RSV2: no extension we support defines it.
    pub rsv2: bool,
    /// RSV3: no extension we support defines it.
    pub rsv3: bool,
    /// The opcode, reserved values included.
    pub opcode: OpCode,
    /// The masking key, present iff the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes. Invariant after [`FrameHeader::parse`]: `< 2^63`.
    pub payload_len: u64,
}

impl FrameHeader {
    /// A header for an unfragmented, unmasked, uncompressed frame.
    #[inline]
    pub const fn new(opcode: OpCode, payload_len: u64) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// Parses a header from the front of `src`.
    ///
    /// Returns `Ok(None)` when `src` does not yet hold the whole header, otherwise the header
    /// and its length in bytes (2 to 14). The only error is a 64-bit length with its most
    /// significant bit set. Non-minimal length encodings are accepted: the minimal-encoding
    /// MUST binds senders, and refusing them would buy nothing.
    #[inline]
    pub fn parse(src: &[u8]) -> Result<Option<(FrameHeader, usize)>, Error> {
        let (b0, b1) = match src {
            [b0, b1, ..] => (*b0, *b1),
            _ => return Ok(None),
        };
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut len) = match b1 & 0x7F {
            126 => match src.get(2..4) {
                Some(&[hi, lo]) => (u64::from(u16::from_be_bytes([hi, lo])), 4),
                _ => return Ok(None),
            },
            127 => match src.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
                Some(bytes) => {
                    let n = u64::from_be_bytes(bytes);
                    // RFC 6455 §5.2: "the most significant bit MUST be 0".
                    if n >> 63 != 0 {
                        return Err(Error::InvalidPayloadLength);
                    }
                    (n, 10)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            match src
                .get(len..len + 4)
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
            {
                Some(key) => {
                    len += 4;
                    Some(key)
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        let header = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            rsv2: b0 & 0x20 != 0,
            rsv3: b0 & 0x10 != 0,
            opcode: OpCode::from_bits(b0),
            mask,
            payload_len,
        };
        Ok(Some((header, len)))
    }

    /// The encoded length of this header (minimal length encoding).
    #[inline]
    pub const fn encoded_len(&self) -> usize {
        let len = if self.payload_len < 126 {
            2
        } else if self.payload_len <= 0xFFFF {
            4
        } else {
            10
        };
        if self.mask.is_some() {
            len + 4
        } else {
            len
        }
    }

    /// Encodes the header into `dst` with the minimal length encoding (RFC 6455 §5.2: "the
    /// minimal number of bytes MUST be used to encode the length") and returns its length.
    /// A `payload_len` with the top bit set cannot be sent; it is written with that bit
    /// cleared, which callers never hit since no buffer is that large.
    #[inline]
    pub fn encode(&self, dst: &mut [u8; MAX_HEADER_LEN]) -> usize {
        dst[0] = (u8::from(self.fin) << 7)
            | (u8::from(self.rsv1) << 6)
            | (u8::from(self.rsv2) << 5)
            | (u8::from(self.rsv3) << 4)
            | self.opcode.bits();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = if self.payload_len < 126 {
            // Fits: checked just above.
            dst[1] = mask_bit | self.payload_len as u8;
            2
        } else if self.payload_len <= 0xFFFF {
            dst[1] = mask_bit | 126;
            dst[2..4].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
            4
        } else {
            dst[1] = mask_bit | 127;
            dst[2..10].copy_from_slice(&(self.payload_len & (u64::MAX >> 1)).to_be_bytes());
            10
        };
        if let Some(key) = self.mask {
            dst[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        len
    }

    /// Appends the encoded header to `out`.
    #[inline]
    pub fn write(&self, out: &mut BytesMut) {
        let mut tmp = [0u8; MAX_HEADER_LEN];
        let len = self.encode(&mut tmp);
        out.put_slice(&tmp[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(bytes: &[u8]) -> (FrameHeader, usize) {
        FrameHeader::parse(bytes)
            .expect("valid header")
            .expect("complete header")
    }

    #[test]
    fn rfc6455_5_7_unmasked_hello() {
        // 0x81 0x05 0x48 0x65 0x6c 0x6c 0x6f
        let (h, len) = parse_all(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(len, 2);
        assert_eq!(h, FrameHeader::new(OpCode::Text, 5));
    }

    #[test]
    fn rfc6455_5_7_masked_hello() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, len) = parse_all(&bytes);
        assert_eq!(len, 6);
        assert!(h.fin);
        assert_eq!(h.opcode, OpCode::Text);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.payload_len, 5);
    }

    #[test]
    fn rfc6455_5_7_fragments_and_ping() {
        let (h, _) = parse_all(&[0x01, 0x03, 0x48, 0x65, 0x6c]);
        assert!(!h.fin);
        assert_eq!(h.opcode, OpCode::Text);
        let (h, _) = parse_all(&[0x80, 0x02, 0x6c, 0x6f]);
        assert!(h.fin);
        assert_eq!(h.opcode, OpCode::Continuation);
        let (h, _) = parse_all(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(h.opcode, OpCode::Ping);
        assert!(h.opcode.is_control());
        let (h, _) = parse_all(&[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(h.opcode, OpCode::Pong);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
    }

    #[test]
    fn rfc6455_5_7_256_bytes_and_64k_binary_headers() {
        let (h, len) = parse_all(&[0x82, 0x7E, 0x01, 0x00]);
        assert_eq!((h.opcode, h.payload_len, len), (OpCode::Binary, 256, 4));
        let mut out = BytesMut::new();
        FrameHeader::new(OpCode::Binary, 256).write(&mut out);
        assert_eq!(&out[..], &[0x82, 0x7E, 0x01, 0x00]);

        let big = [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
        let (h, len) = parse_all(&big);
        assert_eq!((h.opcode, h.payload_len, len), (OpCode::Binary, 65536, 10));
        let mut out = BytesMut::new();
        FrameHeader::new(OpCode::Binary, 65536).write(&mut out);
        assert_eq!(&out[..], &big);
    }

    #[test]
    fn minimal_length_encoding_boundaries() {
        for (len, expect) in [(0u64, 2usize), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let h = FrameHeader::new(OpCode::Binary, len);
            let mut buf = [0u8; MAX_HEADER_LEN];
            assert_eq!(h.encode(&mut buf), expect);
            assert_eq!(h.encoded_len(), expect);
        }
    }

    #[test]
    fn msb_of_64_bit_length_is_refused() {
        let bytes = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::parse(&bytes), Err(Error::InvalidPayloadLength));
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        let (h, len) = parse_all(&[0x82, 0x7E, 0x00, 0x05]);
        assert_eq!((h.payload_len, len), (5, 4));
        let (h, len) = parse_all(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!((h.payload_len, len), (5, 10));
    }

    #[test]
    fn every_truncation_of_a_header_needs_more() {
        let h = FrameHeader {
            mask: Some([1, 2, 3, 4]),
            ..FrameHeader::new(OpCode::Binary, 70_000)
        };
        let mut buf = [0u8; MAX_HEADER_LEN];
        let len = h.encode(&mut buf);
        assert_eq!(len, 14);
        for cut in 0..len {
            assert_eq!(FrameHeader::parse(&buf[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(FrameHeader::parse(&buf[..len]), Ok(Some((h, len))));
    }

    #[test]
    fn opcodes_round_trip_and_reserved_are_kept() {
        for bits in 0u8..16 {
            let op = OpCode::from_bits(bits);
            assert_eq!(op.bits(), bits);
            assert_eq!(op.is_control(), bits >= 8);
            let reserved = matches!(op, OpCode::Reserved(_));
            assert_eq!(reserved, matches!(bits, 3..=7 | 0xB..=0xF));
        }
    }

    fn arb_header() -> impl Strategy<Value = FrameHeader> {
        (
            any::<[bool; 4]>(),
            0u8..16,
            proptest::option::of(any::<[u8; 4]>()),
            prop_oneof![0u64..=125, 126u64..=65535, 65536u64..=(u64::MAX >> 1)],
        )
            .prop_map(|(bits, op, mask, payload_len)| FrameHeader {
                fin: bits[0],
                rsv1: bits[1],
                rsv2: bits[2],
                rsv3: bits[3],
                opcode: OpCode::from_bits(op),
                mask,
                payload_len,
            })
    }

    proptest! {
        #[test]
        fn header_round_trip(h in arb_header(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut out = BytesMut::new();
            h.write(&mut out);
            let len = out.len();
            prop_assert_eq!(len, h.encoded_len());
            out.extend_from_slice(&tail);
            prop_assert_eq!(FrameHeader::parse(&out), Ok(Some((h, len))));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            if let Ok(Some((h, len))) = FrameHeader::parse(&bytes) {
                prop_assert!(len <= bytes.len());
                prop_assert!(h.payload_len < 1 << 63);
            }
        }
    }
}
