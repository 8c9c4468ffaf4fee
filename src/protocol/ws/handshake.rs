//! The WebSocket opening handshake (RFC 6455 §4) in both roles, subprotocol selection
//! (§4.2.2, §11.3.4) and permessage-deflate parameter negotiation (RFC 7692 §5, §7.1).
//!
//! Server role: [`validate_request`] checks a request head parsed by `protocol::http` against
//! §4.2.1 and computes `Sec-WebSocket-Accept`; [`accept`] also picks a subprotocol, negotiates
//! permessage-deflate and writes the exact `101 Switching Protocols` into the caller's buffer;
//! [`accept_bytes`] does both from raw bytes. Every fault is a [`HandshakeError`] variant with
//! the HTTP status to answer (`426` + `Sec-WebSocket-Version: 13` for a version we do not
//! speak, a precise `400` otherwise) and a counter label.
//!
//! Client role (load generator, tests): [`ClientRequest::write`] builds the upgrade request
//! from caller-supplied key bytes (no RNG here) and returns a [`ClientHandshake`], whose
//! [`ClientHandshake::handle_response`] verifies the server's answer from raw bytes
//! (`Ok(None)` = need more).
//!
//! Both roles end with a [`Negotiated`]: the subprotocol, the [`DeflateParams`] handed to the
//! frame codec (`ws/codec.rs`, `ws/deflate.rs`), and how many bytes the HTTP head took. Bytes
//! after that belong to the frame codec, which may already have frames in the same read.
//!
//! Not here: HTTP parsing itself (`protocol::http`), routing by path and the origin *decision*
//! (`conn/` and the app: [`origin_allowed`] only does the byte comparison of PROTOCOL.md §1.1
//! step 2), compression itself (`ws/deflate.rs`), timeouts (`conn/`).
//!
//! The accept value uses RFC 6455's GUID `258EAFA5-E914-47DA-95CA-C5AB0DC85B11`, not stelar's
//! wrong one (PROTOCOL.md §10 Q0): stelar's Node client ignores the header, every other
//! client checks it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{BufMut, BytesMut};

use crate::protocol::http::{
    self, parse_request, parse_response, BodyKind, HttpError, Limits, Method, Request,
    ResponseWriter, StatusCode, Version,
};

/// RFC 6455 §1.3: the GUID appended to the key before hashing.
pub const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version RFC 6455 defines (§4.1: "The value of this header field MUST be
/// 13").
pub const WEBSOCKET_VERSION: &[u8] = b"13";

/// The extension header stelar's Node client sends when its `compression` option is on
/// (PROTOCOL.md §8). Its inflater cannot read standard permessage-deflate (§10 Q1).
pub const STELAR_NODE_DEFLATE_OFFER: &[u8] =
    b"permessage-deflate; client_no_context_takeover; server_no_context_takeover";

const PERMESSAGE_DEFLATE: &[u8] = b"permessage-deflate";
const SERVER_NO_CONTEXT_TAKEOVER: &[u8] = b"server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &[u8] = b"client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &[u8] = b"server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &[u8] = b"client_max_window_bits";

/// Largest LZ77 window, as a base-2 logarithm (32 KiB), the value when none was negotiated.
pub const MAX_WINDOW_BITS: u8 = 15;
/// Smallest window RFC 7692 allows.
pub const MIN_WINDOW_BITS: u8 = 8;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` value (RFC 6455 §4.2.2 step 5.4): base64 of
/// the SHA-1 of the key *as sent* (not decoded) followed by [`WEBSOCKET_GUID`].
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID);
    let digest = sha.digest().bytes();
    let mut out = [0u8; 28];
    // 20 bytes encode to exactly 28 base64 characters, so the slice is always large enough.
    let _ = STANDARD.encode_slice(digest, &mut out);
    out
}

/// The permessage-deflate parameters both ends agreed on.
///
/// Outbound compression on a server (server → client) uses the `server_*` fields; inbound
/// decompression on a server uses the `client_*` fields. A client does the opposite. See
/// [`DeflateParams::server_to_client`] and [`DeflateParams::client_to_server`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeflateParams {
    /// The server resets its compressor after every message (RFC 7692 §7.1.1.1). Lets the
    /// server compress a fan-out message once and send the same bytes to everyone.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message (§7.1.1.2), so the server's
    /// inflater need keep no window between messages.
    pub client_no_context_takeover: bool,
    /// The server's compressor must not refer back further than `2^bits` bytes (8..=15).
    pub server_max_window_bits: u8,
    /// The client's compressor will not refer back further than `2^bits` bytes (8..=15).
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    /// The parameters of a bare `permessage-deflate` agreement: context takeover on both
    /// sides, 32 KiB windows.
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

/// One direction's deflate settings, as the compressor and inflater for that direction need
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeflateDirection {
    /// Reset the LZ77 window after each message.
    pub no_context_takeover: bool,
    /// Base-2 log of the largest match distance the compressor may use (8..=15).
    pub max_window_bits: u8,
}

impl DeflateParams {
    /// Messages the server sends: the server's compressor, the client's inflater.
    pub fn server_to_client(&self) -> DeflateDirection {
        DeflateDirection {
            no_context_takeover: self.server_no_context_takeover,
            max_window_bits: self.server_max_window_bits,
        }
    }

    /// Messages the client sends: the client's compressor, the server's inflater.
    pub fn client_to_server(&self) -> DeflateDirection {
        DeflateDirection {
            no_context_takeover: self.client_no_context_takeover,
            max_window_bits: self.client_max_window_bits,
        }
    }
}

/// Server policy for permessage-deflate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Accept permessage-deflate offers at all (DESIGN.md: negotiated when a client offers it).
    pub enabled: bool,
    /// Always answer `server_no_context_takeover` (the product default), so one compressed
    /// fan-out message serves every subscriber. When false it is still answered whenever the
    /// client asks for it, as RFC 7692 §7.1.1.1 requires.
    pub server_no_context_takeover: bool,
    /// Always answer `client_no_context_takeover`, asking clients to reset their compressor
    /// per message so the server's inflater keeps no window between messages. When false it is
    /// still echoed when the client offered it (the client already promised it).
    pub client_no_context_takeover: bool,
    /// Accept offers with `server_max_window_bits` < 15. miniz_oxide always keeps a 32 KiB
    /// window; `ws/deflate.rs` honours a smaller limit with a restricted strategy that never
    /// emits a longer match distance (at a cost in ratio). When false such offers are declined.
    pub accept_server_max_window_bits: bool,
    /// When the client offers `client_max_window_bits`, ask it to use at most this many bits
    /// (8..=15; values outside are clamped). `None`: don't ask (our inflater handles any window).
    pub client_max_window_bits: Option<u8>,
    /// PROTOCOL.md §10 Q1: decline an offer that is exactly [`STELAR_NODE_DEFLATE_OFFER`] on a
    /// request without `Origin` (stelar's Node client, whose inflater is broken; declining makes
    /// it fall back to uncompressed). Browsers always send `Origin`.
    pub decline_stelar_node_offer: bool,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            server_no_context_takeover: true,
            client_no_context_takeover: false,
            accept_server_max_window_bits: true,
            client_max_window_bits: None,
            decline_stelar_node_offer: true,
        }
    }
}

/// Server handshake configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerConfig {
    /// Subprotocols the server speaks, most preferred first. The first one the client also
    /// offered is selected; none offered in common means no `Sec-WebSocket-Protocol` at all.
    pub subprotocols: Vec<String>,
    pub deflate: DeflateConfig,
}

/// What a completed handshake agreed on (either role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated<'a> {
    /// The selected subprotocol (borrowed from the server config or the client's offer list).
    pub subprotocol: Option<&'a str>,
    /// `Some` when permessage-deflate is in use.
    pub deflate: Option<DeflateParams>,
    /// Bytes of the HTTP head; anything after them in the same buffer is WebSocket frames.
    pub consumed: usize,
}

/// A fault in a permessage-deflate negotiation *response* (client role). Server-side, a bad
/// offer is never an error: RFC 7692 §5 has the server decline it and try the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionFault {
    /// A parameter RFC 7692 does not define.
    #[error("unknown parameter")]
    UnknownParam,
    /// The same parameter twice.
    #[error("duplicate parameter")]
    DuplicateParam,
    /// A window-bits value that is not 8..=15 without leading zeros, or a value on a flag.
    #[error("invalid parameter value")]
    InvalidValue,
    /// `server_max_window_bits` / `client_max_window_bits` without a value in a response.
    #[error("parameter needs a value")]
    MissingValue,
    /// `client_max_window_bits` in the response although the offer did not have it.
    #[error("client_max_window_bits was not offered")]
    ClientWindowNotOffered,
    /// A window larger than the one the offer allowed.
    #[error("window bits larger than offered")]
    WindowLargerThanOffered,
    /// The offer had `server_no_context_takeover` but the response dropped it.
    #[error("server_no_context_takeover missing from the response")]
    MissingServerNoContextTakeover,
    /// permessage-deflate accepted twice.
    #[error("extension accepted twice")]
    Repeated,
    /// An unbalanced quote or an empty element.
    #[error("malformed extension header")]
    Malformed,
}

impl ExtensionFault {
    pub fn label(self) -> &'static str {
        match self {
            ExtensionFault::UnknownParam => "ws_ext_unknown_param",
            ExtensionFault::DuplicateParam => "ws_ext_duplicate_param",
            ExtensionFault::InvalidValue => "ws_ext_invalid_value",
            ExtensionFault::MissingValue => "ws_ext_missing_value",
            ExtensionFault::ClientWindowNotOffered => "ws_ext_client_window_not_offered",
            ExtensionFault::WindowLargerThanOffered => "ws_ext_window_larger_than_offered",
            ExtensionFault::MissingServerNoContextTakeover => {
                "ws_ext_missing_server_no_context_takeover"
            }
            ExtensionFault::Repeated => "ws_ext_repeated",
            ExtensionFault::Malformed => "ws_ext_malformed",
        }
    }
}

/// Everything that can go wrong in the opening handshake, in either role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The HTTP head itself is malformed or over a limit.
    #[error(transparent)]
    Http(#[from] HttpError),

    // ----- server role: the request is not a valid upgrade (RFC 6455 §4.2.1) -----
    /// Method other than GET.
    #[error("upgrade request method is not GET")]
    MethodNotGet,
    /// HTTP/1.0 upgrade request.
    #[error("upgrade request is not HTTP/1.1 or later")]
    HttpVersionTooOld,
    /// No `Upgrade` header.
    #[error("missing Upgrade header")]
    MissingUpgrade,
    /// `Upgrade` present but without the `websocket` token.
    #[error("Upgrade header does not name websocket")]
    UpgradeNotWebSocket,
    /// `Connection` lacks the `upgrade` token.
    #[error("Connection header lacks the upgrade token")]
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Version`.
    #[error("missing Sec-WebSocket-Version")]
    MissingVersion,
    /// `Sec-WebSocket-Version` other than exactly one `13`.
    #[error("unsupported Sec-WebSocket-Version")]
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key`. PROTOCOL.md Q9 suggests closing without a response for
    /// stelar compatibility; that choice is `conn/`'s.
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    /// More than one `Sec-WebSocket-Key`.
    #[error("more than one Sec-WebSocket-Key")]
    DuplicateKey,
    /// `Sec-WebSocket-Key` is not base64 of exactly 16 bytes.
    #[error("Sec-WebSocket-Key is not base64 of 16 bytes")]
    InvalidKey,
    /// The upgrade request announces a body; what follows the head must be frames.
    #[error("upgrade request has a body")]
    UnexpectedBody,

    // ----- client role: building the request (API misuse) -----
    /// The request target is empty, does not start with `/`, or has spaces/controls.
    #[error("invalid request target")]
    InvalidTarget,
    /// The host is empty or has spaces/controls.
    #[error("invalid host")]
    InvalidHost,
    /// An extra header name or value would break the request.
    #[error("invalid extra header")]
    InvalidExtraHeader,
    /// A subprotocol name that is not a token.
    #[error("invalid subprotocol name")]
    InvalidSubprotocolName,
    /// Window bits outside 8..=15 in the deflate offer.
    #[error("invalid window bits in the deflate offer")]
    InvalidWindowBits,

    // ----- client role: the server's response (RFC 6455 §4.1, RFC 7692 §5) -----
    /// Status other than 101.
    #[error("server answered with a status other than 101")]
    UnexpectedStatus(u16),
    /// The response's `Upgrade` is missing or not `websocket`.
    #[error("response Upgrade header is not websocket")]
    ResponseNotWebSocket,
    /// The response's `Connection` lacks `upgrade`.
    #[error("response Connection header lacks upgrade")]
    ResponseConnectionNotUpgrade,
    /// No `Sec-WebSocket-Accept` in the response.
    #[error("missing Sec-WebSocket-Accept")]
    MissingAccept,
    /// `Sec-WebSocket-Accept` is not the value for our key (e.g. stelar's wrong GUID).
    #[error("Sec-WebSocket-Accept does not match the key")]
    AcceptMismatch,
    /// The response uses an extension the request did not offer.
    #[error("response uses an extension that was not offered")]
    ExtensionNotOffered,
    /// The permessage-deflate response is invalid for what was offered.
    #[error("invalid permessage-deflate response: {0}")]
    InvalidDeflateResponse(ExtensionFault),
    /// The response selects a subprotocol the request did not offer.
    #[error("response selects a subprotocol that was not offered")]
    SubprotocolNotOffered,
    /// The response names more than one subprotocol.
    #[error("response selects more than one subprotocol")]
    MultipleSubprotocols,
}

impl HandshakeError {
    /// The HTTP status to answer with (server role). `None` for client-role faults: a client
    /// fails the connection by closing it (RFC 6455 §4.1), it sends no response.
    pub fn status(self) -> Option<StatusCode> {
        use HandshakeError::*;
        match self {
            Http(e) => Some(e.status()),
            // RFC 6455 §4.2.2: "If this version does not match a version understood by the
            // server, the server MUST abort the WebSocket handshake ... and instead send an
            // appropriate HTTP error code (such as 426 Upgrade Required) and a
            // |Sec-WebSocket-Version| header field indicating the version(s) the server is
            // capable of understanding."
            MissingVersion | UnsupportedVersion => Some(StatusCode::UPGRADE_REQUIRED),
            // §4.2.1: "the server MUST stop processing the client's handshake and return an
            // HTTP response with an appropriate error code (such as 400 Bad Request)."
            MethodNotGet
            | HttpVersionTooOld
            | MissingUpgrade
            | UpgradeNotWebSocket
            | MissingConnectionUpgrade
            | MissingKey
            | DuplicateKey
            | InvalidKey
            | UnexpectedBody => Some(StatusCode::BAD_REQUEST),
            InvalidTarget
            | InvalidHost
            | InvalidExtraHeader
            | InvalidSubprotocolName
            | InvalidWindowBits
            | UnexpectedStatus(_)
            | ResponseNotWebSocket
            | ResponseConnectionNotUpgrade
            | MissingAccept
            | AcceptMismatch
            | ExtensionNotOffered
            | InvalidDeflateResponse(_)
            | SubprotocolNotOffered
            | MultipleSubprotocols => None,
        }
    }

    /// Short static label for the handshake failure counter.
    pub fn label(self) -> &'static str {
        use HandshakeError::*;
        match self {
            Http(e) => e.label(),
            MethodNotGet => "ws_method_not_get",
            HttpVersionTooOld => "ws_http_version_too_old",
            MissingUpgrade => "ws_missing_upgrade",
            UpgradeNotWebSocket => "ws_upgrade_not_websocket",
            MissingConnectionUpgrade => "ws_missing_connection_upgrade",
            MissingVersion => "ws_missing_version",
            UnsupportedVersion => "ws_unsupported_version",
            MissingKey => "ws_missing_key",
            DuplicateKey => "ws_duplicate_key",
            InvalidKey => "ws_invalid_key",
            UnexpectedBody => "ws_unexpected_body",
            InvalidTarget => "ws_client_invalid_target",
            InvalidHost => "ws_client_invalid_host",
            InvalidExtraHeader => "ws_client_invalid_extra_header",
            InvalidSubprotocolName => "ws_client_invalid_subprotocol",
            InvalidWindowBits => "ws_client_invalid_window_bits",
            UnexpectedStatus(_) => "ws_response_status",
            ResponseNotWebSocket => "ws_response_not_websocket",
            ResponseConnectionNotUpgrade => "ws_response_connection_not_upgrade",
            MissingAccept => "ws_response_missing_accept",
            AcceptMismatch => "ws_response_accept_mismatch",
            ExtensionNotOffered => "ws_response_extension_not_offered",
            InvalidDeflateResponse(f) => f.label(),
            SubprotocolNotOffered => "ws_response_subprotocol_not_offered",
            MultipleSubprotocols => "ws_response_multiple_subprotocols",
        }
    }

    /// Writes the HTTP error response for a server-role fault (with `Connection: close`; a
    /// `426` also carries `Sec-WebSocket-Version: 13`). Returns false, writing nothing, for
    /// client-role faults.
    pub fn write_response(self, out: &mut BytesMut) -> bool {
        let Some(status) = self.status() else {
            return false;
        };
        if status == StatusCode::UPGRADE_REQUIRED {
            let body = b"426 Upgrade Required\n";
            let mut w = ResponseWriter::new(out, status);
            w.header("Sec-WebSocket-Version", WEBSOCKET_VERSION)
                .header("Upgrade", b"websocket")
                .keep_alive(false);
            // Constant, valid header names and values: this cannot fail.
            let _ = w.body(http::CONTENT_TYPE_TEXT, body);
        } else {
            http::write_error(out, status, false);
        }
        true
    }
}

// ---------------------------------------------------------------------------------------
// Server role
// ---------------------------------------------------------------------------------------

/// Checks that `req` is a valid WebSocket upgrade (RFC 6455 §4.2.1) and returns the
/// `Sec-WebSocket-Accept` value for it. Checks run in this order, so a request with several
/// faults reports the first: method, HTTP version, `Upgrade`, `Connection`,
/// `Sec-WebSocket-Version`, `Sec-WebSocket-Key`, body.
pub fn validate_request<B: AsRef<[u8]>>(req: &Request<B>) -> Result<[u8; 28], HandshakeError> {
    // §4.2.1 1: "An HTTP/1.1 or higher GET request, including a "Request-URI"".
    if req.method() != Method::Get {
        return Err(HandshakeError::MethodNotGet);
    }
    if req.version() < Version::Http11 {
        return Err(HandshakeError::HttpVersionTooOld);
    }
    // (§4.2.1 2, the Host header, is enforced by http.rs for every HTTP/1.1 request.)
    let h = req.headers();
    // §4.2.1 3: "An |Upgrade| header field containing the value "websocket", treated as an
    // ASCII case-insensitive value."
    if h.get("upgrade").is_none() {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !h.has_token("upgrade", "websocket") {
        return Err(HandshakeError::UpgradeNotWebSocket);
    }
    // §4.2.1 4: "A |Connection| header field that includes the token "Upgrade", treated as
    // an ASCII case-insensitive value." (Firefox sends `keep-alive, Upgrade`.)
    if !h.has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    // §4.2.1 6: "A |Sec-WebSocket-Version| header field, with a value of 13." More than one
    // line is answered like any other version we do not speak: 426 with the one we do.
    let mut versions = h.get_all("sec-websocket-version");
    match (versions.next(), versions.next()) {
        (None, _) => return Err(HandshakeError::MissingVersion),
        (Some(v), None) if v == WEBSOCKET_VERSION => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    // §4.2.1 5: "A |Sec-WebSocket-Key| header field with a base64-encoded value that, when
    // decoded, is 16 bytes in length." §11.3.1: it "MUST NOT appear more than once".
    let mut keys = h.get_all("sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (None, _) => return Err(HandshakeError::MissingKey),
        (Some(k), None) => k,
        _ => return Err(HandshakeError::DuplicateKey),
    };
    if !is_valid_key(key) {
        return Err(HandshakeError::InvalidKey);
    }
    // Whatever follows the head is WebSocket frames; a declared body would make the first
    // bytes ambiguous.
    match req.body_kind() {
        BodyKind::Empty | BodyKind::Length(0) => {}
        BodyKind::Length(_) | BodyKind::Chunked => return Err(HandshakeError::UnexpectedBody),
    }
    Ok(accept_key(key))
}

/// Strict base64 (canonical padding) of exactly 16 bytes, i.e. 24 characters.
fn is_valid_key(key: &[u8]) -> bool {
    let mut decoded = [0u8; 18];
    key.len() == 24 && matches!(STANDARD.decode_slice(key, &mut decoded), Ok(16))
}

/// Validates `req` as an upgrade, negotiates subprotocol and permessage-deflate under
/// `config`, and appends the `101 Switching Protocols` response to `out`: `Upgrade`,
/// `Connection`, `Sec-WebSocket-Accept`, then `Sec-WebSocket-Protocol` and
/// `Sec-WebSocket-Extensions` when agreed, then `extra_headers` (e.g.
/// `Access-Control-Allow-Origin` when an origin allow-list matched, PROTOCOL.md §1.1 step 6).
///
/// On error nothing is written to `out`; [`HandshakeError::write_response`] writes the answer.
pub fn accept<'c, B: AsRef<[u8]>>(
    req: &Request<B>,
    config: &'c ServerConfig,
    extra_headers: &[(&str, &[u8])],
    out: &mut BytesMut,
) -> Result<Negotiated<'c>, HandshakeError> {
    let accept = validate_request(req)?;
    let subprotocol = select_subprotocol(req, &config.subprotocols);
    let deflate = negotiate_deflate(req, &config.deflate);

    let mut w = ResponseWriter::new(out, StatusCode::SWITCHING_PROTOCOLS);
    w.header("Upgrade", b"websocket")
        .header("Connection", b"Upgrade")
        .header("Sec-WebSocket-Accept", &accept);
    if let Some(p) = subprotocol {
        // §4.2.2: "the server ... selects one or none of the acceptable protocols and echoes
        // that value in its handshake".
        w.header("Sec-WebSocket-Protocol", p.as_bytes());
    }
    if let Some((_, ref answer)) = deflate {
        w.header("Sec-WebSocket-Extensions", answer.as_bytes());
    }
    for (name, value) in extra_headers {
        w.header(name, value);
    }
    w.finish_head()?;
    Ok(Negotiated {
        subprotocol,
        deflate: deflate.map(|(params, _)| params),
        consumed: req.head_len(),
    })
}

/// [`parse_request`] then [`accept`]: `Ok(None)` while the head is incomplete.
pub fn accept_bytes<'c>(
    buf: &[u8],
    limits: &Limits,
    config: &'c ServerConfig,
    extra_headers: &[(&str, &[u8])],
    out: &mut BytesMut,
) -> Result<Option<Negotiated<'c>>, HandshakeError> {
    match parse_request(buf, limits)? {
        Some(req) => accept(&req, config, extra_headers, out).map(Some),
        None => Ok(None),
    }
}

/// The first of the server's `supported` subprotocols (in the server's preference order) that
/// the client listed in any `Sec-WebSocket-Protocol` line. Names compare exactly.
pub fn select_subprotocol<'c, B: AsRef<[u8]>>(
    req: &Request<B>,
    supported: &'c [String],
) -> Option<&'c str> {
    let offered = req.headers();
    supported
        .iter()
        .find(|p| {
            offered
                .list("sec-websocket-protocol")
                .any(|o| o == p.as_bytes())
        })
        .map(String::as_str)
}

/// Whether the request's `Origin` equals one entry of `allowed` byte for byte (PROTOCOL.md
/// §1.1 step 2: a missing Origin counts as the empty string). The decision what to do with a
/// mismatch (stelar answers `403 Forbidden`) belongs to the caller.
pub fn origin_allowed<B: AsRef<[u8]>, S: AsRef<[u8]>>(req: &Request<B>, allowed: &[S]) -> bool {
    // Not a hidden default: PROTOCOL.md §1.1 step 2 compares a missing Origin as "".
    let origin: &[u8] = req.header("origin").unwrap_or(b"");
    allowed.iter().any(|a| a.as_ref() == origin)
}

/// Picks the first acceptable permessage-deflate offer (client preference order across all
/// `Sec-WebSocket-Extensions` lines) and returns the agreed parameters with the response value.
fn negotiate_deflate<B: AsRef<[u8]>>(
    req: &Request<B>,
    cfg: &DeflateConfig,
) -> Option<(DeflateParams, HeaderValue)> {
    if !cfg.enabled {
        return None;
    }
    let headers = req.headers();
    if cfg.decline_stelar_node_offer && headers.get("origin").is_none() {
        let mut lines = headers.get_all("sec-websocket-extensions");
        if let (Some(only), None) = (lines.next(), lines.next()) {
            if only == STELAR_NODE_DEFLATE_OFFER {
                return None;
            }
        }
    }
    for line in headers.get_all("sec-websocket-extensions") {
        for element in split_quoted(line, b',') {
            let (name, parts) = name_and_params(element);
            if !name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
                continue;
            }
            // RFC 7692 §5: "A server MUST decline an extension negotiation offer for this
            // extension if any of the following conditions are met: The negotiation offer
            // contains an extension parameter not defined for use in an offer. ... with an
            // invalid value. ... multiple extension parameters with the same name. The server
            // doesn't support the offered configuration." Declining one offer means trying
            // the next.
            let Ok(offer) = PmdParams::parse(parts) else {
                continue;
            };
            if let Some(answer) = answer_offer(&offer, cfg) {
                return Some(answer);
            }
        }
    }
    None
}

/// The server's answer to one valid offer, or `None` to decline it.
fn answer_offer(offer: &PmdParams, cfg: &DeflateConfig) -> Option<(DeflateParams, HeaderValue)> {
    let mut params = DeflateParams::default();
    let mut value = HeaderValue::new();
    value.push(PERMESSAGE_DEFLATE);

    // §7.1.1.1: "A server accepting an extension negotiation offer with this parameter MUST
    // include the "server_no_context_takeover" extension parameter in the extension
    // negotiation response"; it "MAY include" it when not offered.
    if offer.server_no_context_takeover || cfg.server_no_context_takeover {
        params.server_no_context_takeover = true;
        value.push(b"; server_no_context_takeover");
    }
    // §7.1.1.2: "A server MAY include the "client_no_context_takeover" extension parameter in
    // an extension negotiation response." Echoed when offered (the client promised it anyway,
    // and it lets our inflater drop its window between messages).
    if offer.client_no_context_takeover || cfg.client_no_context_takeover {
        params.client_no_context_takeover = true;
        value.push(b"; client_no_context_takeover");
    }
    // §7.1.2.1: "A server accepts an extension negotiation offer with this parameter by
    // including the "server_max_window_bits" extension parameter in the extension negotiation
    // response to send back to the client with the same or smaller value as the offer." "A
    // server declines an extension negotiation offer with this parameter if the server doesn't
    // support it." We never add it unasked: Firefox fails the connection on an unrequested one.
    if let Some(bits) = offer.server_max_window_bits {
        if bits < MAX_WINDOW_BITS && !cfg.accept_server_max_window_bits {
            return None;
        }
        params.server_max_window_bits = bits;
        value.push(b"; server_max_window_bits=");
        value.push_bits(bits);
    }
    // §7.1.2.2: "If a received extension negotiation offer doesn't have the
    // "client_max_window_bits" extension parameter, the corresponding extension negotiation
    // response to the offer MUST NOT include the "client_max_window_bits" extension
    // parameter." With it, the server may answer a value no larger than the offered one.
    match (offer.client_max_window_bits, cfg.client_max_window_bits) {
        (WindowBitsOffer::Absent, _) => {}
        (offered, Some(wanted)) => {
            let limit = match offered {
                WindowBitsOffer::Max(v) => v,
                _ => MAX_WINDOW_BITS,
            };
            let bits = wanted.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS).min(limit);
            params.client_max_window_bits = bits;
            value.push(b"; client_max_window_bits=");
            value.push_bits(bits);
        }
        // Not answered: the client still keeps to the window it offered, if any.
        (WindowBitsOffer::Max(v), None) => params.client_max_window_bits = v,
        (WindowBitsOffer::Any, None) => {}
    }
    Some((params, value))
}

// ---------------------------------------------------------------------------------------
// Extension header grammar (RFC 6455 §9.1, RFC 7692 §5, §7)
// ---------------------------------------------------------------------------------------

/// Splits at `sep` outside quoted strings (a `\` inside quotes escapes the next byte). An
/// unbalanced quote runs to the end of the input; the parameter parser then rejects it.
fn split_quoted(input: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(input);
    std::iter::from_fn(move || {
        let (piece, tail) = split_once_quoted(rest?, sep);
        rest = tail;
        Some(piece)
    })
}

/// The part of `input` before the first `sep` outside quoted strings, and what follows that
/// `sep` (`None` when there is none).
fn split_once_quoted(input: &[u8], sep: u8) -> (&[u8], Option<&[u8]>) {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, &b) in input.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if in_quotes {
            match b {
                b'\\' => escaped = true,
                b'"' => in_quotes = false,
                _ => {}
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == sep {
            let (piece, tail) = input.split_at(i);
            // tail starts with `sep`.
            return (piece, Some(&tail[1..]));
        }
    }
    (input, None)
}

/// One element of an extension list: its name (trimmed) and its `;`-separated parameters.
fn name_and_params(element: &[u8]) -> (&[u8], impl Iterator<Item = &[u8]>) {
    let (name, params) = split_once_quoted(element, b';');
    let params = params.into_iter().flat_map(|p| split_quoted(p, b';'));
    (http::trim_ows(name), params)
}

/// How the offer mentions `client_max_window_bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WindowBitsOffer {
    /// Not mentioned: the peer cannot take a window limit.
    #[default]
    Absent,
    /// Mentioned without a value: the peer supports a limit, any is fine.
    Any,
    /// Mentioned with a value: the peer will not use a larger window.
    Max(u8),
}

/// The permessage-deflate parameters of one offer or response, syntax-checked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct PmdParams {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    client_max_window_bits: WindowBitsOffer,
    /// `server_max_window_bits` appeared without a value (invalid in offers and responses).
    server_max_window_bits_without_value: bool,
}

/// A parameter value: absent, a valid window size, or something else.
enum ParamValue {
    None,
    Bits(u8),
    Invalid,
}

impl PmdParams {
    /// Parses the `;`-separated parameters after the extension name. Unknown, duplicated,
    /// malformed or out-of-range parameters are errors; which of them applies to offers vs
    /// responses is decided by the callers.
    fn parse<'a>(params: impl Iterator<Item = &'a [u8]>) -> Result<Self, ExtensionFault> {
        let mut out = PmdParams::default();
        let mut seen = [false; 4];
        for raw in params {
            let (name, value) = match raw.iter().position(|&b| b == b'=') {
                Some(eq) => {
                    let (name, value) = raw.split_at(eq);
                    // value starts with the `=`.
                    (
                        http::trim_ows(name),
                        parse_value(http::trim_ows(&value[1..])),
                    )
                }
                None => (http::trim_ows(raw), ParamValue::None),
            };
            if name.is_empty() {
                return Err(ExtensionFault::Malformed);
            }
            let slot = if name.eq_ignore_ascii_case(SERVER_NO_CONTEXT_TAKEOVER) {
                0
            } else if name.eq_ignore_ascii_case(CLIENT_NO_CONTEXT_TAKEOVER) {
                1
            } else if name.eq_ignore_ascii_case(SERVER_MAX_WINDOW_BITS) {
                2
            } else if name.eq_ignore_ascii_case(CLIENT_MAX_WINDOW_BITS) {
                3
            } else {
                return Err(ExtensionFault::UnknownParam);
            };
            // slot is 0..=3, set just above.
            if std::mem::replace(&mut seen[slot], true) {
                return Err(ExtensionFault::DuplicateParam);
            }
            match (slot, value) {
                (_, ParamValue::Invalid) => return Err(ExtensionFault::InvalidValue),
                // §7.1.1: the context-takeover parameters have no value.
                (0 | 1, ParamValue::Bits(_)) => return Err(ExtensionFault::InvalidValue),
                (0, ParamValue::None) => out.server_no_context_takeover = true,
                (1, ParamValue::None) => out.client_no_context_takeover = true,
                (2, ParamValue::Bits(b)) => out.server_max_window_bits = Some(b),
                (2, ParamValue::None) => out.server_max_window_bits_without_value = true,
                (3, ParamValue::Bits(b)) => out.client_max_window_bits = WindowBitsOffer::Max(b),
                (3, ParamValue::None) => out.client_max_window_bits = WindowBitsOffer::Any,
                _ => return Err(ExtensionFault::Malformed),
            }
        }
        // §7.1.2.1: server_max_window_bits "has a decimal integer value ... between 8 to 15"
        // in an offer too; without one the offer is invalid.
        if out.server_max_window_bits_without_value {
            return Err(ExtensionFault::MissingValue);
        }
        Ok(out)
    }
}

/// RFC 7692 §7.1.2: window bits are "a decimal integer value without leading zeroes between 8
/// to 15, inclusive"; §7: a quoted-string value must, unquoted, conform to the token ABNF.
fn parse_value(v: &[u8]) -> ParamValue {
    let inner = match v {
        [b'"', inner @ .., b'"'] => {
            // Unescape into a small buffer: any valid value is at most two characters.
            let mut buf = [0u8; 2];
            let mut len = 0usize;
            let mut escaped = false;
            for &b in inner {
                if !escaped && b == b'\\' {
                    escaped = true;
                    continue;
                }
                if !escaped && b == b'"' {
                    return ParamValue::Invalid;
                }
                escaped = false;
                // A third character makes the value invalid whatever it is.
                match buf.get_mut(len) {
                    Some(slot) => *slot = b,
                    None => return ParamValue::Invalid,
                }
                len += 1;
            }
            if escaped {
                return ParamValue::Invalid;
            }
            // len <= buf.len(): it only grows after a write into buf[len].
            return bits_of(&buf[..len]);
        }
        [b'"', ..] | [.., b'"'] => return ParamValue::Invalid,
        other => other,
    };
    bits_of(inner)
}

fn bits_of(v: &[u8]) -> ParamValue {
    match v {
        [d @ b'8'..=b'9'] => ParamValue::Bits(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => ParamValue::Bits(10 + d - b'0'),
        _ => ParamValue::Invalid,
    }
}

/// A small stack buffer for the one extension header value we write; the longest possible
/// value (all four parameters) is 128 bytes.
#[derive(Clone)]
struct HeaderValue {
    buf: [u8; 160],
    /// Bytes used. Invariant: `len <= buf.len()`.
    len: usize,
}

impl HeaderValue {
    fn new() -> Self {
        Self {
            buf: [0; 160],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        // Every caller pushes constant fragments whose total (at most 128 bytes, the test
        // `longest_extension_values_fit` writes it) is below the capacity. Indexing: a value
        // cut short would be a wrong header, so overflowing is a bug that must panic.
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }

    fn push_bits(&mut self, bits: u8) {
        if bits >= 10 {
            self.push(&[b'1', b'0' + bits - 10]);
        } else {
            self.push(&[b'0' + bits]);
        }
    }

    fn as_bytes(&self) -> &[u8] {
        // len <= buf.len(), the invariant push keeps.
        &self.buf[..self.len]
    }
}

// ---------------------------------------------------------------------------------------
// Client role
// ---------------------------------------------------------------------------------------

/// The permessage-deflate offer a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeflateOffer {
    /// Ask the server to reset its compressor per message.
    pub server_no_context_takeover: bool,
    /// Promise to reset our compressor per message.
    pub client_no_context_takeover: bool,
    /// Limit the server's window (8..=15).
    pub server_max_window_bits: Option<u8>,
    /// Whether (and how) to let the server limit our window.
    pub client_max_window_bits: WindowBitsOffer,
}

impl Default for DeflateOffer {
    /// What browsers send: `permessage-deflate; client_max_window_bits`.
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: WindowBitsOffer::Any,
        }
    }
}

impl DeflateOffer {
    fn header_value(&self) -> Result<HeaderValue, HandshakeError> {
        let valid = |b: u8| (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&b);
        let mut v = HeaderValue::new();
        v.push(PERMESSAGE_DEFLATE);
        if self.client_no_context_takeover {
            v.push(b"; client_no_context_takeover");
        }
        if self.server_no_context_takeover {
            v.push(b"; server_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            if !valid(bits) {
                return Err(HandshakeError::InvalidWindowBits);
            }
            v.push(b"; server_max_window_bits=");
            v.push_bits(bits);
        }
        match self.client_max_window_bits {
            WindowBitsOffer::Absent => {}
            WindowBitsOffer::Any => v.push(b"; client_max_window_bits"),
            WindowBitsOffer::Max(bits) => {
                if !valid(bits) {
                    return Err(HandshakeError::InvalidWindowBits);
                }
                v.push(b"; client_max_window_bits=");
                v.push_bits(bits);
            }
        }
        Ok(v)
    }

    /// Checks the server's permessage-deflate answer against this offer (RFC 7692 §5: "A
    /// client MUST _Fail the WebSocket Connection_ if the peer server accepted an extension
    /// negotiation offer for this extension with an extension negotiation response meeting any
    /// of the following conditions: ...") and derives the agreed parameters.
    fn check_response(&self, resp: &PmdParams) -> Result<DeflateParams, ExtensionFault> {
        // §7.1.1.1: the server MUST include server_no_context_takeover when it was offered.
        if self.server_no_context_takeover && !resp.server_no_context_takeover {
            return Err(ExtensionFault::MissingServerNoContextTakeover);
        }
        // §7.1.2.1: the response value is "the same or smaller value as the offer"; a server
        // may also limit its window unasked (Python `websockets` does), which only helps us.
        let server_bits = match (resp.server_max_window_bits, self.server_max_window_bits) {
            (Some(got), Some(offered)) if got > offered => {
                return Err(ExtensionFault::WindowLargerThanOffered)
            }
            (Some(got), _) => got,
            (None, Some(offered)) => offered,
            (None, None) => MAX_WINDOW_BITS,
        };
        let client_bits = match (resp.client_max_window_bits, self.client_max_window_bits) {
            (WindowBitsOffer::Absent, WindowBitsOffer::Max(offered)) => offered,
            (WindowBitsOffer::Absent, _) => MAX_WINDOW_BITS,
            // §7.1.2.2: the response MUST NOT include it when the offer did not.
            (_, WindowBitsOffer::Absent) => return Err(ExtensionFault::ClientWindowNotOffered),
            // In a response the parameter always carries a value.
            (WindowBitsOffer::Any, _) => return Err(ExtensionFault::MissingValue),
            (WindowBitsOffer::Max(got), WindowBitsOffer::Max(offered)) if got > offered => {
                return Err(ExtensionFault::WindowLargerThanOffered)
            }
            (WindowBitsOffer::Max(got), _) => got,
        };
        Ok(DeflateParams {
            server_no_context_takeover: resp.server_no_context_takeover,
            // We promised it in the offer, so we keep to it whatever the answer says.
            client_no_context_takeover: resp.client_no_context_takeover
                || self.client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        })
    }
}

/// What a client needs to build its upgrade request.
#[derive(Debug, Clone, Copy)]
pub struct ClientRequest<'a> {
    /// `Host` value, e.g. `127.0.0.1:3000`.
    pub host: &'a str,
    /// Request target: `/path?query`.
    pub target: &'a str,
    /// The 16 nonce bytes for `Sec-WebSocket-Key`, from the caller's RNG (RFC 6455 §4.1: "MUST
    /// be selected randomly for each connection").
    pub key: [u8; 16],
    /// Subprotocols to offer, in preference order.
    pub subprotocols: &'a [&'a str],
    /// A permessage-deflate offer, if compression is wanted.
    pub deflate: Option<DeflateOffer>,
    /// More header fields, written after the WebSocket ones (e.g. `Origin`, `Authorization`).
    pub extra_headers: &'a [(&'a str, &'a [u8])],
    /// Limits for parsing the response head.
    pub limits: Limits,
}

impl<'a> ClientRequest<'a> {
    /// A request with no subprotocols, no compression and no extra headers.
    pub fn new(host: &'a str, target: &'a str, key: [u8; 16]) -> Self {
        Self {
            host,
            target,
            key,
            subprotocols: &[],
            deflate: None,
            extra_headers: &[],
            limits: Limits::default(),
        }
    }

    /// Appends the upgrade request to `out` and returns the state that verifies the answer.
    /// On error nothing is written.
    pub fn write(&self, out: &mut BytesMut) -> Result<ClientHandshake<'a>, HandshakeError> {
        let printable = |s: &[u8]| !s.is_empty() && s.iter().all(|&b| b > b' ' && b != 0x7f);
        if !self.target.starts_with('/') || !printable(self.target.as_bytes()) {
            return Err(HandshakeError::InvalidTarget);
        }
        if !printable(self.host.as_bytes()) {
            return Err(HandshakeError::InvalidHost);
        }
        for p in self.subprotocols {
            if !http::is_token(p.as_bytes()) {
                return Err(HandshakeError::InvalidSubprotocolName);
            }
        }
        for (name, value) in self.extra_headers {
            if !http::is_token(name.as_bytes()) || !http::valid_header_value(value) {
                return Err(HandshakeError::InvalidExtraHeader);
            }
        }
        let extensions = self.deflate.map(|d| d.header_value()).transpose()?;

        let mut key = [0u8; 24];
        // 16 bytes encode to exactly 24 base64 characters.
        let _ = STANDARD.encode_slice(self.key, &mut key);

        out.reserve(256);
        out.put_slice(b"GET ");
        out.put_slice(self.target.as_bytes());
        out.put_slice(b" HTTP/1.1\r\nHost: ");
        out.put_slice(self.host.as_bytes());
        out.put_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
        out.put_slice(&key);
        out.put_slice(b"\r\nSec-WebSocket-Version: 13\r\n");
        if let Some((first, rest)) = self.subprotocols.split_first() {
            out.put_slice(b"Sec-WebSocket-Protocol: ");
            out.put_slice(first.as_bytes());
            for p in rest {
                out.put_slice(b", ");
                out.put_slice(p.as_bytes());
            }
            out.put_slice(b"\r\n");
        }
        if let Some(ext) = &extensions {
            out.put_slice(b"Sec-WebSocket-Extensions: ");
            out.put_slice(ext.as_bytes());
            out.put_slice(b"\r\n");
        }
        for (name, value) in self.extra_headers {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value);
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");

        Ok(ClientHandshake {
            accept: accept_key(&key),
            subprotocols: self.subprotocols,
            deflate: self.deflate,
            limits: self.limits,
        })
    }
}

/// A client waiting for the server's answer to its upgrade request.
#[derive(Debug, Clone)]
pub struct ClientHandshake<'a> {
    /// The `Sec-WebSocket-Accept` value the server must send back.
    accept: [u8; 28],
    subprotocols: &'a [&'a str],
    deflate: Option<DeflateOffer>,
    limits: Limits,
}

impl<'a> ClientHandshake<'a> {
    /// The `Sec-WebSocket-Accept` value expected from the server.
    pub fn expected_accept(&self) -> &[u8; 28] {
        &self.accept
    }

    /// Verifies the response at the start of `buf` (RFC 6455 §4.1, "the client MUST validate
    /// the server's response as follows"). `Ok(None)`: the head is not complete yet. Frames
    /// may follow the head in `buf`; [`Negotiated::consumed`] says where they start.
    pub fn handle_response(&self, buf: &[u8]) -> Result<Option<Negotiated<'a>>, HandshakeError> {
        let Some(resp) = parse_response(buf, &self.limits)? else {
            return Ok(None);
        };
        // "1. If the status code received from the server is not 101, the client handles the
        // response per HTTP [RFC2616] procedures."
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(HandshakeError::UnexpectedStatus(resp.status().as_u16()));
        }
        let h = resp.headers();
        // "2. If the response lacks an |Upgrade| header field or the |Upgrade| header field
        // contains a value that is not an ASCII case-insensitive match for the value
        // "websocket", the client MUST _Fail the WebSocket Connection_."
        let mut upgrades = h.get_all("upgrade");
        match (upgrades.next(), upgrades.next()) {
            (Some(v), None) if v.eq_ignore_ascii_case(b"websocket") => {}
            _ => return Err(HandshakeError::ResponseNotWebSocket),
        }
        // "3. If the response lacks a |Connection| header field or the |Connection| header
        // field doesn't contain a token that is an ASCII case-insensitive match for the value
        // "Upgrade", the client MUST _Fail the WebSocket Connection_."
        if !h.has_token("connection", "upgrade") {
            return Err(HandshakeError::ResponseConnectionNotUpgrade);
        }
        // "4. If the response lacks a |Sec-WebSocket-Accept| header field or the
        // |Sec-WebSocket-Accept| contains a value other than the base64-encoded SHA-1 of the
        // concatenation of the |Sec-WebSocket-Key| (as a string, not base64-decoded) with the
        // string "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" ..., the client MUST _Fail the
        // WebSocket Connection_."
        let mut accepts = h.get_all("sec-websocket-accept");
        match (accepts.next(), accepts.next()) {
            (None, _) => return Err(HandshakeError::MissingAccept),
            (Some(v), None) if v == self.accept.as_slice() => {}
            _ => return Err(HandshakeError::AcceptMismatch),
        }
        let deflate = self.check_extensions(h)?;
        let subprotocol = self.check_subprotocol(h)?;
        Ok(Some(Negotiated {
            subprotocol,
            deflate,
            consumed: resp.head_len(),
        }))
    }

    /// "5. If the response includes a |Sec-WebSocket-Extensions| header field and this header
    /// field indicates the use of an extension that was not present in the client's handshake
    /// ..., the client MUST _Fail the WebSocket Connection_."
    fn check_extensions(
        &self,
        h: http::Headers<'_>,
    ) -> Result<Option<DeflateParams>, HandshakeError> {
        let mut agreed = None;
        for line in h.get_all("sec-websocket-extensions") {
            for element in split_quoted(line, b',') {
                if http::trim_ows(element).is_empty() {
                    continue;
                }
                let (name, parts) = name_and_params(element);
                let Some(offer) = self.deflate else {
                    return Err(HandshakeError::ExtensionNotOffered);
                };
                if !name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
                    return Err(HandshakeError::ExtensionNotOffered);
                }
                if agreed.is_some() {
                    return Err(HandshakeError::InvalidDeflateResponse(
                        ExtensionFault::Repeated,
                    ));
                }
                let resp =
                    PmdParams::parse(parts).map_err(HandshakeError::InvalidDeflateResponse)?;
                let params = offer
                    .check_response(&resp)
                    .map_err(HandshakeError::InvalidDeflateResponse)?;
                agreed = Some(params);
            }
        }
        Ok(agreed)
    }

    /// "6. If the response includes a |Sec-WebSocket-Protocol| header field and this header
    /// field indicates the use of a subprotocol that was not present in the client's handshake
    /// ..., the client MUST _Fail the WebSocket Connection_."
    fn check_subprotocol(&self, h: http::Headers<'_>) -> Result<Option<&'a str>, HandshakeError> {
        let mut lines = h.get_all("sec-websocket-protocol");
        let value = match (lines.next(), lines.next()) {
            (None, _) => return Ok(None),
            (Some(v), None) => v,
            _ => return Err(HandshakeError::MultipleSubprotocols),
        };
        if value.contains(&b',') {
            return Err(HandshakeError::MultipleSubprotocols);
        }
        self.subprotocols
            .iter()
            .find(|p| p.as_bytes() == value)
            .copied()
            .map(Some)
            .ok_or(HandshakeError::SubprotocolNotOffered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RFC_KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";
    /// base64-decodes to RFC_KEY.
    const RFC_NONCE: [u8; 16] = *b"the sample nonce";
    const RFC_ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    /// RFC 6455 §1.2 / §1.3 opening handshake.
    const RFC_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    /// Chrome 126 (header order as Chromium sends it; key from the RFC example).
    const CHROME: &[u8] = b"GET /chat?token=abc HTTP/1.1\r\nHost: localhost:3000\r\nConnection: Upgrade\r\nPragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\nOrigin: http://localhost:3000\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

    /// Firefox 128: `Connection: keep-alive, Upgrade` and a bare deflate offer.
    const FIREFOX: &[u8] = b"GET /chat HTTP/1.1\r\nHost: localhost:3000\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nSec-WebSocket-Version: 13\r\nOrigin: http://localhost:3000\r\nSec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: keep-alive, Upgrade\r\nSec-Fetch-Dest: empty\r\nSec-Fetch-Mode: websocket\r\nSec-Fetch-Site: same-origin\r\nPragma: no-cache\r\nCache-Control: no-cache\r\nUpgrade: websocket\r\n\r\n";

    /// Captured: Python `websockets` 17.4 client.
    const PYTHON_WEBSOCKETS: &[u8] = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:18556\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: hhAWl+BTWKku1gM2VGSbaQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nSec-WebSocket-Protocol: chat\r\nUser-Agent: Python/3.11 websockets/17.4\r\n\r\n";

    /// Captured: Node 20 `ws` 8 client with perMessageDeflate and an Authorization header.
    const NODE_WS: &[u8] = b"GET /room/lobby?x=1 HTTP/1.1\r\nAuthorization: Bearer abc\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: 89Bkdb4N4cqcinizo5aZBQ==\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nHost: 127.0.0.1:18556\r\n\r\n";

    /// Captured: Node 20 built-in (undici) WebSocket, lower-case names.
    const NODE_UNDICI: &[u8] = b"GET /chat?token=a%20b HTTP/1.1\r\nhost: 127.0.0.1:18555\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-key: YHj42EjYyGlyrkAm/zLAyg==\r\nsec-websocket-version: 13\r\nsec-websocket-protocol: stelar.v1, chat\r\nsec-websocket-extensions: permessage-deflate; client_max_window_bits\r\naccept: */*\r\naccept-language: *\r\nsec-fetch-mode: websocket\r\nuser-agent: node\r\npragma: no-cache\r\ncache-control: no-cache\r\naccept-encoding: gzip, deflate\r\n\r\n";

    /// Autobahn|Testsuite 0.8 fuzzing client (case 13.x offers several configurations).
    const AUTOBAHN: &[u8] = b"GET / HTTP/1.1\r\nUser-Agent: AutobahnTestSuite/0.8.2-0.10.9\r\nHost: 127.0.0.1:9001\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nPragma: no-cache\r\nCache-Control: no-cache\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; client_max_window_bits=9, permessage-deflate; client_max_window_bits\r\nSec-WebSocket-Version: 13\r\n\r\n";

    /// stelar's Node client (PROTOCOL.md §8 order): user headers, then the deflate offer when
    /// `compression` is on, then Host; no Origin.
    const STELAR_NODE: &[u8] = b"GET /?room=lobby HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer t0k3n\r\nSec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\nHost: localhost:3000\r\n\r\n";

    fn server(
        buf: &[u8],
        config: &ServerConfig,
    ) -> (
        Result<Option<Negotiated<'static>>, HandshakeError>,
        BytesMut,
    ) {
        let mut out = BytesMut::new();
        // Leaked (test-only) so the borrowed subprotocol in the result may outlive the call.
        let config: &'static ServerConfig = Box::leak(Box::new(config.clone()));
        let r = accept_bytes(buf, &Limits::default(), config, &[], &mut out);
        (r, out)
    }

    fn server_ok(buf: &[u8], config: &ServerConfig) -> (Negotiated<'static>, String) {
        match server(buf, config) {
            (Ok(Some(n)), out) => (n, String::from_utf8(out.to_vec()).unwrap()),
            (other, _) => panic!("expected a 101, got {other:?}"),
        }
    }

    fn server_err(buf: &[u8]) -> HandshakeError {
        match server(buf, &ServerConfig::default()) {
            (Err(e), out) => {
                assert!(out.is_empty(), "nothing written on error");
                e
            }
            (other, _) => panic!("expected an error, got {other:?}"),
        }
    }

    fn ext_line(response: &str) -> Option<&str> {
        response
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
    }

    #[test]
    fn longest_extension_values_fit() {
        // Every parameter at its longest, in both roles: HeaderValue::push panics rather than
        // cut a value short, so this is the capacity check.
        let offer = PmdParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(10),
            client_max_window_bits: WindowBitsOffer::Max(15),
            server_max_window_bits_without_value: false,
        };
        let cfg = DeflateConfig {
            client_max_window_bits: Some(12),
            ..DeflateConfig::default()
        };
        let (_, answer) = answer_offer(&offer, &cfg).unwrap();
        assert_eq!(
            answer.as_bytes(),
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
        );
        let client = DeflateOffer {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(15),
            client_max_window_bits: WindowBitsOffer::Max(10),
        };
        let value = client.header_value().unwrap();
        assert_eq!(
            value.as_bytes(),
            b"permessage-deflate; client_no_context_takeover; server_no_context_takeover; server_max_window_bits=15; client_max_window_bits=10"
        );
        assert!(answer.as_bytes().len() <= 128 && value.as_bytes().len() <= 128);
    }

    #[test]
    fn extension_elements_split_outside_quotes() {
        let (name, params) = name_and_params(b" permessage-deflate ; a=\"x;y\" ;b");
        assert_eq!(name, b"permessage-deflate");
        assert_eq!(
            params.collect::<Vec<_>>(),
            vec![&b" a=\"x;y\" "[..], &b"b"[..]]
        );
        let (name, params) = name_and_params(b"permessage-deflate");
        assert_eq!(name, b"permessage-deflate");
        assert_eq!(params.count(), 0);
        let (name, params) = name_and_params(b"x;");
        assert_eq!(name, b"x");
        assert_eq!(params.collect::<Vec<_>>(), vec![&b""[..]]);
        assert_eq!(
            split_quoted(b"a,\"b,\\\",c\",", b',').collect::<Vec<_>>(),
            vec![&b"a"[..], &b"\"b,\\\",c\""[..], &b""[..]]
        );
    }

    #[test]
    fn client_request_names_are_http_tokens() {
        let names: [(&str, bool); 5] = [
            ("chat", true),
            ("stelar.v1", true),
            ("a~b|c", true),
            ("a b", false),
            ("x(y)", false),
        ];
        for (p, token) in names {
            let protos = [p];
            let req = ClientRequest {
                subprotocols: &protos,
                ..ClientRequest::new("h", "/", RFC_NONCE)
            };
            let got = req.write(&mut BytesMut::new()).map(|_| ());
            let want = if token {
                Ok(())
            } else {
                Err(HandshakeError::InvalidSubprotocolName)
            };
            assert_eq!(got, want, "{p}");
        }
        let extra: [(&str, &[u8]); 1] = [("X-Ok", b"a\rb")];
        let req = ClientRequest {
            extra_headers: &extra,
            ..ClientRequest::new("h", "/", RFC_NONCE)
        };
        assert_eq!(
            req.write(&mut BytesMut::new()).map(|_| ()),
            Err(HandshakeError::InvalidExtraHeader)
        );
    }

    #[test]
    fn rfc_example_accept_value() {
        assert_eq!(&accept_key(RFC_KEY), RFC_ACCEPT);
        // Not stelar's (wrong-GUID) answer, PROTOCOL.md Q0.
        assert_ne!(&accept_key(RFC_KEY), b"nXjBbqiEExax/BTLP7+vy94W9vY=");
    }

    #[test]
    fn rfc_example_exact_response() {
        let config = ServerConfig {
            subprotocols: vec!["chat".into()],
            ..ServerConfig::default()
        };
        let (n, out) = server_ok(RFC_REQUEST, &config);
        assert_eq!(
            out,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        );
        assert_eq!(n.subprotocol, Some("chat"));
        assert_eq!(n.deflate, None);
        assert_eq!(n.consumed, RFC_REQUEST.len());
    }

    #[test]
    fn extra_headers_follow_the_websocket_ones() {
        let req = parse_request(RFC_REQUEST, &Limits::default())
            .unwrap()
            .unwrap();
        assert!(origin_allowed(&req, &["http://example.com"]));
        assert!(!origin_allowed(
            &req,
            &["http://example.com/", "http://EXAMPLE.com"]
        ));
        let config = ServerConfig::default();
        let mut out = BytesMut::new();
        let origin = req.header("origin").unwrap();
        accept(
            &req,
            &config,
            &[("Access-Control-Allow-Origin", origin)],
            &mut out,
        )
        .unwrap();
        assert!(out.ends_with(b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nAccess-Control-Allow-Origin: http://example.com\r\n\r\n"));
        // A header that would inject a line is refused and nothing is written.
        let mut out = BytesMut::new();
        let err = accept(&req, &config, &[("X", b"a\r\nb")], &mut out).unwrap_err();
        assert_eq!(err, HandshakeError::Http(HttpError::InvalidResponseHeader));
        assert!(out.is_empty());
    }

    #[test]
    fn missing_origin_is_the_empty_string() {
        let req = parse_request(PYTHON_WEBSOCKETS, &Limits::default())
            .unwrap()
            .unwrap();
        assert!(!origin_allowed(&req, &["http://example.com"]));
        assert!(origin_allowed(&req, &[""]));
    }

    #[test]
    fn real_clients_are_accepted() {
        let config = ServerConfig {
            subprotocols: vec!["chat".into(), "stelar.v1".into()],
            ..ServerConfig::default()
        };
        let pmd_default = Some(DeflateParams {
            server_no_context_takeover: true,
            ..DeflateParams::default()
        });
        let cases: &[(&[u8], Option<&str>, Option<&str>)] = &[
            (
                CHROME,
                None,
                Some("permessage-deflate; server_no_context_takeover"),
            ),
            (
                FIREFOX,
                None,
                Some("permessage-deflate; server_no_context_takeover"),
            ),
            (
                PYTHON_WEBSOCKETS,
                Some("chat"),
                Some("permessage-deflate; server_no_context_takeover"),
            ),
            (
                NODE_WS,
                None,
                Some("permessage-deflate; server_no_context_takeover"),
            ),
            (
                NODE_UNDICI,
                Some("chat"),
                Some("permessage-deflate; server_no_context_takeover"),
            ),
        ];
        for (req, proto, ext) in cases {
            let (n, out) = server_ok(req, &config);
            assert_eq!(n.subprotocol, *proto, "{out}");
            assert_eq!(ext_line(&out), *ext, "{out}");
            assert_eq!(n.deflate, pmd_default);
            assert_eq!(n.consumed, req.len());
            let key = parse_request(req, &Limits::default())
                .unwrap()
                .unwrap()
                .header("sec-websocket-key")
                .unwrap()
                .to_vec();
            let want = format!(
                "Sec-WebSocket-Accept: {}\r\n",
                std::str::from_utf8(&accept_key(&key)).unwrap()
            );
            assert!(out.contains(&want));
        }
        // Server preference order wins over the client's.
        let (n, _) = server_ok(
            NODE_UNDICI,
            &ServerConfig {
                subprotocols: vec!["stelar.v1".into(), "chat".into()],
                ..ServerConfig::default()
            },
        );
        assert_eq!(n.subprotocol, Some("stelar.v1"));
    }

    #[test]
    fn autobahn_first_offer_wins() {
        let (n, out) = server_ok(AUTOBAHN, &ServerConfig::default());
        assert_eq!(
            ext_line(&out),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        assert_eq!(
            n.deflate,
            Some(DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 15,
                client_max_window_bits: 9,
            })
        );
    }

    #[test]
    fn stelar_node_client_quirk() {
        // No Origin, exact stelar offer: declined, so the client stays uncompressed.
        let (n, out) = server_ok(STELAR_NODE, &ServerConfig::default());
        assert_eq!(n.deflate, None);
        assert_eq!(ext_line(&out), None);
        // Same offer from something that sends Origin (a browser would): accepted.
        let with_origin = String::from_utf8(STELAR_NODE.to_vec()).unwrap().replace(
            "Host: localhost:3000\r\n",
            "Host: localhost:3000\r\nOrigin: http://localhost:3000\r\n",
        );
        let (n, out) = server_ok(with_origin.as_bytes(), &ServerConfig::default());
        assert!(n.deflate.is_some());
        assert_eq!(
            ext_line(&out),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        // With the quirk off: accepted even without Origin.
        let mut config = ServerConfig::default();
        config.deflate.decline_stelar_node_offer = false;
        let (n, _) = server_ok(STELAR_NODE, &config);
        assert!(n.deflate.is_some());
        // A different offer without Origin is not affected.
        let (n, _) = server_ok(PYTHON_WEBSOCKETS, &ServerConfig::default());
        assert!(n.deflate.is_some());
    }

    fn upgrade_with(extra: &str) -> Vec<u8> {
        format!("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").into_bytes()
    }

    #[test]
    fn rejections_each_have_their_status() {
        let base = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
        let without = |name: &str| {
            base.lines()
                .filter(|l| !l.starts_with(name))
                .map(|l| format!("{l}\r\n"))
                .collect::<String>()
        };
        let cases: Vec<(String, HandshakeError, u16)> = vec![
            (
                format!("POST / HTTP/1.1\r\n{base}\r\n"),
                HandshakeError::MethodNotGet,
                400,
            ),
            (
                format!("get / HTTP/1.1\r\n{base}\r\n"),
                HandshakeError::MethodNotGet,
                400,
            ),
            (
                format!("GET / HTTP/1.0\r\n{base}\r\n"),
                HandshakeError::HttpVersionTooOld,
                400,
            ),
            (
                format!("GET / HTTP/1.1\r\n{}\r\n", without("Upgrade")),
                HandshakeError::MissingUpgrade,
                400,
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\n{}Upgrade: h2c\r\n\r\n",
                    without("Upgrade")
                ),
                HandshakeError::UpgradeNotWebSocket,
                400,
            ),
            (
                format!("GET / HTTP/1.1\r\n{}\r\n", without("Connection")),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\n{}Connection: keep-alive\r\n\r\n",
                    without("Connection")
                ),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\n{}Connection: Upgraded\r\n\r\n",
                    without("Connection")
                ),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                format!("GET / HTTP/1.1\r\n{}\r\n", without("Sec-WebSocket-Version")),
                HandshakeError::MissingVersion,
                426,
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\n{}Sec-WebSocket-Version: 8\r\n\r\n",
                    without("Sec-WebSocket-Version")
                ),
                HandshakeError::UnsupportedVersion,
                426,
            ),
            (
                format!("GET / HTTP/1.1\r\n{base}Sec-WebSocket-Version: 13\r\n\r\n"),
                HandshakeError::UnsupportedVersion,
                426,
            ),
            (
                format!("GET / HTTP/1.1\r\n{}\r\n", without("Sec-WebSocket-Key")),
                HandshakeError::MissingKey,
                400,
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\n{base}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                ),
                HandshakeError::DuplicateKey,
                400,
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\n{}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n\r\n",
                    without("Sec-WebSocket-Key")
                ),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\n{}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n\r\n",
                    without("Sec-WebSocket-Key")
                ),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\n{}Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
                    without("Sec-WebSocket-Key")
                ),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\n{}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j!Q==\r\n\r\n",
                    without("Sec-WebSocket-Key")
                ),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                format!("GET / HTTP/1.1\r\n{base}Content-Length: 5\r\n\r\n"),
                HandshakeError::UnexpectedBody,
                400,
            ),
            (
                format!("GET / HTTP/1.1\r\n{base}Transfer-Encoding: chunked\r\n\r\n"),
                HandshakeError::UnexpectedBody,
                400,
            ),
            (
                format!("GET / HTTP/1.1\r\n{}\r\n", without("Host")),
                HandshakeError::Http(HttpError::MissingHost),
                400,
            ),
            (
                format!("GET / HTTP/2.0\r\n{base}\r\n"),
                HandshakeError::Http(HttpError::UnsupportedVersion),
                505,
            ),
        ];
        for (req, want, status) in cases {
            let got = server_err(req.as_bytes());
            assert_eq!(got, want, "{req}");
            assert_eq!(got.status().map(StatusCode::as_u16), Some(status), "{req}");
            let mut out = BytesMut::new();
            assert!(got.write_response(&mut out));
            let text = String::from_utf8(out.to_vec()).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            assert!(text.contains("Connection: close\r\n"), "{text}");
            assert_eq!(
                text.contains("Sec-WebSocket-Version: 13\r\n"),
                status == 426,
                "{text}"
            );
        }
        // Content-Length: 0 is not a body.
        assert!(server(
            &upgrade_with("Content-Length: 0\r\n"),
            &ServerConfig::default()
        )
        .0
        .unwrap()
        .is_some());
        // Case-insensitive tokens in lists.
        assert!(server(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive,UPGRADE\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", &ServerConfig::default()).0.unwrap().is_some());
    }

    #[test]
    fn exact_426_response() {
        let mut out = BytesMut::new();
        HandshakeError::UnsupportedVersion.write_response(&mut out);
        assert_eq!(&out[..], &b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nUpgrade: websocket\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n\r\n426 Upgrade Required\n"[..]);
        assert!(!HandshakeError::AcceptMismatch.write_response(&mut out));
    }

    /// (offer lines, config tweak, expected response value, expected params)
    #[test]
    fn deflate_negotiation_table() {
        let d = DeflateParams::default();
        let snct = DeflateParams {
            server_no_context_takeover: true,
            ..d
        };
        let plain = DeflateConfig {
            server_no_context_takeover: false,
            ..DeflateConfig::default()
        };
        type Case = (
            &'static [&'static str],
            DeflateConfig,
            Option<&'static str>,
            Option<DeflateParams>,
        );
        let cases: Vec<Case> = vec![
            (&["permessage-deflate"], plain.clone(), Some("permessage-deflate"), Some(d)),
            (&["permessage-deflate"], DeflateConfig::default(), Some("permessage-deflate; server_no_context_takeover"), Some(snct)),
            (&["permessage-deflate"], DeflateConfig { enabled: false, ..DeflateConfig::default() }, None, None),
            (&["x-webkit-deflate-frame"], DeflateConfig::default(), None, None),
            (&["x-webkit-deflate-frame, permessage-deflate"], plain.clone(), Some("permessage-deflate"), Some(d)),
            (&["PerMessage-Deflate"], plain.clone(), Some("permessage-deflate"), Some(d)),
            // Offered server_no_context_takeover MUST be echoed even when we don't want it.
            (&["permessage-deflate; server_no_context_takeover"], plain.clone(), Some("permessage-deflate; server_no_context_takeover"), Some(snct)),
            (&["permessage-deflate; client_no_context_takeover"], plain.clone(), Some("permessage-deflate; client_no_context_takeover"), Some(DeflateParams { client_no_context_takeover: true, ..d })),
            (&["permessage-deflate"], DeflateConfig { client_no_context_takeover: true, ..plain.clone() }, Some("permessage-deflate; client_no_context_takeover"), Some(DeflateParams { client_no_context_takeover: true, ..d })),
            (&["permessage-deflate; server_max_window_bits=10"], plain.clone(), Some("permessage-deflate; server_max_window_bits=10"), Some(DeflateParams { server_max_window_bits: 10, ..d })),
            (&["permessage-deflate; server_max_window_bits=\"8\""], plain.clone(), Some("permessage-deflate; server_max_window_bits=8"), Some(DeflateParams { server_max_window_bits: 8, ..d })),
            (&["permessage-deflate; server_max_window_bits=\"1\\5\""], plain.clone(), Some("permessage-deflate; server_max_window_bits=15"), Some(d)),
            (&["permessage-deflate; server_max_window_bits=10, permessage-deflate"], DeflateConfig { accept_server_max_window_bits: false, ..plain.clone() }, Some("permessage-deflate"), Some(d)),
            (&["permessage-deflate; server_max_window_bits=15"], DeflateConfig { accept_server_max_window_bits: false, ..plain.clone() }, Some("permessage-deflate; server_max_window_bits=15"), Some(d)),
            (&["permessage-deflate; client_max_window_bits"], plain.clone(), Some("permessage-deflate"), Some(d)),
            (&["permessage-deflate; client_max_window_bits=12"], plain.clone(), Some("permessage-deflate"), Some(DeflateParams { client_max_window_bits: 12, ..d })),
            (&["permessage-deflate; client_max_window_bits"], DeflateConfig { client_max_window_bits: Some(10), ..plain.clone() }, Some("permessage-deflate; client_max_window_bits=10"), Some(DeflateParams { client_max_window_bits: 10, ..d })),
            (&["permessage-deflate; client_max_window_bits=9"], DeflateConfig { client_max_window_bits: Some(12), ..plain.clone() }, Some("permessage-deflate; client_max_window_bits=9"), Some(DeflateParams { client_max_window_bits: 9, ..d })),
            (&["permessage-deflate; client_max_window_bits=12"], DeflateConfig { client_max_window_bits: Some(3), ..plain.clone() }, Some("permessage-deflate; client_max_window_bits=8"), Some(DeflateParams { client_max_window_bits: 8, ..d })),
            // MUST NOT answer client_max_window_bits when it was not offered.
            (&["permessage-deflate"], DeflateConfig { client_max_window_bits: Some(10), ..plain.clone() }, Some("permessage-deflate"), Some(d)),
            // Everything at once, with odd spacing and case.
            (&["permessage-deflate ;SERVER_NO_CONTEXT_TAKEOVER;\tclient_no_context_takeover ; server_max_window_bits = 9 ; client_max_window_bits=11"], DeflateConfig { client_max_window_bits: Some(15), ..plain.clone() },
                Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=11"),
                Some(DeflateParams { server_no_context_takeover: true, client_no_context_takeover: true, server_max_window_bits: 9, client_max_window_bits: 11 })),
            // Invalid offers are declined, the next one tried.
            (&["permessage-deflate; foo, permessage-deflate"], plain.clone(), Some("permessage-deflate"), Some(d)),
            (&["permessage-deflate; foo"], plain.clone(), None, None),
            (&["permessage-deflate; server_no_context_takeover; server_no_context_takeover"], plain.clone(), None, None),
            (&["permessage-deflate; server_no_context_takeover=1"], plain.clone(), None, None),
            (&["permessage-deflate; client_no_context_takeover=\"\""], plain.clone(), None, None),
            (&["permessage-deflate; server_max_window_bits"], plain.clone(), None, None),
            (&["permessage-deflate; server_max_window_bits=7"], plain.clone(), None, None),
            (&["permessage-deflate; server_max_window_bits=16"], plain.clone(), None, None),
            (&["permessage-deflate; server_max_window_bits=08"], plain.clone(), None, None),
            (&["permessage-deflate; server_max_window_bits=1a"], plain.clone(), None, None),
            (&["permessage-deflate; server_max_window_bits=\"10"], plain.clone(), None, None),
            (&["permessage-deflate; server_max_window_bits=10\""], plain.clone(), None, None),
            (&["permessage-deflate; server_max_window_bits=\"1\"0\""], plain.clone(), None, None),
            (&["permessage-deflate; server_max_window_bits="], plain.clone(), None, None),
            (&["permessage-deflate; client_max_window_bits=0"], plain.clone(), None, None),
            (&["permessage-deflate; client_max_window_bits=15; client_max_window_bits=15"], plain.clone(), None, None),
            (&["permessage-deflate; =1"], plain.clone(), None, None),
            (&["permessage-deflate;;"], plain.clone(), None, None),
            // A quoted comma does not split offers; the offer is invalid (bad value), none left.
            (&["permessage-deflate; server_max_window_bits=\"10,permessage-deflate\""], plain.clone(), None, None),
            // Offers across repeated header lines keep their order.
            (&["permessage-deflate; bogus", "permessage-deflate; server_max_window_bits=12"], plain.clone(), Some("permessage-deflate; server_max_window_bits=12"), Some(DeflateParams { server_max_window_bits: 12, ..d })),
            (&["", " , ,permessage-deflate"], plain.clone(), Some("permessage-deflate"), Some(d)),
        ];
        for (lines, deflate, want_value, want_params) in cases {
            let mut extra = String::new();
            for l in lines {
                extra.push_str(&format!("Sec-WebSocket-Extensions: {l}\r\n"));
            }
            let req = upgrade_with(&extra);
            let config = ServerConfig {
                subprotocols: vec![],
                deflate,
            };
            let (n, out) = server_ok(&req, &config);
            assert_eq!(ext_line(&out), want_value, "{lines:?}");
            assert_eq!(n.deflate, want_params, "{lines:?}");
        }
    }

    // ----- client role -----

    fn client_request(
        deflate: Option<DeflateOffer>,
        protos: &'static [&'static str],
    ) -> (ClientHandshake<'static>, BytesMut) {
        let mut req = ClientRequest::new("server.example.com", "/chat", RFC_NONCE);
        req.deflate = deflate;
        req.subprotocols = protos;
        let mut out = BytesMut::new();
        let hs = req.write(&mut out).unwrap();
        (hs, out)
    }

    #[test]
    fn client_request_bytes() {
        let mut req = ClientRequest::new("server.example.com", "/chat?room=a%20b", RFC_NONCE);
        req.subprotocols = &["chat", "superchat"];
        req.deflate = Some(DeflateOffer::default());
        req.extra_headers = &[("Origin", b"http://example.com")];
        let mut out = BytesMut::new();
        let hs = req.write(&mut out).unwrap();
        assert_eq!(&out[..], &b"GET /chat?room=a%20b HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nOrigin: http://example.com\r\n\r\n"[..]);
        assert_eq!(hs.expected_accept(), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        // The server side parses our request back.
        let parsed = parse_request(&out, &Limits::default()).unwrap().unwrap();
        assert_eq!(validate_request(&parsed).unwrap(), *hs.expected_accept());
    }

    #[test]
    fn client_offer_strings() {
        let full = DeflateOffer {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(10),
            client_max_window_bits: WindowBitsOffer::Max(9),
        };
        assert_eq!(full.header_value().unwrap().as_bytes(), b"permessage-deflate; client_no_context_takeover; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9");
        // stelar's Node client offer is what this produces for its options.
        let stelar = DeflateOffer {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: None,
            client_max_window_bits: WindowBitsOffer::Absent,
        };
        assert_eq!(
            stelar.header_value().unwrap().as_bytes(),
            STELAR_NODE_DEFLATE_OFFER
        );
    }

    #[test]
    fn client_input_validation() {
        let mut out = BytesMut::new();
        let cases: Vec<(ClientRequest<'static>, HandshakeError)> = vec![
            (
                ClientRequest::new("h", "chat", RFC_NONCE),
                HandshakeError::InvalidTarget,
            ),
            (
                ClientRequest::new("h", "/a b", RFC_NONCE),
                HandshakeError::InvalidTarget,
            ),
            (
                ClientRequest::new("h", "", RFC_NONCE),
                HandshakeError::InvalidTarget,
            ),
            (
                ClientRequest::new("", "/", RFC_NONCE),
                HandshakeError::InvalidHost,
            ),
            (
                ClientRequest::new("h\r\nX: y", "/", RFC_NONCE),
                HandshakeError::InvalidHost,
            ),
            (
                ClientRequest {
                    subprotocols: &["a b"],
                    ..ClientRequest::new("h", "/", RFC_NONCE)
                },
                HandshakeError::InvalidSubprotocolName,
            ),
            (
                ClientRequest {
                    subprotocols: &[""],
                    ..ClientRequest::new("h", "/", RFC_NONCE)
                },
                HandshakeError::InvalidSubprotocolName,
            ),
            (
                ClientRequest {
                    extra_headers: &[("X", b"a\nb")],
                    ..ClientRequest::new("h", "/", RFC_NONCE)
                },
                HandshakeError::InvalidExtraHeader,
            ),
            (
                ClientRequest {
                    extra_headers: &[("X:", b"a")],
                    ..ClientRequest::new("h", "/", RFC_NONCE)
                },
                HandshakeError::InvalidExtraHeader,
            ),
            (
                ClientRequest {
                    deflate: Some(DeflateOffer {
                        server_max_window_bits: Some(7),
                        ..DeflateOffer::default()
                    }),
                    ..ClientRequest::new("h", "/", RFC_NONCE)
                },
                HandshakeError::InvalidWindowBits,
            ),
            (
                ClientRequest {
                    deflate: Some(DeflateOffer {
                        client_max_window_bits: WindowBitsOffer::Max(16),
                        ..DeflateOffer::default()
                    }),
                    ..ClientRequest::new("h", "/", RFC_NONCE)
                },
                HandshakeError::InvalidWindowBits,
            ),
        ];
        for (req, want) in cases {
            assert_eq!(req.write(&mut out).unwrap_err(), want, "{req:?}");
            assert!(out.is_empty());
            assert_eq!(want.status(), None);
        }
    }

    /// Captured: Python `websockets` 17.4 server (adds server_max_window_bits unasked, and a
    /// Date header) and Node `ws` 8 server, answering our RFC-key request with a deflate offer
    /// `permessage-deflate; client_max_window_bits` and protocols `chat, superchat`; each
    /// followed by a compressed "hi" text frame in the same read.
    const WEBSOCKETS_101: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nDate: Wed, 25 Nov 2026 13:19:25 GMT\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12; client_max_window_bits=12\r\nSec-WebSocket-Protocol: chat\r\nServer: Python/3.11 websockets/17.4\r\n\r\n\xc1\x04\xca\xc8\x04\x00";
    const NODE_WS_101: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n\xc1\x04\xca\xc8\x04\x00";
    /// What stelar itself answers (PROTOCOL.md §1.1 step 6 with the wrong GUID, Q0).
    const STELAR_101: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: nXjBbqiEExax/BTLP7+vy94W9vY=\r\n\r\n";

    #[test]
    fn client_accepts_real_servers() {
        let (hs, _) = client_request(Some(DeflateOffer::default()), &["chat", "superchat"]);
        let n = hs.handle_response(WEBSOCKETS_101).unwrap().unwrap();
        assert_eq!(n.subprotocol, Some("chat"));
        assert_eq!(
            n.deflate,
            Some(DeflateParams {
                server_max_window_bits: 12,
                client_max_window_bits: 12,
                ..DeflateParams::default()
            })
        );
        assert_eq!(&WEBSOCKETS_101[n.consumed..], b"\xc1\x04\xca\xc8\x04\x00");
        let n = hs.handle_response(NODE_WS_101).unwrap().unwrap();
        assert_eq!(n.deflate, Some(DeflateParams::default()));
        assert_eq!(&NODE_WS_101[n.consumed..], b"\xc1\x04\xca\xc8\x04\x00");
        for cut in 0..n.consumed {
            assert_eq!(
                hs.handle_response(&NODE_WS_101[..cut]).unwrap(),
                None,
                "cut {cut}"
            );
        }
        assert_eq!(
            hs.handle_response(STELAR_101).unwrap_err(),
            HandshakeError::AcceptMismatch
        );
    }

    fn response_with(extra: &str) -> Vec<u8> {
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n").into_bytes()
    }

    #[test]
    fn client_rejections() {
        let full_offer = DeflateOffer {
            server_no_context_takeover: true,
            client_no_context_takeover: false,
            server_max_window_bits: Some(10),
            client_max_window_bits: WindowBitsOffer::Max(12),
        };
        let (with_deflate, _) = client_request(Some(full_offer), &["chat"]);
        let (bare, _) = client_request(
            Some(DeflateOffer {
                client_max_window_bits: WindowBitsOffer::Absent,
                ..DeflateOffer::default()
            }),
            &[],
        );
        let (none, _) = client_request(None, &["chat"]);
        use ExtensionFault as F;
        use HandshakeError as E;
        let cases: Vec<(&ClientHandshake<'static>, Vec<u8>, HandshakeError)> = vec![
            (&none, b"HTTP/1.1 403 Forbidden\r\n\r\n".to_vec(), E::UnexpectedStatus(403)),
            (&none, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(), E::UnexpectedStatus(200)),
            (&none, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n".to_vec(), E::ResponseNotWebSocket),
            (&none, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n".to_vec(), E::ResponseNotWebSocket),
            (&none, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n".to_vec(), E::ResponseConnectionNotUpgrade),
            (&none, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec(), E::MissingAccept),
            (&none, response_with("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), E::AcceptMismatch),
            (&none, response_with("Sec-WebSocket-Extensions: permessage-deflate\r\n"), E::ExtensionNotOffered),
            (&bare, response_with("Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n"), E::ExtensionNotOffered),
            (&bare, response_with("Sec-WebSocket-Extensions: permessage-deflate, permessage-deflate\r\n"), E::InvalidDeflateResponse(F::Repeated)),
            (&bare, response_with("Sec-WebSocket-Extensions: permessage-deflate; foo\r\n"), E::InvalidDeflateResponse(F::UnknownParam)),
            (&bare, response_with("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_no_context_takeover\r\n"), E::InvalidDeflateResponse(F::DuplicateParam)),
            (&bare, response_with("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16\r\n"), E::InvalidDeflateResponse(F::InvalidValue)),
            (&bare, response_with("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits\r\n"), E::InvalidDeflateResponse(F::MissingValue)),
            (&bare, response_with("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n"), E::InvalidDeflateResponse(F::ClientWindowNotOffered)),
            (&with_deflate, response_with("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits\r\n"), E::InvalidDeflateResponse(F::MissingValue)),
            (&with_deflate, response_with("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_max_window_bits=11\r\n"), E::InvalidDeflateResponse(F::WindowLargerThanOffered)),
            (&with_deflate, response_with("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits=13\r\n"), E::InvalidDeflateResponse(F::WindowLargerThanOffered)),
            (&with_deflate, response_with("Sec-WebSocket-Extensions: permessage-deflate\r\n"), E::InvalidDeflateResponse(F::MissingServerNoContextTakeover)),
            (&with_deflate, response_with("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover=\"x\r\n"), E::InvalidDeflateResponse(F::InvalidValue)),
            (&none, response_with("Sec-WebSocket-Protocol: superchat\r\n"), E::SubprotocolNotOffered),
            (&none, response_with("Sec-WebSocket-Protocol: chat, chat\r\n"), E::MultipleSubprotocols),
            (&none, response_with("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n"), E::MultipleSubprotocols),
            (&none, b"HTTX/1.1 101 Switching Protocols\r\n\r\n".to_vec(), E::Http(HttpError::InvalidStatusLine)),
        ];
        for (hs, resp, want) in cases {
            let got = hs.handle_response(&resp).unwrap_err();
            assert_eq!(got, want, "{}", String::from_utf8_lossy(&resp));
            assert!(!got.label().is_empty());
        }
        // A full, valid answer to the full offer.
        let n = with_deflate
            .handle_response(&response_with("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=12\r\nSec-WebSocket-Protocol: chat\r\n"))
            .unwrap()
            .unwrap();
        assert_eq!(n.subprotocol, Some("chat"));
        assert_eq!(
            n.deflate,
            Some(DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 9,
                client_max_window_bits: 12
            })
        );
        // No extension and no subprotocol in the answer is fine whatever was offered.
        let n = with_deflate
            .handle_response(&response_with(""))
            .unwrap()
            .unwrap();
        assert_eq!((n.subprotocol, n.deflate), (None, None));
        // The offered client window binds the client even when the server does not answer it.
        let n = with_deflate
            .handle_response(&response_with(
                "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
            ))
            .unwrap()
            .unwrap();
        assert_eq!(
            n.deflate
                .map(|d| (d.server_max_window_bits, d.client_max_window_bits)),
            Some((10, 12))
        );
    }

    #[test]
    fn every_label_is_distinct() {
        use ExtensionFault as F;
        use HandshakeError::*;
        let all = [
            MethodNotGet,
            HttpVersionTooOld,
            MissingUpgrade,
            UpgradeNotWebSocket,
            MissingConnectionUpgrade,
            MissingVersion,
            UnsupportedVersion,
            MissingKey,
            DuplicateKey,
            InvalidKey,
            UnexpectedBody,
            InvalidTarget,
            InvalidHost,
            InvalidExtraHeader,
            InvalidSubprotocolName,
            InvalidWindowBits,
            UnexpectedStatus(500),
            ResponseNotWebSocket,
            ResponseConnectionNotUpgrade,
            MissingAccept,
            AcceptMismatch,
            ExtensionNotOffered,
            SubprotocolNotOffered,
            MultipleSubprotocols,
            InvalidDeflateResponse(F::UnknownParam),
            InvalidDeflateResponse(F::DuplicateParam),
            InvalidDeflateResponse(F::InvalidValue),
            InvalidDeflateResponse(F::MissingValue),
            InvalidDeflateResponse(F::ClientWindowNotOffered),
            InvalidDeflateResponse(F::WindowLargerThanOffered),
            InvalidDeflateResponse(F::MissingServerNoContextTakeover),
            InvalidDeflateResponse(F::Repeated),
            InvalidDeflateResponse(F::Malformed),
        ];
        let mut labels: Vec<&str> = all.iter().map(|e| e.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn server_split_at_every_offset_leaves_frames_for_the_codec() {
        let mut input = CHROME.to_vec();
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        input.extend_from_slice(&frame);
        let config = ServerConfig::default();
        let (whole, want_out) = server_ok(&input, &config);
        assert_eq!(&input[whole.consumed..], &frame);
        for cut in 0..input.len() {
            let (r, out) = server(&input[..cut], &config);
            match r.unwrap() {
                None => {
                    assert!(cut < CHROME.len());
                    assert!(out.is_empty());
                }
                Some(n) => {
                    assert!(cut >= CHROME.len());
                    assert_eq!(n, whole);
                    assert_eq!(String::from_utf8(out.to_vec()).unwrap(), want_out);
                }
            }
        }
    }

    fn offer_strategy() -> impl Strategy<Value = Option<DeflateOffer>> {
        let bits = proptest::option::of(8u8..=15);
        let client = prop_oneof![
            Just(WindowBitsOffer::Absent),
            Just(WindowBitsOffer::Any),
            (8u8..=15).prop_map(WindowBitsOffer::Max)
        ];
        proptest::option::of((any::<bool>(), any::<bool>(), bits, client).prop_map(
            |(s, c, sb, cb)| DeflateOffer {
                server_no_context_takeover: s,
                client_no_context_takeover: c,
                server_max_window_bits: sb,
                client_max_window_bits: cb,
            },
        ))
    }

    fn config_strategy() -> impl Strategy<Value = DeflateConfig> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(0u8..=20),
        )
            .prop_map(|(enabled, s, c, accept_bits, cb)| DeflateConfig {
                enabled,
                server_no_context_takeover: s,
                client_no_context_takeover: c,
                accept_server_max_window_bits: accept_bits,
                client_max_window_bits: cb,
                decline_stelar_node_offer: true,
            })
    }

    proptest! {
        /// Our client and our server agree on everything, for any offer and any policy, and
        /// the server never answers beyond what RFC 7692 allows for the offer.
        #[test]
        fn client_server_round_trip(
            offer in offer_strategy(),
            deflate in config_strategy(),
            protos in proptest::sample::subsequence(vec!["chat", "superchat", "stelar.v1"], 0..=3),
            server_protos in proptest::sample::subsequence(vec!["stelar.v1", "chat", "mqtt"], 0..=3),
            key in any::<[u8; 16]>(),
            origin in any::<bool>(),
        ) {
            let protos: &'static [&'static str] = Box::leak(protos.into_boxed_slice());
            let extra: &'static [(&'static str, &'static [u8])] = if origin { &[("Origin", b"https://app.example")] } else { &[] };
            let req = ClientRequest { subprotocols: protos, deflate: offer, extra_headers: extra, ..ClientRequest::new("127.0.0.1:3000", "/ws?token=x", key) };
            let mut wire = BytesMut::new();
            let hs = req.write(&mut wire).unwrap();
            let config = ServerConfig { subprotocols: server_protos.iter().map(|s| s.to_string()).collect(), deflate: deflate.clone() };
            let mut response = BytesMut::new();
            let server_side = accept_bytes(&wire, &Limits::default(), &config, &[], &mut response).unwrap().unwrap();
            prop_assert_eq!(server_side.consumed, wire.len());
            response.extend_from_slice(b"\x81\x00");
            let client_side = hs.handle_response(&response).unwrap().unwrap();
            prop_assert_eq!(client_side.subprotocol, server_side.subprotocol);
            prop_assert_eq!(client_side.deflate, server_side.deflate);
            prop_assert_eq!(&response[client_side.consumed..], b"\x81\x00");
            let stelar_quirk = !origin && offer.is_some_and(|o| o.header_value().unwrap().as_bytes() == STELAR_NODE_DEFLATE_OFFER);
            let narrows_server_window = offer.and_then(|o| o.server_max_window_bits).is_some_and(|b| b < 15);
            let expect_deflate = offer.is_some() && deflate.enabled && !stelar_quirk
                && (deflate.accept_server_max_window_bits || !narrows_server_window);
            prop_assert_eq!(server_side.deflate.is_some(), expect_deflate);
            if let (Some(p), Some(o)) = (server_side.deflate, offer) {
                prop_assert!(p.server_no_context_takeover || !o.server_no_context_takeover);
                prop_assert!(p.server_no_context_takeover || !deflate.server_no_context_takeover);
                prop_assert!(p.server_max_window_bits <= o.server_max_window_bits.unwrap_or(15));
                if let WindowBitsOffer::Max(v) = o.client_max_window_bits { prop_assert!(p.client_max_window_bits <= v); }
                prop_assert!((8..=15).contains(&p.server_max_window_bits) && (8..=15).contains(&p.client_max_window_bits));
            }
        }

        #[test]
        fn arbitrary_requests_never_panic(data in proptest::collection::vec(any::<u8>(), 0..800)) {
            let config = ServerConfig { subprotocols: vec!["chat".into()], ..ServerConfig::default() };
            let mut out = BytesMut::new();
            match accept_bytes(&data, &Limits::default(), &config, &[], &mut out) {
                Ok(Some(n)) => prop_assert!(n.consumed <= data.len()),
                Ok(None) => prop_assert!(out.is_empty()),
                Err(e) => { prop_assert!(out.is_empty()); let _ = (e.label(), e.status()); }
            }
        }

        #[test]
        fn arbitrary_extension_headers_never_panic(
            parts in proptest::collection::vec(prop_oneof![
                Just("permessage-deflate"), Just(";"), Just(","), Just("="), Just("\""), Just("\\"), Just(" "),
                Just("server_no_context_takeover"), Just("client_no_context_takeover"),
                Just("server_max_window_bits"), Just("client_max_window_bits"), Just("8"), Just("15"), Just("1"),
            ], 0..24),
            lines in 1usize..3,
        ) {
            let value: String = parts.concat();
            let mut extra = String::new();
            for _ in 0..lines { extra.push_str(&format!("Sec-WebSocket-Extensions: {value}\r\n")); }
            let config = ServerConfig::default();
            let mut out = BytesMut::new();
            let n = accept_bytes(&upgrade_with(&extra), &Limits::default(), &config, &[], &mut out).unwrap().unwrap();
            if let Some(p) = n.deflate {
                prop_assert!((8..=15).contains(&p.server_max_window_bits) && (8..=15).contains(&p.client_max_window_bits));
            }
            // Whatever the server answered, our client (offering everything) accepts or rejects it without panicking.
            let (hs, _) = client_request(Some(DeflateOffer::default()), &[]);
            let resp = response_with(&format!("Sec-WebSocket-Extensions: {value}\r\n"));
            let _ = hs.handle_response(&resp);
        }

        #[test]
        fn arbitrary_responses_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600), mutate in any::<proptest::sample::Index>(), byte in any::<u8>()) {
            let (hs, _) = client_request(Some(DeflateOffer::default()), &["chat"]);
            let _ = hs.handle_response(&data);
            let mut real = WEBSOCKETS_101.to_vec();
            let i = mutate.index(real.len());
            real[i] = byte;
            if let Ok(Some(n)) = hs.handle_response(&real) {
                prop_assert!(n.consumed <= real.len());
            }
        }

        #[test]
        fn mutated_browser_requests_never_panic(mutate in any::<proptest::sample::Index>(), byte in any::<u8>(), cut in any::<proptest::sample::Index>()) {
            let mut req = FIREFOX.to_vec();
            let i = mutate.index(req.len());
            req[i] = byte;
            let end = cut.index(req.len() + 1);
            let config = ServerConfig::default();
            let mut out = BytesMut::new();
            let _ = accept_bytes(&req[..end], &Limits::default(), &config, &[], &mut out);
        }
    }
}
