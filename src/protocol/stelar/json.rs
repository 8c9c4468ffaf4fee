//! A validating structural JSON scanner (RFC 8259) that keeps byte spans, and the JSON string
//! escaping the encoders use.
//!
//! The relay must forward `data` exactly as the client wrote it (DESIGN.md, "Fan-out does not
//! re-serialise data"), so the envelope parser needs the byte range of a value, which
//! simd-json does not expose. This scanner validates the whole text against RFC 8259's
//! grammar without building anything: it walks the members of a top-level object, hands each
//! key and the span of each value to the caller, and decodes a string only when asked
//! (`decode_str`). Nested values are checked iteratively with a 128-bit stack of
//! object/array flags, so hostile nesting can't touch the call stack; [`MAX_DEPTH`] bounds it.
//!
//! Accepted language, kept identical to `serde_json::from_str` (a differential proptest in
//! `envelope.rs` holds it to that): RFC 8259 exactly (no comments, trailing commas, leading
//! zeros, `NaN`, bare control characters), whitespace = space, tab, LF, CR; strings that
//! are only validated may carry any `\uXXXX` (even an unpaired surrogate, as serde_json's
//! `RawValue` does), strings that are decoded must pair their surrogates. Unlike serde_json's
//! `RawValue`, nesting is capped at [`MAX_DEPTH`].
//!
//! Why hand-written rather than serde_json's `RawValue` (which can also keep `data` verbatim)
//! or simd-json: this is the publish hot path, and measurement chose it
//! (`bench/benches/envelope.rs`; PERF.md, "Codecs": 122 ns against 189 ns and 451 ns for a
//! 100-byte envelope, 37% fewer instructions than serde_json). The differential proptest keeps
//! the cost of owning it low. Revisit with a new measurement, not by taste.
//!
//! Envelope semantics (which keys mean what) live in `envelope.rs`, `binary.rs` and
//! `names.rs`; this file knows only JSON.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use super::Error;

/// Deepest nesting of objects/arrays accepted, the outermost value counting as 1.
pub const MAX_DEPTH: usize = 128;
// The container stack is one bit per level in a u128.
const _: () = assert!(MAX_DEPTH <= 128);

/// What kind of JSON value a [`Value`] span holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Object,
    Array,
    String,
    Number,
    True,
    False,
    Null,
}

/// One validated JSON value: its kind and its byte span in the scanned input (strings
/// include their quotes).
///
/// Invariant: `start < end <= input.len()` for the input the scanner found it in (a string
/// spans at least its two quotes), and only that input is ever passed with it: [`Value::span`]
/// and [`decode_str`] index on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Value {
    pub(crate) kind: Kind,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// For strings: the body holds at least one backslash escape (decoding must copy).
    pub(crate) escaped: bool,
}

impl Value {
    /// The value's text. `input` is the one the value was scanned from (see the invariant).
    pub(crate) fn span<'a>(&self, input: &'a [u8]) -> &'a [u8] {
        &input[self.start..self.end]
    }
}

/// What the top level of a scanned document was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Document {
    /// An object; its members went to the callback.
    Object,
    /// Any other value.
    Other(Value),
}

/// Validates `input` as one JSON text. If its top level is an object, calls `on_member` with
/// each member's key (decoded bytes) and value span, in document order, duplicates included.
/// An error from `on_member` stops the scan and is returned.
#[inline]
pub(crate) fn walk<F>(input: &[u8], mut on_member: F) -> Result<Document, Error>
where
    F: FnMut(&[u8], Value) -> Result<(), Error>,
{
    walk_members(input, |key, pos| {
        let v = value(input, pos, 1)?;
        on_member(key, v)?;
        Ok(v.end)
    })
}

/// [`walk`], and in the same pass, when the top-level member named `descend` is an object,
/// its members too: `on_inner` sees them (key, value span in `input`) before `on_member` sees
/// the object itself. Used to find the fields of an envelope's `data` without scanning it
/// twice.
#[inline]
pub(crate) fn walk_nested<F, G>(
    input: &[u8],
    descend: &[u8],
    mut on_member: F,
    mut on_inner: G,
) -> Result<Document, Error>
where
    F: FnMut(&[u8], Value) -> Result<(), Error>,
    G: FnMut(&[u8], Value) -> Result<(), Error>,
{
    walk_members(input, |key, pos| {
        let v = if key == descend && input.get(pos) == Some(&b'{') {
            // Inside this object values sit two containers deep, as `value` would count.
            let end = object_members(input, pos, |k, p| {
                let v = value(input, p, 2)?;
                on_inner(k, v)?;
                Ok(v.end)
            })?;
            Value {
                kind: Kind::Object,
                start: pos,
                end,
                escaped: false,
            }
        } else {
            value(input, pos, 1)?
        };
        on_member(key, v)?;
        Ok(v.end)
    })
}

/// The document of `input`: an object whose members go to `member` (key, position of the
/// value; it scans the value and returns where it ends), or any other value.
#[inline(always)]
fn walk_members<F>(input: &[u8], member: F) -> Result<Document, Error>
where
    F: FnMut(&[u8], usize) -> Result<usize, Error>,
{
    let pos = skip_ws(input, 0);
    let (doc, end) = if input.get(pos) == Some(&b'{') {
        (Document::Object, object_members(input, pos, member)?)
    } else {
        let v = value(input, pos, 0)?;
        (Document::Other(v), v.end)
    };
    if skip_ws(input, end) != input.len() {
        return Err(Error::JsonSyntax);
    }
    Ok(doc)
}

/// The object whose `{` is at `pos`: each member's key (decoded) and the position of its value
/// go to `member`, which scans the value and returns where it ends. Returns the position after
/// the closing `}`.
#[inline(always)]
fn object_members<F>(input: &[u8], pos: usize, mut member: F) -> Result<usize, Error>
where
    F: FnMut(&[u8], usize) -> Result<usize, Error>,
{
    let mut pos = skip_ws(input, pos + 1);
    if input.get(pos) == Some(&b'}') {
        return Ok(pos + 1);
    }
    loop {
        if input.get(pos) != Some(&b'"') {
            return Err(unexpected(input, pos));
        }
        let key = string(input, pos)?;
        pos = expect(input, skip_ws(input, key.end), b':')?;
        pos = if key.escaped {
            // Keys are matched against names, so they are decoded (and a lone surrogate
            // refused) exactly as serde_json does for field names.
            let decoded = decode_str(input, key)?;
            member(decoded.as_bytes(), pos)?
        } else {
            // A string's span holds both quotes: key.start + 2 <= key.end.
            member(&input[key.start + 1..key.end - 1], pos)?
        };
        pos = skip_ws(input, pos);
        match input.get(pos) {
            Some(b',') => pos = skip_ws(input, pos + 1),
            Some(b'}') => return Ok(pos + 1),
            Some(_) => return Err(Error::JsonSyntax),
            None => return Err(Error::JsonEof),
        }
    }
}

/// Validates `input` as one JSON text (RFC 8259, depth <= [`MAX_DEPTH`]) and returns the
/// byte range of its value, surrounding whitespace excluded. For TCP JSON frames, whose
/// payload is the JSON text of `data` (§4.2): bad JSON is dropped, never forwarded.
pub fn validate(input: &[u8]) -> Result<std::ops::Range<usize>, Error> {
    validate_value(input).map(|v| v.start..v.end)
}

/// Validates `input` as one JSON text and returns its top-level value span.
pub(crate) fn validate_value(input: &[u8]) -> Result<Value, Error> {
    let v = value(input, skip_ws(input, 0), 0)?;
    if skip_ws(input, v.end) != input.len() {
        return Err(Error::JsonSyntax);
    }
    Ok(v)
}

// The scanner is written as functions from a position to a position, rather than methods
// on a `&mut` cursor: the position then stays in a register through the hot loops instead
// of going through memory on every byte (measured: ~1.6x on a 100-byte envelope).

/// JSON whitespace (RFC 8259 §2: space, tab, LF, CR).
const fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

#[inline(always)]
fn skip_ws(input: &[u8], mut pos: usize) -> usize {
    while let Some(&b) = input.get(pos) {
        if !is_ws(b) {
            break;
        }
        pos += 1;
    }
    pos
}

/// The error for the byte at `pos` not fitting: syntax, or EOF if there is none.
#[cold]
fn unexpected(input: &[u8], pos: usize) -> Error {
    if pos >= input.len() {
        Error::JsonEof
    } else {
        Error::JsonSyntax
    }
}

/// `pos` must hold `b`; returns the position after it, whitespace skipped.
#[inline(always)]
fn expect(input: &[u8], pos: usize, b: u8) -> Result<usize, Error> {
    if input.get(pos) == Some(&b) {
        Ok(skip_ws(input, pos + 1))
    } else {
        Err(unexpected(input, pos))
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Flags (high bit of each byte) the bytes of `w` that end a plain run in a string: `"`,
/// `\`, a control character (< 0x20) or non-ASCII (>= 0x80). Only the lowest flag is
/// guaranteed exact (a borrow can flag bytes above a true match), which is all the scanner
/// uses: zero means "no such byte", else `trailing_zeros / 8` is the first one.
#[inline(always)]
fn special_mask(w: u64) -> u64 {
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let zero_quote = quote.wrapping_sub(ONES) & !quote;
    let zero_backslash = backslash.wrapping_sub(ONES) & !backslash;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    (zero_quote | zero_backslash | below_space | w) & HIGHS
}

/// One value at `pos` (leading whitespace already skipped). `depth` = containers already
/// open around it. The returned span ends where the value does.
#[inline]
fn value(input: &[u8], pos: usize, depth: usize) -> Result<Value, Error> {
    match input.get(pos) {
        Some(b'"') => string(input, pos),
        Some(b'{') => Ok(Value {
            kind: Kind::Object,
            start: pos,
            end: container(input, pos, depth)?,
            escaped: false,
        }),
        Some(b'[') => Ok(Value {
            kind: Kind::Array,
            start: pos,
            end: container(input, pos, depth)?,
            escaped: false,
        }),
        Some(_) => {
            let (end, kind) = scalar(input, pos)?;
            Ok(Value {
                kind,
                start: pos,
                end,
                escaped: false,
            })
        }
        None => Err(Error::JsonEof),
    }
}

/// A number, literal or string at `pos`; returns where it ends and what it was.
#[inline(always)]
fn scalar(input: &[u8], pos: usize) -> Result<(usize, Kind), Error> {
    match input.get(pos) {
        Some(b'"') => string(input, pos).map(|v| (v.end, Kind::String)),
        Some(b'-' | b'0'..=b'9') => number(input, pos).map(|end| (end, Kind::Number)),
        Some(b't') => literal(input, pos, b"true").map(|end| (end, Kind::True)),
        Some(b'f') => literal(input, pos, b"false").map(|end| (end, Kind::False)),
        Some(b'n') => literal(input, pos, b"null").map(|end| (end, Kind::Null)),
        _ => Err(unexpected(input, pos)),
    }
}

fn literal(input: &[u8], pos: usize, lit: &[u8]) -> Result<usize, Error> {
    let end = pos + lit.len();
    match input.get(pos..end) {
        Some(got) if got == lit => Ok(end),
        _ => {
            // A truncated literal (`tru` at the end) is EOF, anything else is syntax. The
            // caller (`scalar`) saw a byte at `pos`, so pos < input.len().
            let rest = &input[pos..];
            if lit.starts_with(rest) {
                Err(Error::JsonEof)
            } else {
                Err(Error::JsonSyntax)
            }
        }
    }
}

/// RFC 8259 §6: `[ minus ] int [ frac ] [ exp ]`, `int = zero / ( digit1-9 *DIGIT )`.
#[inline]
fn number(input: &[u8], mut pos: usize) -> Result<usize, Error> {
    if input.get(pos) == Some(&b'-') {
        pos += 1;
    }
    match input.get(pos) {
        Some(b'0') => pos += 1,
        Some(b'1'..=b'9') => pos = digits(input, pos + 1),
        Some(_) => return Err(Error::JsonSyntax),
        None => return Err(Error::JsonEof),
    }
    if input.get(pos) == Some(&b'.') {
        pos = one_or_more_digits(input, pos + 1)?;
    }
    if let Some(b'e' | b'E') = input.get(pos) {
        pos += 1;
        if let Some(b'+' | b'-') = input.get(pos) {
            pos += 1;
        }
        pos = one_or_more_digits(input, pos)?;
    }
    Ok(pos)
}

#[inline(always)]
fn digits(input: &[u8], mut pos: usize) -> usize {
    while let Some(b'0'..=b'9') = input.get(pos) {
        pos += 1;
    }
    pos
}

fn one_or_more_digits(input: &[u8], pos: usize) -> Result<usize, Error> {
    match input.get(pos) {
        Some(b'0'..=b'9') => Ok(digits(input, pos + 1)),
        _ => Err(unexpected(input, pos)),
    }
}

/// A string at `pos` (which holds `"`). Validates escapes syntactically and the bytes as
/// UTF-8. The span includes both quotes.
#[inline(always)]
fn string(input: &[u8], start: usize) -> Result<Value, Error> {
    let mut pos = start + 1;
    let mut escaped = false;
    loop {
        // Fast path: 8 bytes at a time, straight to the first byte that is not plain ASCII.
        if let Some(chunk) = input.get(pos..pos + 8) {
            if let Ok(arr) = <[u8; 8]>::try_from(chunk) {
                let mask = special_mask(u64::from_le_bytes(arr));
                if mask == 0 {
                    pos += 8;
                    continue;
                }
                pos += (mask.trailing_zeros() / 8) as usize;
            }
        }
        match input.get(pos) {
            Some(b'"') => {
                return Ok(Value {
                    kind: Kind::String,
                    start,
                    end: pos + 1,
                    escaped,
                })
            }
            Some(b'\\') => {
                escaped = true;
                pos = escape(input, pos)?;
            }
            // RFC 8259 §7: "All Unicode characters may be placed within the quotation
            // marks, except for the characters that MUST be escaped: quotation mark,
            // reverse solidus, and the control characters (U+0000 through U+001F)."
            Some(0x00..=0x1f) => return Err(Error::JsonControlChar),
            Some(0x80..=0xff) => pos = utf8_char(input, pos)?,
            Some(_) => pos += 1,
            None => return Err(Error::JsonEof),
        }
    }
}

/// One escape at `pos` (which holds `\`): `\" \\ \/ \b \f \n \r \t \uXXXX`. Returns the
/// position after it.
#[inline(never)]
fn escape(input: &[u8], pos: usize) -> Result<usize, Error> {
    match input.get(pos + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(pos + 2),
        Some(b'u') => match input.get(pos + 2..pos + 6) {
            Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => Ok(pos + 6),
            Some(_) => Err(Error::JsonEscape),
            None => {
                // Truncated escape: EOF unless a non-hex byte already shows it is wrong. The
                // `u` was at pos + 1, so pos + 2 <= input.len().
                let rest = &input[pos + 2..];
                if rest.iter().all(u8::is_ascii_hexdigit) {
                    Err(Error::JsonEof)
                } else {
                    Err(Error::JsonEscape)
                }
            }
        },
        Some(_) => Err(Error::JsonEscape),
        None => Err(Error::JsonEof),
    }
}

/// One multi-byte UTF-8 character at `pos` (lead byte >= 0x80), per the Unicode
/// well-formed byte sequences table (no overlongs, no surrogates, <= U+10FFFF). Returns
/// the position after it.
#[inline(never)]
fn utf8_char(input: &[u8], pos: usize) -> Result<usize, Error> {
    // The caller (`string`) saw the lead byte at `pos`, so pos < input.len().
    let rest = &input[pos..];
    let (len, lo, hi) = match rest.first() {
        Some(0xc2..=0xdf) => (2, 0x80, 0xbf),
        Some(0xe0) => (3, 0xa0, 0xbf),
        Some(0xe1..=0xec | 0xee..=0xef) => (3, 0x80, 0xbf),
        Some(0xed) => (3, 0x80, 0x9f),
        Some(0xf0) => (4, 0x90, 0xbf),
        Some(0xf1..=0xf3) => (4, 0x80, 0xbf),
        Some(0xf4) => (4, 0x80, 0x8f),
        _ => return Err(Error::JsonUtf8),
    };
    let Some(seq) = rest.get(..len) else {
        // Every byte present must still fit, else it is bad UTF-8 rather than EOF.
        return Err(
            if std::str::from_utf8(rest).map_err(|e| e.error_len()) == Err(None) {
                Error::JsonEof
            } else {
                Error::JsonUtf8
            },
        );
    };
    // seq.len() == len >= 2.
    let second_ok = (lo..=hi).contains(&seq[1]);
    let rest_ok = seq[2..].iter().all(|b| (0x80..=0xbf).contains(b));
    if second_ok && rest_ok {
        Ok(pos + len)
    } else {
        Err(Error::JsonUtf8)
    }
}

/// An object or array at `pos`, validated iteratively. `depth` = containers already open
/// around it. Returns the position after its closing bracket.
fn container(input: &[u8], mut pos: usize, depth: usize) -> Result<usize, Error> {
    // Bit 0 describes the innermost open container: 1 = object, 0 = array.
    let mut kinds: u128 = 0;
    let mut level = 0usize;
    'open: loop {
        // Here the byte at `pos` is `{` or `[`.
        let is_object = input.get(pos) == Some(&b'{');
        level += 1;
        if depth + level > MAX_DEPTH {
            return Err(Error::JsonDepth);
        }
        kinds = (kinds << 1) | u128::from(is_object);
        pos = skip_ws(input, pos + 1);
        let mut closed = input.get(pos) == Some(if is_object { &b'}' } else { &b']' });
        if closed {
            pos += 1;
        }
        loop {
            if closed {
                level -= 1;
                kinds >>= 1;
                if level == 0 {
                    return Ok(pos);
                }
            } else {
                if kinds & 1 == 1 {
                    if input.get(pos) != Some(&b'"') {
                        return Err(unexpected(input, pos));
                    }
                    pos = string(input, pos)?.end;
                    pos = expect(input, skip_ws(input, pos), b':')?;
                }
                match input.get(pos) {
                    Some(b'{' | b'[') => continue 'open,
                    Some(_) => pos = scalar(input, pos)?.0,
                    None => return Err(Error::JsonEof),
                }
            }
            // After a value inside the container at `level`.
            pos = skip_ws(input, pos);
            match input.get(pos) {
                Some(b',') => {
                    pos = skip_ws(input, pos + 1);
                    closed = false;
                }
                Some(b'}') if kinds & 1 == 1 => {
                    pos += 1;
                    closed = true;
                }
                Some(b']') if kinds & 1 == 0 => {
                    pos += 1;
                    closed = true;
                }
                Some(_) => return Err(Error::JsonSyntax),
                None => return Err(Error::JsonEof),
            }
        }
    }
}

/// Decodes a string value found by the scanner into text: borrowed when it holds no escape,
/// else unescaped into a new `String`. Unpaired surrogates are refused (a Rust `str` cannot
/// hold them).
pub(crate) fn decode_str(input: &[u8], v: Value) -> Result<Cow<'_, str>, Error> {
    debug_assert_eq!(v.kind, Kind::String);
    // A string's span holds both quotes (the invariant on `Value`).
    let body = &input[v.start + 1..v.end - 1];
    if !v.escaped {
        // The scanner validated these bytes as UTF-8 already; this re-check is cheap for the
        // short names it is used on and keeps the crate free of `unsafe`.
        return std::str::from_utf8(body)
            .map(Cow::Borrowed)
            .map_err(|_| Error::JsonUtf8);
    }
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(i) = rest.iter().position(|&b| b == b'\\') {
        let (plain, esc) = rest.split_at(i);
        out.push_str(std::str::from_utf8(plain).map_err(|_| Error::JsonUtf8)?);
        let (ch, used) = unescape_one(esc)?;
        out.push(ch);
        // unescape_one read `used` bytes of `esc`, so used <= esc.len().
        rest = &esc[used..];
    }
    out.push_str(std::str::from_utf8(rest).map_err(|_| Error::JsonUtf8)?);
    Ok(Cow::Owned(out))
}

/// Decodes the escape at the start of `esc` (which begins with `\`); returns the character
/// and the bytes consumed.
fn unescape_one(esc: &[u8]) -> Result<(char, usize), Error> {
    let c = match esc.get(1) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => {
            let hi = hex4(esc.get(2..6))?;
            return match hi {
                0xd800..=0xdbff => {
                    // A high surrogate must be followed by `\u` + a low surrogate.
                    if esc.get(6..8) != Some(b"\\u") {
                        return Err(Error::JsonLoneSurrogate);
                    }
                    let lo = hex4(esc.get(8..12))?;
                    if !(0xdc00..=0xdfff).contains(&lo) {
                        return Err(Error::JsonLoneSurrogate);
                    }
                    let cp = 0x1_0000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                    char::from_u32(cp)
                        .map(|c| (c, 12))
                        .ok_or(Error::JsonLoneSurrogate)
                }
                0xdc00..=0xdfff => Err(Error::JsonLoneSurrogate),
                _ => char::from_u32(hi)
                    .map(|c| (c, 6))
                    .ok_or(Error::JsonLoneSurrogate),
            };
        }
        _ => return Err(Error::JsonEscape),
    };
    Ok((c, 2))
}

fn hex4(h: Option<&[u8]>) -> Result<u32, Error> {
    let h = h.ok_or(Error::JsonEscape)?;
    let mut n = 0u32;
    for &b in h {
        let d = (b as char).to_digit(16).ok_or(Error::JsonEscape)?;
        n = (n << 4) | d;
    }
    Ok(n)
}

// --- Encoding -------------------------------------------------------------------------

/// For each byte: 0 = copy as is; otherwise the letter of its short escape, or `u` for
/// `\u00XX`. Matches `JSON.stringify`: `"` `\` and U+0000..U+001F are escaped, `/`, DEL and
/// non-ASCII pass through.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Length of `s` written as a JSON string, quotes included.
#[inline]
pub fn quoted_len(s: &str) -> usize {
    let mut len = s.len() + 2;
    for &b in s.as_bytes() {
        match ESCAPE[b as usize] {
            0 => {}
            b'u' => len += 5,
            _ => len += 1,
        }
    }
    len
}

/// Appends `s` to `dst` as a JSON string (quotes included), escaped as `JSON.stringify` does.
#[inline]
pub fn write_quoted(dst: &mut BytesMut, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    dst.put_u8(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        // run <= i < bytes.len(): `run` is 0 or one past an earlier `i`.
        dst.extend_from_slice(&bytes[run..i]);
        if esc == b'u' {
            dst.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            dst.extend_from_slice(&[b'\\', esc]);
        }
        run = i + 1;
    }
    dst.extend_from_slice(&bytes[run..]);
    dst.put_u8(b'"');
}

/// JavaScript truthiness of a JSON value (`if (x)`): `false`, `null`, `0`/`-0`/any number
/// that is 0 as a double, and `""` are falsy; everything else, `[]` and `{}` included, is
/// truthy.
pub(crate) fn is_truthy(input: &[u8], v: Value) -> bool {
    match v.kind {
        Kind::False | Kind::Null => false,
        Kind::True | Kind::Object | Kind::Array => true,
        Kind::String => v.end - v.start > 2,
        Kind::Number => {
            // Cold path: only `_isAck` asks. Parsing as f64 gets JS's answer for `1e-400`.
            // The scanner accepted the span as an RFC 8259 number: ASCII digits, sign, `.`
            // and exponent, which is also Rust's f64 syntax (an overflow parses as inf).
            let text = std::str::from_utf8(v.span(input)).expect("a JSON number is ASCII");
            let n: f64 = text.parse().expect("a JSON number parses as f64");
            n != 0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> bool {
        validate(s.as_bytes()).is_ok()
    }

    #[test]
    fn accepts_rfc8259_values() {
        for s in [
            "0",
            "-0",
            "-0.5e+10",
            "1E5",
            "123.456",
            "true",
            "false",
            "null",
            "\"\"",
            "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"",
            "\"\\ud800\"", // validated only: serde_json's RawValue accepts it too
            "[]",
            "{}",
            " [ 1 , { \"a\" : [ ] } , \"x\" ] ",
            "\"h\u{e9}llo \u{1F600} \u{10FFFF}\"",
            "{\"a\":{\"b\":{\"c\":[[[null]]]}}}",
        ] {
            assert!(ok(s), "{s}");
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok(),
                "{s}"
            );
        }
    }

    #[test]
    fn rejects_non_json() {
        for s in [
            "",
            " ",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "+1",
            "NaN",
            "tru",
            "nul",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "{\"a\" 1}",
            "[1 2]",
            "\"abc",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "\"\u{1}\"",
            "'a'",
            "[",
            "]",
            "{\"a\":}",
            "1 2",
            "[1]]",
            "{\"a\":1}}",
            "//",
            "[1,/*c*/2]",
            "\"\t\"",
        ] {
            assert!(!ok(s), "{s:?}");
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(s).is_err(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_utf8() {
        for bad in [
            &b"\"\xff\""[..],
            b"\"\xc0\x80\"",         // overlong
            b"\"\xed\xa0\x80\"",     // encoded surrogate
            b"\"\xf4\x90\x80\x80\"", // > U+10FFFF
            b"\"\xe2\x82\"",         // truncated, then quote
            b"\"\x80\"",
        ] {
            assert_eq!(validate(bad), Err(Error::JsonUtf8), "{bad:?}");
        }
        assert_eq!(validate(b"\"\xe2\x82"), Err(Error::JsonEof));
    }

    #[test]
    fn depth_limit() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(ok(&deep(MAX_DEPTH)));
        assert_eq!(
            validate(deep(MAX_DEPTH + 1).as_bytes()),
            Err(Error::JsonDepth)
        );
        // Far past the limit: no stack involved, just an error.
        assert_eq!(validate(deep(100_000).as_bytes()), Err(Error::JsonDepth));
        let objs = format!("{}1{}", "{\"a\":".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert!(ok(&objs));
    }

    #[test]
    fn walk_reports_members_and_spans() {
        let input = br#" { "a" : [1, {"x":2}] , "b\u0063":"s\n" , "a":null } "#;
        let mut seen = Vec::new();
        let doc = walk(input, |k, v| {
            seen.push((k.to_vec(), v.span(input).to_vec(), v.kind));
            Ok(())
        })
        .unwrap();
        assert_eq!(doc, Document::Object);
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), br#"[1, {"x":2}]"#.to_vec(), Kind::Array),
                (b"bc".to_vec(), br#""s\n""#.to_vec(), Kind::String),
                (b"a".to_vec(), b"null".to_vec(), Kind::Null),
            ]
        );
        assert!(
            matches!(walk(b" 5 ", |_, _| Ok(())), Ok(Document::Other(v)) if v.kind == Kind::Number && v.start == 1 && v.end == 2)
        );
        assert_eq!(walk(br#"{"a":1} x"#, |_, _| Ok(())), Err(Error::JsonSyntax));
    }

    #[test]
    fn decode_strings() {
        let d = |s: &str| {
            let v = validate_value(s.as_bytes()).unwrap();
            decode_str(s.as_bytes(), v).map(|c| (c.to_string(), matches!(c, Cow::Borrowed(_))))
        };
        assert_eq!(d("\"plain\""), Ok(("plain".into(), true)));
        assert_eq!(
            d(r#""a\"\\\/\b\f\n\r\tz""#),
            Ok(("a\"\\/\u{8}\u{c}\n\r\tz".into(), false))
        );
        assert_eq!(
            d(r#""\u00e9\uD83D\uDE00""#),
            Ok(("\u{e9}\u{1F600}".into(), false))
        );
        assert_eq!(d(r#""\ud800""#), Err(Error::JsonLoneSurrogate));
        assert_eq!(d(r#""\udc00""#), Err(Error::JsonLoneSurrogate));
        assert_eq!(d(r#""\ud800\u0041""#), Err(Error::JsonLoneSurrogate));
        assert_eq!(d(r#""\ud800x""#), Err(Error::JsonLoneSurrogate));
    }

    #[test]
    fn escaping_matches_json_stringify() {
        let q = |s: &str| {
            let mut b = BytesMut::new();
            write_quoted(&mut b, s);
            assert_eq!(b.len(), quoted_len(s));
            String::from_utf8(b.to_vec()).unwrap()
        };
        assert_eq!(q("chat"), "\"chat\"");
        assert_eq!(q("a\"b\\c/d"), r#""a\"b\\c/d""#);
        assert_eq!(
            q("\u{0}\u{1f}\u{8}\t\n\u{c}\r\u{7f}"),
            "\"\\u0000\\u001f\\b\\t\\n\\f\\r\u{7f}\""
        );
        assert_eq!(q("h\u{e9}\u{1F600}"), "\"h\u{e9}\u{1F600}\"");
    }

    #[test]
    fn truthiness() {
        let t = |s: &str| is_truthy(s.as_bytes(), validate_value(s.as_bytes()).unwrap());
        let huge = format!("1{}", "0".repeat(400));
        for s in [
            "true", "1", "-0.1", "\"x\"", "\"0\"", "[]", "{}", "1e-300", "1E+400", &huge,
        ] {
            assert!(t(s), "{s}");
        }
        for s in ["false", "null", "0", "-0", "0.0e5", "\"\"", "1e-400"] {
            assert!(!t(s), "{s}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = validate(&bytes);
            let _ = walk(&bytes, |_, _| Ok(()));
        }

        #[test]
        fn quoted_round_trips(s in any::<String>()) {
            let mut b = BytesMut::new();
            write_quoted(&mut b, &s);
            prop_assert_eq!(b.len(), quoted_len(&s));
            let back: String = serde_json::from_slice(&b).unwrap();
            prop_assert_eq!(&back, &s);
            // Our own decoder agrees.
            let v = validate_value(&b).unwrap();
            prop_assert_eq!(decode_str(&b, v).unwrap(), s);
        }

        #[test]
        fn special_mask_finds_the_first_special_byte(w in any::<u64>(), plant in any::<(usize, u8)>()) {
            // Plant a likely-special byte sometimes, so matches are common.
            let mut bytes = w.to_le_bytes();
            let specials = [b'"', b'\\', 0x00, 0x1f, 0x80, 0xff, b' ', b'!', b'#', b'[', b']'];
            bytes[plant.0 % 8] = specials[usize::from(plant.1) % specials.len()];
            let first = bytes.iter().position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b));
            let mask = special_mask(u64::from_le_bytes(bytes));
            let got = (mask != 0).then(|| (mask.trailing_zeros() / 8) as usize);
            prop_assert_eq!(got, first);
        }
    }
}
