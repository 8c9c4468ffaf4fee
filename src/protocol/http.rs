//! The little HTTP/1.1 the WebSocket port speaks: request heads, bodies, query strings and
//! responses (RFC 9110 semantics, RFC 9112 message syntax), without I/O.
//!
//! What it owns:
//! - [`parse_request`]: a request head from the caller's read buffer (via `httparse`), with
//!   its size limit enforced *before* the caller must buffer past it. The limit is in bytes
//!   only: any number of header fields is fine while the head fits [`Limits::max_head_size`]
//!   (proxies add fields; a count limit would refuse requests a size limit lets through).
//!   `Ok(None)` means "need more bytes". The parsed [`Request`] holds offsets into the head, so
//!   it borrows the read buffer (`Request<&[u8]>`) or owns a copy ([`Request::into_owned`]).
//!   [`Request::head_len`] says how many bytes the head took: what follows is the body or,
//!   after an upgrade, the WebSocket frame codec's.
//! - Message framing facts decided at parse time: `Content-Length` (validated; repeated equal
//!   values are folded, conflicting ones are a 400), `Transfer-Encoding: chunked` (decoded
//!   by [`BodyDecoder`] with a size cap; any other transfer coding is a 501), keep-alive
//!   (HTTP/1.1 default on, `Connection: close`, HTTP/1.0 default off), `Host` (exactly one
//!   on HTTP/1.1), `Expect: 100-continue`.
//! - Query strings ([`QueryPairs`]) decoded the way browsers' `URLSearchParams` does
//!   (`+` is a space, invalid escapes stay literal, bad UTF-8 becomes U+FFFD), and strict
//!   percent-decoding for paths ([`Request::path_decoded`]); the decoding itself is the
//!   `percent-encoding` crate's.
//! - Responses written into a caller `BytesMut` ([`ResponseWriter`], [`write_json`],
//!   [`write_text`], [`write_error`]) or built as `Bytes`; and response heads parsed for the
//!   client role ([`parse_response`]) used by the load generator and the WebSocket client.
//!   The answer to a request starts with [`ResponseWriter::for_request`], which takes the
//!   method from the request, so a `HEAD` gets the `GET` head without body bytes (RFC 9110
//!   §9.3.2) whatever the caller writes; the other helpers answer as for `GET`.
//! - [`HttpError`]: one variant per fault, [`HttpError::status`] (the status to answer) and
//!   [`HttpError::label`] (the counter label).
//!
//! What it leaves: routing, `/health`, `/metrics` and the API's JSON live in the app and
//! connection layers; the WebSocket upgrade rules live in `ws/handshake.rs`; sockets, read
//! sizes and timeouts belong to `conn/`. No clock is read here, so no `Date` header is
//! written unless the caller adds one.
//!
//! Decision on chunked request bodies: decoded (curl and many HTTP libraries send them for
//! streamed uploads), with the body capped at [`Limits::max_body_size`], the chunk-size line at
//! 1 KiB and the trailer section at [`Limits::max_head_size`]; trailers are discarded. The
//! chunk-size line is parsed by `httparse::parse_chunk_size`, with a bare LF or NUL in it
//! refused, which httparse alone would let through in an extension.
//!
//! Cost: a head is re-parsed from the start on every call until it is complete; the head is
//! capped at 8 KiB by default, so a peer trickling bytes costs at most that much re-scanning per
//! read. httparse writes header fields into slots the caller provides: `STACK_HEADER_SLOTS`
//! on the stack cover nearly every request; only a head with more fields is parsed again with
//! heap slots, one per line of the head. Headers are kept as offsets in one `Vec`; nothing
//! else is allocated per request.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Default cap on a request head (request line + headers + blank line).
pub const DEFAULT_MAX_HEAD_SIZE: usize = 8 * 1024;
/// Header slots httparse gets on the stack for the first parse of a head (2 KiB, left
/// uninitialised). Browsers send 10 to 20 fields, so a second parse with heap slots is rare.
const STACK_HEADER_SLOTS: usize = 64;
/// Default cap on a request body (the publish API's JSON).
pub const DEFAULT_MAX_BODY_SIZE: usize = 1024 * 1024;
/// Longest chunk-size line (size, whitespace and ignored extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;

/// `HTTP/1.1 100 Continue` interim response, for a request whose [`Request::expects_continue`]
/// is true (curl sends `Expect: 100-continue` before POST bodies larger than 1 KiB).
pub const CONTINUE_RESPONSE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Size limits applied while parsing. Memory for a request never exceeds these.
///
/// Non-exhaustive, so that a limit can come or go without breaking callers: start from
/// `Limits::default()` (`Limits { max_head_size: n, ..Limits::default() }` inside this
/// crate, field assignment outside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Bytes a head may take, blank line included. Past it: 414 (request line unfinished) or
    /// 431 (headers unfinished). The number of header fields is not limited otherwise.
    pub max_head_size: usize,
    /// Bytes a body may take after transfer decoding. Past it: 413.
    pub max_body_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_size: DEFAULT_MAX_HEAD_SIZE,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
        }
    }
}

/// Everything that can be wrong with an HTTP message this module reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The head did not end within [`Limits::max_head_size`] bytes.
    #[error("request head exceeds the size limit")]
    HeadTooLarge,
    /// The request line alone did not end within [`Limits::max_head_size`] bytes.
    #[error("request line exceeds the size limit")]
    UriTooLong,
    /// The request line is not `method SP request-target SP HTTP-version`.
    #[error("malformed request line")]
    InvalidRequestLine,
    /// A well-formed `HTTP/x.y` other than 1.0 and 1.1.
    #[error("HTTP version not supported")]
    UnsupportedVersion,
    /// The version field is not `HTTP/DIGIT.DIGIT`.
    #[error("malformed HTTP version")]
    InvalidVersion,
    /// A header name with a byte outside `tchar`.
    #[error("invalid header name")]
    InvalidHeaderName,
    /// A header value with a control byte.
    #[error("invalid header value")]
    InvalidHeaderValue,
    /// A line ending that is neither CRLF nor LF.
    #[error("invalid line ending")]
    InvalidNewLine,
    /// A response status line that does not parse (client role).
    #[error("malformed response status line")]
    InvalidStatusLine,
    /// An HTTP/1.1 request without `Host`.
    #[error("missing Host header")]
    MissingHost,
    /// More than one `Host` field.
    #[error("more than one Host header")]
    DuplicateHost,
    /// `Content-Length` is not a decimal number that fits in 64 bits.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Several `Content-Length` values that differ.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`: a request-smuggling vector.
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    /// `Transfer-Encoding` on an HTTP/1.0 request, whose framing is then unreliable.
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingInHttp10,
    /// `chunked` present but not the final coding, or applied twice.
    #[error("chunked is not the final transfer coding")]
    ChunkedNotFinal,
    /// An empty `Transfer-Encoding` list.
    #[error("empty Transfer-Encoding")]
    InvalidTransferEncoding,
    /// A transfer coding other than `chunked` (gzip, compress, deflate, ...).
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// The body is larger than [`Limits::max_body_size`].
    #[error("request body exceeds the size limit")]
    BodyTooLarge,
    /// A chunk-size line that is not `1*HEXDIG [ext] CRLF` or overflows.
    #[error("invalid chunk size line")]
    InvalidChunkSize,
    /// A chunk-size line longer than 1 KiB (extensions are skipped, not stored).
    #[error("chunk size line too long")]
    ChunkLineTooLong,
    /// Chunk data not followed by CRLF.
    #[error("chunk data not terminated by CRLF")]
    InvalidChunkTerminator,
    /// The trailer section is longer than [`Limits::max_head_size`].
    #[error("chunked trailer section too large")]
    TrailersTooLarge,
    /// A `%` not followed by two hex digits, where strict decoding was asked for.
    #[error("invalid percent-encoding")]
    InvalidPercentEncoding,
    /// A percent-decoded path that is not UTF-8.
    #[error("decoded path is not UTF-8")]
    PathNotUtf8,
    /// The application tried to write a header name or value that would break the response
    /// (CR, LF, NUL, or a name that is not a token). Nothing was written.
    #[error("invalid header in response")]
    InvalidResponseHeader,
}

impl HttpError {
    /// The status to answer this fault with. Faults found while parsing a *response*
    /// (client role) are never answered; they map to 502 as a gateway would.
    pub fn status(self) -> StatusCode {
        use HttpError::*;
        match self {
            HeadTooLarge | TrailersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            UriTooLong => StatusCode::URI_TOO_LONG,
            UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            InvalidStatusLine => StatusCode::BAD_GATEWAY,
            InvalidResponseHeader => StatusCode::INTERNAL_SERVER_ERROR,
            InvalidRequestLine
            | InvalidVersion
            | InvalidHeaderName
            | InvalidHeaderValue
            | InvalidNewLine
            | MissingHost
            | DuplicateHost
            | InvalidContentLength
            | ConflictingContentLength
            | ContentLengthWithTransferEncoding
            | TransferEncodingInHttp10
            | ChunkedNotFinal
            | InvalidTransferEncoding
            | InvalidChunkSize
            | ChunkLineTooLong
            | InvalidChunkTerminator
            | InvalidPercentEncoding
            | PathNotUtf8 => StatusCode::BAD_REQUEST,
        }
    }

    /// Short static label for the `http_errors_total{reason=...}` counter.
    pub fn label(self) -> &'static str {
        use HttpError::*;
        match self {
            HeadTooLarge => "head_too_large",
            UriTooLong => "uri_too_long",
            InvalidRequestLine => "invalid_request_line",
            UnsupportedVersion => "unsupported_version",
            InvalidVersion => "invalid_version",
            InvalidHeaderName => "invalid_header_name",
            InvalidHeaderValue => "invalid_header_value",
            InvalidNewLine => "invalid_newline",
            InvalidStatusLine => "invalid_status_line",
            MissingHost => "missing_host",
            DuplicateHost => "duplicate_host",
            InvalidContentLength => "invalid_content_length",
            ConflictingContentLength => "conflicting_content_length",
            ContentLengthWithTransferEncoding => "content_length_with_transfer_encoding",
            TransferEncodingInHttp10 => "transfer_encoding_http10",
            ChunkedNotFinal => "chunked_not_final",
            InvalidTransferEncoding => "invalid_transfer_encoding",
            UnsupportedTransferCoding => "unsupported_transfer_coding",
            BodyTooLarge => "body_too_large",
            InvalidChunkSize => "invalid_chunk_size",
            ChunkLineTooLong => "chunk_line_too_long",
            InvalidChunkTerminator => "invalid_chunk_terminator",
            TrailersTooLarge => "trailers_too_large",
            InvalidPercentEncoding => "invalid_percent_encoding",
            PathNotUtf8 => "path_not_utf8",
            InvalidResponseHeader => "invalid_response_header",
        }
    }

    /// Writes the error response for this fault, with `Connection: close`: after a framing
    /// error the rest of the byte stream cannot be trusted, so the caller closes afterwards.
    pub fn write_response(self, out: &mut BytesMut) {
        write_error(out, self.status(), false);
    }
}

/// An HTTP status code (100..=999) with its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(u16);

impl StatusCode {
    pub const CONTINUE: Self = Self(100);
    pub const SWITCHING_PROTOCOLS: Self = Self(101);
    pub const OK: Self = Self(200);
    pub const CREATED: Self = Self(201);
    pub const ACCEPTED: Self = Self(202);
    pub const NO_CONTENT: Self = Self(204);
    pub const NOT_MODIFIED: Self = Self(304);
    pub const BAD_REQUEST: Self = Self(400);
    pub const UNAUTHORIZED: Self = Self(401);
    pub const FORBIDDEN: Self = Self(403);
    pub const NOT_FOUND: Self = Self(404);
    pub const METHOD_NOT_ALLOWED: Self = Self(405);
    pub const REQUEST_TIMEOUT: Self = Self(408);
    pub const CONFLICT: Self = Self(409);
    pub const LENGTH_REQUIRED: Self = Self(411);
    pub const PAYLOAD_TOO_LARGE: Self = Self(413);
    pub const URI_TOO_LONG: Self = Self(414);
    pub const UNSUPPORTED_MEDIA_TYPE: Self = Self(415);
    pub const EXPECTATION_FAILED: Self = Self(417);
    pub const UNPROCESSABLE_CONTENT: Self = Self(422);
    pub const UPGRADE_REQUIRED: Self = Self(426);
    pub const TOO_MANY_REQUESTS: Self = Self(429);
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: Self = Self(431);
    pub const INTERNAL_SERVER_ERROR: Self = Self(500);
    pub const NOT_IMPLEMENTED: Self = Self(501);
    pub const BAD_GATEWAY: Self = Self(502);
    pub const SERVICE_UNAVAILABLE: Self = Self(503);
    pub const HTTP_VERSION_NOT_SUPPORTED: Self = Self(505);

    /// A status code from its number; `None` outside 100..=999.
    pub const fn from_u16(code: u16) -> Option<Self> {
        if code >= 100 && code <= 999 {
            Some(Self(code))
        } else {
            None
        }
    }

    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// The RFC 9110 reason phrase, or `""` for codes without one (an empty reason is valid).
    pub fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            101 => "Switching Protocols",
            200 => "OK",
            201 => "Created",
            202 => "Accepted",
            204 => "No Content",
            301 => "Moved Permanently",
            302 => "Found",
            304 => "Not Modified",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            411 => "Length Required",
            413 => "Content Too Large",
            414 => "URI Too Long",
            415 => "Unsupported Media Type",
            417 => "Expectation Failed",
            422 => "Unprocessable Content",
            426 => "Upgrade Required",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "",
        }
    }

    /// RFC 9110 §6.4.1: 1xx, 204 and 304 responses carry no content.
    pub fn allows_body(self) -> bool {
        !(self.0 < 200 || self.0 == 204 || self.0 == 304)
    }
}

/// Request methods the server routes on; anything else is [`Method::Other`] (the raw token is
/// in [`Request::method_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Connect,
    Trace,
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is not `GET`.
    fn from_token(token: &str) -> Self {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            "CONNECT" => Method::Connect,
            "TRACE" => Method::Trace,
            _ => Method::Other,
        }
    }
}

/// The HTTP versions `httparse` accepts. Anything else is refused at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request body is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No `Content-Length` and no `Transfer-Encoding`: the body is empty.
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Byte range within a head.
///
/// Invariant: `start <= end <= head.len()` for the head it was computed from ([`Span::of`]
/// checks it), and it is only ever applied to that head: [`Request`] and [`Response`] keep
/// both together, and [`Request::into_owned`] copies the head byte for byte. [`Span::get`]
/// indexes on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    /// Where `part`, a sub-slice of `base`, lies in it.
    fn of(base: &[u8], part: &[u8]) -> Span {
        if part.is_empty() {
            // Not necessarily inside `base`: httparse gives a static "" for a reason phrase
            // with obs-text.
            return Span::default();
        }
        let (b, p) = (base.as_ptr_range(), part.as_ptr_range());
        // httparse hands out sub-slices of the buffer it parsed, here `base`.
        assert!(
            b.start <= p.start && p.end <= b.end,
            "httparse returned a slice outside the head it parsed"
        );
        let start = p.start as usize - b.start as usize;
        Span {
            start,
            end: start + part.len(),
        }
    }

    fn get(self, head: &[u8]) -> &[u8] {
        &head[self.start..self.end]
    }

    /// For spans of the `&str`s httparse returns (method, target, header names), which are
    /// UTF-8 and end on character boundaries.
    fn get_str(self, head: &[u8]) -> &str {
        std::str::from_utf8(self.get(head)).expect("a span of a str httparse returned")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeaderSpan {
    name: Span,
    value: Span,
}

/// A view of a head's header fields. Names compare case-insensitively; values are raw bytes
/// with surrounding whitespace removed.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    buf: &'a [u8],
    spans: &'a [HeaderSpan],
}

impl<'a> Headers<'a> {
    /// Number of header field lines.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Every field line, in order, as `(name, value)`.
    pub fn iter(self) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        let buf = self.buf;
        self.spans
            .iter()
            .map(move |h| (h.name.get_str(buf), h.value.get(buf)))
    }

    /// The first value of `name`.
    pub fn get(self, name: &str) -> Option<&'a [u8]> {
        self.get_all(name).next()
    }

    /// Every value of `name`, in order (a field may repeat).
    pub fn get_all<'n>(self, name: &'n str) -> GetAll<'a, 'n> {
        GetAll {
            buf: self.buf,
            spans: self.spans.iter(),
            name: name.as_bytes(),
        }
    }

    /// How many field lines are named `name`.
    pub fn count(self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// Every element of the comma-separated list(s) in `name`, whitespace-trimmed, empty
    /// elements skipped (RFC 9110 §5.6.1). Not quote-aware: use it for token lists only.
    pub fn list<'n>(self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        self.get_all(name).flat_map(split_list)
    }

    /// Whether the comma-separated list(s) in `name` contain `token`, case-insensitively.
    pub fn has_token(self, name: &str, token: &str) -> bool {
        self.list(name)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }
}

/// Iterator over the values of one header name; see [`Headers::get_all`].
#[derive(Debug, Clone)]
pub struct GetAll<'a, 'n> {
    buf: &'a [u8],
    spans: std::slice::Iter<'a, HeaderSpan>,
    name: &'n [u8],
}

impl<'a> Iterator for GetAll<'a, '_> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let buf = self.buf;
        let name = self.name;
        self.spans
            .by_ref()
            .find(|h| h.name.get(buf).eq_ignore_ascii_case(name))
            .map(|h| h.value.get(buf))
    }
}

/// Splits a comma-separated header list into trimmed, non-empty elements.
pub(crate) fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// Strips optional whitespace (SP / HTAB) from both ends.
pub(crate) fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// A parsed request head. `B` is the head's bytes: `&[u8]` borrowing the read buffer, or
/// `Bytes` after [`Request::into_owned`].
#[derive(Debug, Clone)]
pub struct Request<B> {
    /// Exactly the head (request line through the blank line); `head.len() == head_len()`.
    head: B,
    method: Method,
    method_span: Span,
    target: Span,
    version: Version,
    headers: Vec<HeaderSpan>,
    body: BodyKind,
    keep_alive: bool,
    expects_continue: bool,
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete and shorter than
/// [`Limits::max_head_size`]; once `buf` holds that many bytes without a complete head the
/// answer is an error, so the caller never needs to buffer more than the limit. Bytes past
/// [`Request::head_len`] are not looked at.
pub fn parse_request<'b>(
    buf: &'b [u8],
    limits: &Limits,
) -> Result<Option<Request<&'b [u8]>>, HttpError> {
    let window = &buf[..buf.len().min(limits.max_head_size)];
    let parsed = with_header_slots(window, |slots| {
        let mut req = httparse::Request::new(&mut []);
        let head_len = match req.parse_with_uninit_headers(window, slots)? {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => return Ok(None),
        };
        // Complete(n): httparse consumed n bytes of `window` and filled the request line.
        let head = &window[..head_len];
        let method = req
            .method
            .expect("httparse fills the method of a complete head");
        let path = req
            .path
            .expect("httparse fills the target of a complete head");
        Ok(Some(Request {
            head,
            method: Method::from_token(method),
            method_span: Span::of(head, method.as_bytes()),
            target: Span::of(head, path.as_bytes()),
            version: if req.version == Some(0) {
                Version::Http10
            } else {
                Version::Http11
            },
            headers: header_spans(head, req.headers),
            body: BodyKind::Empty,
            keep_alive: false,
            expects_continue: false,
        }))
    });
    match parsed {
        Ok(Some(mut request)) => {
            request.check_framing()?;
            Ok(Some(request))
        }
        Ok(None) if buf.len() >= limits.max_head_size => Err(oversized_head(window)),
        Ok(None) => Ok(None),
        Err(e) => Err(map_parse_error(e, window)),
    }
}

/// Runs `parse` with [`STACK_HEADER_SLOTS`] header slots on the stack and, only if httparse
/// runs out of them, once more with heap slots for every field `head` can hold.
///
/// Every header line, the last one included if the head is cut short, either ends with LF or
/// is the last bytes of `head`; the request or status line ends with LF before any of them.
/// So `head` holds at most (LF count + 1) header fields, and that many slots never run out.
fn with_header_slots<'b, T>(
    head: &'b [u8],
    mut parse: impl FnMut(&mut [MaybeUninit<httparse::Header<'b>>]) -> Result<T, httparse::Error>,
) -> Result<T, httparse::Error> {
    let mut stack = [const { MaybeUninit::<httparse::Header<'b>>::uninit() }; STACK_HEADER_SLOTS];
    match parse(&mut stack) {
        Err(httparse::Error::TooManyHeaders) => {
            let lines = head.iter().filter(|&&b| b == b'\n').count();
            let mut heap = Box::<[httparse::Header<'b>]>::new_uninit_slice(lines + 1);
            let again = parse(&mut heap);
            debug_assert!(
                !matches!(again, Err(httparse::Error::TooManyHeaders)),
                "one header slot per line of the head is enough"
            );
            again
        }
        other => other,
    }
}

/// The spans of httparse's header fields within `head`, values trimmed.
fn header_spans(head: &[u8], fields: &[httparse::Header<'_>]) -> Vec<HeaderSpan> {
    fields
        .iter()
        .map(|h| HeaderSpan {
            name: Span::of(head, h.name.as_bytes()),
            value: Span::of(head, trim_ows(h.value)),
        })
        .collect()
}

/// Tells apart a request line that never ended (414) from headers that never ended (431).
fn oversized_head(window: &[u8]) -> HttpError {
    if window.contains(&b'\n') {
        HttpError::HeadTooLarge
    } else {
        HttpError::UriTooLong
    }
}

fn map_parse_error(e: httparse::Error, window: &[u8]) -> HttpError {
    match e {
        httparse::Error::HeaderName => HttpError::InvalidHeaderName,
        httparse::Error::HeaderValue => HttpError::InvalidHeaderValue,
        httparse::Error::NewLine => HttpError::InvalidNewLine,
        httparse::Error::Status => HttpError::InvalidStatusLine,
        httparse::Error::Token => HttpError::InvalidRequestLine,
        // Cannot happen: with_header_slots gives one slot per line of the head. Were it to,
        // the head has more fields than bytes allow, which is what 431 says.
        httparse::Error::TooManyHeaders => HttpError::HeadTooLarge,
        httparse::Error::Version => classify_version(window),
    }
}

/// httparse knows only HTTP/1.0 and HTTP/1.1. RFC 9110 §15.6.6: 505 is for a version we
/// recognise but do not support (`HTTP/2.0`, `HTTP/1.2`); garbage is a plain 400.
fn classify_version(window: &[u8]) -> HttpError {
    let line = match window.iter().position(|&b| b == b'\n') {
        Some(lf) => &window[..lf],
        None => window,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = match line.iter().rposition(|&b| b == b' ') {
        Some(sp) => &line[sp + 1..],
        None => line,
    };
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            HttpError::UnsupportedVersion
        }
        _ => HttpError::InvalidVersion,
    }
}

impl<B: AsRef<[u8]>> Request<B> {
    fn bytes(&self) -> &[u8] {
        self.head.as_ref()
    }

    /// The head as it arrived (request line through the blank line).
    pub fn head(&self) -> &[u8] {
        self.bytes()
    }

    /// Validates the framing headers and records body kind, keep-alive and `Expect`.
    fn check_framing(&mut self) -> Result<(), HttpError> {
        let headers = self.headers();
        // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
        // HTTP/1.1 request message that lacks a Host header field and to any request message
        // that contains more than one Host header field line".
        match headers.count("host") {
            0 if self.version == Version::Http11 => return Err(HttpError::MissingHost),
            0 | 1 => {}
            _ => return Err(HttpError::DuplicateHost),
        }

        let mut content_length: Option<u64> = None;
        for value in headers.get_all("content-length") {
            // RFC 9110 §8.6: a list of identical values may be folded into one; anything
            // else is unrecoverable framing.
            let mut any = false;
            for element in value.split(|&b| b == b',').map(trim_ows) {
                any = true;
                let n = parse_decimal(element).ok_or(HttpError::InvalidContentLength)?;
                match content_length {
                    Some(prev) if prev != n => return Err(HttpError::ConflictingContentLength),
                    _ => content_length = Some(n),
                }
            }
            if !any {
                return Err(HttpError::InvalidContentLength);
            }
        }

        let te_lines = headers.count("transfer-encoding");
        let body = if te_lines > 0 {
            // RFC 9112 §6.1: "A server or client that receives an HTTP/1.0 message containing
            // a Transfer-Encoding header field MUST treat the message as if the framing is
            // faulty".
            if self.version == Version::Http10 {
                return Err(HttpError::TransferEncodingInHttp10);
            }
            // RFC 9112 §6.3: a request with both is a smuggling attempt; we refuse it rather
            // than guess which one the peer meant.
            if content_length.is_some() {
                return Err(HttpError::ContentLengthWithTransferEncoding);
            }
            let mut codings = headers.list("transfer-encoding").peekable();
            let mut saw_chunked = false;
            let mut unsupported = false;
            let mut count = 0usize;
            while let Some(coding) = codings.next() {
                count += 1;
                let is_chunked = coding.eq_ignore_ascii_case(b"chunked");
                let last = codings.peek().is_none();
                if is_chunked {
                    // RFC 9112 §6.1: "If any transfer coding other than chunked is applied to
                    // a request's content, the sender MUST apply chunked as the final transfer
                    // coding" and "MUST NOT apply the chunked transfer coding more than once".
                    if saw_chunked || !last {
                        return Err(HttpError::ChunkedNotFinal);
                    }
                    saw_chunked = true;
                } else {
                    unsupported = true;
                }
            }
            if count == 0 {
                return Err(HttpError::InvalidTransferEncoding);
            }
            if !saw_chunked {
                // RFC 9112 §6.1: "the server MUST respond with the 400 (Bad Request) status
                // code and then close the connection" when chunked is not final.
                return Err(HttpError::ChunkedNotFinal);
            }
            if unsupported {
                // RFC 9112 §6.1: "A server that receives a request message with a transfer
                // coding it does not understand SHOULD respond with 501 (Not Implemented)."
                return Err(HttpError::UnsupportedTransferCoding);
            }
            BodyKind::Chunked
        } else {
            match content_length {
                Some(n) => BodyKind::Length(n),
                None => BodyKind::Empty,
            }
        };

        // RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
        let keep_alive = match self.version {
            Version::Http11 => !headers.has_token("connection", "close"),
            Version::Http10 => {
                headers.has_token("connection", "keep-alive")
                    && !headers.has_token("connection", "close")
            }
        };
        // RFC 9110 §10.1.1: a server that receives 100-continue in an HTTP/1.0 request MUST
        // ignore it.
        let expects_continue = self.version == Version::Http11
            && headers
                .get_all("expect")
                .any(|v| v.eq_ignore_ascii_case(b"100-continue"));

        self.body = body;
        self.keep_alive = keep_alive;
        self.expects_continue = expects_continue;
        Ok(())
    }

    /// The method, for routing.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The method token as sent (useful when [`Request::method`] is [`Method::Other`]).
    pub fn method_str(&self) -> &str {
        self.method_span.get_str(self.bytes())
    }

    /// The raw request-target: origin-form `/path?query`, absolute-form, `*` or authority.
    pub fn target(&self) -> &str {
        self.target.get_str(self.bytes())
    }

    /// The raw (still percent-encoded) path: the target up to `?` or `#`. For absolute-form
    /// targets (`http://host/p`, RFC 9112 §3.2.2: servers MUST accept them) the part after the
    /// authority, `/` when empty.
    pub fn path(&self) -> &str {
        let target = self.target();
        let rest = strip_scheme_authority(target);
        let end = rest.find(['?', '#']).unwrap_or(rest.len());
        // `end` is rest.len() or the index of an ASCII byte: in range, on a char boundary.
        let path = &rest[..end];
        if path.is_empty() && rest.len() != target.len() {
            "/"
        } else {
            path
        }
    }

    /// The path percent-decoded (strictly: a malformed escape or non-UTF-8 result is a 400).
    /// `+` stays `+` in paths. Borrowed when nothing needed decoding.
    pub fn path_decoded(&self) -> Result<Cow<'_, str>, HttpError> {
        let raw = self.path();
        match percent_decode(raw.as_bytes(), false)? {
            Cow::Borrowed(_) => Ok(Cow::Borrowed(raw)),
            Cow::Owned(v) => String::from_utf8(v)
                .map(Cow::Owned)
                .map_err(|_| HttpError::PathNotUtf8),
        }
    }

    /// The raw query (after `?`, before `#`), if the target has one.
    pub fn query(&self) -> Option<&str> {
        let target = self.target();
        let (_, rest) = target.split_once('?')?;
        Some(rest.split_once('#').map_or(rest, |(query, _)| query))
    }

    /// Decoded `(name, value)` pairs of the query (empty when there is none).
    pub fn query_pairs(&self) -> QueryPairs<'_> {
        // No query: no pairs.
        QueryPairs::new(self.query().unwrap_or(""))
    }

    /// The first decoded value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn headers(&self) -> Headers<'_> {
        Headers {
            buf: self.bytes(),
            spans: &self.headers,
        }
    }

    /// Shorthand for `headers().get(name)`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().get(name)
    }

    /// How the body that follows the head is framed.
    pub fn body_kind(&self) -> BodyKind {
        self.body
    }

    /// The validated `Content-Length`, if one was sent.
    pub fn content_length(&self) -> Option<u64> {
        match self.body {
            BodyKind::Length(n) => Some(n),
            _ => None,
        }
    }

    /// Whether the connection may carry another request after this one's response.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// HTTP/1.1 `Expect: 100-continue`: send [`CONTINUE_RESPONSE`] before reading the body (or
    /// answer with a final status straight away, e.g. 413, and close).
    pub fn expects_continue(&self) -> bool {
        self.expects_continue
    }

    /// Whether the request asks to switch protocols: `Connection` lists `upgrade` and an
    /// `Upgrade` header is present. The WebSocket rules themselves are in `ws::handshake`.
    pub fn wants_upgrade(&self) -> bool {
        let h = self.headers();
        h.has_token("connection", "upgrade") && h.get("upgrade").is_some()
    }

    /// Bytes the head took in the buffer it was parsed from.
    pub fn head_len(&self) -> usize {
        self.bytes().len()
    }

    /// Copies the head (at most [`Limits::max_head_size`] bytes) so the request outlives the
    /// read buffer, e.g. for the handler context of a WebSocket connection.
    pub fn into_owned(self) -> Request<Bytes> {
        Request {
            head: Bytes::copy_from_slice(self.head.as_ref()),
            method: self.method,
            method_span: self.method_span,
            target: self.target,
            version: self.version,
            headers: self.headers,
            body: self.body,
            keep_alive: self.keep_alive,
            expects_continue: self.expects_continue,
        }
    }
}

/// For absolute-form targets returns what follows `scheme://authority`; otherwise `target`.
fn strip_scheme_authority(target: &str) -> &str {
    let Some(scheme_end) = target.find("://") else {
        return target;
    };
    // `find` returned where "://" starts: scheme_end + 3 <= target.len(), char boundaries.
    let scheme = &target[..scheme_end];
    let is_scheme = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !is_scheme || target.starts_with('/') {
        return target;
    }
    let after = &target[scheme_end + 3..];
    let path_start = after.find(['/', '?', '#']).unwrap_or(after.len());
    &after[path_start..]
}

/// Parses `1*DIGIT` into a u64; `None` for empty input, other bytes or overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

/// Strict percent-decoding (RFC 3986 §2.1): `%` must be followed by two hex digits.
/// With `plus_as_space`, `+` decodes to a space (form encoding). Borrowed when unchanged.
pub fn percent_decode(input: &[u8], plus_as_space: bool) -> Result<Cow<'_, [u8]>, HttpError> {
    // The decoding is percent-encoding's. Its decoder leaves a `%` without two hex digits as
    // it is (the WHATWG rule, right for queries, see form_decode); here that is an error, so
    // the escapes are checked first.
    if !escapes_are_valid(input) {
        return Err(HttpError::InvalidPercentEncoding);
    }
    if plus_as_space && input.contains(&b'+') {
        let spaced = plus_to_space(input);
        return Ok(Cow::Owned(
            percent_encoding::percent_decode(&spaced).collect(),
        ));
    }
    Ok(percent_encoding::percent_decode(input).into())
}

/// Whether every `%` in `input` starts `%HH` (two hex digits).
fn escapes_are_valid(input: &[u8]) -> bool {
    let mut rest = input;
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        // at < rest.len(), so at + 1 <= rest.len().
        match &rest[at + 1..] {
            [h, l, tail @ ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => rest = tail,
            _ => return false,
        }
    }
    true
}

/// `input` with every `+` turned into a space.
fn plus_to_space(input: &[u8]) -> Vec<u8> {
    input
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect()
}

/// Lenient decoding as in the WHATWG `application/x-www-form-urlencoded` parser (what
/// browsers' `URLSearchParams` does): `+` is a space, a `%` without two hex digits stays
/// literal, invalid UTF-8 becomes U+FFFD. percent-encoding's decoder does the last two as
/// they are; `+` goes first, so that a `%2B` still decodes to `+`. Borrowed when unchanged.
fn form_decode(input: &str) -> Cow<'_, str> {
    if input.contains('+') {
        let spaced = plus_to_space(input.as_bytes());
        Cow::Owned(
            percent_encoding::percent_decode(&spaced)
                .decode_utf8_lossy()
                .into_owned(),
        )
    } else {
        percent_encoding::percent_decode_str(input).decode_utf8_lossy()
    }
}

/// Iterator over the decoded `(name, value)` pairs of a raw query string such as
/// `token=abc&room=a%20b+c`. Empty pieces (`a=1&&b=2`) are skipped; a piece without `=` has
/// an empty value.
#[derive(Debug, Clone)]
pub struct QueryPairs<'a> {
    rest: &'a str,
}

impl<'a> QueryPairs<'a> {
    /// Pairs of a raw query (without the leading `?`).
    pub fn new(query: &'a str) -> Self {
        Self { rest: query }
    }
}

impl<'a> Iterator for QueryPairs<'a> {
    type Item = (Cow<'a, str>, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (piece, rest) = self.rest.split_once('&').unwrap_or((self.rest, ""));
            self.rest = rest;
            if piece.is_empty() {
                continue;
            }
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            return Some((form_decode(k), form_decode(v)));
        }
    }
}

/// Reads a request body framed as [`BodyKind`] out of the caller's read buffer, within
/// [`Limits::max_body_size`].
///
/// `Content-Length` bodies are split off the buffer without copying once complete; chunked
/// bodies are decoded into an owned buffer as bytes arrive (the consumed framing is removed
/// from the read buffer, so it never holds more than one read's worth of a chunked body).
#[derive(Debug)]
pub struct BodyDecoder {
    framing: Framing,
    max: usize,
    max_trailers: usize,
}

#[derive(Debug)]
enum Framing {
    Empty,
    Length(usize),
    Chunked(Chunked),
    Done,
}

/// A chunked body being decoded (RFC 9112 §7.1): `chunk-size [ chunk-ext ] CRLF`, the data
/// and CRLF, repeated until a `0` size line, then trailer field lines and a final CRLF.
///
/// The chunk-size line is parsed by `httparse::parse_chunk_size` once it has ended; a line
/// that straddles reads is moved into `line` so the read buffer holds only unread bytes.
/// Trailer lines are checked for their line endings and discarded. CRLF is required exactly:
/// a bare LF anywhere in the framing is refused, since lenient framing is how smuggling works.
#[derive(Debug)]
struct Chunked {
    state: ChunkState,
    /// The start of a size or trailer line whose end has not arrived yet. Invariant: shorter
    /// than that line's limit (`MAX_CHUNK_LINE`, or what is left of the trailer budget), holds
    /// no LF, and is empty in the `Data*` states.
    line: Vec<u8>,
    /// The body decoded so far. Invariant: `out.len() <= max` (sizes are checked against
    /// what is left before their data is taken).
    out: BytesMut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// At (or inside) a chunk-size line.
    Size,
    /// Copying chunk data; `remaining` bytes of this chunk to go.
    Data {
        remaining: u64,
    },
    /// After a chunk's data: CR, then LF.
    DataCr,
    DataLf,
    /// In the trailer section; `used` bytes of complete field lines so far.
    Trailers {
        used: usize,
    },
}

impl BodyDecoder {
    /// A decoder for `kind`. A `Content-Length` above the limit is refused here, before any of
    /// the body is read.
    pub fn new(kind: BodyKind, limits: &Limits) -> Result<Self, HttpError> {
        let max = limits.max_body_size;
        let framing = match kind {
            BodyKind::Empty => Framing::Empty,
            BodyKind::Length(n) => match usize::try_from(n) {
                Ok(n) if n <= max => Framing::Length(n),
                _ => return Err(HttpError::BodyTooLarge),
            },
            BodyKind::Chunked => Framing::Chunked(Chunked {
                state: ChunkState::Size,
                line: Vec::new(),
                out: BytesMut::new(),
            }),
        };
        Ok(Self {
            framing,
            max,
            max_trailers: limits.max_head_size,
        })
    }

    /// Consumes body bytes from the front of `buf`. Returns the whole body once it is
    /// complete (`Ok(None)`: need more bytes). Bytes after the body (a pipelined request) are
    /// left in `buf`. After the body has been returned, further calls return an empty body.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, HttpError> {
        match &mut self.framing {
            Framing::Empty | Framing::Done => {
                self.framing = Framing::Done;
                Ok(Some(Bytes::new()))
            }
            Framing::Length(n) => {
                let n = *n;
                if buf.len() < n {
                    return Ok(None);
                }
                self.framing = Framing::Done;
                Ok(Some(buf.split_to(n).freeze()))
            }
            Framing::Chunked(chunked) => {
                let (consumed, done) = chunked.feed(buf, self.max, self.max_trailers)?;
                buf.advance(consumed);
                if done {
                    let body = chunked.out.split().freeze();
                    self.framing = Framing::Done;
                    Ok(Some(body))
                } else {
                    Ok(None)
                }
            }
        }
    }
}

impl Chunked {
    /// Runs the decoder over `input`; returns the bytes consumed (all of `input` unless the
    /// body ended) and whether the body ended.
    fn feed(
        &mut self,
        input: &[u8],
        max: usize,
        max_trailers: usize,
    ) -> Result<(usize, bool), HttpError> {
        use ChunkState::*;
        let mut used = 0usize;
        loop {
            // used <= input.len(): it only grows by lengths taken from `rest`.
            let rest = &input[used..];
            if rest.is_empty() {
                return Ok((used, false));
            }
            match self.state {
                Data { remaining } => {
                    // Bulk copy; `remaining` was checked against `max` when the size line ended.
                    let take = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    self.out.extend_from_slice(&rest[..take]);
                    used += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        DataCr
                    } else {
                        Data { remaining: left }
                    };
                }
                DataCr | DataLf => {
                    let (want, next) = if self.state == DataCr {
                        (b'\r', DataLf)
                    } else {
                        (b'\n', Size)
                    };
                    if rest[0] != want {
                        return Err(HttpError::InvalidChunkTerminator);
                    }
                    used += 1;
                    self.state = next;
                }
                Size => match take_line(&mut self.line, rest, MAX_CHUNK_LINE) {
                    Line::Complete { line, taken } => {
                        let size = chunk_size(line)?.ok_or(HttpError::InvalidChunkSize)?;
                        used += taken;
                        self.line.clear();
                        self.state = if size == 0 {
                            Trailers { used: 0 }
                        } else {
                            // Refused from the size line, before the chunk's data is buffered.
                            if size > (max - self.out.len()) as u64 {
                                return Err(HttpError::BodyTooLarge);
                            }
                            Data { remaining: size }
                        };
                    }
                    Line::Partial => {
                        // Refuse a line that is already wrong without waiting for its end.
                        chunk_size(&self.line)?;
                        return Ok((input.len(), false));
                    }
                    Line::TooLong => return Err(HttpError::ChunkLineTooLong),
                },
                Trailers { used: so_far } => {
                    match take_line(&mut self.line, rest, max_trailers - so_far) {
                        Line::Complete { line, taken } => {
                            let empty = trailer_line(line)?;
                            // The whole line counts, also the part that came in earlier
                            // reads: so_far + line.len() <= max_trailers (take_line's limit).
                            let line_len = line.len();
                            used += taken;
                            self.line.clear();
                            if empty {
                                return Ok((used, true));
                            }
                            self.state = Trailers {
                                used: so_far + line_len,
                            };
                        }
                        Line::Partial => {
                            trailer_line(&self.line)?;
                            return Ok((input.len(), false));
                        }
                        Line::TooLong => return Err(HttpError::TrailersTooLarge),
                    }
                }
            }
        }
    }
}

/// What [`take_line`] found.
enum Line<'a> {
    /// The whole line, LF included, and how many of its bytes came from `input`.
    Complete { line: &'a [u8], taken: usize },
    /// No LF yet: all of `input` was moved into `pending`.
    Partial,
    /// No LF within `limit` bytes.
    TooLong,
}

/// Takes the line at the front of `input`, whose first bytes may be in `pending` (moved
/// there by earlier calls), up to `limit` bytes in all, LF included. A complete line is
/// borrowed from `input` when `pending` is empty (the common case, no copy), else assembled
/// in `pending`, which the caller clears once done with it.
fn take_line<'a>(pending: &'a mut Vec<u8>, input: &'a [u8], limit: usize) -> Line<'a> {
    // The invariant on Chunked::line: pending.len() < limit, else TooLong came earlier.
    let room = limit - pending.len();
    let window = &input[..input.len().min(room)];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            let taken = lf + 1;
            if pending.is_empty() {
                Line::Complete {
                    line: &input[..taken],
                    taken,
                }
            } else {
                pending.extend_from_slice(&window[..taken]);
                Line::Complete {
                    line: pending,
                    taken,
                }
            }
        }
        // `input` is not empty (the caller checks), so a full window means the line has at
        // least `limit` bytes and no end yet.
        None if window.len() == room => Line::TooLong,
        None => {
            pending.extend_from_slice(window);
            Line::Partial
        }
    }
}

/// A chunk-size line (`1*HEXDIG [ chunk-ext ] CRLF`), complete (ends with LF) or the start
/// of one: `Ok(Some(size))` for a complete valid line, `Ok(None)` for a valid start.
///
/// `httparse::parse_chunk_size` does the parsing (hex digits, whitespace before `;`,
/// extensions skipped). Around it, what it is lenient about and we are not: it reads an empty
/// size as 0 (RFC 9112: `chunk-size = 1*HEXDIG`), and it lets an extension hold any byte,
/// a bare LF or a NUL included. A bare LF that ends the line for a lenient peer but not for us
/// is a request-smuggling vector, so the only LF must be the CRLF's at the end.
fn chunk_size(line: &[u8]) -> Result<Option<u64>, HttpError> {
    let Some(&first) = line.first() else {
        return Ok(None);
    };
    if !first.is_ascii_hexdigit() {
        return Err(HttpError::InvalidChunkSize);
    }
    let complete = line.last() == Some(&b'\n');
    let content = if complete {
        // take_line stops at the first LF: the last byte is the only one.
        line.strip_suffix(b"\r\n")
            .ok_or(HttpError::InvalidChunkSize)?
    } else {
        line
    };
    if content.contains(&0) {
        return Err(HttpError::InvalidChunkSize);
    }
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((n, size))) if complete && n == line.len() => Ok(Some(size)),
        Ok(httparse::Status::Partial) if !complete => Ok(None),
        _ => Err(HttpError::InvalidChunkSize),
    }
}

/// A trailer field line, complete (ends with LF) or the start of one; `Ok(true)` for the
/// empty line that ends the section. Trailers are discarded, but their line endings are held
/// to CRLF like the head's: a CR must be followed by LF, a LF preceded by CR, and no NUL.
fn trailer_line(line: &[u8]) -> Result<bool, HttpError> {
    let content = match line.strip_suffix(b"\n") {
        Some(ended) => ended.strip_suffix(b"\r").ok_or(HttpError::InvalidNewLine)?,
        // Unfinished: a CR at the very end may still be followed by its LF.
        None => line.strip_suffix(b"\r").unwrap_or(line),
    };
    if content.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(HttpError::InvalidNewLine);
    }
    Ok(line.len() == 2 && content.is_empty())
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

/// `tchar` of RFC 9110 §5.6.2: the bytes allowed in a token (a header name, a method, a
/// subprotocol name). The one definition in the crate: use [`is_token`].
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// RFC 9110 §5.6.2: `token = 1*tchar`. Header names are tokens, and so are WebSocket
/// subprotocol names (RFC 6455 §4.1), which `ws/handshake.rs` checks with this.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// RFC 9110 §5.5: "Field values containing CR, LF, or NUL characters are invalid and
/// dangerous". Checked on everything the application writes, so a peer-supplied value echoed
/// into a response (an Origin, say) can never inject a header.
pub(crate) fn valid_header_value(value: &[u8]) -> bool {
    !value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
}

/// Writes `n` in decimal without allocating.
fn put_decimal(out: &mut BytesMut, mut n: u64) {
    // u64::MAX has 20 digits, so `n` reaches 0 by the time `at` does: `at - 1` never wraps.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// Writes one response head (and optionally its body) into a caller buffer.
///
/// A response to a parsed request starts with [`ResponseWriter::for_request`] (or
/// [`ResponseWriter::for_method`]), which gets `HEAD` right: the caller writes the same
/// headers and calls the same finishing method as for `GET`, and the answer to a `HEAD`
/// carries the `Content-Length` the `GET` body would have but no body bytes (RFC 9110
/// §9.3.2). Writing the body anyway would put stray bytes in front of the next response on
/// a keep-alive connection.
///
/// ```
/// # use bytes::BytesMut;
/// # use shardcast::protocol::http::{parse_request, Limits, ResponseWriter, StatusCode};
/// let req = parse_request(b"HEAD /health HTTP/1.1\r\nHost: a\r\n\r\n", &Limits::default())
///     .unwrap()
///     .unwrap();
/// let mut out = BytesMut::new();
/// let mut w = ResponseWriter::for_request(&mut out, &req, StatusCode::OK);
/// w.header("Cache-Control", b"no-store");
/// w.body("application/json", br#"{"status":"ok"}"#).unwrap();
/// assert_eq!(
///     &out[..],
///     b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Type: application/json\r\n\
///       Content-Length: 15\r\n\r\n"
/// );
/// ```
///
/// A header name or value that would break the message (CR, LF, NUL, non-token name) is not
/// written; the finishing call then returns [`HttpError::InvalidResponseHeader`] and truncates
/// `out` back to where this response started, so no half response is ever sent.
#[derive(Debug)]
pub struct ResponseWriter<'a> {
    out: &'a mut BytesMut,
    start: usize,
    status: StatusCode,
    /// The response answers a `HEAD`: the finishing calls write the head a `GET` would get,
    /// `Content-Length` included, and no body bytes. Fixed at construction, so no finishing
    /// path can forget it; [`ResponseWriter::body`] is the only one that writes body bytes.
    head_only: bool,
    invalid: bool,
}

impl<'a> ResponseWriter<'a> {
    /// Starts the response to `req`: writes the status line. A `HEAD` request gets its
    /// answer without body bytes; see the type's docs.
    pub fn for_request<B: AsRef<[u8]>>(
        out: &'a mut BytesMut,
        req: &Request<B>,
        status: StatusCode,
    ) -> Self {
        Self::for_method(out, req.method(), status)
    }

    /// Starts the response to a request made with `method` (`Method::Head`: no body bytes,
    /// see the type's docs): writes the status line.
    pub fn for_method(out: &'a mut BytesMut, method: Method, status: StatusCode) -> Self {
        let start = out.len();
        out.reserve(128);
        out.put_slice(b"HTTP/1.1 ");
        put_decimal(out, u64::from(status.as_u16()));
        out.put_u8(b' ');
        out.put_slice(status.reason().as_bytes());
        out.put_slice(b"\r\n");
        Self {
            out,
            start,
            status,
            head_only: method == Method::Head,
            invalid: false,
        }
    }

    /// Starts a response written as for `GET`, body included: for answers that do not
    /// depend on the request's method, such as an error before the request was understood
    /// or the `101` of an upgrade (always a `GET`). To answer a parsed request use
    /// [`ResponseWriter::for_request`], which also gets `HEAD` right.
    pub fn new(out: &'a mut BytesMut, status: StatusCode) -> Self {
        Self::for_method(out, Method::Get, status)
    }

    /// Adds a header field.
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        if is_token(name.as_bytes()) && valid_header_value(value) {
            self.put_header(name.as_bytes(), value);
        } else {
            self.invalid = true;
        }
        self
    }

    /// Adds a header field with a decimal value.
    pub fn header_u64(&mut self, name: &str, value: u64) -> &mut Self {
        if is_token(name.as_bytes()) {
            self.out.put_slice(name.as_bytes());
            self.out.put_slice(b": ");
            put_decimal(self.out, value);
            self.out.put_slice(b"\r\n");
        } else {
            self.invalid = true;
        }
        self
    }

    /// Adds `Connection: close` when `keep_alive` is false (HTTP/1.1 persists by default).
    pub fn keep_alive(&mut self, keep_alive: bool) -> &mut Self {
        if !keep_alive {
            self.put_header(b"Connection", b"close");
        }
        self
    }

    fn put_header(&mut self, name: &[u8], value: &[u8]) {
        self.out.reserve(name.len() + value.len() + 4);
        self.out.put_slice(name);
        self.out.put_slice(b": ");
        self.out.put_slice(value);
        self.out.put_slice(b"\r\n");
    }

    fn check(self) -> Result<&'a mut BytesMut, HttpError> {
        if self.invalid {
            self.out.truncate(self.start);
            Err(HttpError::InvalidResponseHeader)
        } else {
            Ok(self.out)
        }
    }

    /// Finishes with `Content-Type`, `Content-Length` and the body. For statuses without
    /// content (1xx, 204, 304) the body and both headers are left out. In the answer to a
    /// `HEAD` the headers are the same and the body bytes are left out (RFC 9110 §9.3.2:
    /// "The server SHOULD send the same header fields in response to a HEAD request as it
    /// would have sent if the request method had been GET", and §8.6 lets `Content-Length`
    /// give the size the `GET` body would have).
    pub fn body(mut self, content_type: &str, body: &[u8]) -> Result<(), HttpError> {
        if !self.status.allows_body() {
            return self.empty();
        }
        if valid_header_value(content_type.as_bytes()) {
            self.put_header(b"Content-Type", content_type.as_bytes());
        } else {
            self.invalid = true;
        }
        let head_only = self.head_only;
        let out = self.check()?;
        out.reserve(body.len() + 24);
        out.put_slice(b"Content-Length: ");
        put_decimal(out, body.len() as u64);
        out.put_slice(b"\r\n\r\n");
        // RFC 9110 §9.3.2: "the server MUST NOT send content in the response" to HEAD.
        if !head_only {
            out.put_slice(body);
        }
        Ok(())
    }

    /// Finishes with an empty body (`Content-Length: 0` where the status allows content).
    pub fn empty(self) -> Result<(), HttpError> {
        let allows_body = self.status.allows_body();
        let out = self.check()?;
        if allows_body {
            out.put_slice(b"Content-Length: 0\r\n");
        }
        out.put_slice(b"\r\n");
        Ok(())
    }

    /// Finishes the head with no `Content-Length` at all: for `101 Switching Protocols`
    /// (RFC 9110 §8.6: "A server MUST NOT send a Content-Length header field in any response
    /// with a status code of 1xx") or when the caller frames what follows itself.
    pub fn finish_head(self) -> Result<(), HttpError> {
        let out = self.check()?;
        out.put_slice(b"\r\n");
        Ok(())
    }
}

// The helpers below answer as for `GET` (body included), like [`ResponseWriter::new`]: for
// errors and answers that do not depend on the method. A response to a request that may be
// a `HEAD` is written with `ResponseWriter::for_request`.

/// Writes a complete response with a body of `content_type`. Statuses without content get
/// none. `keep_alive == false` adds `Connection: close`. Written as for `GET`.
pub fn write_response(
    out: &mut BytesMut,
    status: StatusCode,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> Result<(), HttpError> {
    let mut w = ResponseWriter::new(out, status);
    w.keep_alive(keep_alive);
    w.body(content_type, body)
}

/// Content type of JSON bodies (`/health`, the API).
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Content type of plain-text bodies.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
/// Content type of the Prometheus text exposition format (`/metrics`).
pub const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes a JSON response. `body` must already be JSON.
pub fn write_json(out: &mut BytesMut, status: StatusCode, body: &[u8], keep_alive: bool) {
    // The content type is a valid constant, so this cannot fail.
    let _ = write_response(out, status, CONTENT_TYPE_JSON, body, keep_alive);
}

/// Writes a plain-text response.
pub fn write_text(out: &mut BytesMut, status: StatusCode, body: &[u8], keep_alive: bool) {
    // The content type is a valid constant, so this cannot fail.
    let _ = write_response(out, status, CONTENT_TYPE_TEXT, body, keep_alive);
}

/// Writes an error response whose text body is `"<code> <reason>\n"` (statuses without
/// content get just the head). Written as for `GET`.
pub fn write_error(out: &mut BytesMut, status: StatusCode, keep_alive: bool) {
    // "NNN " + the longest reason phrase (31 bytes) + "\n" fits: a status code has three
    // digits (StatusCode is 100..=999) and reason() is one of the constants above.
    let mut body = [0u8; 48];
    let reason = status.reason().as_bytes();
    let code = status.as_u16();
    body[..3].copy_from_slice(&[
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]);
    body[3] = b' ';
    body[4..4 + reason.len()].copy_from_slice(reason);
    body[4 + reason.len()] = b'\n';
    let mut w = ResponseWriter::new(out, status);
    w.keep_alive(keep_alive);
    // A constant content type: this cannot fail.
    let _ = w.body(CONTENT_TYPE_TEXT, &body[..reason.len() + 5]);
}

/// A JSON response as shareable bytes.
pub fn json_response(status: StatusCode, body: &[u8], keep_alive: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 96);
    write_json(&mut out, status, body, keep_alive);
    out.freeze()
}

/// A plain-text response as shareable bytes.
pub fn text_response(status: StatusCode, body: &[u8], keep_alive: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 96);
    write_text(&mut out, status, body, keep_alive);
    out.freeze()
}

/// An error response (see [`write_error`]) as shareable bytes.
pub fn error_response(status: StatusCode, keep_alive: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(128);
    write_error(&mut out, status, keep_alive);
    out.freeze()
}

// ---------------------------------------------------------------------------------------
// Response heads (client role)
// ---------------------------------------------------------------------------------------

/// A parsed response head (client role: the WebSocket client and the load generator).
#[derive(Debug, Clone)]
pub struct Response<B> {
    head: B,
    status: StatusCode,
    reason: Span,
    version: Version,
    headers: Vec<HeaderSpan>,
}

/// Parses a response head from the start of `buf`; `Ok(None)` = need more bytes, with the
/// same size limits as [`parse_request`]. Bytes after [`Response::head_len`] (a body, or
/// WebSocket frames after a 101) are not looked at.
pub fn parse_response<'b>(
    buf: &'b [u8],
    limits: &Limits,
) -> Result<Option<Response<&'b [u8]>>, HttpError> {
    let window = &buf[..buf.len().min(limits.max_head_size)];
    let parsed = with_header_slots(window, |slots| {
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, window, slots)?;
        let head_len = match parsed {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => return Ok(None),
        };
        // Complete(n): httparse consumed n bytes of `window` and filled the status line.
        let head = &window[..head_len];
        let code = resp
            .code
            .expect("httparse fills the code of a complete head");
        let reason = resp
            .reason
            .expect("httparse fills the reason of a complete head");
        Ok(Some((
            head,
            code,
            Span::of(head, reason.as_bytes()),
            resp.version,
            header_spans(head, resp.headers),
        )))
    });
    let (head, code, reason, version, headers) = match parsed {
        Ok(Some(parts)) => parts,
        Ok(None) if buf.len() >= limits.max_head_size => return Err(HttpError::HeadTooLarge),
        Ok(None) => return Ok(None),
        Err(httparse::Error::Version) => return Err(classify_version_response(window)),
        Err(httparse::Error::Token) => return Err(HttpError::InvalidStatusLine),
        Err(e) => return Err(map_parse_error(e, window)),
    };
    // httparse reads any three digits; 000 to 099 are not status codes.
    let status = StatusCode::from_u16(code).ok_or(HttpError::InvalidStatusLine)?;
    Ok(Some(Response {
        head,
        status,
        reason,
        version: if version == Some(0) {
            Version::Http10
        } else {
            Version::Http11
        },
        headers,
    }))
}

fn classify_version_response(window: &[u8]) -> HttpError {
    match window.get(..8) {
        Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor])
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            HttpError::UnsupportedVersion
        }
        _ => HttpError::InvalidStatusLine,
    }
}

impl<B: AsRef<[u8]>> Response<B> {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reason phrase as sent (informational only).
    pub fn reason(&self) -> &[u8] {
        self.reason.get(self.head.as_ref())
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn headers(&self) -> Headers<'_> {
        Headers {
            buf: self.head.as_ref(),
            spans: &self.headers,
        }
    }

    /// Shorthand for `headers().get(name)`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().get(name)
    }

    /// Bytes the head took in the buffer it was parsed from.
    pub fn head_len(&self) -> usize {
        self.head.as_ref().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(buf: &[u8]) -> Result<Option<Request<&[u8]>>, HttpError> {
        parse_request(buf, &Limits::default())
    }

    fn parse_ok(buf: &[u8]) -> Request<&[u8]> {
        match parse(buf) {
            Ok(Some(r)) => r,
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    fn parse_err(buf: &[u8]) -> HttpError {
        match parse(buf) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    // Captured with a raw socket listener (Python) from the named clients.
    const CURL_GET: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:18555\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
    const CURL_POST: &[u8] = b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1:18555\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: 51\r\n\r\n{\"room\":\"lobby\",\"event\":\"chat\",\"data\":{\"msg\":\"hi\"}}";
    const CURL_CHUNKED: &[u8] = b"POST /api/broadcast HTTP/1.1\r\nHost: 127.0.0.1:18555\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n19\r\n{\"event\":\"tick\",\"data\":1}\r\n0\r\n\r\n";
    const PYTHON_REQUESTS: &[u8] = b"GET /health?verbose=1&room=a%20b+c HTTP/1.1\r\nHost: 127.0.0.1:18555\r\nUser-Agent: python-requests/2.34.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n";
    const PYTHON_URLLIB: &[u8] = b"GET /metrics HTTP/1.1\r\nAccept-Encoding: identity\r\nHost: 127.0.0.1:18555\r\nUser-Agent: Python-urllib/3.11\r\nConnection: close\r\n\r\n";
    const CURL_HTTP10: &[u8] = b"GET / HTTP/1.0\r\nHost: 127.0.0.1:18555\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
    const NODE_UNDICI_WS: &[u8] = b"GET /chat?token=a%20b HTTP/1.1\r\nhost: 127.0.0.1:18555\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-key: YHj42EjYyGlyrkAm/zLAyg==\r\nsec-websocket-version: 13\r\nsec-websocket-protocol: stelar.v1, chat\r\nsec-websocket-extensions: permessage-deflate; client_max_window_bits\r\naccept: */*\r\naccept-language: *\r\nsec-fetch-mode: websocket\r\nuser-agent: node\r\npragma: no-cache\r\ncache-control: no-cache\r\naccept-encoding: gzip, deflate\r\n\r\n";

    const CAPTURES: &[&[u8]] = &[
        CURL_GET,
        CURL_POST,
        CURL_CHUNKED,
        PYTHON_REQUESTS,
        PYTHON_URLLIB,
        CURL_HTTP10,
        NODE_UNDICI_WS,
    ];

    #[test]
    fn curl_get() {
        let r = parse_ok(CURL_GET);
        assert_eq!(r.method(), Method::Get);
        assert_eq!(r.method_str(), "GET");
        assert_eq!(r.target(), "/health");
        assert_eq!(r.path(), "/health");
        assert_eq!(r.query(), None);
        assert_eq!(r.version(), Version::Http11);
        assert_eq!(r.head_len(), CURL_GET.len());
        assert_eq!(r.header("HOST"), Some(&b"127.0.0.1:18555"[..]));
        assert_eq!(r.headers().len(), 3);
        assert_eq!(r.body_kind(), BodyKind::Empty);
        assert!(r.keep_alive());
        assert!(!r.expects_continue());
        assert!(!r.wants_upgrade());
    }

    #[test]
    fn curl_post_body_follows_head() {
        let r = parse_ok(CURL_POST);
        assert_eq!(r.method(), Method::Post);
        assert_eq!(r.content_length(), Some(51));
        assert_eq!(r.header("content-type"), Some(&b"application/json"[..]));
        let mut buf = BytesMut::from(CURL_POST);
        buf.advance(r.head_len());
        let mut body = BodyDecoder::new(r.body_kind(), &Limits::default()).unwrap();
        let got = body.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            &got[..],
            &b"{\"room\":\"lobby\",\"event\":\"chat\",\"data\":{\"msg\":\"hi\"}}"[..]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn curl_chunked_body() {
        let r = parse_ok(CURL_CHUNKED);
        assert_eq!(r.body_kind(), BodyKind::Chunked);
        let mut buf = BytesMut::from(CURL_CHUNKED);
        buf.advance(r.head_len());
        buf.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let mut body = BodyDecoder::new(r.body_kind(), &Limits::default()).unwrap();
        let got = body.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&got[..], &b"{\"event\":\"tick\",\"data\":1}"[..]);
        assert_eq!(
            &buf[..],
            &b"GET /next HTTP/1.1\r\n"[..],
            "pipelined bytes stay"
        );
    }

    #[test]
    fn python_requests_query() {
        let r = parse_ok(PYTHON_REQUESTS);
        assert_eq!(r.path(), "/health");
        assert_eq!(r.query(), Some("verbose=1&room=a%20b+c"));
        assert_eq!(r.query_param("room").as_deref(), Some("a b c"));
        assert_eq!(r.query_param("verbose").as_deref(), Some("1"));
        assert_eq!(r.query_param("missing"), None);
        assert!(r.keep_alive());
    }

    #[test]
    fn urllib_connection_close() {
        let r = parse_ok(PYTHON_URLLIB);
        assert!(!r.keep_alive());
        assert_eq!(r.path(), "/metrics");
    }

    #[test]
    fn http10_defaults_to_close() {
        let r = parse_ok(CURL_HTTP10);
        assert_eq!(r.version(), Version::Http10);
        assert!(!r.keep_alive());
        let r = parse_ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(
            r.keep_alive(),
            "HTTP/1.0 without Host is fine, keep-alive opt-in"
        );
    }

    #[test]
    fn node_websocket_lowercase_headers() {
        let r = parse_ok(NODE_UNDICI_WS);
        assert!(r.wants_upgrade());
        assert_eq!(
            r.header("Sec-WebSocket-Key"),
            Some(&b"YHj42EjYyGlyrkAm/zLAyg=="[..])
        );
        assert_eq!(r.query_param("token").as_deref(), Some("a b"));
        let protos: Vec<&[u8]> = r.headers().list("Sec-WebSocket-Protocol").collect();
        assert_eq!(protos, vec![&b"stelar.v1"[..], &b"chat"[..]]);
    }

    #[test]
    fn every_capture_at_every_split() {
        for capture in CAPTURES {
            let full = parse_ok(capture);
            for cut in 0..full.head_len() {
                assert_eq!(
                    parse(&capture[..cut]).unwrap().map(|r| r.head_len()),
                    None,
                    "cut {cut}"
                );
            }
            for cut in full.head_len()..=capture.len() {
                assert_eq!(parse_ok(&capture[..cut]).head_len(), full.head_len());
            }
        }
    }

    #[test]
    fn bytes_after_head_are_not_consumed() {
        let mut buf = CURL_GET.to_vec();
        buf.extend_from_slice(b"\x81\x85garbage");
        let r = parse_ok(&buf);
        assert_eq!(r.head_len(), CURL_GET.len());
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        let r = parse_ok(b"GET /x HTTP/1.1\nHost: a\n\n");
        assert_eq!(r.path(), "/x");
        assert_eq!(r.head_len(), 25);
    }

    #[test]
    fn head_limit_is_enforced_at_the_limit() {
        let limits = Limits {
            max_head_size: 64,
            ..Limits::default()
        };
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
        head.resize(63, b'a');
        assert!(matches!(parse_request(&head, &limits), Ok(None)));
        head.push(b'a');
        assert_eq!(
            parse_request(&head, &limits).unwrap_err(),
            HttpError::HeadTooLarge
        );
        // A complete head exactly at the limit is fine.
        let mut exact = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
        exact.resize(60, b'a');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_request(&exact, &limits).unwrap().unwrap().head_len(),
            64
        );
    }

    #[test]
    fn request_line_too_long_is_414() {
        let limits = Limits {
            max_head_size: 64,
            ..Limits::default()
        };
        let mut line = b"GET /".to_vec();
        line.resize(100, b'a');
        let e = parse_request(&line, &limits).unwrap_err();
        assert_eq!(e, HttpError::UriTooLong);
        assert_eq!(e.status(), StatusCode::URI_TOO_LONG);
    }

    /// `GET / HTTP/1.1` with Host and `n` more fields `X-Hop-<i>: <value>`, CRLF endings.
    fn many_headers(n: usize, value: &str) -> Vec<u8> {
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..n {
            head.extend_from_slice(format!("X-Hop-{i}: {value}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    }

    #[test]
    fn header_count_is_limited_by_size_only() {
        // 150 fields, as a chain of proxies might leave, well within 8 KiB: fine.
        let head = many_headers(150, "1");
        assert!(head.len() < DEFAULT_MAX_HEAD_SIZE);
        let r = parse_ok(&head);
        assert_eq!(r.headers().len(), 151);
        assert_eq!(r.header("x-hop-149"), Some(&b"1"[..]));
        assert_eq!(r.head_len(), head.len());
        // Just past the stack slots, and exactly at them.
        for n in [
            STACK_HEADER_SLOTS - 2,
            STACK_HEADER_SLOTS - 1,
            STACK_HEADER_SLOTS,
        ] {
            assert_eq!(parse_ok(&many_headers(n, "v")).headers().len(), n + 1);
        }
        // The same many fields, but the head passes 8 KiB: 431.
        let big = many_headers(150, &"v".repeat(50));
        assert!(big.len() > DEFAULT_MAX_HEAD_SIZE);
        let e = parse_err(&big);
        assert_eq!(e, HttpError::HeadTooLarge);
        assert_eq!(e.status().as_u16(), 431);
        // Incomplete heads with many fields ask for more bytes, at every length.
        for cut in 0..head.len() {
            assert!(parse(&head[..cut]).unwrap().is_none(), "cut {cut}");
        }
    }

    #[test]
    fn the_densest_head_fits_its_header_slots() {
        // Three-byte fields with bare LF (`a:` LF) pack the most fields into a head; the
        // heap slots (one per LF, plus one) must still suffice, whole or cut anywhere.
        let limits = Limits {
            max_head_size: 1024,
            ..Limits::default()
        };
        let request_line = b"GET / HTTP/1.1\n";
        let mut head = request_line.to_vec();
        head.extend_from_slice(b"Host: a\n");
        let mut fields = 1;
        while head.len() + 4 <= limits.max_head_size {
            head.extend_from_slice(b"a:\n");
            fields += 1;
        }
        head.push(b'\n');
        assert!(head.len() > limits.max_head_size - 3);
        let r = parse_request(&head, &limits).unwrap().unwrap();
        assert_eq!(r.headers().len(), fields);
        assert_eq!(r.headers().count("a"), fields - 1);
        for cut in 0..head.len() {
            // A cut inside a field's name or after its colon: Ok(None), never a panic or
            // (with debug assertions) the slot check.
            assert!(
                parse_request(&head[..cut], &limits).unwrap().is_none(),
                "cut {cut}"
            );
        }
        let mut resp = b"HTTP/1.1 200 OK\n".to_vec();
        resp.extend_from_slice(&head[request_line.len()..]);
        let r = parse_response(&resp, &limits).unwrap().unwrap();
        assert_eq!(r.headers().len(), fields);
    }

    #[test]
    fn version_errors() {
        assert_eq!(
            parse_err(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            HttpError::UnsupportedVersion
        );
        assert_eq!(
            parse_err(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
            HttpError::UnsupportedVersion
        );
        assert_eq!(HttpError::UnsupportedVersion.status().as_u16(), 505);
        assert_eq!(
            parse_err(b"GET / HTTX/1.1\r\nHost: a\r\n\r\n"),
            HttpError::InvalidVersion
        );
        assert_eq!(HttpError::InvalidVersion.status().as_u16(), 400);
    }

    #[test]
    fn malformed_heads() {
        assert_eq!(
            parse_err(b"GE(T / HTTP/1.1\r\n\r\n"),
            HttpError::InvalidRequestLine
        );
        assert_eq!(
            parse_err(b"GET  HTTP/1.1\r\n\r\n"),
            HttpError::InvalidRequestLine
        );
        assert_eq!(
            parse_err(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
            HttpError::InvalidHeaderName
        );
        assert_eq!(
            parse_err(b"GET / HTTP/1.1\r\nA: x\x01y\r\n\r\n"),
            HttpError::InvalidHeaderValue
        );
        assert_eq!(parse_err(b"GET / HTTP/1.1\rX"), HttpError::InvalidNewLine);
        // A TLS ClientHello on the plain port is refused at once, not buffered to the limit.
        assert!(parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").is_err());
    }

    #[test]
    fn host_rules() {
        assert_eq!(parse_err(b"GET / HTTP/1.1\r\n\r\n"), HttpError::MissingHost);
        assert_eq!(
            parse_err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            HttpError::DuplicateHost
        );
        assert_eq!(
            parse_err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"),
            HttpError::DuplicateHost
        );
    }

    #[test]
    fn content_length_rules() {
        let r = parse_ok(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(r.content_length(), Some(5));
        let r = parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\n\r\n");
        assert_eq!(r.content_length(), Some(7));
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            assert_eq!(
                parse_err(bad),
                HttpError::InvalidContentLength,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_err(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
            ),
            HttpError::ConflictingContentLength
        );
        assert_eq!(
            parse_err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n"),
            HttpError::ConflictingContentLength
        );
    }

    #[test]
    fn transfer_encoding_rules() {
        let cases: &[(&[u8], HttpError)] = &[
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", HttpError::ContentLengthWithTransferEncoding),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", HttpError::TransferEncodingInHttp10),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", HttpError::ChunkedNotFinal),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", HttpError::ChunkedNotFinal),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", HttpError::ChunkedNotFinal),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", HttpError::UnsupportedTransferCoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", HttpError::InvalidTransferEncoding),
        ];
        for (req, want) in cases {
            assert_eq!(parse_err(req), *want, "{:?}", String::from_utf8_lossy(req));
        }
        assert_eq!(HttpError::UnsupportedTransferCoding.status().as_u16(), 501);
        let r = parse_ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(r.body_kind(), BodyKind::Chunked);
    }

    #[test]
    fn expect_continue() {
        let r = parse_ok(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n",
        );
        assert!(r.expects_continue());
        let r =
            parse_ok(b"POST / HTTP/1.0\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n");
        assert!(
            !r.expects_continue(),
            "RFC 9110 §10.1.1: ignored for HTTP/1.0"
        );
    }

    #[test]
    fn paths_and_targets() {
        let r = parse_ok(
            b"GET http://example.com:3000/chat/room?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
        );
        assert_eq!(r.path(), "/chat/room");
        assert_eq!(r.query(), Some("x=1"));
        let r = parse_ok(b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(r.path(), "/");
        let r = parse_ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.path(), "*");
        assert_eq!(r.method(), Method::Options);
        let r = parse_ok(b"GET /a%20b/c+d?q HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.path(), "/a%20b/c+d");
        assert_eq!(r.path_decoded().unwrap(), "/a b/c+d");
        let r = parse_ok(b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(matches!(r.path_decoded().unwrap(), Cow::Borrowed("/plain")));
        let r = parse_ok(b"GET /bad%zz HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            r.path_decoded().unwrap_err(),
            HttpError::InvalidPercentEncoding
        );
        let r = parse_ok(b"GET /bad%ff HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.path_decoded().unwrap_err(), HttpError::PathNotUtf8);
        let r = parse_ok(b"GET /x?a=1#frag HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.query(), Some("a=1"));
        let r = parse_ok(b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.method(), Method::Other);
        assert_eq!(r.method_str(), "PURGE");
    }

    #[test]
    fn query_pairs_decoding() {
        let pairs: Vec<(String, String)> =
            QueryPairs::new("token=abc.def&room=a%20b+c&&flag&e=&%zz=%4&u=%C3%A9&bad=%FF")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        assert_eq!(
            pairs,
            vec![
                ("token".into(), "abc.def".into()),
                ("room".into(), "a b c".into()),
                ("flag".into(), "".into()),
                ("e".into(), "".into()),
                ("%zz".into(), "%4".into()),
                ("u".into(), "é".into()),
                ("bad".into(), "\u{FFFD}".into()),
            ]
        );
        assert!(matches!(
            QueryPairs::new("a=b").next(),
            Some((Cow::Borrowed("a"), Cow::Borrowed("b")))
        ));
        assert_eq!(QueryPairs::new("").count(), 0);
        assert_eq!(
            QueryPairs::new("a=b=c").next().map(|(_, v)| v.into_owned()),
            Some("b=c".into())
        );
    }

    #[test]
    fn strict_percent_decode() {
        assert_eq!(percent_decode(b"a%2Fb", false).unwrap().as_ref(), b"a/b");
        assert_eq!(percent_decode(b"a+b", true).unwrap().as_ref(), b"a b");
        assert_eq!(percent_decode(b"a+b", false).unwrap().as_ref(), b"a+b");
        assert_eq!(
            percent_decode(b"%", false).unwrap_err(),
            HttpError::InvalidPercentEncoding
        );
        assert_eq!(
            percent_decode(b"%4", false).unwrap_err(),
            HttpError::InvalidPercentEncoding
        );
        assert_eq!(
            percent_decode(b"%g0", false).unwrap_err(),
            HttpError::InvalidPercentEncoding
        );
    }

    /// The obvious percent-decoder, `+` as space or not, `None` for a bad escape (strict) or
    /// the `%` kept (lenient): what both decoders are held to.
    fn reference_decode(input: &[u8], plus_as_space: bool, strict: bool) -> Option<Vec<u8>> {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match (
                b,
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            ) {
                (b'%', Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                (b'%', _, _) if strict => return None,
                (b'+', _, _) if plus_as_space => out.push(b' '),
                _ => out.push(b),
            }
            i += 1;
        }
        Some(out)
    }

    #[test]
    fn plus_and_escaped_plus() {
        let pairs: Vec<(String, String)> = QueryPairs::new("q=a%2Bb+c&a+b=%2b")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            pairs,
            vec![("q".into(), "a+b c".into()), ("a b".into(), "+".into())]
        );
        assert_eq!(percent_decode(b"a%2B+b", true).unwrap().as_ref(), b"a+ b");
        assert_eq!(percent_decode(b"a%2B+b", false).unwrap().as_ref(), b"a++b");
        assert!(matches!(
            percent_decode(b"/plain+", false),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(
            percent_decode(b"a+%zz", true).unwrap_err(),
            HttpError::InvalidPercentEncoding
        );
        // An invalid escape is literal in a query, and nothing else changed: borrowed.
        assert!(matches!(
            QueryPairs::new("x=%zz").next(),
            Some((Cow::Borrowed("x"), Cow::Borrowed("%zz")))
        ));
    }

    #[test]
    fn header_lists_and_tokens() {
        let r = parse_ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nX: 1\r\nx: 2\r\n\r\n");
        assert!(r.headers().has_token("connection", "upgrade"));
        assert!(r.headers().has_token("CONNECTION", "Keep-Alive"));
        assert!(!r.headers().has_token("connection", "close"));
        assert_eq!(
            r.headers().get_all("x").collect::<Vec<_>>(),
            vec![&b"1"[..], &b"2"[..]]
        );
        assert_eq!(r.headers().count("X"), 2);
        assert!(r.wants_upgrade());
        let long = "x".repeat(40);
        assert_eq!(
            r.headers().get(&long),
            None,
            "long names take the heap path"
        );
        let names: Vec<&str> = r.headers().iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["Host", "Connection", "Upgrade", "X", "x"]);
    }

    #[test]
    fn header_values_are_trimmed() {
        let r = parse_ok(b"GET / HTTP/1.1\r\nHost:   a  \r\nX:\tb\t\r\n\r\n");
        assert_eq!(r.header("host"), Some(&b"a"[..]));
        assert_eq!(r.header("x"), Some(&b"b"[..]));
    }

    #[test]
    fn into_owned_keeps_everything() {
        let owned = parse_ok(NODE_UNDICI_WS).into_owned();
        assert_eq!(owned.path(), "/chat");
        assert_eq!(owned.header("upgrade"), Some(&b"websocket"[..]));
        assert_eq!(owned.head_len(), NODE_UNDICI_WS.len());
    }

    #[test]
    fn body_length_limits() {
        let limits = Limits {
            max_body_size: 10,
            ..Limits::default()
        };
        assert_eq!(
            BodyDecoder::new(BodyKind::Length(11), &limits).unwrap_err(),
            HttpError::BodyTooLarge
        );
        assert_eq!(
            BodyDecoder::new(BodyKind::Length(u64::MAX), &limits).unwrap_err(),
            HttpError::BodyTooLarge
        );
        let mut d = BodyDecoder::new(BodyKind::Length(10), &limits).unwrap();
        let mut buf = BytesMut::from(&b"01234"[..]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"56789tail");
        assert_eq!(&d.decode(&mut buf).unwrap().unwrap()[..], b"0123456789");
        assert_eq!(&buf[..], b"tail");
        let mut d = BodyDecoder::new(BodyKind::Empty, &limits).unwrap();
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().len(), 0);
        assert_eq!(&buf[..], b"tail");
    }

    fn decode_chunked(input: &[u8], max: usize) -> Result<Option<(Bytes, usize)>, HttpError> {
        let limits = Limits {
            max_body_size: max,
            max_head_size: 64,
            ..Limits::default()
        };
        let mut d = BodyDecoder::new(BodyKind::Chunked, &limits)?;
        let mut buf = BytesMut::from(input);
        Ok(d.decode(&mut buf)?.map(|b| (b, input.len() - buf.len())))
    }

    #[test]
    fn chunked_vectors() {
        // RFC 9112 §7.1 grammar: extensions, whitespace before ';', trailers, upper-case hex.
        let (body, used) = decode_chunked(b"4;name=value\r\nWiki\r\n5 ;x\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\nNEXT", 1000)
            .unwrap()
            .unwrap();
        assert_eq!(&body[..], b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(used, 73, "everything up to the pipelined NEXT");
        let (body, _) = decode_chunked(b"0\r\n\r\n", 10).unwrap().unwrap();
        assert!(body.is_empty());
        assert_eq!(decode_chunked(b"5\r\nhel", 10).unwrap(), None);
    }

    #[test]
    fn chunked_errors() {
        let cases: &[(&[u8], HttpError)] = &[
            (b"\r\n", HttpError::InvalidChunkSize),
            (b"g\r\n", HttpError::InvalidChunkSize),
            (b"5\n", HttpError::InvalidChunkSize),
            (b"5\rX", HttpError::InvalidChunkSize),
            (b"5 5\r\n", HttpError::InvalidChunkSize),
            (b"11111111111111111\r\n", HttpError::InvalidChunkSize),
            (b"5\r\nhelloX", HttpError::InvalidChunkTerminator),
            (b"5\r\nhello\rX", HttpError::InvalidChunkTerminator),
            (b"b\r\n", HttpError::BodyTooLarge),
            (b"0\r\nX: y\n", HttpError::InvalidNewLine),
            (b"0\r\n\rX", HttpError::InvalidNewLine),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode_chunked(input, 10).unwrap_err(),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut long = b"1;".to_vec();
        long.resize(2000, b'a');
        assert_eq!(
            decode_chunked(&long, 10).unwrap_err(),
            HttpError::ChunkLineTooLong
        );
        let mut trailers = b"0\r\n".to_vec();
        trailers.resize(200, b'a');
        assert_eq!(
            decode_chunked(&trailers, 10).unwrap_err(),
            HttpError::TrailersTooLarge
        );
        // Two chunks whose sum passes the cap: refused at the second size line.
        assert_eq!(
            decode_chunked(b"6\r\nhello!\r\n5\r\n", 10).unwrap_err(),
            HttpError::BodyTooLarge
        );
    }

    /// Feeds `input` to a chunked decoder in two reads cut at `cut`; the body and what was
    /// left of the input, or the error. Checks that an `Ok(None)` consumed everything.
    fn chunked_in_two(
        input: &[u8],
        cut: usize,
        limits: &Limits,
    ) -> Result<(Bytes, Vec<u8>), HttpError> {
        let mut d = BodyDecoder::new(BodyKind::Chunked, limits)?;
        let mut buf = BytesMut::from(&input[..cut]);
        if let Some(body) = d.decode(&mut buf)? {
            buf.extend_from_slice(&input[cut..]);
            return Ok((body, buf.to_vec()));
        }
        assert!(
            buf.is_empty(),
            "cut {cut}: an incomplete body consumes what it was given"
        );
        buf.extend_from_slice(&input[cut..]);
        match d.decode(&mut buf)? {
            Some(body) => Ok((body, buf.to_vec())),
            None => panic!("cut {cut}: the whole input holds a whole body"),
        }
    }

    #[test]
    fn chunked_split_at_every_offset() {
        let limits = Limits {
            max_body_size: 100,
            max_head_size: 64,
        };
        let wire = b"4;name=value\r\nWiki\r\n5 ;x\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\nX: y\r\n\r\nNEXT";
        for cut in 0..=wire.len() {
            let (body, rest) = chunked_in_two(wire, cut, &limits).unwrap();
            assert_eq!(&body[..], b"Wikipedia in\r\n\r\nchunks.", "cut {cut}");
            assert_eq!(rest, b"NEXT", "cut {cut}");
        }
        // One byte at a time.
        let mut d = BodyDecoder::new(BodyKind::Chunked, &limits).unwrap();
        let mut buf = BytesMut::new();
        let mut body = None;
        for &b in wire.iter() {
            buf.extend_from_slice(&[b]);
            if body.is_none() {
                body = d.decode(&mut buf).unwrap();
            }
        }
        assert_eq!(&body.unwrap()[..], b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn chunked_errors_at_every_offset() {
        let limits = Limits {
            max_body_size: 10,
            max_head_size: 64,
        };
        let cases: &[(&[u8], HttpError)] = &[
            // httparse would take an empty size as 0, and a bare LF inside an extension as
            // part of it: both refused here.
            (
                b";x\r\n5\r\nhello\r\n0\r\n\r\n",
                HttpError::InvalidChunkSize,
            ),
            (b" 5\r\nhello\r\n0\r\n\r\n", HttpError::InvalidChunkSize),
            (b"5;a\nb\r\nhello\r\n0\r\n\r\n", HttpError::InvalidChunkSize),
            (b"5;a\0\r\nhello\r\n0\r\n\r\n", HttpError::InvalidChunkSize),
            (b"5;a\rb\r\nhello\r\n0\r\n\r\n", HttpError::InvalidChunkSize),
            (b"5\r\nhello\n0\r\n\r\n", HttpError::InvalidChunkTerminator),
            (b"0\r\nX: y\r\nZ\0: 1\r\n\r\n", HttpError::InvalidNewLine),
            (b"0\r\nX: y\r\n\n", HttpError::InvalidNewLine),
            (
                b"6\r\nhello!\r\n5\r\nworld\r\n0\r\n\r\n",
                HttpError::BodyTooLarge,
            ),
        ];
        for (input, want) in cases {
            for cut in 0..=input.len() {
                assert_eq!(
                    chunked_in_two(input, cut, &limits).unwrap_err(),
                    *want,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn chunked_line_limits_hold_across_reads() {
        let limits = Limits {
            max_body_size: 10,
            max_head_size: 64,
        };
        // A chunk-size line of exactly MAX_CHUNK_LINE bytes (CRLF included) is fine; one byte
        // more is not, wherever the reads cut it.
        let line = |len: usize| {
            let mut l = b"1;".to_vec();
            l.resize(len - 2, b'x');
            l.extend_from_slice(b"\r\n");
            l
        };
        let mut ok = line(MAX_CHUNK_LINE);
        ok.extend_from_slice(b"a\r\n0\r\n\r\n");
        let mut long = line(MAX_CHUNK_LINE + 1);
        long.extend_from_slice(b"a\r\n0\r\n\r\n");
        for cut in [
            0,
            1,
            500,
            MAX_CHUNK_LINE - 2,
            MAX_CHUNK_LINE - 1,
            MAX_CHUNK_LINE,
        ] {
            assert_eq!(&chunked_in_two(&ok, cut, &limits).unwrap().0[..], b"a");
            assert_eq!(
                chunked_in_two(&long, cut, &limits).unwrap_err(),
                HttpError::ChunkLineTooLong,
                "cut {cut}"
            );
        }
        // The trailer section: 64 bytes in all (final CRLF included) is fine, 65 is not,
        // also when a line straddles reads (the part read earlier still counts).
        let trailers = |len: usize| {
            let mut t = b"0\r\nA: ".to_vec();
            t.resize(3 + len - 4, b'a');
            t.extend_from_slice(b"\r\n\r\n");
            t
        };
        let ok = trailers(64);
        let long = trailers(65);
        for cut in 0..=ok.len() {
            assert!(chunked_in_two(&ok, cut, &limits).is_ok(), "cut {cut}");
            assert_eq!(
                chunked_in_two(&long, cut, &limits).unwrap_err(),
                HttpError::TrailersTooLarge,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn responses_are_exact() {
        let mut out = BytesMut::new();
        write_json(&mut out, StatusCode::OK, b"{\"status\":\"ok\"}", true);
        assert_eq!(&out[..], &b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}"[..]);
        let text = text_response(StatusCode::NOT_FOUND, b"nope", false);
        assert_eq!(&text[..], &b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 4\r\n\r\nnope"[..]);
        let err = error_response(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, false);
        assert_eq!(&err[..], &b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 36\r\n\r\n431 Request Header Fields Too Large\n"[..]);
        let mut out = BytesMut::new();
        HttpError::BodyTooLarge.write_response(&mut out);
        assert!(out.starts_with(b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\n"));
        assert_eq!(&json_response(StatusCode::CREATED, b"{}", true)[..], &b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"[..]);
    }

    #[test]
    fn response_writer_rules() {
        let mut out = BytesMut::from(&b"previous"[..]);
        let mut w = ResponseWriter::new(&mut out, StatusCode::OK);
        w.header(
            "Access-Control-Allow-Origin",
            b"https://a.example\r\nSet-Cookie: x=1",
        );
        assert_eq!(
            w.body(CONTENT_TYPE_TEXT, b"x").unwrap_err(),
            HttpError::InvalidResponseHeader
        );
        assert_eq!(&out[..], b"previous", "nothing of the bad response remains");

        let mut out = BytesMut::new();
        let mut w = ResponseWriter::new(&mut out, StatusCode::OK);
        w.header("Bad Name", b"x");
        assert!(w.empty().is_err());
        assert!(out.is_empty());

        let mut out = BytesMut::new();
        let mut w = ResponseWriter::new(&mut out, StatusCode::NO_CONTENT);
        w.header("Access-Control-Max-Age", b"86400");
        w.body(CONTENT_TYPE_JSON, b"ignored").unwrap();
        assert_eq!(
            &out[..],
            &b"HTTP/1.1 204 No Content\r\nAccess-Control-Max-Age: 86400\r\n\r\n"[..]
        );

        let mut out = BytesMut::new();
        let mut w = ResponseWriter::for_method(&mut out, Method::Head, StatusCode::OK);
        w.header_u64("X-Count", 1234567890);
        w.body(CONTENT_TYPE_PROMETHEUS, b"abc").unwrap();
        assert_eq!(&out[..], &b"HTTP/1.1 200 OK\r\nX-Count: 1234567890\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 3\r\n\r\n"[..]);

        let mut out = BytesMut::new();
        let mut w = ResponseWriter::new(&mut out, StatusCode::SWITCHING_PROTOCOLS);
        w.header("Upgrade", b"websocket");
        w.finish_head().unwrap();
        assert_eq!(
            &out[..],
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"[..]
        );

        let mut out = BytesMut::new();
        ResponseWriter::new(&mut out, StatusCode::from_u16(299).unwrap())
            .empty()
            .unwrap();
        assert_eq!(&out[..], &b"HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n"[..]);
        assert_eq!(StatusCode::from_u16(99), None);
        assert_eq!(StatusCode::from_u16(1000), None);
    }

    #[test]
    fn tchar_is_vchar_minus_delimiters() {
        // RFC 9110 §5.6.2, read the other way round: tchar is any VCHAR except the
        // delimiters `DQUOTE and "(),/:;<=>?@[\]{}"`.
        let delimiters = b"\"(),/:;<=>?@[\\]{}";
        for b in 0..=255u8 {
            let vchar = (0x21..=0x7e).contains(&b);
            assert_eq!(is_tchar(b), vchar && !delimiters.contains(&b), "{b:#04x}");
        }
        assert!(is_token(b"Sec-WebSocket-Protocol"));
        assert!(is_token(b"stelar.v1"));
        assert!(!is_token(b""));
        assert!(!is_token(b"a b"));
    }

    /// A `/health`-like answer to `req`, as conn/ writes it.
    fn answer(out: &mut BytesMut, req: &Request<&[u8]>, status: StatusCode, body: &[u8]) {
        let mut w = ResponseWriter::for_request(out, req, status);
        w.keep_alive(req.keep_alive())
            .header("Cache-Control", b"no-store");
        w.body(CONTENT_TYPE_JSON, body).unwrap();
    }

    #[test]
    fn head_gets_the_get_head_without_the_body() {
        let body = br#"{"status":"ok","connections":3}"#;
        let get = parse_ok(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n");
        let head = parse_ok(b"HEAD /health HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(head.method(), Method::Head);
        let (mut to_get, mut to_head) = (BytesMut::new(), BytesMut::new());
        answer(&mut to_get, &get, StatusCode::OK, body);
        answer(&mut to_head, &head, StatusCode::OK, body);
        // RFC 9110 §9.3.2: the same status line and fields, Content-Length of the GET body
        // included; no content.
        assert_eq!(&to_get[..to_head.len()], &to_head[..]);
        assert_eq!(&to_get[to_head.len()..], body);
        assert!(to_head.ends_with(b"Content-Length: 31\r\n\r\n"));

        // Two HEAD answers on one keep-alive connection: the client reads two whole
        // responses and nothing in between.
        let mut wire = BytesMut::new();
        answer(&mut wire, &head, StatusCode::OK, body);
        let first = wire.len();
        answer(&mut wire, &head, StatusCode::NOT_FOUND, b"{}");
        let r = parse_response(&wire, &Limits::default()).unwrap().unwrap();
        assert_eq!((r.status(), r.head_len()), (StatusCode::OK, first));
        let r = parse_response(&wire[first..], &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.header("content-length"), Some(&b"2"[..]));
        assert_eq!(r.head_len(), wire.len() - first);

        // Empty and content-less answers are the same for HEAD and GET.
        for status in [
            StatusCode::OK,
            StatusCode::NO_CONTENT,
            StatusCode::NOT_MODIFIED,
        ] {
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            ResponseWriter::for_method(&mut a, Method::Get, status)
                .empty()
                .unwrap();
            ResponseWriter::for_method(&mut b, Method::Head, status)
                .empty()
                .unwrap();
            assert_eq!(a, b);
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            ResponseWriter::for_method(&mut a, Method::Get, status)
                .body(CONTENT_TYPE_TEXT, b"x")
                .unwrap();
            ResponseWriter::for_method(&mut b, Method::Head, status)
                .body(CONTENT_TYPE_TEXT, b"x")
                .unwrap();
            assert_eq!(a.len() - b.len(), usize::from(status.allows_body()));
        }
        // A refused header still truncates the whole answer.
        let mut out = BytesMut::from(&b"before"[..]);
        let mut w = ResponseWriter::for_request(&mut out, &head, StatusCode::OK);
        w.header("X", b"a\nb");
        assert!(w.body(CONTENT_TYPE_JSON, body).is_err());
        assert_eq!(&out[..], b"before");
        // `new` answers as for GET.
        let mut out = BytesMut::new();
        ResponseWriter::new(&mut out, StatusCode::OK)
            .body(CONTENT_TYPE_TEXT, b"x")
            .unwrap();
        assert!(out.ends_with(b"\r\n\r\nx"));
    }

    #[test]
    fn error_bodies_for_every_status() {
        for code in 100..=999 {
            let status = StatusCode::from_u16(code).unwrap();
            let mut out = BytesMut::new();
            write_error(&mut out, status, false);
            let r = parse_response(&out, &Limits::default()).unwrap().unwrap();
            assert_eq!(r.status(), status);
            let body = &out[r.head_len()..];
            if status.allows_body() {
                assert_eq!(body, format!("{code} {}\n", status.reason()).as_bytes());
                assert_eq!(
                    r.header("content-length"),
                    Some(body.len().to_string().as_bytes())
                );
            } else {
                assert!(body.is_empty());
            }
        }
    }

    #[test]
    fn put_decimal_edges() {
        for n in [0u64, 7, 10, 99, 100, 65535, u64::MAX] {
            let mut out = BytesMut::new();
            put_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }

    #[test]
    fn every_error_has_a_status_and_label() {
        use HttpError::*;
        let all = [
            HeadTooLarge,
            UriTooLong,
            InvalidRequestLine,
            UnsupportedVersion,
            InvalidVersion,
            InvalidHeaderName,
            InvalidHeaderValue,
            InvalidNewLine,
            InvalidStatusLine,
            MissingHost,
            DuplicateHost,
            InvalidContentLength,
            ConflictingContentLength,
            ContentLengthWithTransferEncoding,
            TransferEncodingInHttp10,
            ChunkedNotFinal,
            InvalidTransferEncoding,
            UnsupportedTransferCoding,
            BodyTooLarge,
            InvalidChunkSize,
            ChunkLineTooLong,
            InvalidChunkTerminator,
            TrailersTooLarge,
            InvalidPercentEncoding,
            PathNotUtf8,
            InvalidResponseHeader,
        ];
        let mut labels: Vec<&str> = all.iter().map(|e| e.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len(), "labels are distinct");
        for e in all {
            let s = e.status().as_u16();
            assert!((400..600).contains(&s), "{e:?}");
            assert!(!e.status().reason().is_empty(), "{e:?}");
        }
    }

    // Captured from Python `websockets` 17.4 (server role) answering a deflate offer: the head
    // is followed by a compressed text frame in the same read.
    const WEBSOCKETS_101: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nDate: Wed, 25 Nov 2026 13:19:25 GMT\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12; client_max_window_bits=12\r\nSec-WebSocket-Protocol: chat\r\nServer: Python/3.11 websockets/17.4\r\n\r\n\xc1\x04\xca\xc8\x04\x00";

    #[test]
    fn response_heads() {
        let limits = Limits::default();
        let r = parse_response(WEBSOCKETS_101, &limits).unwrap().unwrap();
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(r.reason(), b"Switching Protocols");
        assert_eq!(r.version(), Version::Http11);
        assert_eq!(r.header("sec-websocket-protocol"), Some(&b"chat"[..]));
        assert_eq!(&WEBSOCKETS_101[r.head_len()..], b"\xc1\x04\xca\xc8\x04\x00");
        for cut in 0..r.head_len() {
            assert!(
                parse_response(&WEBSOCKETS_101[..cut], &limits)
                    .unwrap()
                    .is_none(),
                "cut {cut}"
            );
        }
        assert_eq!(
            parse_response(b"HTTP/1.1 abc OK\r\n\r\n", &limits).unwrap_err(),
            HttpError::InvalidStatusLine
        );
        assert_eq!(
            parse_response(b"HTTP/2.0 200 OK\r\n\r\n", &limits).unwrap_err(),
            HttpError::UnsupportedVersion
        );
        assert_eq!(
            parse_response(b"SSH-2.0-OpenSSH\r\n", &limits).unwrap_err(),
            HttpError::InvalidStatusLine
        );
        // A reason phrase with obs-text: httparse reports it as "" (not a slice of the head).
        let r = parse_response(b"HTTP/1.1 200 \xffOK\r\nX: 1\r\n\r\n", &limits)
            .unwrap()
            .unwrap();
        assert_eq!(r.reason(), b"");
        assert_eq!(r.header("x"), Some(&b"1"[..]));
        assert_eq!(
            parse_response(b"HTTP/1.1 099 Low\r\n\r\n", &limits).unwrap_err(),
            HttpError::InvalidStatusLine
        );
        let small = Limits {
            max_head_size: 16,
            ..limits
        };
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nX: yyyy", &small).unwrap_err(),
            HttpError::HeadTooLarge
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let limits = Limits { max_head_size: 256, max_body_size: 128 };
            if let Ok(Some(r)) = parse_request(&data, &limits) {
                prop_assert!(r.head_len() <= 256);
                let _ = (r.path(), r.path_decoded(), r.query_pairs().count(), r.keep_alive());
                let mut buf = BytesMut::from(&data[r.head_len()..]);
                if let Ok(mut d) = BodyDecoder::new(r.body_kind(), &limits) {
                    if let Ok(Some(body)) = d.decode(&mut buf) {
                        prop_assert!(body.len() <= 128);
                    }
                }
            }
            let _ = parse_response(&data, &limits);
            let _ = QueryPairs::new(&String::from_utf8_lossy(&data)).count();
        }

        #[test]
        fn arbitrary_chunked_bodies_never_panic_nor_exceed_cap(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let limits = Limits { max_body_size: 64, ..Limits::default() };
            let mut d = BodyDecoder::new(BodyKind::Chunked, &limits).unwrap();
            let mut buf = BytesMut::from(&data[..]);
            if let Ok(Some(body)) = d.decode(&mut buf) {
                prop_assert!(body.len() <= 64);
            }
        }

        #[test]
        fn chunked_round_trip_any_split(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
            split in any::<proptest::sample::Index>(),
        ) {
            let mut wire = Vec::new();
            let mut want = Vec::new();
            for c in &chunks {
                wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
                want.extend_from_slice(c);
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let at = split.index(wire.len() + 1);
            let mut d = BodyDecoder::new(BodyKind::Chunked, &Limits::default()).unwrap();
            let mut buf = BytesMut::from(&wire[..at]);
            let first = d.decode(&mut buf).unwrap();
            let body = match first {
                Some(b) => b,
                None => {
                    prop_assert!(buf.is_empty(), "everything fed is consumed");
                    buf.extend_from_slice(&wire[at..]);
                    d.decode(&mut buf).unwrap().unwrap()
                }
            };
            prop_assert_eq!(&body[..], &want[..]);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn decoders_agree_with_the_obvious_version(
            input in proptest::collection::vec(
                prop_oneof![Just(b'%'), Just(b'+'), Just(b'a'), Just(b'F'), Just(b'0'), Just(b'g'), any::<u8>()],
                0..24,
            ),
            plus_as_space in any::<bool>(),
        ) {
            let strict = percent_decode(&input, plus_as_space).ok();
            let want = reference_decode(&input, plus_as_space, true);
            prop_assert_eq!(strict.as_deref(), want.as_deref());
            let text = String::from_utf8_lossy(&input);
            let lenient = reference_decode(text.as_bytes(), true, false).unwrap();
            prop_assert_eq!(form_decode(&text), String::from_utf8_lossy(&lenient));
        }

        #[test]
        fn query_round_trip(pairs in proptest::collection::vec(("[a-z]{1,8}", "\\PC{0,12}"), 0..5)) {
            let mut q = String::new();
            for (k, v) in &pairs {
                if !q.is_empty() { q.push('&'); }
                q.push_str(k);
                q.push('=');
                for b in v.bytes() {
                    if b.is_ascii_alphanumeric() { q.push(b as char) }
                    else if b == b' ' { q.push('+') }
                    else { q.push_str(&format!("%{b:02X}")) }
                }
            }
            let got: Vec<(String, String)> = QueryPairs::new(&q).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            let want: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
