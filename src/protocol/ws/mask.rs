//! RFC 6455 §5.3 client-to-server masking, applied in place.
//!
//! "Octet i of the transformed data is the XOR of octet i of the original data with octet at
//! index i modulo 4 of the masking key." Masking and unmasking are the same operation. The
//! codec unmasks payloads in the read buffer ([`super::codec`]); the client-role encoder masks
//! what it has just copied into the caller's write buffer. Choosing keys (the RFC wants them
//! unpredictable) is the caller's job: this module is sans-IO and holds no RNG.
//!
//! Speed: the bulk runs over 32-byte chunks XORed with a 32-byte repetition of the key, a
//! fixed-size loop the compiler turns into SIMD XORs (SSE2 on baseline x86-64) without any
//! `unsafe`. The key is rotated once up front so every chunk starts at phase 0.

/// Bytes per bulk step; a multiple of 4 so the key phase is the same at every chunk start.
const CHUNK: usize = 32;

/// XORs `buf` with `key`, starting at key phase 0 (the first payload byte).
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    apply_mask_offset(buf, key, 0);
}

/// XORs `buf` with `key` as if `buf` started `offset` bytes into the payload, so a payload can
/// be (un)masked piecewise: `apply_mask_offset(&mut p[n..], key, n)` continues where
/// `apply_mask(&mut p[..n], key)` stopped.
#[inline]
pub fn apply_mask_offset(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = u32::from_be_bytes(key)
        .rotate_left(8 * (offset % 4) as u32)
        .to_be_bytes();
    let mut wide = [0u8; CHUNK];
    for (i, b) in wide.iter_mut().enumerate() {
        *b = key[i % 4];
    }
    let mut chunks = buf.chunks_exact_mut(CHUNK);
    for chunk in &mut chunks {
        for (b, k) in chunk.iter_mut().zip(wide.iter()) {
            *b ^= *k;
        }
    }
    // The remainder starts at a multiple of CHUNK (so of 4): phase 0 of the rotated key.
    for (b, k) in chunks.into_remainder().iter_mut().zip(wide.iter()) {
        *b ^= *k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obvious version, straight from the RFC's formula.
    fn reference(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(i + offset) % 4];
        }
    }

    #[test]
    fn rfc6455_5_7_masked_hello() {
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn matches_reference_at_every_length_alignment_and_offset() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let source: Vec<u8> = (0..400u32).map(|i| (i * 7 + 3) as u8).collect();
        for align in 0..16 {
            for len in 0..=300 {
                for offset in 0..4 {
                    let mut fast = source.clone();
                    let mut slow = source.clone();
                    apply_mask_offset(&mut fast[align..align + len], key, offset);
                    reference(&mut slow[align..align + len], key, offset);
                    assert_eq!(fast, slow, "align {align} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn masking_twice_is_identity() {
        let original: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut buf = original.clone();
        apply_mask(&mut buf, [9, 8, 7, 6]);
        assert_ne!(buf, original);
        apply_mask(&mut buf, [9, 8, 7, 6]);
        assert_eq!(buf, original);
    }

    proptest! {
        #[test]
        fn piecewise_equals_whole(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            key in any::<[u8; 4]>(),
            split in any::<prop::sample::Index>(),
            align in 0usize..32,
        ) {
            let mut padded = vec![0u8; align];
            padded.extend_from_slice(&data);
            let mut whole = data.clone();
            reference(&mut whole, key, 0);
            let at = split.index(data.len() + 1);
            let (a, b) = padded[align..].split_at_mut(at);
            apply_mask(a, key);
            apply_mask_offset(b, key, at);
            prop_assert_eq!(&padded[align..], &whole[..]);
        }
    }
}
