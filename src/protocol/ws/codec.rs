//! The RFC 6455 message layer, sans-IO, in both roles: decoding frames into messages (§5.4
//! fragmentation, §5.5 control frames, §5.6 data frames, §7 closing) and encoding messages
//! into frames, with RFC 7692 permessage-deflate.
//!
//! # Decoding
//! [`Decoder::decode`] reads from the caller's read buffer, in place: it parses a header
//! ([`super::frame`]), checks every rule that the header alone decides *before* the payload
//! arrives (masking per role, reserved bits and opcodes, control-frame rules, frame and message
//! size limits), then, once the whole frame is buffered, splits it off the buffer, unmasks it
//! there ([`super::mask`]) and hands the payload out as `Bytes` (refcount only, no copy) for a
//! single-frame uncompressed message. Fragmented messages are reassembled into one owned buffer
//! whose capacity never passes the message limit; compressed ones are inflated under the same
//! limit ([`super::deflate`]). Text is validated as it arrives ([`super::utf8`]), even inside
//! a frame that has only partly arrived: those bytes are unmasked and checked in place, so bad
//! UTF-8 fails the connection as soon as it is certain. Each fault is
//! one [`Error`] variant; [`Error::close_code`] is the close code to answer it with and
//! [`Error::label`] a counter label.
//!
//! The caller never needs to buffer more than [`Decoder::max_buffered`] bytes: whenever
//! `decode` returns `Ok(None)` the bytes left form a prefix of one frame that passed the
//! header checks.
//!
//! # The close handshake
//! [`ClosePhase`]: `Open` → `CloseSent` (we sent first, the caller said so with
//! [`Decoder::handle_close_sent`]) or `CloseReceived` (the peer sent first: reply, echoing its
//! code, RFC 6455 §5.5.1) → `Closed`. Once a close is received the decoder yields nothing more
//! (§5.5.1: data after a close frame is not processed) and discards what it is given.
//!
//! # Encoding
//! Server frames are unmasked and never need per-recipient work, so [`server_frame`] and its
//! siblings build header and payload in ONE allocation and return `Bytes` that can be queued
//! on any number of sockets. [`Compressor`] does the same with permessage-deflate (RSV1, per
//! message, above a size threshold). Client frames are masked with a key the caller supplies
//! (no RNG here) and appended to a caller `BytesMut` ([`write_frame`], [`write_message`],
//! which can also split a message into fragments).
//!
//! The opening handshake and extension negotiation are [`super::handshake`]'s; sockets,
//! timers and write queues are `conn/`'s and the load generator's.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::close::{
    close_payload_len, truncate_reason, write_close_payload, CloseCode, CloseFrame,
};
use super::deflate::{Deflater, Inflater};
pub use super::frame::Role;
use super::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use super::mask::{apply_mask, apply_mask_offset};
use super::utf8::{is_valid as is_valid_utf8, Utf8Validator};

/// Largest control-frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Default frame and message limit: 10 MiB, stelar's `maxFrameSize` / `maxPayloadSize`.
pub const DEFAULT_MAX_SIZE: usize = 10 * 1024 * 1024;

/// Everything that can go wrong with frames from the peer. One variant per fault; no strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// A server received an unmasked frame.
    #[error("client frame is not masked")]
    UnmaskedClientFrame,
    /// A client received a masked frame.
    #[error("server frame is masked")]
    MaskedServerFrame,
    /// A control frame without FIN.
    #[error("control frame is fragmented")]
    FragmentedControlFrame,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLong,
    /// Opcode 0x3-0x7 or 0xB-0xF.
    #[error("reserved opcode")]
    ReservedOpcode,
    /// RSV2 or RSV3 set, or RSV1 set without permessage-deflate negotiated.
    #[error("reserved header bits set")]
    ReservedBits,
    /// RSV1 set on a control frame or on a continuation frame.
    #[error("RSV1 set on a control or continuation frame")]
    MisplacedRsv1,
    /// A continuation frame with no fragmented message open.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is open.
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A 64-bit payload length with its most significant bit set.
    #[error("64-bit payload length has its top bit set")]
    InvalidPayloadLength,
    /// A frame whose payload passes the frame limit (known from the header).
    #[error("frame larger than the limit")]
    FrameTooLarge,
    /// A message whose payload passes the message limit.
    #[error("message larger than the limit")]
    MessageTooLarge,
    /// A compressed message that inflates past the message limit.
    #[error("decompressed message larger than the limit")]
    InflatedTooLarge,
    /// A text message (or a fragment of one) that is not UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A close frame with a code that must not appear on the wire.
    #[error("close code not allowed on the wire")]
    InvalidCloseCode,
    /// A close frame with a 1-byte payload.
    #[error("close payload of one byte")]
    InvalidClosePayload,
    /// A close frame whose reason is not UTF-8.
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
    /// Compressed data that does not inflate.
    #[error("compressed data is corrupt")]
    Inflate,
}

impl Error {
    /// The close code to fail the connection with (RFC 6455 §7.4.1).
    pub const fn close_code(self) -> CloseCode {
        match self {
            Error::UnmaskedClientFrame
            | Error::MaskedServerFrame
            | Error::FragmentedControlFrame
            | Error::ControlFrameTooLong
            | Error::ReservedOpcode
            | Error::ReservedBits
            | Error::MisplacedRsv1
            | Error::UnexpectedContinuation
            | Error::ExpectedContinuation
            | Error::InvalidPayloadLength
            | Error::InvalidCloseCode
            | Error::InvalidClosePayload => CloseCode::PROTOCOL,
            Error::InvalidUtf8 | Error::InvalidCloseReason | Error::Inflate => {
                CloseCode::INVALID_PAYLOAD
            }
            Error::FrameTooLarge | Error::MessageTooLarge | Error::InflatedTooLarge => {
                CloseCode::TOO_BIG
            }
        }
    }

    /// A short static label for counters (`ws_protocol_errors_total{fault="..."}`).
    pub const fn label(self) -> &'static str {
        match self {
            Error::UnmaskedClientFrame => "unmasked_client_frame",
            Error::MaskedServerFrame => "masked_server_frame",
            Error::FragmentedControlFrame => "fragmented_control_frame",
            Error::ControlFrameTooLong => "control_frame_too_long",
            Error::ReservedOpcode => "reserved_opcode",
            Error::ReservedBits => "reserved_bits",
            Error::MisplacedRsv1 => "misplaced_rsv1",
            Error::UnexpectedContinuation => "unexpected_continuation",
            Error::ExpectedContinuation => "expected_continuation",
            Error::InvalidPayloadLength => "invalid_payload_length",
            Error::FrameTooLarge => "frame_too_large",
            Error::MessageTooLarge => "message_too_large",
            Error::InflatedTooLarge => "inflated_too_large",
            Error::InvalidUtf8 => "invalid_utf8",
            Error::InvalidCloseCode => "invalid_close_code",
            Error::InvalidClosePayload => "invalid_close_payload",
            Error::InvalidCloseReason => "invalid_close_reason",
            Error::Inflate => "inflate",
        }
    }
}

/// A complete message (or control frame) from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are guaranteed valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; RFC 6455 §5.5.2: answer with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame; `None` when it carried no status code. See [`Decoder::phase`].
    Close(Option<CloseFrame>),
}

/// Where the close handshake stands (RFC 6455 §5.5.1, §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClosePhase {
    /// No close frame sent or received.
    Open,
    /// We sent a close; frames keep arriving until the peer's close.
    CloseSent,
    /// The peer sent a close first. The caller must reply with a close frame carrying
    /// `reply` (the peer's code echoed, §5.5.1; `None` = empty payload), then report it with
    /// [`Decoder::handle_close_sent`]. Nothing more is decoded.
    CloseReceived {
        /// The code to echo.
        reply: Option<CloseCode>,
    },
    /// Both closes exchanged: the handshake is complete, close the TCP connection (the
    /// server first, §7.1.1).
    Closed,
}

/// Inbound permessage-deflate parameters, as negotiated by the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InflateParams {
    /// The peer resets its compressor per message (`client_no_context_takeover` when we
    /// are the server), so we reset our inflater per message too.
    pub no_context_takeover: bool,
}

/// Decoder configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Our role: a server expects masked frames, a client unmasked ones.
    pub role: Role,
    /// Largest frame payload accepted, checked from the header (close 1009 beyond).
    pub max_frame_size: usize,
    /// Largest message accepted, reassembled and inflated (close 1009 beyond).
    pub max_message_size: usize,
    /// `Some` when permessage-deflate was negotiated.
    pub inflate: Option<InflateParams>,
}

impl DecoderConfig {
    /// A configuration with stelar's limits (10 MiB frames and messages), no compression.
    pub const fn new(role: Role) -> DecoderConfig {
        DecoderConfig {
            role,
            max_frame_size: DEFAULT_MAX_SIZE,
            max_message_size: DEFAULT_MAX_SIZE,
            inflate: None,
        }
    }
}

/// A fragmented data message being reassembled.
#[derive(Debug)]
struct Partial {
    /// Text (validated as it arrives) or binary.
    text: bool,
    /// RSV1 was set on the first frame: fragments are inflated as they arrive.
    compressed: bool,
    /// The message so far (inflated if compressed). Invariant: capacity <= max message + 1.
    buf: Vec<u8>,
}

/// Decodes frames from one peer into messages. See the module docs.
pub struct Decoder {
    /// Server role: frames must be masked; client role: must not be.
    expect_masked: bool,
    /// The close handshake.
    phase: ClosePhase,
    /// Set by the first fault; decoding stops there (RFC 6455 §7.1.7: after failing the
    /// connection, no further data is processed).
    failed: Option<Error>,
    max_frame_size: usize,
    max_message_size: usize,
    /// The fragmented message in progress, if any.
    /// Boxed: most connections never fragment, and an idle connection's memory counts.
    partial: Option<Box<Partial>>,
    /// Present iff permessage-deflate was negotiated.
    /// Boxed: 8 bytes in every decoder (an idle connection's memory counts).
    inflater: Option<Box<Inflater>>,
    /// UTF-8 state of the text message in progress: across its fragments, and across the
    /// pieces of a text frame that has only partly arrived.
    utf8: Utf8Validator,
    /// Payload bytes of the (incomplete) frame at the front of the read buffer that were
    /// already unmasked in place and fed to `utf8`, so invalid text fails the connection
    /// before the rest of the frame arrives (Autobahn 6.4.3/6.4.4).
    ///
    /// Invariant: at most the number of that frame's payload bytes now in the read buffer
    /// (so less than its payload length), and 0 whenever no such frame is pending. Only
    /// `validate_ahead` raises it, to what has arrived of an incomplete frame; the frame's
    /// completion in `decode_frames` takes it back to 0; it holds across calls because the
    /// caller keeps the bytes left in `buf` and only appends (the [`Decoder::decode`]
    /// contract). Code that relies on it indexes, so a break panics rather than skipping the
    /// unmasking or UTF-8 check of the rest of the frame.
    progress: usize,
}

impl Decoder {
    /// A decoder for a freshly opened connection.
    pub fn new(config: DecoderConfig) -> Decoder {
        Decoder {
            expect_masked: config.role == Role::Server,
            phase: ClosePhase::Open,
            failed: None,
            // Keep hlen + payload_len from overflowing usize whatever the configuration.
            max_frame_size: config.max_frame_size.min(isize::MAX as usize),
            max_message_size: config.max_message_size.min(isize::MAX as usize - 1),
            partial: None,
            inflater: config
                .inflate
                .map(|p| Box::new(Inflater::new(p.no_context_takeover))),
            utf8: Utf8Validator::new(),
            progress: 0,
        }
    }

    /// The most bytes a caller ever needs to hold in its read buffer: one maximal frame. A
    /// control frame may carry 125 bytes whatever the frame limit (§5.5), so a limit below
    /// that still lets one whole control frame in.
    pub fn max_buffered(&self) -> usize {
        self.max_frame_size.max(MAX_CONTROL_PAYLOAD) + MAX_HEADER_LEN
    }

    /// Where the close handshake stands.
    pub fn phase(&self) -> ClosePhase {
        self.phase
    }

    /// Reports that the caller sent a close frame (first, or as the reply).
    pub fn handle_close_sent(&mut self) {
        self.phase = match self.phase {
            ClosePhase::Open => ClosePhase::CloseSent,
            ClosePhase::CloseReceived { .. } | ClosePhase::Closed => ClosePhase::Closed,
            ClosePhase::CloseSent => ClosePhase::CloseSent,
        };
    }

    /// Decodes the next message from the front of `buf`, consuming its frames.
    ///
    /// `Ok(None)`: more bytes are needed (or the peer's close was already received, in which
    /// case `buf` is cleared). After an `Err`, the connection must be failed with
    /// [`Error::close_code`]; later calls return the same error and discard input.
    ///
    /// Between calls the caller keeps the bytes left in `buf` and only appends to them: the
    /// front of an incomplete text frame may already be unmasked in place and validated.
    /// Handing the decoder other bytes instead is a bug it panics on.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Error> {
        if let Some(err) = self.failed {
            buf.clear();
            return Err(err);
        }
        // Returned as is (not re-wrapped) so the message is built in the caller's slot.
        let result = self.decode_frames(buf);
        if let Err(err) = result {
            self.fail(err, buf);
        }
        result
    }

    /// Records the first fault and drops all state and input.
    #[cold]
    fn fail(&mut self, err: Error, buf: &mut BytesMut) {
        self.failed = Some(err);
        self.partial = None;
        self.utf8 = Utf8Validator::new();
        self.progress = 0;
        if let Some(inflater) = self.inflater.as_deref_mut() {
            inflater.reset();
        }
        buf.clear();
    }

    /// Checks everything the header alone decides, before the payload arrives.
    #[inline]
    fn check_header(&self, h: &FrameHeader) -> Result<(), Error> {
        // RFC 6455 §5.2: "RSV1, RSV2, RSV3: MUST be 0 unless an extension is negotiated that
        // defines meanings for non-zero values."
        if h.rsv2 || h.rsv3 {
            return Err(Error::ReservedBits);
        }
        // §5.1: "a client MUST mask all frames that it sends to the server ... The server
        // MUST close the connection upon receiving a frame that is not masked" and "A client
        // MUST close a connection if it detects a masked frame."
        if h.mask.is_some() != self.expect_masked {
            return Err(if self.expect_masked {
                Error::UnmaskedClientFrame
            } else {
                Error::MaskedServerFrame
            });
        }
        match h.opcode {
            // §5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail the
            // WebSocket Connection_."
            OpCode::Reserved(_) => return Err(Error::ReservedOpcode),
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                // §5.5: "All control frames MUST have a payload length of 125 bytes or less
                // and MUST NOT be fragmented."
                if !h.fin {
                    return Err(Error::FragmentedControlFrame);
                }
                if h.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(Error::ControlFrameTooLong);
                }
                // RFC 7692 §6.1: "An endpoint MUST NOT set the 'Per-Message Compressed' bit
                // of control frames".
                if h.rsv1 {
                    return Err(Error::MisplacedRsv1);
                }
                return Ok(());
            }
            OpCode::Continuation => {
                // §5.4: a continuation only continues a started fragmented message.
                if self.partial.is_none() {
                    return Err(Error::UnexpectedContinuation);
                }
                // RFC 7692 §6.1: "... and non-first fragments of a data message."
                if h.rsv1 {
                    return Err(Error::MisplacedRsv1);
                }
            }
            OpCode::Text | OpCode::Binary => {
                // §5.4: fragments of one message are not interleaved with another message.
                if self.partial.is_some() {
                    return Err(Error::ExpectedContinuation);
                }
                if h.rsv1 && self.inflater.is_none() {
                    return Err(Error::ReservedBits);
                }
            }
        }
        if h.payload_len > self.max_frame_size as u64 {
            return Err(Error::FrameTooLarge);
        }
        // Uncompressed payload is message payload: refuse from the header as soon as the
        // sum passes the limit. (Compressed data is capped on inflation.)
        let compressed = match &self.partial {
            Some(p) => p.compressed,
            None => h.rsv1,
        };
        if !compressed {
            let so_far = self.partial.as_ref().map_or(0, |p| p.buf.len()) as u64;
            if so_far + h.payload_len > self.max_message_size as u64 {
                return Err(Error::MessageTooLarge);
            }
        }
        Ok(())
    }

    fn decode_frames(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, Error> {
        loop {
            if matches!(
                self.phase,
                ClosePhase::CloseReceived { .. } | ClosePhase::Closed
            ) {
                // §5.5.1: after a close, nothing more from the peer is processed.
                buf.clear();
                return Ok(None);
            }
            let Some((header, header_len)) = FrameHeader::parse(buf)? else {
                return Ok(None);
            };
            self.check_header(&header)?;
            // check_header bounded payload_len by max_frame_size <= isize::MAX, so neither
            // the cast nor the sum can overflow.
            let frame_len = header_len + header.payload_len as usize;
            if buf.len() < frame_len {
                self.validate_ahead(&header, header_len, buf)?;
                return Ok(None);
            }
            let mut payload = buf.split_to(frame_len);
            payload.advance(header_len);
            // The first `done` payload bytes were unmasked and validated while arriving.
            let done = std::mem::take(&mut self.progress);
            // The invariant on `progress`; everything below slices `payload[done..]` on it.
            assert!(
                done <= payload.len(),
                "validated-ahead prefix ({done} bytes) is longer than the frame payload ({} \
                 bytes): the read buffer changed between decode calls",
                payload.len()
            );
            if let Some(key) = header.mask {
                apply_mask_offset(&mut payload[done..], key, done);
            }
            match header.opcode {
                OpCode::Ping => return Ok(Some(Message::Ping(payload.freeze()))),
                OpCode::Pong => return Ok(Some(Message::Pong(payload.freeze()))),
                OpCode::Close => {
                    let frame = CloseFrame::parse(&payload)?;
                    self.phase = match self.phase {
                        ClosePhase::CloseSent => ClosePhase::Closed,
                        _ => ClosePhase::CloseReceived {
                            reply: frame.as_ref().map(|f| f.code),
                        },
                    };
                    // A message left unfinished by the close is dropped.
                    self.partial = None;
                    self.utf8 = Utf8Validator::new();
                    return Ok(Some(Message::Close(frame)));
                }
                OpCode::Text | OpCode::Binary if header.fin => {
                    return self.single_frame_message(header, payload, done);
                }
                OpCode::Text | OpCode::Binary => {
                    let mut partial = Partial {
                        text: header.opcode == OpCode::Text,
                        compressed: header.rsv1,
                        buf: Vec::new(),
                    };
                    append_fragment(
                        &mut partial,
                        &mut self.utf8,
                        self.inflater.as_deref_mut(),
                        &payload,
                        done,
                        self.max_message_size,
                    )?;
                    self.partial = Some(Box::new(partial));
                }
                OpCode::Continuation => {
                    // check_header refused a continuation without a partial message.
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(Error::UnexpectedContinuation);
                    };
                    append_fragment(
                        partial,
                        &mut self.utf8,
                        self.inflater.as_deref_mut(),
                        &payload,
                        done,
                        self.max_message_size,
                    )?;
                    if header.fin {
                        let Some(partial) = self.partial.take() else {
                            return Err(Error::UnexpectedContinuation);
                        };
                        return finish_message(
                            *partial,
                            &mut self.utf8,
                            self.inflater.as_deref_mut(),
                            self.max_message_size,
                        )
                        .map(Some);
                    }
                }
                // check_header refused reserved opcodes.
                OpCode::Reserved(_) => return Err(Error::ReservedOpcode),
            }
        }
    }

    /// Unmasks and validates what has arrived of an incomplete uncompressed text frame, so
    /// that invalid UTF-8 is refused as soon as it is certain, not when the frame completes.
    #[cold]
    fn validate_ahead(
        &mut self,
        header: &FrameHeader,
        header_len: usize,
        buf: &mut BytesMut,
    ) -> Result<(), Error> {
        let text = match header.opcode {
            OpCode::Text => !header.rsv1,
            OpCode::Continuation => self
                .partial
                .as_ref()
                .is_some_and(|p| p.text && !p.compressed),
            _ => false,
        };
        if !text {
            return Ok(());
        }
        // Everything after the header belongs to this frame: it is not complete yet. The
        // header was parsed from `buf`, so header_len <= buf.len().
        let arrived = &mut buf[header_len..];
        let arrived_len = arrived.len();
        // The invariant on `progress`: it counts bytes of this frame that arrived earlier and
        // are still in `buf`.
        assert!(
            self.progress <= arrived_len,
            "validated-ahead prefix ({} bytes) is longer than what is buffered of the frame \
             ({arrived_len} bytes): the read buffer changed between decode calls",
            self.progress
        );
        let fresh = &mut arrived[self.progress..];
        if fresh.is_empty() {
            return Ok(());
        }
        if let Some(key) = header.mask {
            apply_mask_offset(fresh, key, self.progress);
        }
        self.utf8.feed(fresh)?;
        self.progress = arrived_len;
        Ok(())
    }

    /// The common case: a whole message in one frame. Uncompressed payloads are handed out
    /// as they lie in the read buffer. `done` payload bytes were validated while arriving.
    #[inline]
    fn single_frame_message(
        &mut self,
        header: FrameHeader,
        payload: BytesMut,
        done: usize,
    ) -> Result<Option<Message>, Error> {
        let text = header.opcode == OpCode::Text;
        let bytes = if header.rsv1 {
            // check_header allows RSV1 only when an inflater exists.
            let Some(inflater) = self.inflater.as_deref_mut() else {
                return Err(Error::ReservedBits);
            };
            let mut out = Vec::new();
            inflater.push(&payload, &mut out, self.max_message_size)?;
            inflater.finish(&mut out, self.max_message_size)?;
            if text && !is_valid_utf8(&out) {
                return Err(Error::InvalidUtf8);
            }
            Bytes::from(out)
        } else {
            // §8.1: text that is not UTF-8 fails the connection.
            if text {
                if done == 0 {
                    if !is_valid_utf8(&payload) {
                        return Err(Error::InvalidUtf8);
                    }
                } else {
                    // done <= payload.len(): asserted in decode_frames.
                    self.utf8.feed(&payload[done..])?;
                    self.utf8.finish()?;
                }
            }
            payload.freeze()
        };
        Ok(Some(if text {
            Message::Text(bytes)
        } else {
            Message::Binary(bytes)
        }))
    }

    /// Bytes held by the decoder itself (a message being reassembled).
    pub fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.buf.capacity())
    }

    /// Drops a message being reassembled (the caller is closing the connection and wants the
    /// memory back now). Frames that follow a discarded message's continuations are refused.
    pub fn discard_partial(&mut self) {
        self.partial = None;
        self.utf8 = Utf8Validator::new();
        self.progress = 0;
    }
}

/// Adds one fragment's payload to the message being reassembled, validating text as it goes
/// (`done` leading bytes were already validated while the frame arrived; `done <=
/// payload.len()`, asserted by the caller, and `done == 0` for compressed messages, whose
/// frames are not validated ahead).
fn append_fragment(
    partial: &mut Partial,
    utf8: &mut Utf8Validator,
    inflater: Option<&mut Inflater>,
    payload: &[u8],
    done: usize,
    max_message: usize,
) -> Result<(), Error> {
    if partial.compressed {
        let Some(inflater) = inflater else {
            return Err(Error::ReservedBits);
        };
        debug_assert_eq!(done, 0, "compressed frames are not validated ahead");
        let inflated = inflate_onto(inflater, payload, &mut partial.buf, max_message)?;
        if partial.text {
            utf8.feed(inflated)?;
        }
    } else {
        // Fail fast on bad UTF-8 before copying.
        if partial.text {
            utf8.feed(&payload[done..])?;
        }
        // check_header ensured partial.buf.len() + payload.len() <= max_message.
        reserve_bounded(&mut partial.buf, payload.len(), max_message);
        partial.buf.extend_from_slice(payload);
    }
    Ok(())
}

/// Inflates `input` onto the end of `buf` (within `max_message`) and returns what it added.
fn inflate_onto<'b>(
    inflater: &mut Inflater,
    input: &[u8],
    buf: &'b mut Vec<u8>,
    max_message: usize,
) -> Result<&'b [u8], Error> {
    let start = buf.len();
    inflater.push(input, buf, max_message)?;
    // Inflater::push only appends, so start <= buf.len().
    Ok(&buf[start..])
}

/// Ends the inflation of a message onto the end of `buf` and returns what that added.
fn finish_inflating<'b>(
    inflater: &mut Inflater,
    buf: &'b mut Vec<u8>,
    max_message: usize,
) -> Result<&'b [u8], Error> {
    let start = buf.len();
    inflater.finish(buf, max_message)?;
    // Inflater::finish only appends, so start <= buf.len().
    Ok(&buf[start..])
}

/// Completes a reassembled message.
fn finish_message(
    mut partial: Partial,
    utf8: &mut Utf8Validator,
    inflater: Option<&mut Inflater>,
    max_message: usize,
) -> Result<Message, Error> {
    if partial.compressed {
        let Some(inflater) = inflater else {
            return Err(Error::ReservedBits);
        };
        let inflated = finish_inflating(inflater, &mut partial.buf, max_message)?;
        if partial.text {
            utf8.feed(inflated)?;
        }
    }
    let bytes = Bytes::from(partial.buf);
    if partial.text {
        utf8.finish()?;
        Ok(Message::Text(bytes))
    } else {
        Ok(Message::Binary(bytes))
    }
}

/// Grows `buf` for `additional` more bytes, doubling but never past `limit` bytes of capacity
/// (a plain `reserve` could double past the message limit).
fn reserve_bounded(buf: &mut Vec<u8>, additional: usize, limit: usize) {
    let needed = buf.len() + additional;
    if needed > buf.capacity() {
        let target = needed.max(buf.capacity().saturating_mul(2).min(limit));
        buf.reserve_exact(target - buf.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// One unmasked, unfragmented server frame, header and payload in one exact allocation,
/// ready to be shared by every recipient. Control payloads are cut to 125 bytes (§5.5).
/// A text payload must be UTF-8: the caller guarantees it.
pub fn server_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    server_frame_from_parts(opcode, &[payload])
}

/// Like [`server_frame`], with the payload given as pieces concatenated in place (for
/// example an envelope around a forwarded `data`), still in one allocation.
pub fn server_frame_from_parts(opcode: OpCode, parts: &[&[u8]]) -> Bytes {
    let mut len: usize = parts.iter().map(|p| p.len()).sum();
    let limit = if opcode.is_control() {
        MAX_CONTROL_PAYLOAD
    } else {
        usize::MAX
    };
    len = len.min(limit);
    let header = FrameHeader::new(opcode, len as u64);
    let mut out = BytesMut::with_capacity(header.encoded_len() + len);
    header.write(&mut out);
    let mut left = len;
    for part in parts {
        let take = part.len().min(left);
        out.put_slice(&part[..take]);
        left -= take;
    }
    out.freeze()
}

/// A server text frame (payload must be UTF-8).
pub fn server_text(payload: &[u8]) -> Bytes {
    server_frame(OpCode::Text, payload)
}

/// A server binary frame.
pub fn server_binary(payload: &[u8]) -> Bytes {
    server_frame(OpCode::Binary, payload)
}

/// A server ping (payload cut to 125 bytes).
pub fn server_ping(payload: &[u8]) -> Bytes {
    server_frame(OpCode::Ping, payload)
}

/// A server pong (payload cut to 125 bytes).
pub fn server_pong(payload: &[u8]) -> Bytes {
    server_frame(OpCode::Pong, payload)
}

/// A server close frame: empty for `None`, else the code and the reason cut to 123 bytes.
pub fn server_close(frame: Option<&CloseFrame>) -> Bytes {
    let len = close_payload_len(frame);
    let header = FrameHeader::new(OpCode::Close, len as u64);
    let mut out = BytesMut::with_capacity(header.encoded_len() + len);
    header.write(&mut out);
    write_close_payload(frame, &mut out);
    out.freeze()
}

/// Appends one frame to `out`. With `mask` (client role) the copied payload is masked with
/// it; RFC 6455 §5.3 wants a fresh unpredictable key per frame, which the caller supplies.
pub fn write_frame(
    out: &mut BytesMut,
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let header = FrameHeader {
        fin,
        rsv1,
        mask,
        ..FrameHeader::new(opcode, payload.len() as u64)
    };
    out.reserve(header.encoded_len() + payload.len());
    header.write(out);
    let start = out.len();
    out.put_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key);
    }
}

/// Appends a close frame (code and reason cut to 123 bytes), masked when `mask` is given.
pub fn write_close(out: &mut BytesMut, frame: Option<&CloseFrame>, mask: Option<[u8; 4]>) {
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    let len = match frame {
        Some(f) => {
            let reason = truncate_reason(&f.reason);
            payload[..2].copy_from_slice(&f.code.get().to_be_bytes());
            payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
            2 + reason.len()
        }
        None => 0,
    };
    write_frame(out, OpCode::Close, true, false, &payload[..len], mask);
}

/// Appends a whole message, split into frames of at most `max_fragment` payload bytes
/// (`usize::MAX` or 0 = no splitting). `mask` is called once per frame for its key (`None` for
/// server frames). `compressed` sets RSV1 on the first frame only (RFC 7692 §6.1); the payload
/// must then already be compressed. Control opcodes are never fragmented (cut to 125 bytes).
pub fn write_message(
    out: &mut BytesMut,
    opcode: OpCode,
    payload: &[u8],
    compressed: bool,
    max_fragment: usize,
    mask: &mut dyn FnMut() -> Option<[u8; 4]>,
) {
    if opcode.is_control() {
        let len = payload.len().min(MAX_CONTROL_PAYLOAD);
        write_frame(out, opcode, true, false, &payload[..len], mask());
        return;
    }
    let step = if max_fragment == 0 {
        usize::MAX
    } else {
        max_fragment
    };
    let mut rest = payload;
    let mut first = true;
    loop {
        let take = rest.len().min(step);
        let (chunk, tail) = rest.split_at(take);
        let fin = tail.is_empty();
        let op = if first { opcode } else { OpCode::Continuation };
        write_frame(out, op, fin, first && compressed, chunk, mask());
        if fin {
            return;
        }
        rest = tail;
        first = false;
    }
}

/// permessage-deflate on the sending side: compresses data messages at or above a size
/// threshold (RSV1 is per message, RFC 7692 §6), leaves smaller ones alone.
///
/// With `no_context_takeover` one `Compressor` can serve a whole shard: each compressed frame
/// stands alone, so it can be shared by every subscriber. With context takeover a
/// `Compressor` belongs to one connection and every frame it makes must be sent there, in
/// order.
pub struct Compressor {
    deflater: Deflater,
    threshold: usize,
    /// Reused compression output, so the only per-message allocation is the frame itself.
    scratch: BytesMut,
}

impl Compressor {
    /// Compress data messages of `threshold` bytes or more with `deflater`.
    pub fn new(deflater: Deflater, threshold: usize) -> Compressor {
        Compressor {
            deflater,
            threshold,
            scratch: BytesMut::new(),
        }
    }

    /// Compresses into `scratch` when worthwhile; true if `scratch` holds the payload to send.
    fn compress(&mut self, opcode: OpCode, payload: &[u8]) -> bool {
        if opcode.is_control() || opcode == OpCode::Continuation || payload.len() < self.threshold {
            return false;
        }
        self.scratch.clear();
        self.deflater.compress(payload, &mut self.scratch);
        // Without context takeover nothing depends on this message having been compressed,
        // so send whichever form is smaller. With it, the peer's window must see it.
        !(self.deflater.no_context_takeover() && self.scratch.len() >= payload.len())
    }

    /// One unmasked server frame for a message, compressed (RSV1) at or above the threshold,
    /// in one exact allocation.
    pub fn server_frame(&mut self, opcode: OpCode, payload: &[u8]) -> Bytes {
        if !self.compress(opcode, payload) {
            return server_frame(opcode, payload);
        }
        let header = FrameHeader {
            rsv1: true,
            ..FrameHeader::new(opcode, self.scratch.len() as u64)
        };
        let mut out = BytesMut::with_capacity(header.encoded_len() + self.scratch.len());
        header.write(&mut out);
        out.put_slice(&self.scratch);
        out.freeze()
    }

    /// Appends a message like [`write_message`], compressing it first when it qualifies.
    pub fn write_message(
        &mut self,
        out: &mut BytesMut,
        opcode: OpCode,
        payload: &[u8],
        max_fragment: usize,
        mask: &mut dyn FnMut() -> Option<[u8; 4]>,
    ) {
        if self.compress(opcode, payload) {
            let scratch = std::mem::take(&mut self.scratch);
            write_message(out, opcode, &scratch, true, max_fragment, mask);
            self.scratch = scratch;
        } else {
            write_message(out, opcode, payload, false, max_fragment, mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::borrow::Cow;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn server() -> Decoder {
        Decoder::new(DecoderConfig::new(Role::Server))
    }

    fn client() -> Decoder {
        Decoder::new(DecoderConfig::new(Role::Client))
    }

    fn with_inflate(role: Role, no_context_takeover: bool) -> Decoder {
        Decoder::new(DecoderConfig {
            inflate: Some(InflateParams {
                no_context_takeover,
            }),
            ..DecoderConfig::new(role)
        })
    }

    fn limited(role: Role, max_frame_size: usize, max_message_size: usize) -> Decoder {
        Decoder::new(DecoderConfig {
            max_frame_size,
            max_message_size,
            inflate: Some(InflateParams {
                no_context_takeover: false,
            }),
            ..DecoderConfig::new(role)
        })
    }

    /// Decodes everything in `bytes` at once.
    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Message>, Error> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    /// The first error decoding `bytes` gives.
    fn first_error(d: &mut Decoder, bytes: &[u8]) -> Error {
        decode_all(d, bytes).expect_err("an error")
    }

    fn text(s: &str) -> Message {
        Message::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// A client-role frame (masked with KEY).
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader::parse(&[first, 0]).unwrap().unwrap().0;
        let mut out = BytesMut::new();
        write_frame(
            &mut out,
            header.opcode,
            header.fin,
            first & 0x40 != 0,
            payload,
            Some(KEY),
        );
        // Carry RSV2/RSV3 through as given.
        out[0] = first;
        out.to_vec()
    }

    // ---- RFC 6455 §5.7 examples -------------------------------------------------------------

    #[test]
    fn rfc6455_single_frame_unmasked_hello() {
        let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(decode_all(&mut client(), &bytes), Ok(vec![text("Hello")]));
        assert_eq!(&server_text(b"Hello")[..], &bytes);
        // A server refuses it: not masked.
        assert_eq!(
            first_error(&mut server(), &bytes),
            Error::UnmaskedClientFrame
        );
    }

    #[test]
    fn rfc6455_single_frame_masked_hello() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(decode_all(&mut server(), &bytes), Ok(vec![text("Hello")]));
        let mut out = BytesMut::new();
        write_frame(&mut out, OpCode::Text, true, false, b"Hello", Some(KEY));
        assert_eq!(&out[..], &bytes);
        assert_eq!(first_error(&mut client(), &bytes), Error::MaskedServerFrame);
    }

    #[test]
    fn rfc6455_fragmented_unmasked_hello() {
        let bytes = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        assert_eq!(decode_all(&mut client(), &bytes), Ok(vec![text("Hello")]));
        let mut out = BytesMut::new();
        write_message(&mut out, OpCode::Text, b"Hello", false, 3, &mut || None);
        assert_eq!(&out[..], &bytes);
    }

    #[test]
    fn rfc6455_ping_and_masked_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(
            decode_all(&mut client(), &ping),
            Ok(vec![Message::Ping(Bytes::from_static(b"Hello"))])
        );
        assert_eq!(&server_ping(b"Hello")[..], &ping);
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode_all(&mut server(), &pong),
            Ok(vec![Message::Pong(Bytes::from_static(b"Hello"))])
        );
    }

    #[test]
    fn rfc6455_256_byte_and_64k_binary() {
        for (len, header) in [
            (256usize, &[0x82, 0x7E, 0x01, 0x00][..]),
            (65536, &[0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00][..]),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let frame = server_binary(&payload);
            assert_eq!(&frame[..header.len()], header);
            assert_eq!(&frame[header.len()..], &payload[..]);
            assert_eq!(
                decode_all(&mut client(), &frame),
                Ok(vec![Message::Binary(Bytes::from(payload))])
            );
        }
    }

    #[test]
    fn stelar_join_room_example() {
        // PROTOCOL.md §9: {"event":"join-room","data":"lobby"} masked with 37 fa 21 3d.
        let wire = [
            0x81, 0xa4, 0x37, 0xfa, 0x21, 0x3d, 0x4c, 0xd8, 0x44, 0x4b, 0x52, 0x94, 0x55, 0x1f,
            0x0d, 0xd8, 0x4b, 0x52, 0x5e, 0x94, 0x0c, 0x4f, 0x58, 0x95, 0x4c, 0x1f, 0x1b, 0xd8,
            0x45, 0x5c, 0x43, 0x9b, 0x03, 0x07, 0x15, 0x96, 0x4e, 0x5f, 0x55, 0x83, 0x03, 0x40,
        ];
        assert_eq!(
            decode_all(&mut server(), &wire),
            Ok(vec![text(r#"{"event":"join-room","data":"lobby"}"#)])
        );
        // And "Server full": 88 0d 03 f0 ...
        let close = server_close(Some(&CloseFrame::new(CloseCode::POLICY, "Server full")));
        assert_eq!(
            &close[..],
            &[
                0x88, 0x0d, 0x03, 0xf0, 0x53, 0x65, 0x72, 0x76, 0x65, 0x72, 0x20, 0x66, 0x75, 0x6c,
                0x6c
            ]
        );
    }

    #[test]
    fn single_frame_payload_is_not_copied() {
        let frame = masked(0x82, &[7u8; 300]);
        let mut buf = BytesMut::from(&frame[..]);
        let base = buf.as_ptr() as usize;
        let Some(Message::Binary(b)) = server().decode(&mut buf).unwrap() else {
            panic!("binary expected");
        };
        // The payload still lives in the read buffer, right after the 8-byte header.
        assert_eq!(b.as_ptr() as usize, base + 8);
        assert_eq!(&b[..], &[7u8; 300][..]);
    }

    // ---- RFC 7692 §7.2.3 examples -----------------------------------------------------------

    #[test]
    fn rfc7692_hello_compressed_and_context_takeover() {
        let mut d = with_inflate(Role::Client, false);
        let first = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let second = [0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00];
        assert_eq!(decode_all(&mut d, &first), Ok(vec![text("Hello")]));
        assert_eq!(decode_all(&mut d, &second), Ok(vec![text("Hello")]));
        // Encoding "Hello" produces the RFC's first frame.
        let mut c = Compressor::new(Deflater::new(false, 15), 0);
        assert_eq!(&c.server_frame(OpCode::Text, b"Hello")[..], &first);
    }

    #[test]
    fn rfc7692_fragmented_empty_bfinal_and_stored() {
        let mut d = with_inflate(Role::Client, true);
        let fragments = [
            0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(decode_all(&mut d, &fragments), Ok(vec![text("Hello")]));
        // §7.2.3.6: an empty message is one empty stored block, 0x00.
        assert_eq!(decode_all(&mut d, &[0xc1, 0x01, 0x00]), Ok(vec![text("")]));
        let mut c = Compressor::new(Deflater::new(false, 15), 0);
        assert_eq!(&c.server_frame(OpCode::Text, b"")[..], &[0xc1, 0x01, 0x00]);
        // §7.2.3.3: BFINAL.
        let bfinal = [0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(decode_all(&mut d, &bfinal), Ok(vec![text("Hello")]));
        // §7.2.3.5: no compression (a stored block).
        let stored = [
            0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(decode_all(&mut d, &stored), Ok(vec![text("Hello")]));
        // A compressed message whose final fragment is empty.
        let empty_last = [
            0x41, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x80, 0x00,
        ];
        assert_eq!(decode_all(&mut d, &empty_last), Ok(vec![text("Hello")]));
    }

    #[test]
    fn compression_threshold_and_fallback() {
        let mut c = Compressor::new(Deflater::new(true, 15), 100);
        let small = c.server_frame(OpCode::Text, b"tiny");
        assert_eq!(small[0], 0x81, "under the threshold: no RSV1");
        let json =
            br#"{"event":"chat","data":{"msg":"hello hello hello hello hello hello hello"}}"#
                .repeat(4);
        let big = c.server_frame(OpCode::Text, &json);
        assert_eq!(big[0], 0xc1);
        assert!(big.len() < json.len());
        // Incompressible data is sent as is when nothing depends on it (no context takeover).
        let mut x = 99u32;
        let noise: Vec<u8> = (0..500)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        assert_eq!(c.server_frame(OpCode::Binary, &noise)[0], 0x82);
        // Control frames are never compressed.
        assert_eq!(c.server_frame(OpCode::Ping, &[1; 120])[0], 0x89);
        let mut d = with_inflate(Role::Client, true);
        let mut stream = BytesMut::new();
        for f in [&small, &big] {
            stream.extend_from_slice(f);
        }
        assert_eq!(
            decode_all(&mut d, &stream),
            Ok(vec![text("tiny"), Message::Text(Bytes::from(json.clone()))])
        );
    }

    // ---- Rules and their close codes --------------------------------------------------------

    #[test]
    fn every_rule_with_its_close_code() {
        let p = CloseCode::PROTOCOL;
        let cases: Vec<(Vec<u8>, Error, CloseCode)> = vec![
            (masked(0xA1, b"x"), Error::ReservedBits, p), // RSV2
            (masked(0x91, b"x"), Error::ReservedBits, p), // RSV3
            (masked(0xC1, b"x"), Error::ReservedBits, p), // RSV1, no deflate
            (masked(0x83, b"x"), Error::ReservedOpcode, p),
            (masked(0x8B, b"x"), Error::ReservedOpcode, p),
            (masked(0x09, b"x"), Error::FragmentedControlFrame, p),
            (masked(0x89, &[0; 126]), Error::ControlFrameTooLong, p),
            (masked(0x80, b"x"), Error::UnexpectedContinuation, p),
            (
                [masked(0x01, b"a"), masked(0x81, b"b")].concat(),
                Error::ExpectedContinuation,
                p,
            ),
            (
                masked(0x81, &[0xff]),
                Error::InvalidUtf8,
                CloseCode::INVALID_PAYLOAD,
            ),
            (masked(0x88, &[0x03]), Error::InvalidClosePayload, p),
            (masked(0x88, &[0x03, 0xed]), Error::InvalidCloseCode, p),
            (
                masked(0x88, &[0x03, 0xe8, 0xc0]),
                Error::InvalidCloseReason,
                CloseCode::INVALID_PAYLOAD,
            ),
            (
                vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0],
                Error::InvalidPayloadLength,
                p,
            ),
        ];
        for (bytes, err, code) in cases {
            assert_eq!(first_error(&mut server(), &bytes), err, "{bytes:02x?}");
            assert_eq!(err.close_code(), code);
            assert!(!err.label().is_empty());
        }
        // With deflate negotiated: RSV1 on control frames and continuations.
        let mut d = with_inflate(Role::Server, false);
        assert_eq!(
            first_error(&mut d, &masked(0xC9, b"")),
            Error::MisplacedRsv1
        );
        let mut d = with_inflate(Role::Server, false);
        let bytes = [masked(0x01, b"a"), masked(0xC0, b"b")].concat();
        assert_eq!(first_error(&mut d, &bytes), Error::MisplacedRsv1);
        // Corrupt compressed data: 1007.
        let mut d = with_inflate(Role::Server, false);
        let err = first_error(&mut d, &masked(0xC1, &[0xff, 0xff, 0xff]));
        assert_eq!(
            (err, err.close_code()),
            (Error::Inflate, CloseCode::INVALID_PAYLOAD)
        );
    }

    #[test]
    fn decoder_and_message_stay_small() {
        // The decoder lives in every connection; the inflater's state is boxed.
        assert!(
            std::mem::size_of::<Decoder>() <= 112,
            "{}",
            std::mem::size_of::<Decoder>()
        );
        assert!(
            std::mem::size_of::<Message>() <= 40,
            "{}",
            std::mem::size_of::<Message>()
        );
    }

    #[test]
    fn labels_are_distinct() {
        let all = [
            Error::UnmaskedClientFrame,
            Error::MaskedServerFrame,
            Error::FragmentedControlFrame,
            Error::ControlFrameTooLong,
            Error::ReservedOpcode,
            Error::ReservedBits,
            Error::MisplacedRsv1,
            Error::UnexpectedContinuation,
            Error::ExpectedContinuation,
            Error::InvalidPayloadLength,
            Error::FrameTooLarge,
            Error::MessageTooLarge,
            Error::InflatedTooLarge,
            Error::InvalidUtf8,
            Error::InvalidCloseCode,
            Error::InvalidClosePayload,
            Error::InvalidCloseReason,
            Error::Inflate,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(|e| e.label()).collect();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn frame_too_large_is_refused_from_the_header() {
        let mut d = limited(Role::Server, 1000, 5000);
        // Only the header of a 1001-byte frame: refused before any payload.
        let mut buf = BytesMut::from(&[0x82, 0xFE, 0x03, 0xE9, 1, 2, 3, 4][..]);
        assert_eq!(d.decode(&mut buf), Err(Error::FrameTooLarge));
        assert_eq!(Error::FrameTooLarge.close_code(), CloseCode::TOO_BIG);
        // Later calls repeat the fault and discard input.
        let mut more = BytesMut::from(&masked(0x81, b"ok")[..]);
        assert_eq!(d.decode(&mut more), Err(Error::FrameTooLarge));
        assert!(more.is_empty());
        // 1000 bytes is fine.
        let mut d = limited(Role::Server, 1000, 5000);
        assert_eq!(
            decode_all(&mut d, &masked(0x82, &[0; 1000])).map(|v| v.len()),
            Ok(1)
        );
    }

    #[test]
    fn message_too_large_as_soon_as_the_sum_passes() {
        let mut d = limited(Role::Server, 1000, 2500);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&masked(0x02, &[0; 1000]));
        buf.extend_from_slice(&masked(0x00, &[0; 1000]));
        assert_eq!(d.decode(&mut buf), Ok(None));
        // The third fragment's header alone takes the sum to 3000 > 2500.
        buf.extend_from_slice(&[0x80, 0xFE, 0x03, 0xE8, 1, 2, 3, 4]);
        assert_eq!(d.decode(&mut buf), Err(Error::MessageTooLarge));
        assert_eq!(Error::MessageTooLarge.close_code(), CloseCode::TOO_BIG);
        // Exactly at the limit is fine.
        let mut d = limited(Role::Server, 1000, 2500);
        let bytes = [
            masked(0x02, &[1; 1000]),
            masked(0x00, &[2; 1000]),
            masked(0x80, &[3; 500]),
        ]
        .concat();
        let msgs = decode_all(&mut d, &bytes).unwrap();
        let Message::Binary(b) = &msgs[0] else {
            panic!()
        };
        assert_eq!(b.len(), 2500);
        assert!(b.starts_with(&[1; 1000]) && b.ends_with(&[3; 500]));
    }

    #[test]
    fn inflate_bomb_is_capped() {
        let zeros = vec![0u8; 1 << 20];
        let mut c = Compressor::new(Deflater::new(true, 15), 0);
        let mut wire = BytesMut::new();
        c.write_message(&mut wire, OpCode::Binary, &zeros, 0, &mut || Some(KEY));
        assert!(wire.len() < 5000);
        let mut d = limited(Role::Server, 10_000, 64 * 1024);
        let err = first_error(&mut d, &wire);
        assert_eq!(
            (err, err.close_code()),
            (Error::InflatedTooLarge, CloseCode::TOO_BIG)
        );
        // Fragmented, too.
        let mut wire = BytesMut::new();
        c.write_message(&mut wire, OpCode::Binary, &zeros, 100, &mut || Some(KEY));
        let mut d = limited(Role::Server, 10_000, 64 * 1024);
        let mut buf = BytesMut::from(&wire[..]);
        // One call runs through the fragments until the cap is passed.
        assert_eq!(d.decode(&mut buf), Err(Error::InflatedTooLarge));
    }

    #[test]
    fn utf8_fails_fast_per_fragment() {
        // The first fragment ends in ED A0: certainly a surrogate. The decoder fails before
        // the rest of the message arrives.
        let mut d = server();
        let mut buf = BytesMut::from(&masked(0x01, &[b'a', 0xED, 0xA0])[..]);
        assert_eq!(d.decode(&mut buf), Err(Error::InvalidUtf8));
        // A character split across fragments is fine.
        let euro = "€".as_bytes();
        let bytes = [
            masked(0x01, &euro[..1]),
            masked(0x00, &euro[1..2]),
            masked(0x80, &euro[2..]),
        ]
        .concat();
        assert_eq!(decode_all(&mut server(), &bytes), Ok(vec![text("€")]));
        // A dangling sequence at the end of the message is not.
        let bytes = [masked(0x01, b"a"), masked(0x80, &euro[..2])].concat();
        assert_eq!(first_error(&mut server(), &bytes), Error::InvalidUtf8);
        // Compressed and fragmented text is validated too.
        let mut c = Compressor::new(Deflater::new(false, 15), 0);
        let mut wire = BytesMut::new();
        let mut bad = b"{\"x\":\"".repeat(50);
        bad.push(0xff);
        c.scratch.clear();
        c.deflater.compress(&bad, &mut c.scratch);
        let scratch = c.scratch.clone();
        write_message(&mut wire, OpCode::Text, &scratch, true, 5, &mut || {
            Some(KEY)
        });
        assert_eq!(
            first_error(&mut with_inflate(Role::Server, false), &wire),
            Error::InvalidUtf8
        );
    }

    #[test]
    fn utf8_fails_fast_inside_a_frame_that_has_not_fully_arrived() {
        // Autobahn 6.4.3: one text frame arrives in chops; the second chop makes the text
        // certainly invalid (F4 90 is above U+10FFFF). Fail then, not at the end of the frame.
        let mut payload = "κόσμε".as_bytes().to_vec();
        payload.extend_from_slice(&[0xF4, 0x90, 0x80, 0x80]);
        payload.extend_from_slice(b"edited");
        let frame = masked(0x81, &payload);
        let mut d = server();
        let mut buf = BytesMut::from(&frame[..6 + 11]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&frame[17..17 + 2]);
        assert_eq!(d.decode(&mut buf), Err(Error::InvalidUtf8));
        // Same inside a continuation frame of a fragmented message.
        let wire = [masked(0x01, b"ok "), masked(0x80, &payload)].concat();
        let mut d = server();
        let mut buf = BytesMut::from(&wire[..9 + 6 + 13]);
        assert_eq!(d.decode(&mut buf), Err(Error::InvalidUtf8));
        // Valid text fed one byte at a time still decodes (unmasked progressively).
        let frame = masked(0x81, "κόσμε κόσμε".as_bytes());
        let mut d = server();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &frame {
            buf.extend_from_slice(&[*b]);
            if let Some(m) = d.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![text("κόσμε κόσμε")]);
    }

    /// A client-role text message: `payload` (not necessarily UTF-8), split into fragments
    /// of `max_fragment` bytes (0 = one frame), compressed with context takeover or not.
    fn client_text(payload: &[u8], max_fragment: usize, compressed: bool) -> Vec<u8> {
        let mut wire = BytesMut::new();
        if compressed {
            let mut c = Compressor::new(Deflater::new(false, 15), 0);
            c.write_message(&mut wire, OpCode::Text, payload, max_fragment, &mut || {
                Some(KEY)
            });
        } else {
            write_message(
                &mut wire,
                OpCode::Text,
                payload,
                false,
                max_fragment,
                &mut || Some(KEY),
            );
        }
        wire.to_vec()
    }

    #[test]
    fn text_validated_ahead_then_completed_by_its_last_byte() {
        // All but the last payload byte arrive first, so the validated-ahead prefix is as
        // long as it gets (payload length - 1); the last byte completes a 4-byte character.
        let payload = "ab\u{1F600}".as_bytes();
        let frame = masked(0x81, payload);
        let mut d = server();
        let mut buf = BytesMut::from(&frame[..frame.len() - 1]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(d.progress, payload.len() - 1);
        buf.extend_from_slice(&frame[frame.len() - 1..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(text("ab\u{1F600}"))));
        assert_eq!(d.progress, 0);
        assert!(buf.is_empty());

        // The same, where the last byte breaks the character: refused when it arrives.
        let mut bad = payload.to_vec();
        *bad.last_mut().unwrap() = b'x';
        let frame = masked(0x81, &bad);
        let mut d = server();
        let mut buf = BytesMut::from(&frame[..frame.len() - 1]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&frame[frame.len() - 1..]);
        assert_eq!(d.decode(&mut buf), Err(Error::InvalidUtf8));

        // And where the character is cut short at the end of the message: the prefix is
        // fine on its own, the finished message is not.
        let frame = masked(0x81, &payload[..payload.len() - 1]);
        let mut d = server();
        let mut buf = BytesMut::from(&frame[..frame.len() - 1]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&frame[frame.len() - 1..]);
        assert_eq!(d.decode(&mut buf), Err(Error::InvalidUtf8));

        // In a continuation frame: the fragment's prefix is validated ahead, its last byte
        // completes the message.
        let wire = [masked(0x01, b"ok "), masked(0x80, payload)].concat();
        let mut d = server();
        let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(d.progress, payload.len() - 1);
        buf.extend_from_slice(&wire[wire.len() - 1..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(text("ok ab\u{1F600}"))));
    }

    #[test]
    fn validated_prefix_equal_to_the_whole_payload() {
        // `decode` never gets here (a frame validated ahead is incomplete, so `done` stays
        // below its length), but the message paths must still finish the UTF-8 check when
        // nothing of the payload is left to feed.
        let header = FrameHeader::new(OpCode::Text, 2);
        let mut d = server();
        d.utf8.feed("\u{e9}".as_bytes()).unwrap();
        let payload = BytesMut::from("\u{e9}".as_bytes());
        assert_eq!(
            d.single_frame_message(header, payload, 2),
            Ok(Some(text("\u{e9}")))
        );
        // A dangling lead byte fed ahead is refused by the finish, not skipped.
        let mut d = server();
        d.utf8.feed(&[0xC3]).unwrap();
        let header = FrameHeader::new(OpCode::Text, 1);
        assert_eq!(
            d.single_frame_message(header, BytesMut::from(&[0xC3][..]), 1),
            Err(Error::InvalidUtf8)
        );
        // The same for a fragment.
        let mut partial = Partial {
            text: true,
            compressed: false,
            buf: Vec::new(),
        };
        let mut utf8 = Utf8Validator::new();
        utf8.feed(&[0xE2, 0x82]).unwrap();
        append_fragment(&mut partial, &mut utf8, None, &[0xE2, 0x82], 2, 100).unwrap();
        append_fragment(&mut partial, &mut utf8, None, &[0xAC], 0, 100).unwrap();
        assert_eq!(
            finish_message(partial, &mut utf8, None, 100),
            Ok(Message::Text(Bytes::from_static("\u{20ac}".as_bytes())))
        );
    }

    #[test]
    #[should_panic(expected = "validated-ahead prefix")]
    fn a_read_buffer_changed_between_calls_panics() {
        // Misuse, not a peer fault: the caller replaced the bytes of a frame the decoder had
        // started validating. Panicking beats skipping the check of the rest.
        let frame = masked(0x81, b"hello world");
        let mut d = server();
        let mut buf = BytesMut::from(&frame[..frame.len() - 2]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        let mut other = BytesMut::from(&masked(0x81, b"hi")[..]);
        let _ = d.decode(&mut other);
    }

    #[test]
    fn multibyte_text_split_at_every_offset() {
        // Characters of every length, across fragment boundaries and across reads, plain and
        // compressed: every cut puts the validated-ahead prefix somewhere else.
        let good = "a\u{e9}\u{20ac}\u{1F600}\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5} z".as_bytes();
        let mut bad_byte = good.to_vec();
        bad_byte.insert(7, 0xFF);
        let mut surrogate = good.to_vec();
        surrogate.splice(3..3, [0xED, 0xA0, 0x80]);
        let dangling = [good, &[0xF0, 0x9F]].concat();
        type Decoded = Result<Vec<Message>, Error>;
        let cases: [(&[u8], Decoded); 4] = [
            (good, Ok(vec![Message::Text(Bytes::copy_from_slice(good))])),
            (&bad_byte, Err(Error::InvalidUtf8)),
            (&surrogate, Err(Error::InvalidUtf8)),
            (&dangling, Err(Error::InvalidUtf8)),
        ];
        for compressed in [false, true] {
            for max_fragment in [0, 1, 2, 3, 5, 7] {
                for (payload, want) in &cases {
                    let wire = client_text(payload, max_fragment, compressed);
                    let all: Vec<usize> = (0..=wire.len()).collect();
                    for cuts in (0..=wire.len()).map(|c| vec![c]).chain([all]) {
                        let mut d = with_inflate(Role::Server, false);
                        let got = feed_in_pieces(&mut d, &wire, &cuts);
                        assert_eq!(
                            &got, want,
                            "compressed {compressed}, fragments of {max_fragment}, cuts {cuts:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn control_frames_inside_a_fragmented_message() {
        let bytes = [
            masked(0x01, b"Hel"),
            masked(0x89, b"p1"),
            masked(0x00, b"l"),
            masked(0x8A, b"p2"),
            masked(0x80, b"o"),
        ]
        .concat();
        assert_eq!(
            decode_all(&mut server(), &bytes),
            Ok(vec![
                Message::Ping(Bytes::from_static(b"p1")),
                Message::Pong(Bytes::from_static(b"p2")),
                text("Hello"),
            ])
        );
    }

    #[test]
    fn close_handshake_peer_first() {
        let mut d = server();
        assert_eq!(d.phase(), ClosePhase::Open);
        let bytes = [
            masked(0x88, &[0x0f, 0xa0, b'b', b'y', b'e']),
            masked(0x81, b"late"),
        ]
        .concat();
        let mut buf = BytesMut::from(&bytes[..]);
        let msg = d.decode(&mut buf).unwrap();
        let code = CloseCode::new(4000).unwrap();
        assert_eq!(
            msg,
            Some(Message::Close(Some(CloseFrame {
                code,
                reason: Cow::Borrowed("bye")
            })))
        );
        assert_eq!(d.phase(), ClosePhase::CloseReceived { reply: Some(code) });
        // Nothing after the close is processed, and it is not kept.
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
        d.handle_close_sent();
        assert_eq!(d.phase(), ClosePhase::Closed);
        // An empty close asks for an empty reply.
        let mut d = server();
        assert_eq!(
            decode_all(&mut d, &masked(0x88, b"")),
            Ok(vec![Message::Close(None)])
        );
        assert_eq!(d.phase(), ClosePhase::CloseReceived { reply: None });
    }

    #[test]
    fn close_handshake_we_close_first() {
        let mut d = client();
        d.handle_close_sent();
        assert_eq!(d.phase(), ClosePhase::CloseSent);
        // Data keeps flowing until the peer's close, which completes the handshake.
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&server_text(b"still here"));
        wire.extend_from_slice(&server_close(Some(&CloseFrame::new(CloseCode::NORMAL, ""))));
        assert_eq!(
            decode_all(&mut d, &wire),
            Ok(vec![
                text("still here"),
                Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))
            ])
        );
        assert_eq!(d.phase(), ClosePhase::Closed);
        // Client-role close writer, masked.
        let mut out = BytesMut::new();
        write_close(
            &mut out,
            Some(&CloseFrame::new(CloseCode::AWAY, "bye")),
            Some(KEY),
        );
        let mut s = server();
        assert_eq!(
            decode_all(&mut s, &out),
            Ok(vec![Message::Close(Some(CloseFrame::new(
                CloseCode::AWAY,
                "bye"
            )))])
        );
    }

    #[test]
    fn control_payloads_are_cut_to_125() {
        let ping = server_ping(&[1; 300]);
        assert_eq!(ping.len(), 2 + 125);
        let close = server_close(Some(&CloseFrame {
            code: CloseCode::NORMAL,
            reason: Cow::Owned("x".repeat(200)),
        }));
        assert_eq!(close.len(), 2 + 125);
        assert_eq!(decode_all(&mut client(), &close).map(|v| v.len()), Ok(1));
        let parts = server_frame_from_parts(OpCode::Text, &[b"{\"event\":", b"\"e\"", b"}"]);
        assert_eq!(&parts[2..], b"{\"event\":\"e\"}");
    }

    // ---- Properties -------------------------------------------------------------------------

    #[derive(Clone, Debug)]
    struct Case {
        messages: Vec<(bool, Vec<u8>)>,
        compressed: Option<(bool, u8)>,
        max_fragment: usize,
    }

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..=125),
            2 => (126usize..=65535).prop_map(|n| (0..n).map(|i| (i % 7) as u8 + b'a').collect()),
            1 => (65536usize..=70_000).prop_map(|n| (0..n).map(|i| (i * 13 % 251) as u8).collect()),
        ]
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            proptest::collection::vec((any::<bool>(), payload()), 1..4),
            proptest::option::of((any::<bool>(), 8u8..=15)),
            prop_oneof![Just(0usize), 1usize..200, 1000usize..70_000],
        )
            .prop_map(|(messages, compressed, max_fragment)| Case {
                // A text message carries text: map bytes to ASCII for those.
                messages: messages
                    .into_iter()
                    .map(|(is_text, mut p)| {
                        if is_text {
                            p.iter_mut().for_each(|b| *b = b'a' + *b % 26);
                        }
                        (is_text, p)
                    })
                    .collect(),
                compressed,
                max_fragment,
            })
    }

    /// Encodes the case as `sender` would send it.
    fn encode_case(case: &Case, sender: Role) -> BytesMut {
        let mut counter = 0u32;
        let mut mask = move || {
            counter = counter.wrapping_add(0x9E37_79B9);
            (sender == Role::Client).then(|| counter.to_be_bytes())
        };
        let mut out = BytesMut::new();
        let mut compressor = case
            .compressed
            .map(|(no_ctx, bits)| Compressor::new(Deflater::new(no_ctx, bits), 0));
        for (is_text, p) in &case.messages {
            let op = if *is_text {
                OpCode::Text
            } else {
                OpCode::Binary
            };
            match compressor.as_mut() {
                Some(c) => c.write_message(&mut out, op, p, case.max_fragment, &mut mask),
                None => write_message(&mut out, op, p, false, case.max_fragment, &mut mask),
            }
        }
        out
    }

    fn expected(case: &Case) -> Vec<Message> {
        case.messages
            .iter()
            .map(|(is_text, p)| {
                let b = Bytes::from(p.clone());
                if *is_text {
                    Message::Text(b)
                } else {
                    Message::Binary(b)
                }
            })
            .collect()
    }

    fn receiver(case: &Case, role: Role) -> Decoder {
        Decoder::new(DecoderConfig {
            inflate: case.compressed.map(|(no_ctx, _)| InflateParams {
                no_context_takeover: no_ctx,
            }),
            ..DecoderConfig::new(role)
        })
    }

    /// Feeds `wire` in pieces cut at `cuts`, calling decode after each piece.
    fn feed_in_pieces(d: &mut Decoder, wire: &[u8], cuts: &[usize]) -> Result<Vec<Message>, Error> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
            let cut = cut.clamp(start, wire.len());
            buf.extend_from_slice(&wire[start..cut]);
            start = cut;
            while let Some(m) = d.decode(&mut buf)? {
                out.push(m);
            }
            assert!(buf.len() < d.max_buffered());
        }
        assert!(buf.is_empty());
        Ok(out)
    }

    proptest! {
        // 96 cases by default (large payloads); PROPTEST_CASES overrides for deep runs.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
            ..ProptestConfig::default()
        })]

        #[test]
        fn round_trip_both_roles_any_fragmentation_any_reads(
            case in case(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            for (sender, role) in [(Role::Client, Role::Server), (Role::Server, Role::Client)] {
                let wire = encode_case(&case, sender);
                let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
                cuts.sort_unstable();
                let mut d = receiver(&case, role);
                let got = feed_in_pieces(&mut d, &wire, &cuts);
                prop_assert_eq!(got, Ok(expected(&case)));
            }
        }

        #[test]
        fn server_frames_round_trip(case in case()) {
            // Encode-once server frames, compressed or not, decoded by a client.
            let mut compressor = case
                .compressed
                .map(|(no_ctx, bits)| Compressor::new(Deflater::new(no_ctx, bits), 64));
            let mut wire = BytesMut::new();
            for (is_text, p) in &case.messages {
                let op = if *is_text { OpCode::Text } else { OpCode::Binary };
                let frame = match compressor.as_mut() {
                    Some(c) => c.server_frame(op, p),
                    None => server_frame(op, p),
                };
                wire.extend_from_slice(&frame);
            }
            let mut d = receiver(&case, Role::Client);
            prop_assert_eq!(decode_all(&mut d, &wire), Ok(expected(&case)));
        }

        #[test]
        fn arbitrary_bytes_never_panic_nor_pass_limits(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            role in prop_oneof![Just(Role::Client), Just(Role::Server)],
        ) {
            let mut d = limited(role, 200, 600);
            let mut buf = BytesMut::new();
            for piece in &pieces {
                buf.extend_from_slice(piece);
                loop {
                    match d.decode(&mut buf) {
                        Ok(Some(_)) => continue,
                        Ok(None) => {
                            prop_assert!(buf.len() < d.max_buffered());
                            break;
                        }
                        Err(_) => {
                            prop_assert!(buf.is_empty());
                            break;
                        }
                    }
                }
                prop_assert!(d.buffered() <= 601);
            }
        }

        #[test]
        fn arbitrary_frames_never_panic_nor_pass_limits(
            frames in proptest::collection::vec(
                (any::<u8>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..260)),
                0..12,
            ),
        ) {
            // Mostly well-formed frames with random first bytes (opcodes, FIN, RSV), so the
            // decoder gets deep into reassembly, inflation and close handling.
            let mut wire = Vec::new();
            for (first, mask, payload) in &frames {
                let full = FrameHeader {
                    mask: mask.then_some(KEY),
                    payload_len: payload.len() as u64,
                    ..FrameHeader::parse(&[*first, 0]).unwrap().unwrap().0
                };
                let mut bytes = BytesMut::new();
                full.write(&mut bytes);
                bytes.extend_from_slice(payload);
                wire.extend_from_slice(&bytes);
            }
            for role in [Role::Server, Role::Client] {
                let mut d = limited(role, 200, 600);
                let mut buf = BytesMut::from(&wire[..]);
                while let Ok(Some(m)) = d.decode(&mut buf) {
                    if let Message::Text(t) = &m {
                        prop_assert!(std::str::from_utf8(t).is_ok());
                    }
                    prop_assert!(d.buffered() <= 601);
                }
                prop_assert!(buf.len() < d.max_buffered());
            }
        }

        #[test]
        fn any_text_any_fragmentation_any_reads(
            s in "\\PC{0,40}",
            corrupt in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            max_fragment in 0usize..12,
            compressed in any::<bool>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            // Text with characters of every length (possibly with one byte replaced, which may
            // or may not break it), split into fragments and reads anywhere: the decoder
            // agrees with std on whether it is UTF-8.
            let mut payload = s.into_bytes();
            if let (Some((at, byte)), false) = (corrupt, payload.is_empty()) {
                let at = at.index(payload.len());
                payload[at] = byte;
            }
            let want = match std::str::from_utf8(&payload) {
                Ok(_) => Ok(vec![Message::Text(Bytes::copy_from_slice(&payload))]),
                Err(_) => Err(Error::InvalidUtf8),
            };
            let wire = client_text(&payload, max_fragment, compressed);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            cuts.sort_unstable();
            let mut d = with_inflate(Role::Server, false);
            prop_assert_eq!(feed_in_pieces(&mut d, &wire, &cuts), want);
        }
    }
}
