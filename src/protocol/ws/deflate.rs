//! permessage-deflate (RFC 7692 §7) compression and bounded decompression, with miniz_oxide.
//!
//! The extension *negotiation* (which parameters were agreed) belongs to
//! [`super::handshake`]; this file receives plain parameters. Which messages to compress, RSV1
//! and fragment reassembly belong to [`super::codec`].
//!
//! - [`Deflater`] compresses one message at a time as raw DEFLATE ending in a sync flush, then
//!   removes the trailing `00 00 ff ff` (RFC 7692 §7.2.1). With context takeover the LZ77
//!   window carries over to the next message; without, each message ends with a full flush,
//!   which drops the window, so every compressed message stands alone.
//! - [`Inflater`] decompresses a message pushed in pieces (fragments), appends `00 00 ff ff` at
//!   the end of the message (§7.2.2) and refuses to produce more than a caller-given number of
//!   bytes (decompression bombs), stopping as soon as the cap is passed.

use bytes::{BufMut, BytesMut};
use miniz_oxide::deflate::core::{
    compress_to_output, create_comp_flags_from_zip_params, CompressionStrategy, CompressorOxide,
    TDEFLFlush, TDEFLStatus,
};
use miniz_oxide::inflate::stream::{inflate, InflateState, MinReset};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

use super::codec::Error;

/// The four octets a sync flush ends with, removed by the sender and re-added by the receiver
/// (RFC 7692 §7.2.1, §7.2.2).
pub const SYNC_TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// miniz_oxide compression level used with a full (2^15) window: level 1 is its fast greedy
/// path, the right trade for short real-time messages.
const LEVEL_FULL_WINDOW: i32 = 1;

/// Level used with a limited window. It must be >= 2: at level 1 miniz_oxide takes its fast
/// path (`compress_fast`), which ignores the RLE flag and could emit far matches.
const LEVEL_LIMITED_WINDOW: i32 = 2;

/// The largest stored (uncompressed) DEFLATE block.
const MAX_STORED_BLOCK: usize = 0xFFFF;

/// Compresses messages for one sending context (a connection, or with no context takeover a
/// whole shard, since messages are then independent).
pub struct Deflater {
    /// miniz_oxide state (~300 KiB of tables and window, boxed inside).
    compressor: Box<CompressorOxide>,
    /// RFC 7692 §7.1.1: the LZ77 window must not be carried to the next message.
    no_context_takeover: bool,
}

impl Deflater {
    /// A compressor for the agreed parameters. `no_context_takeover` is ours to honour
    /// (`server_no_context_takeover` when we are the server); `max_window_bits` is the window
    /// the peer will inflate with (`server_max_window_bits`, 8..=15; 15 if not negotiated).
    ///
    /// miniz_oxide's window is always 32 KiB (2^15). When the peer limited it (bits < 15) we
    /// must never emit a match distance beyond 2^bits (RFC 7692 §7.1.2.1), so we switch to
    /// miniz_oxide's RLE strategy: it only ever emits matches at distance 1, which fits any
    /// window (the smallest allowed is 2^8), and still compresses runs.
    pub fn new(no_context_takeover: bool, max_window_bits: u8) -> Deflater {
        // Negative window bits = raw DEFLATE (no zlib header or checksum), as RFC 7692 needs.
        let flags = if max_window_bits >= 15 {
            create_comp_flags_from_zip_params(
                LEVEL_FULL_WINDOW,
                -15,
                CompressionStrategy::Default as i32,
            )
        } else {
            create_comp_flags_from_zip_params(
                LEVEL_LIMITED_WINDOW,
                -15,
                CompressionStrategy::RLE as i32,
            )
        };
        Deflater {
            compressor: Box::new(CompressorOxide::new(flags)),
            no_context_takeover,
        }
    }

    /// Whether each message is compressed independently (so a message may also be sent
    /// uncompressed instead, and one compressed frame may be shared by many connections).
    pub fn no_context_takeover(&self) -> bool {
        self.no_context_takeover
    }

    /// Appends the compressed form of one whole message to `out`: raw DEFLATE blocks ending
    /// with a sync (or, without context takeover, full) flush whose `00 00 ff ff` tail is removed (RFC 7692 §7.2.1). An empty
    /// message becomes the single byte `00` (an empty stored block, §7.2.3.6).
    pub fn compress(&mut self, message: &[u8], out: &mut BytesMut) {
        if message.is_empty() {
            // miniz_oxide would emit an empty fixed-Huffman block (02 00); the RFC's form is
            // shorter and leaves the compressor untouched, which is valid with or without
            // context takeover since the stream is at a byte boundary after every message.
            out.put_u8(0x00);
            return;
        }
        let start = out.len();
        // Without context takeover a full flush ends the message: the same sync marker on the
        // wire, and miniz_oxide forgets the window (clears its hash chains, window size 0) so
        // the next message cannot refer back. That is ~3x cheaper than `reset()`, which
        // rewrites ~370 KiB of state.
        let flush = if self.no_context_takeover {
            TDEFLFlush::Full
        } else {
            TDEFLFlush::Sync
        };
        let (status, consumed) =
            compress_to_output(&mut self.compressor, message, flush, |chunk: &[u8]| {
                out.extend_from_slice(chunk);
                true
            });
        if status == TDEFLStatus::Okay && consumed == message.len() {
            // A sync flush always ends with an empty stored block whose LEN/NLEN are the
            // trailer; remove it.
            if out.len() >= start + 4 && out[out.len() - 4..] == SYNC_TRAILER {
                out.truncate(out.len() - 4);
            }
        } else {
            // Cannot happen: the output callback always accepts and we never finish the
            // stream, which are miniz_oxide's only failure causes. Should it happen anyway,
            // start over with a fresh compressor (a valid stream needs no shared history) and
            // send the message as stored blocks, which are always valid DEFLATE.
            out.truncate(start);
            self.compressor.reset();
            write_stored_blocks(message, out);
        }
    }
}

/// Writes `message` as non-final stored DEFLATE blocks, starting byte-aligned and ending like
/// a sync-flushed message with the trailer removed. Used only as a fallback.
fn write_stored_blocks(message: &[u8], out: &mut BytesMut) {
    let mut chunks = message.chunks(MAX_STORED_BLOCK).peekable();
    if chunks.peek().is_none() {
        out.put_u8(0x00);
        return;
    }
    for chunk in chunks {
        // BFINAL=0, BTYPE=00, then padding to the byte boundary: one 0x00 byte.
        out.put_u8(0x00);
        // chunk.len() <= 0xFFFF by construction of `chunks`.
        let len = chunk.len() as u16;
        out.put_u16_le(len);
        out.put_u16_le(!len);
        out.put_slice(chunk);
    }
    // End with the empty stored block of a sync flush, minus its trailer.
    out.put_u8(0x00);
}

/// Decompresses the messages of one receiving context (one connection).
pub struct Inflater {
    /// miniz_oxide streaming state: a 32 KiB wrapping window plus tables (~43 KiB), allocated
    /// on the first compressed message so that idle connections that negotiated the extension
    /// cost nothing.
    state: Option<Box<InflateState>>,
    /// RFC 7692 §7.1.1: the peer does not reuse its window, so we start each message fresh.
    no_context_takeover: bool,
    /// The peer ended the DEFLATE stream with a BFINAL block (§7.2.3.3) in this message;
    /// anything after it in the message is ignored.
    stream_ended: bool,
}

impl Inflater {
    /// A decompressor. `no_context_takeover` is the peer's promise (`client_no_context_takeover`
    /// when we are the server).
    pub fn new(no_context_takeover: bool) -> Inflater {
        Inflater {
            state: None,
            no_context_takeover,
            stream_ended: false,
        }
    }

    /// Decompresses the next piece of the current message, appending to `out`. Fails with
    /// [`Error::InflatedTooLarge`] as soon as `out.len()` would pass `max_len`, and with
    /// [`Error::Inflate`] on corrupt data.
    ///
    /// Only appends: `out` never ends up shorter than it came in (the codec relies on it to
    /// find the bytes this call added).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>, max_len: usize) -> Result<(), Error> {
        if self.stream_ended {
            return Ok(());
        }
        let mut input = input;
        loop {
            // Make room, never beyond max_len + 1 bytes in total: one byte past the cap is
            // enough to see that the message is too large.
            let limit = max_len.saturating_add(1);
            if out.len() >= limit {
                return Err(Error::InflatedTooLarge);
            }
            if out.len() == out.capacity() {
                let want = out
                    .capacity()
                    .saturating_mul(2)
                    .max(input.len().saturating_mul(4))
                    .max(1024);
                out.reserve_exact(want.min(limit) - out.len());
            }
            // Zero-fill only a window proportional to the input, not all spare capacity.
            let window = (out.capacity() - out.len())
                .min(limit - out.len())
                .min(input.len().saturating_mul(8).clamp(1024, 64 * 1024));
            let start = out.len();
            out.resize(start + window, 0);
            let state = self
                .state
                .get_or_insert_with(|| InflateState::new_boxed(DataFormat::Raw));
            let result = inflate(state, input, &mut out[start..], MZFlush::None);
            out.truncate(start + result.bytes_written);
            // bytes_consumed <= input.len(): miniz_oxide never reports more than it was given.
            input = &input[result.bytes_consumed.min(input.len())..];
            if out.len() > max_len {
                return Err(Error::InflatedTooLarge);
            }
            match result.status {
                Ok(MZStatus::StreamEnd) => {
                    // A block with BFINAL set ended the DEFLATE stream (§7.2.3.3).
                    self.stream_ended = true;
                    return Ok(());
                }
                Ok(_) | Err(MZError::Buf) => {}
                Err(_) => return Err(Error::Inflate),
            }
            // Stop only when a call makes no progress at all: miniz_oxide may have consumed
            // all input into its bit buffer while output (e.g. the rest of a long match) is
            // still pending, so "input empty" alone does not mean "all output written".
            if result.bytes_consumed == 0 && result.bytes_written == 0 {
                return Ok(());
            }
        }
    }

    /// Ends the current message: appends the `00 00 ff ff` the sender removed (RFC 7692
    /// §7.2.2), flushes the remaining output into `out` under the same cap, and resets the
    /// window when there is no context takeover. Like [`Inflater::push`], only appends.
    pub fn finish(&mut self, out: &mut Vec<u8>, max_len: usize) -> Result<(), Error> {
        let result = if self.stream_ended {
            Ok(())
        } else {
            self.push(&SYNC_TRAILER, out, max_len)
        };
        if let Some(state) = self.state.as_mut() {
            if self.no_context_takeover {
                // MinReset keeps the window's old bytes: a (non-conforming) back-reference past
                // the message start reads this same peer's earlier data, never anyone else's,
                // and the result is still UTF-8-checked and size-capped.
                state.reset_as(MinReset);
            } else if self.stream_ended {
                // The peer ended its DEFLATE stream; the next message starts a new one. Keep
                // the window (its bytes and position) so later back-references still resolve.
                state.decompressor().init();
            }
        }
        self.stream_ended = false;
        result
    }

    /// Drops any half-decompressed message (after an error): the next message starts clean.
    pub fn reset(&mut self) {
        if let Some(state) = self.state.as_mut() {
            state.reset_as(MinReset);
        }
        self.stream_ended = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HELLO_COMPRESSED: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    fn inflate_message(inf: &mut Inflater, pieces: &[&[u8]], cap: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        for piece in pieces {
            inf.push(piece, &mut out, cap)?;
        }
        inf.finish(&mut out, cap)?;
        Ok(out)
    }

    fn deflate(d: &mut Deflater, msg: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        d.compress(msg, &mut out);
        out.to_vec()
    }

    #[test]
    fn rfc7692_7_2_3_1_hello() {
        let mut inf = Inflater::new(false);
        assert_eq!(
            inflate_message(&mut inf, &[&HELLO_COMPRESSED], 100).unwrap(),
            b"Hello"
        );
        // miniz_oxide produces the RFC's bytes too.
        assert_eq!(
            deflate(&mut Deflater::new(true, 15), b"Hello"),
            HELLO_COMPRESSED
        );
    }

    #[test]
    fn rfc7692_7_2_3_1_two_fragments() {
        let mut inf = Inflater::new(false);
        let out = inflate_message(
            &mut inf,
            &[&[0xf2, 0x48, 0xcd], &[0xc9, 0xc9, 0x07, 0x00]],
            100,
        );
        assert_eq!(out.unwrap(), b"Hello");
    }

    #[test]
    fn rfc7692_7_2_3_2_context_takeover() {
        let mut inf = Inflater::new(false);
        assert_eq!(
            inflate_message(&mut inf, &[&HELLO_COMPRESSED], 100).unwrap(),
            b"Hello"
        );
        let second = [0xf2, 0x00, 0x11, 0x00, 0x00];
        assert_eq!(
            inflate_message(&mut inf, &[&second], 100).unwrap(),
            b"Hello"
        );

        let mut d = Deflater::new(false, 15);
        assert_eq!(deflate(&mut d, b"Hello"), HELLO_COMPRESSED);
        let again = deflate(&mut d, b"Hello");
        // The RFC shows f2 00 11 00 00; miniz_oxide finds the same back-reference and encodes
        // it one byte shorter (02 13 00 00). Either way it refers to the previous message.
        assert!(again.len() < HELLO_COMPRESSED.len(), "{again:02x?}");
        let mut inf = Inflater::new(false);
        assert_eq!(
            inflate_message(&mut inf, &[&HELLO_COMPRESSED], 100).unwrap(),
            b"Hello"
        );
        assert_eq!(inflate_message(&mut inf, &[&again], 100).unwrap(), b"Hello");
    }

    #[test]
    fn rfc7692_7_2_3_3_bfinal_block() {
        let mut inf = Inflater::new(false);
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(
            inflate_message(&mut inf, &[&bfinal], 100).unwrap(),
            b"Hello"
        );
        // The next message starts a new stream and still decodes.
        assert_eq!(
            inflate_message(&mut inf, &[&HELLO_COMPRESSED], 100).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn rfc7692_7_2_3_4_two_blocks_and_7_2_3_5_stored() {
        let mut inf = Inflater::new(true);
        let two = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(inflate_message(&mut inf, &[&two], 100).unwrap(), b"Hello");
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(
            inflate_message(&mut inf, &[&stored], 100).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn rfc7692_7_2_3_6_empty_message() {
        assert_eq!(deflate(&mut Deflater::new(false, 15), b""), [0x00]);
        assert_eq!(deflate(&mut Deflater::new(true, 10), b""), [0x00]);
        let mut inf = Inflater::new(false);
        assert_eq!(inflate_message(&mut inf, &[&[0x00]], 100).unwrap(), b"");
        // A final fragment with an empty payload adds nothing.
        assert_eq!(
            inflate_message(&mut inf, &[&HELLO_COMPRESSED, &[]], 100).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn stored_block_fallback_is_valid_deflate() {
        for len in [0usize, 1, 100, 65535, 65536, 200_000] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut out = BytesMut::new();
            write_stored_blocks(&msg, &mut out);
            let mut inf = Inflater::new(true);
            assert_eq!(inflate_message(&mut inf, &[&out], len).unwrap(), msg);
        }
    }

    #[test]
    fn larger_than_output_chunks_and_context_across_many_messages() {
        let json: Vec<u8> = (0..5000)
            .flat_map(|i| format!("{{\"event\":\"tick\",\"data\":{i}}}").into_bytes())
            .collect();
        for no_ctx in [false, true] {
            let mut d = Deflater::new(no_ctx, 15);
            let mut inf = Inflater::new(no_ctx);
            for round in 0..3 {
                let c = deflate(&mut d, &json);
                assert!(c.len() < json.len() / 4);
                let out = inflate_message(&mut inf, &[&c], json.len()).unwrap();
                assert!(out == json, "round {round} no_ctx {no_ctx}");
            }
        }
    }

    #[test]
    fn without_context_takeover_each_message_stands_alone() {
        let msg = br#"{"event":"chat","data":"the same text, the same text, again"}"#;
        for bits in [9u8, 15] {
            let mut d = Deflater::new(true, bits);
            for _ in 0..4 {
                let c = deflate(&mut d, msg);
                // A fresh inflater (no shared history at all) decodes every one of them.
                let mut inf = Inflater::new(true);
                assert_eq!(inflate_message(&mut inf, &[&c], 1000).unwrap(), msg);
            }
        }
        // With context takeover the repeat refers back and is much shorter.
        let mut d = Deflater::new(false, 15);
        let first = deflate(&mut d, msg);
        let second = deflate(&mut d, msg);
        assert!(
            second.len() * 3 < first.len(),
            "{} vs {}",
            second.len(),
            first.len()
        );
    }

    #[test]
    fn limited_window_never_uses_far_matches() {
        // A 1 KiB random block repeated: with any distance > 1 allowed, the repeat would cost a
        // few bytes. With RLE only, the output is at least as long as one random block.
        let mut x = 0x1234_5678u32;
        let block: Vec<u8> = (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let twice = [block.clone(), block.clone()].concat();
        for bits in 8..15 {
            let mut d = Deflater::new(false, bits);
            let first = deflate(&mut d, &twice);
            assert!(first.len() >= 2000, "bits {bits}: {}", first.len());
            // Across messages too (context takeover keeps a window).
            let second = deflate(&mut d, &block);
            assert!(second.len() >= 1000, "bits {bits}: {}", second.len());
            let mut inf = Inflater::new(false);
            assert_eq!(inflate_message(&mut inf, &[&first], 4096).unwrap(), twice);
            assert_eq!(inflate_message(&mut inf, &[&second], 4096).unwrap(), block);
        }
        // Runs still compress.
        let mut d = Deflater::new(true, 9);
        assert!(deflate(&mut d, &[b'a'; 10_000]).len() < 100);
        // The full window does find the repeat.
        let mut d = Deflater::new(true, 15);
        assert!(deflate(&mut d, &twice).len() < 1200);
    }

    #[test]
    fn bomb_is_capped_early() {
        let mut d = Deflater::new(true, 15);
        let zeros = vec![0u8; 10 << 20];
        let c = deflate(&mut d, &zeros);
        assert!(c.len() < 100_000, "{}", c.len());
        let mut inf = Inflater::new(true);
        let mut out = Vec::new();
        assert_eq!(
            inf.push(&c, &mut out, 64 * 1024),
            Err(Error::InflatedTooLarge)
        );
        assert!(out.len() <= 64 * 1024 + 1);
        assert!(out.capacity() <= 64 * 1024 + 1);
        // Exactly at the cap is fine.
        let mut inf = Inflater::new(true);
        assert_eq!(
            inflate_message(&mut inf, &[&c], zeros.len()).map(|v| v.len()),
            Ok(zeros.len())
        );
        let mut inf = Inflater::new(true);
        assert_eq!(
            inflate_message(&mut inf, &[&c], zeros.len() - 1),
            Err(Error::InflatedTooLarge)
        );
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let mut inf = Inflater::new(true);
        // BTYPE=11 is reserved.
        assert_eq!(
            inflate_message(&mut inf, &[&[0xff, 0xff, 0xff]], 100),
            Err(Error::Inflate)
        );
        let mut inf = Inflater::new(true);
        // A stored block whose NLEN is not the complement of LEN.
        assert_eq!(
            inflate_message(&mut inf, &[&[0x00, 0x05, 0x00, 0x00, 0x00]], 100),
            Err(Error::Inflate)
        );
    }

    proptest! {
        #[test]
        fn round_trip_any_split(
            msgs in proptest::collection::vec(proptest::collection::vec(0u8..8, 0..3000), 1..4),
            no_ctx in any::<bool>(),
            bits in 8u8..=15,
            split in any::<prop::sample::Index>(),
        ) {
            let mut d = Deflater::new(no_ctx, bits);
            let mut inf = Inflater::new(no_ctx);
            for msg in &msgs {
                let c = deflate(&mut d, msg);
                let at = split.index(c.len() + 1);
                let out = inflate_message(&mut inf, &[&c[..at], &c[at..]], msg.len()).unwrap();
                prop_assert_eq!(&out, msg);
            }
        }

        #[test]
        fn arbitrary_input_never_panics_or_passes_cap(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..4),
            cap in 0usize..5000,
        ) {
            let mut inf = Inflater::new(false);
            let mut out = Vec::new();
            let mut ok = true;
            for p in &pieces {
                if inf.push(p, &mut out, cap).is_err() { ok = false; break; }
            }
            if ok { let _ = inf.finish(&mut out, cap); }
            prop_assert!(out.len() <= cap + 1);
            prop_assert!(out.capacity() <= cap + 1);
        }
    }
}
