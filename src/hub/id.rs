//! Client ids: which shard owns a client, in O(1), without a global map.
//!
//! An id is 16 bytes printed as a UUID (v4 layout, 36 characters, so it fits where stelar
//! clients expect `crypto.randomUUID()`; PROTOCOL.md §4.3):
//!
//! ```text
//! bytes 0..4   slot     u32 BE   index of the connection in its shard's slab
//! bytes 4..6   shard    u16 BE   the owning shard
//! byte  6      0x40 | 4 random bits     (UUID version 4)
//! byte  7      8 random bits
//! byte  8      0x80 | 6 random bits     (UUID variant 10xx)
//! byte  9      8 random bits
//! bytes 10..12 node     u16 BE   the owning node's tag (characters 24..28 of the text)
//! bytes 12..16 32 random bits
//! ```
//!
//! The 58 random bits (the *token*) come from the kernel's CSPRNG and are stored with the
//! connection; an id only resolves when node, slot, shard and token all match, so ids are not
//! guessable and a stale id never reaches the connection that reused its slot. The node tag
//! routes a message to a client of another node (`cluster/`): a hash of the node id, or a
//! random value per process when no cluster is configured.

use std::fmt;

/// A client id. Cheap to copy; prints as a 36-character UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId {
    bytes: [u8; 16],
}

/// The parts of a [`ClientId`] that locate the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Owning shard.
    pub shard: u16,
    /// Slot in that shard's connection slab.
    pub slot: u32,
}

/// Where the node tag sits in the 36-character text: `PREFIX:node:{text[24..28]}`.
#[cfg(test)]
pub(crate) const NODE_TAG_TEXT: std::ops::Range<usize> = 24..28;

impl ClientId {
    /// Builds an id for `slot` on `shard` of node `node` with 16 random bytes from the caller
    /// (only 58 bits of them are used).
    pub fn new(node: u16, shard: u16, slot: u32, random: [u8; 16]) -> Self {
        let mut bytes = random;
        bytes[0..4].copy_from_slice(&slot.to_be_bytes());
        bytes[4..6].copy_from_slice(&shard.to_be_bytes());
        bytes[10..12].copy_from_slice(&node.to_be_bytes());
        bytes[6] = 0x40 | (bytes[6] & 0x0f);
        bytes[8] = 0x80 | (bytes[8] & 0x3f);
        ClientId { bytes }
    }

    /// Where the client lives.
    pub fn location(&self) -> Location {
        Location {
            slot: u32::from_be_bytes([self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]]),
            shard: u16::from_be_bytes([self.bytes[4], self.bytes[5]]),
        }
    }

    /// The owning node's tag.
    pub fn node(&self) -> u16 {
        u16::from_be_bytes([self.bytes[10], self.bytes[11]])
    }

    /// Parses the 36-character form (hex digits in either case). `None` for anything else,
    /// including a well-formed UUID that is not one of ours (wrong version/variant bits).
    pub fn parse(text: &[u8]) -> Option<Self> {
        if text.len() != 36 {
            return None;
        }
        let mut bytes = [0u8; 16];
        let mut nibbles = 0usize;
        for (i, &c) in text.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return None;
                }
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return None,
            };
            let byte = &mut bytes[nibbles / 2];
            *byte = (*byte << 4) | v;
            nibbles += 1;
        }
        if bytes[6] & 0xf0 != 0x40 || bytes[8] & 0xc0 != 0x80 {
            return None;
        }
        Some(ClientId { bytes })
    }

    /// Writes the 36-character form into `out`.
    pub fn write_to(&self, out: &mut [u8; 36]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut o = 0;
        for (i, b) in self.bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out[o] = b'-';
                o += 1;
            }
            out[o] = HEX[(b >> 4) as usize];
            out[o + 1] = HEX[(b & 0x0f) as usize];
            o += 2;
        }
    }

    /// The 36-character form as bytes.
    pub fn to_text(&self) -> [u8; 36] {
        let mut out = [0u8; 36];
        self.write_to(&mut out);
        out
    }

    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.bytes
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_text();
        // The alphabet above is ASCII, so this never fails.
        f.write_str(std::str::from_utf8(&text).unwrap_or("?"))
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({self})")
    }
}

/// 16 bytes from the kernel CSPRNG (`getrandom(2)`), for ids.
pub(crate) fn random_bytes() -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut filled = 0;
    while filled < out.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `out`.
        let n =
            unsafe { libc::getrandom(out[filled..].as_mut_ptr().cast(), out.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // getrandom(2) without GRND_NONBLOCK only fails before the pool is seeded
            // (blocks instead) or on EINTR; anything else means the syscall is missing,
            // which kernels with io_uring never lack.
            panic!("getrandom failed: {}", std::io::Error::last_os_error());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prints_as_uuid_v4() {
        let id = ClientId::new(0xabcd, 3, 0x0102_0304, [0xff; 16]);
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[..8], "01020304");
        assert_eq!(&text[9..13], "0003");
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(&text[NODE_TAG_TEXT], "abcd");
    }

    #[test]
    fn rejects_malformed() {
        assert!(ClientId::parse(b"").is_none());
        assert!(ClientId::parse(b"not-a-uuid-not-a-uuid-not-a-uuid-xxx").is_none());
        // A v1 UUID is not one of ours.
        assert!(ClientId::parse(b"6ba7b810-9dad-11d1-80b4-00c04fd430c8").is_none());
        let good = ClientId::new(7, 1, 2, random_bytes()).to_string();
        let mut bad = good.clone().into_bytes();
        bad[8] = b'x';
        assert!(ClientId::parse(&bad).is_none());
        assert!(ClientId::parse(good.to_uppercase().as_bytes()).is_some());
    }

    #[test]
    fn random_ids_differ() {
        let a = ClientId::new(0, 0, 0, random_bytes());
        let b = ClientId::new(0, 0, 0, random_bytes());
        assert_ne!(a, b);
    }

    proptest! {
        #[test]
        fn round_trip(node: u16, shard: u16, slot: u32, random: [u8; 16]) {
            let id = ClientId::new(node, shard, slot, random);
            let parsed = ClientId::parse(&id.to_text()).unwrap();
            prop_assert_eq!(parsed, id);
            prop_assert_eq!(parsed.location(), Location { shard, slot });
            prop_assert_eq!(parsed.node(), node);
        }

        #[test]
        fn parse_never_panics(bytes: Vec<u8>) {
            let _ = ClientId::parse(&bytes);
        }
    }
}
