//! The stelar layer's one error enum, and the two mappings every caller needs: the wire
//! answer a fault gets (PROTOCOL.md §4.3, §7.3) and its short static counter label.
//!
//! Faults come from three places: a peer's TCP frame stream (answered with an ERROR frame
//! and a close), a peer's JSON or binary envelope (dropped silently, stelar's behaviour), and
//! local misuse of the encoders (the frame is never sent). No `String` is built when a fault
//! is raised: the ERROR frame text is the `Display` output, formatted only by
//! [`Error::error_frame`] when the connection actually answers.

use bytes::Bytes;

use super::frame::OutFrame;

/// Everything that can go wrong in `protocol::stelar`. One variant per distinct fault.
///
/// The `Display` text of the frame-stream faults is exactly the ERROR frame text stelar
/// sends (PROTOCOL.md §4.3); the others are for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    // --- TCP frame stream (peer faults, §4.3): ERROR frame, then close -------------------
    /// `totalLen` < 7 or > the configured max frame size, read from the header before the
    /// body arrives.
    #[error("Invalid frame size: {len}")]
    InvalidFrameSize {
        /// The `totalLen` field as received.
        len: u32,
    },
    /// `eventLen` > 256, or 7 + `eventLen` > `totalLen`.
    #[error("Invalid event length")]
    InvalidEventLength,
    /// More than 2 × max frame size bytes buffered.
    #[error("Buffer overflow ({limit})")]
    BufferOverflow {
        /// The buffer limit (2 × max frame size).
        limit: usize,
    },

    // --- JSON text (peer faults): message dropped --------------------------------------
    /// The input ended inside a JSON value.
    #[error("invalid JSON: unexpected end of input")]
    JsonEof,
    /// A byte that the JSON grammar does not allow here (RFC 8259 §2).
    #[error("invalid JSON: unexpected byte")]
    JsonSyntax,
    /// An unescaped control character (U+0000..U+001F) inside a string (RFC 8259 §7).
    #[error("invalid JSON: control character in string")]
    JsonControlChar,
    /// A backslash escape that RFC 8259 §7 does not define, or a bad `\u` hex digit.
    #[error("invalid JSON: bad escape")]
    JsonEscape,
    /// A `\u` escape naming an unpaired UTF-16 surrogate in a string we must decode.
    #[error("invalid JSON: unpaired surrogate")]
    JsonLoneSurrogate,
    /// Bytes that are not UTF-8 (RFC 8259 §8.1: JSON text MUST be UTF-8).
    #[error("invalid JSON: not UTF-8")]
    JsonUtf8,
    /// Objects and arrays nested deeper than [`super::json::MAX_DEPTH`].
    #[error("invalid JSON: nesting too deep")]
    JsonDepth,
    /// simd-json refused the `data` a handler asked to read.
    #[error("invalid JSON in data")]
    DataJson,

    // --- JSON envelope shape (§2, peer faults): message dropped ------------------------
    /// The message is valid JSON but not an object (PROTOCOL.md §10 Q2: `null` included).
    #[error("envelope is not a JSON object")]
    NotAnObject,
    /// The envelope has no `event` key.
    #[error("envelope has no event")]
    MissingEvent,
    /// `event` is not a JSON string (stelar would coerce it; we refuse).
    #[error("envelope event is not a string")]
    EventNotString,
    /// The event name is empty (§2.3 step 4: dropped).
    #[error("empty event name")]
    EmptyEvent,
    /// An inbound event name longer than 256 bytes (§10 Q13).
    #[error("event name longer than 256 bytes")]
    EventTooLong,
    /// An inbound event name (TCP frame event field) that is not UTF-8 (§10 Q13).
    #[error("event name is not UTF-8")]
    EventNotUtf8,

    // --- WebSocket binary envelope (§3, peer faults): message dropped ------------------
    /// Fewer than 4 bytes.
    #[error("binary message shorter than 4 bytes")]
    BinaryTooShort,
    /// `headerLen` > message length − 4.
    #[error("binary header length exceeds message")]
    BinaryHeaderLength,

    // --- Room names (§6, §10 Q14, peer faults): join/leave ignored ---------------------
    /// The room is empty or JS-falsy (`""`, `0`, `false`, `null`): stelar ignores it.
    #[error("empty room name")]
    RoomNameEmpty,
    /// The room is neither a JSON string nor an integer.
    #[error("room name is not a string or integer")]
    RoomNameType,
    /// The room name exceeds the configured cap.
    #[error("room name too long")]
    RoomNameTooLong,
    /// A raw (TCP JOIN/LEAVE) room name that is not UTF-8.
    #[error("room name is not UTF-8")]
    RoomNameNotUtf8,

    // --- Local misuse (our own output): never sent -------------------------------------
    /// An outbound event name breaking §2.4 (1–256 chars of `A-Z a-z 0-9 - . / :`).
    #[error("invalid outbound event name")]
    InvalidEventName,
    /// An outbound event name reserved by §2.4 (`ping pong connect disconnect error`).
    #[error("reserved outbound event name")]
    ReservedEventName,
    /// An outbound frame's event field longer than 256 bytes (§4.1).
    #[error("frame event field longer than 256 bytes")]
    EventFieldTooLong,
    /// An outbound frame larger than stelar clients accept (§8: 10 MiB incl. header).
    #[error("outbound frame of {len} bytes exceeds the 10 MiB a stelar client accepts")]
    FrameTooLarge {
        /// Total frame length that was asked for.
        len: usize,
    },
}

/// What a connection does about a fault (PROTOCOL.md §4.3, §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// TCP: send an ERROR frame ([`Error::error_frame`]) and close the socket.
    ErrorFrameAndClose,
    /// Drop the message silently (count it); the connection carries on.
    Drop,
    /// A local bug: the frame was never built, nothing goes on the wire.
    NotSent,
}

impl Error {
    /// The wire answer to this fault.
    pub fn answer(&self) -> Answer {
        use Error::*;
        match self {
            InvalidFrameSize { .. } | InvalidEventLength | BufferOverflow { .. } => {
                Answer::ErrorFrameAndClose
            }
            JsonEof | JsonSyntax | JsonControlChar | JsonEscape | JsonLoneSurrogate | JsonUtf8
            | JsonDepth | DataJson | NotAnObject | MissingEvent | EventNotString | EmptyEvent
            | EventTooLong | EventNotUtf8 | BinaryTooShort | BinaryHeaderLength | RoomNameEmpty
            | RoomNameType | RoomNameTooLong | RoomNameNotUtf8 => Answer::Drop,
            InvalidEventName | ReservedEventName | EventFieldTooLong | FrameTooLarge { .. } => {
                Answer::NotSent
            }
        }
    }

    /// A short static label for counters (`stelar_errors_total{fault="…"}`).
    pub fn label(&self) -> &'static str {
        use Error::*;
        match self {
            InvalidFrameSize { .. } => "invalid_frame_size",
            InvalidEventLength => "invalid_event_length",
            BufferOverflow { .. } => "buffer_overflow",
            JsonEof => "json_eof",
            JsonSyntax => "json_syntax",
            JsonControlChar => "json_control_char",
            JsonEscape => "json_escape",
            JsonLoneSurrogate => "json_lone_surrogate",
            JsonUtf8 => "json_utf8",
            JsonDepth => "json_depth",
            DataJson => "data_json",
            NotAnObject => "not_an_object",
            MissingEvent => "missing_event",
            EventNotString => "event_not_string",
            EmptyEvent => "empty_event",
            EventTooLong => "event_too_long",
            EventNotUtf8 => "event_not_utf8",
            BinaryTooShort => "binary_too_short",
            BinaryHeaderLength => "binary_header_length",
            RoomNameEmpty => "room_name_empty",
            RoomNameType => "room_name_type",
            RoomNameTooLong => "room_name_too_long",
            RoomNameNotUtf8 => "room_name_not_utf8",
            InvalidEventName => "invalid_event_name",
            ReservedEventName => "reserved_event_name",
            EventFieldTooLong => "event_field_too_long",
            FrameTooLarge { .. } => "frame_too_large",
        }
    }

    /// True for faults in JSON text itself (as opposed to a valid document of the wrong shape).
    pub fn is_json_syntax(&self) -> bool {
        use Error::*;
        matches!(
            self,
            JsonEof
                | JsonSyntax
                | JsonControlChar
                | JsonEscape
                | JsonLoneSurrogate
                | JsonUtf8
                | JsonDepth
        )
    }

    /// The ERROR frame (type 0x0B, event `error`) stelar sends for this fault, or `None` when
    /// the answer is not an ERROR frame. Formats the text: call it only when answering.
    pub fn error_frame(&self) -> Option<Bytes> {
        if self.answer() != Answer::ErrorFrameAndClose {
            return None;
        }
        let text = self.to_string();
        // The texts are a few dozen bytes, far below the frame size limit, so this succeeds.
        OutFrame::Error { text: &text }.encode().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_texts_are_stelars() {
        assert_eq!(
            Error::InvalidFrameSize { len: 3 }.to_string(),
            "Invalid frame size: 3"
        );
        assert_eq!(
            Error::InvalidEventLength.to_string(),
            "Invalid event length"
        );
        assert_eq!(
            Error::BufferOverflow { limit: 20_971_520 }.to_string(),
            "Buffer overflow (20971520)"
        );
    }

    #[test]
    fn error_frame_matches_section_9() {
        // PROTOCOL.md §9: ERROR on a bad event length.
        let mut want = vec![0x00, 0x00, 0x00, 0x20, 0x0b, 0x00, 0x05];
        want.extend_from_slice(b"error");
        want.extend_from_slice(b"Invalid event length");
        assert_eq!(
            Error::InvalidEventLength.error_frame().as_deref(),
            Some(&want[..])
        );
        assert_eq!(Error::JsonSyntax.error_frame(), None);
        assert_eq!(Error::InvalidEventName.error_frame(), None);
    }

    #[test]
    fn answers_and_labels() {
        assert_eq!(
            Error::BufferOverflow { limit: 1 }.answer(),
            Answer::ErrorFrameAndClose
        );
        assert_eq!(Error::NotAnObject.answer(), Answer::Drop);
        assert_eq!(Error::FrameTooLarge { len: 1 }.answer(), Answer::NotSent);
        assert_eq!(Error::JsonDepth.label(), "json_depth");
        assert!(Error::JsonEscape.is_json_syntax());
        assert!(!Error::MissingEvent.is_json_syntax());
    }
}
