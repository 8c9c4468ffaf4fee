//! Incremental UTF-8 validation for text messages that arrive in pieces (RFC 6455 §5.6, §8.1).
//!
//! RFC 6455 §8.1: "When an endpoint is to interpret a byte stream as UTF-8 but finds that the
//! byte stream is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail the WebSocket
//! Connection_." A text message may be split across fragments (and, compressed, across inflate
//! output chunks) at any byte, so the validator carries an incomplete trailing sequence of up to
//! 3 bytes from one chunk to the next.
//!
//! It fails as early as the bytes allow: as soon as a prefix can no longer be extended to valid
//! UTF-8 (an invalid lead byte, a bad continuation, an overlong form, a surrogate `ED A0..`, a
//! code point above U+10FFFF `F4 90..`), even when that prefix ends in the middle of a
//! sequence. Autobahn section 6 checks exactly this. The bulk work is `std::str::from_utf8`,
//! whose `Utf8Error::error_len` already distinguishes "invalid" (`Some`) from "incomplete but
//! possibly valid" (`None`) and checks the second byte of a sequence against the narrowed
//! ranges of RFC 3629 §4. The codec ([`super::codec`]) owns when to feed and when to finish.

use super::codec::Error;

/// Bytes per ASCII fast-path step.
const ASCII_CHUNK: usize = 32;

/// The high bit of every byte of a word.
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Eight bytes as a word. `b` is always 8 bytes long (it comes from `chunks_exact(8)`); were it
/// not, the word reads as non-ASCII and validation falls back to std, so it stays correct.
#[inline(always)]
fn word(b: &[u8]) -> u64 {
    u64::from_ne_bytes(b.try_into().unwrap_or([0x80; 8]))
}

/// The length of the leading run of `bytes` that is pure ASCII, rounded down to 8 bytes.
///
/// std's `from_utf8` has an ASCII fast path too, but it needs word alignment and so walks an
/// unaligned head (payloads start 2-14 bytes into a frame) byte by byte, which dominates on the
/// short messages a WebSocket server sees. Here: 32 bytes per step while they are all ASCII,
/// then 8 at a time. No character straddles the returned offset, since everything before it
/// is ASCII.
#[inline]
fn ascii_prefix_len(bytes: &[u8]) -> usize {
    let mut len = 0;
    for chunk in bytes.chunks_exact(ASCII_CHUNK) {
        if chunk.chunks_exact(8).fold(0, |acc, w| acc | word(w)) & HIGH_BITS != 0 {
            break;
        }
        len += ASCII_CHUNK;
    }
    // len <= bytes.len(): it counts whole chunks of `bytes`.
    for w in bytes[len..].chunks_exact(8) {
        if word(w) & HIGH_BITS != 0 {
            break;
        }
        len += 8;
    }
    len
}

/// Whether `bytes` is valid UTF-8: `std::str::from_utf8(bytes).is_ok()`, with a faster
/// start on ASCII.
#[inline]
pub fn is_valid(bytes: &[u8]) -> bool {
    // ascii_prefix_len(bytes) <= bytes.len() (it counts whole chunks of `bytes`).
    match &bytes[ascii_prefix_len(bytes)..] {
        [] => true,
        rest => std::str::from_utf8(rest).is_ok(),
    }
}

/// Validates a UTF-8 stream chunk by chunk. Small (5 bytes): lives inside the decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// An incomplete but still possibly valid sequence from the end of the previous chunk.
    carry: [u8; 4],
    /// Bytes used in `carry`. Invariant: `0..=3`.
    carry_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Utf8Validator {
        Utf8Validator {
            carry: [0; 4],
            carry_len: 0,
        }
    }

    /// Feeds the next chunk. Fails as soon as the stream so far cannot be a prefix of valid
    /// UTF-8; an incomplete sequence at the end of `chunk` is kept for the next call.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let mut rest = chunk;
        if self.carry_len != 0 {
            // Complete the carried sequence with up to 4 - carry_len bytes of this chunk and
            // validate that little window on its own.
            // Invariant: carry_len <= 3, so have + take <= 4 and take <= rest.len(): the
            // slicing below cannot fail.
            let have = usize::from(self.carry_len);
            let take = rest.len().min(4 - have);
            let mut window = self.carry;
            window[have..have + take].copy_from_slice(&rest[..take]);
            let n = have + take;
            match std::str::from_utf8(&window[..n]) {
                // The carried character completed (possibly followed by more whole
                // characters). valid_up_to > 0 implies it is >= the character's length > have.
                Ok(_) => {
                    rest = &rest[take..];
                }
                Err(e) if e.valid_up_to() > 0 => {
                    // have < valid_up_to <= have + take <= have + rest.len().
                    rest = &rest[e.valid_up_to() - have..];
                }
                Err(e) if e.error_len().is_some() => return Err(Error::InvalidUtf8),
                Err(_) => {
                    // Still incomplete: `take` was all of `chunk`, since a character is at
                    // most 4 bytes and n < 4 here.
                    self.carry = window;
                    self.carry_len = n as u8;
                    return Ok(());
                }
            }
            self.carry_len = 0;
        }
        // ascii_prefix_len(rest) <= rest.len(), and no character straddles it.
        let rest = &rest[ascii_prefix_len(rest)..];
        match std::str::from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(Error::InvalidUtf8),
            Err(e) => {
                // error_len() == None: the tail is an incomplete but valid prefix, 1 to 3 bytes.
                let tail = &rest[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends the message: a dangling incomplete sequence is invalid. Resets for the next message.
    pub fn finish(&mut self) -> Result<(), Error> {
        let dangling = self.carry_len != 0;
        *self = Utf8Validator::new();
        if dangling {
            Err(Error::InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Validates `data` split at the given cut points.
    fn validate_pieces(data: &[u8], cuts: &[usize]) -> Result<(), Error> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, data.len());
            v.feed(&data[start..cut])?;
            start = cut;
        }
        v.feed(&data[start..])?;
        v.finish()
    }

    /// The index of the byte at which a byte-at-a-time feed must fail, if any: the first
    /// prefix that std says is definitely invalid.
    fn first_certain_failure(data: &[u8]) -> Option<usize> {
        (1..=data.len()).find_map(|end| match std::str::from_utf8(&data[..end]) {
            Err(e) if e.error_len().is_some() => Some(end - 1),
            _ => None,
        })
    }

    fn byte_at_a_time(data: &[u8]) -> (Option<usize>, Result<(), Error>) {
        let mut v = Utf8Validator::new();
        for (i, b) in data.iter().enumerate() {
            if v.feed(std::slice::from_ref(b)).is_err() {
                return (Some(i), Err(Error::InvalidUtf8));
            }
        }
        (None, v.finish())
    }

    #[test]
    fn fails_fast_mid_sequence() {
        // Code point above U+10FFFF: F4 90 is already certain to be invalid.
        let mut v = Utf8Validator::new();
        v.feed(&[b'a', 0xF4]).unwrap();
        assert_eq!(v.feed(&[0x90]), Err(Error::InvalidUtf8));
        // UTF-16 surrogate: ED A0.
        let mut v = Utf8Validator::new();
        v.feed(&[0xED]).unwrap();
        assert_eq!(v.feed(&[0xA0, 0x80]), Err(Error::InvalidUtf8));
        // Also inside one chunk that ends mid-sequence.
        assert_eq!(
            Utf8Validator::new().feed(&[b'x', 0xED, 0xA0]),
            Err(Error::InvalidUtf8)
        );
        assert_eq!(
            Utf8Validator::new().feed(&[0xF4, 0x90]),
            Err(Error::InvalidUtf8)
        );
        // Overlong: E0 80, C0, C1, F5+ leads.
        for bad in [
            &[0xE0, 0x80][..],
            &[0xC0],
            &[0xC1],
            &[0xF5],
            &[0xFF],
            &[0x80],
        ] {
            assert_eq!(Utf8Validator::new().feed(bad), Err(Error::InvalidUtf8));
        }
    }

    #[test]
    fn valid_sequences_split_anywhere() {
        // Autobahn 6.2-style: "Hello-µ@ßöäüàá-UTF-8!!" and 4-byte characters.
        let text = "κόσμε Hello-µ@ßöäüàá-UTF-8!! \u{10FFFF} \u{1F600} \u{FFFF} \u{D7FF}\u{E000}";
        let bytes = text.as_bytes();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                assert_eq!(validate_pieces(bytes, &[a, b]), Ok(()), "cuts {a} {b}");
            }
        }
    }

    #[test]
    fn dangling_tail_is_refused_by_finish() {
        let mut v = Utf8Validator::new();
        v.feed(&[b'a', 0xE2, 0x82]).unwrap();
        assert_eq!(v.finish(), Err(Error::InvalidUtf8));
        // finish() reset the validator.
        assert_eq!(v.feed(b"ok"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn byte_at_a_time_fails_at_the_first_certain_byte() {
        let cases: &[&[u8]] = &[
            &[
                0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80,
            ],
            &[0xF4, 0x8F, 0xBF, 0xBF, 0xF4, 0x90, 0x80, 0x80],
            &[0xF0, 0x8F, 0xBF, 0xBF],
            &[0xE0, 0x9F, 0xBF],
            &[0xC2, 0x41],
            &[0xF0, 0x90, 0x80, 0x41],
        ];
        for case in cases {
            let expected = first_certain_failure(case);
            assert!(expected.is_some());
            assert_eq!(byte_at_a_time(case).0, expected, "{case:02x?}");
        }
    }

    fn utf8ish() -> impl Strategy<Value = Vec<u8>> {
        // Mostly valid text with sprinkled raw bytes, so both outcomes are common.
        proptest::collection::vec(
            prop_oneof![
                4 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
                1 => any::<u8>().prop_map(|b| vec![b]),
                1 => prop::sample::select(vec![
                    vec![0xED, 0xA0], vec![0xF4, 0x90], vec![0xE0, 0x80], vec![0xF0, 0x8F],
                    vec![0xF4], vec![0xE2, 0x82], vec![0xC3],
                ]),
            ],
            0..40,
        )
        .prop_map(|parts| parts.concat())
    }

    #[test]
    fn is_valid_agrees_with_std_at_every_length_and_position() {
        // A multi-byte or invalid sequence at every position of every length up to 100, so
        // both the chunked ASCII path and the handover to std are exercised.
        let inserts: &[&[u8]] = &[
            "é".as_bytes(),
            "€".as_bytes(),
            "😀".as_bytes(),
            &[0xFF],
            &[0xE2, 0x82],
            &[0xED, 0xA0, 0x80],
            &[0x80],
        ];
        for len in 0..100 {
            assert!(is_valid(&vec![b'a'; len]));
            for pos in 0..=len {
                for ins in inserts {
                    let mut data = vec![b'a'; len];
                    data.splice(pos..pos, ins.iter().copied());
                    assert_eq!(
                        is_valid(&data),
                        std::str::from_utf8(&data).is_ok(),
                        "len {len} pos {pos} {ins:02x?}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn is_valid_agrees_with_std(data in utf8ish()) {
            prop_assert_eq!(is_valid(&data), std::str::from_utf8(&data).is_ok());
        }

        #[test]
        fn agrees_with_std_for_any_split(
            data in utf8ish(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
            cuts.sort_unstable();
            let expected = std::str::from_utf8(&data).map(|_| ()).map_err(|_| Error::InvalidUtf8);
            prop_assert_eq!(validate_pieces(&data, &cuts), expected);
        }

        #[test]
        fn fails_exactly_when_certain(data in utf8ish()) {
            let (failed_at, result) = byte_at_a_time(&data);
            prop_assert_eq!(failed_at, first_certain_failure(&data));
            if failed_at.is_none() {
                prop_assert_eq!(result.is_ok(), std::str::from_utf8(&data).is_ok());
            }
        }
    }
}
