//! What the server answers when a client's message cannot be acted on, one variant per fault.
//!
//! [`ClientError`] is answered with a `server:error` event `{"code":C,"message":M,"event":E}`
//! (PROTOCOL.md §10 Q12) and the connection carries on; [`ClientError::code`] and
//! [`ClientError::message`] give the event's text, [`ClientError::label`] the one counter it
//! is counted under. Faults the protocol layer found carry its error, whose label is the one
//! counted (a bad envelope is counted once, under what was wrong with it).
//!
//! [`RequestError`] is what can be wrong with a publish / broadcast / send request, whoever
//! sent it: a client's relay event (answered as above) or a backend's HTTP API call
//! (answered with [`RequestError::status`]).

use crate::protocol::http::StatusCode;
use crate::protocol::stelar;

/// A client message the server cannot act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientError {
    /// A WebSocket text message that is not a stelar envelope.
    InvalidEnvelope(stelar::Error),
    /// A WebSocket binary message without the binary envelope's header.
    InvalidBinaryEnvelope(stelar::Error),
    /// A binary envelope whose header names no event.
    BinaryWithoutEvent,
    /// A TCP frame whose event field is not 1–256 bytes of UTF-8.
    InvalidFrameEvent(stelar::Error),
    /// A TCP JSON frame whose payload is not JSON.
    InvalidJsonPayload(stelar::Error),
    /// A TCP ACK_REQ whose payload is not JSON.
    InvalidAckPayload(stelar::Error),
    /// No handler, relay event or catch-all takes this event.
    UnknownEvent,
    /// No handler or relay room takes this binary event.
    UnknownBinaryEvent,
    /// The relay event is turned off on this server (`relay.*`).
    RelayDisabled,
    /// Publishing needs membership of the room (`relay.publish_requires_membership`).
    NotMember,
    /// A publish / broadcast / direct request that cannot be carried out.
    Request(RequestError),
    /// Over the client's rate limit (`rate_limit`): the message was dropped.
    RateLimited,
    /// The client's credentials do not allow this (`auth::may`).
    Forbidden(Forbidden),
}

/// What a client's credentials did not allow (`auth.default_rooms`, the token's rooms /
/// publish / broadcast / direct claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forbidden {
    /// Joining the room.
    Join,
    /// Publishing to the room.
    Publish,
    /// Broadcasting.
    Broadcast,
    /// Sending direct messages.
    Direct,
}

impl ClientError {
    /// The `code` of the `server:error` event.
    pub(crate) fn code(self) -> &'static str {
        match self {
            ClientError::InvalidEnvelope(_)
            | ClientError::InvalidBinaryEnvelope(_)
            | ClientError::BinaryWithoutEvent
            | ClientError::InvalidFrameEvent(_)
            | ClientError::InvalidJsonPayload(_)
            | ClientError::InvalidAckPayload(_) => "invalid_message",
            ClientError::UnknownEvent | ClientError::UnknownBinaryEvent => "unknown_event",
            ClientError::RelayDisabled => "forbidden",
            ClientError::NotMember => "not_member",
            ClientError::Request(e) => e.code(),
            ClientError::Forbidden(_) => "forbidden",
            ClientError::RateLimited => "rate_limited",
        }
    }

    /// The `message` of the `server:error` event.
    pub(crate) fn message(self) -> &'static str {
        use stelar::Error as E;
        match self {
            ClientError::InvalidEnvelope(e) => match e {
                E::NotAnObject => "a text message must be a JSON object",
                E::MissingEvent | E::EventNotString | E::EmptyEvent => {
                    "a text message needs a non-empty string event"
                }
                E::EventTooLong => "event names are at most 256 bytes",
                _ => "a text message must be valid JSON",
            },
            ClientError::InvalidBinaryEnvelope(_) => {
                "binary message needs u32 header length + JSON header"
            }
            ClientError::BinaryWithoutEvent => "binary header has no event",
            ClientError::InvalidFrameEvent(_) => "event names are 1-256 bytes of UTF-8",
            ClientError::InvalidJsonPayload(_) => "a JSON frame's payload must be valid JSON",
            ClientError::InvalidAckPayload(_) => "an ACK request's payload must be valid JSON",
            ClientError::UnknownEvent => "no handler for this event",
            ClientError::UnknownBinaryEvent => "no handler for this binary event",
            ClientError::RelayDisabled => "this relay event is disabled on this server",
            ClientError::NotMember => {
                "publishing (or asking for its members) requires membership of the room"
            }
            ClientError::Request(e) => e.message(),
            ClientError::Forbidden(f) => match f {
                Forbidden::Join => "your credentials do not allow joining this room",
                Forbidden::Publish => "your credentials do not allow publishing to this room",
                Forbidden::Broadcast => "your credentials do not allow broadcasting",
                Forbidden::Direct => "your credentials do not allow direct messages",
            },
            ClientError::RateLimited => "rate limit exceeded: message dropped",
        }
    }

    /// The counter label (`shardcast_protocol_errors_total{kind=…}`).
    pub(crate) fn label(self) -> &'static str {
        match self {
            ClientError::InvalidEnvelope(e)
            | ClientError::InvalidBinaryEnvelope(e)
            | ClientError::InvalidFrameEvent(e)
            | ClientError::InvalidAckPayload(e) => e.label(),
            ClientError::InvalidJsonPayload(_) => "tcp_invalid_json",
            ClientError::BinaryWithoutEvent => "binary_without_event",
            ClientError::UnknownEvent | ClientError::UnknownBinaryEvent => "app_unknown_event",
            ClientError::RelayDisabled => "app_forbidden",
            ClientError::NotMember => "app_not_member",
            ClientError::Request(e) => e.label(),
            ClientError::Forbidden(f) => match f {
                Forbidden::Join => "auth_forbidden_join",
                Forbidden::Publish => "auth_forbidden_publish",
                Forbidden::Broadcast => "auth_forbidden_broadcast",
                Forbidden::Direct => "auth_forbidden_direct",
            },
            ClientError::RateLimited => "rate_limited",
        }
    }
}

impl From<RequestError> for ClientError {
    fn from(e: RequestError) -> ClientError {
        ClientError::Request(e)
    }
}

/// What can be wrong with a publish / broadcast / send request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// Not valid JSON (an HTTP body; a client's data was validated with its message).
    NotJson,
    /// Valid JSON, not an object.
    NotObject,
    /// `event` is missing or not a string.
    EventNotString,
    /// `event` is not a name stelar clients accept (PROTOCOL.md §2.4).
    InvalidEventName,
    /// `room` is missing, empty, too long or not a string.
    InvalidRoom,
    /// `to` is not a client id (and there is no `user`).
    InvalidTo,
    /// `user` is not a string of 1-256 bytes.
    InvalidUser,
    /// No client with the id `to` is connected (HTTP API; relay senders are told by the
    /// shard that found out, with the id).
    UnknownClient,
    /// No connection of the user `user` is connected (HTTP API).
    UnknownUser,
}

impl RequestError {
    /// The `code` of the `server:error` event.
    pub(crate) fn code(self) -> &'static str {
        match self {
            RequestError::NotJson
            | RequestError::NotObject
            | RequestError::EventNotString
            | RequestError::InvalidTo
            | RequestError::InvalidUser => "invalid_data",
            RequestError::InvalidEventName => "invalid_event_name",
            RequestError::InvalidRoom => "invalid_room",
            RequestError::UnknownClient => "unknown_client",
            RequestError::UnknownUser => "unknown_user",
        }
    }

    /// What is wrong, naming the member.
    pub(crate) fn message(self) -> &'static str {
        match self {
            RequestError::NotJson => "the request must be valid JSON",
            RequestError::NotObject => "the request must be a JSON object",
            RequestError::EventNotString => "event must be a string",
            RequestError::InvalidEventName => {
                "event must be 1-256 of A-Z a-z 0-9 - . / : and not reserved"
            }
            RequestError::InvalidRoom => {
                "room must be a non-empty string of at most max_room_name bytes"
            }
            RequestError::InvalidTo => "to must be a client id (or user a user id)",
            RequestError::InvalidUser => "user must be a string of 1-256 bytes",
            RequestError::UnknownClient => "no client with this id is connected",
            RequestError::UnknownUser => "no connection of this user is connected",
        }
    }

    /// The counter label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            RequestError::NotJson => "request_not_json",
            RequestError::NotObject => "request_not_object",
            RequestError::EventNotString => "request_event_not_string",
            RequestError::InvalidEventName => "request_invalid_event_name",
            RequestError::InvalidRoom => "request_invalid_room",
            RequestError::InvalidTo => "request_invalid_to",
            RequestError::UnknownClient => "request_unknown_client",
            RequestError::InvalidUser => "request_invalid_user",
            RequestError::UnknownUser => "request_unknown_user",
        }
    }

    /// The HTTP API's answer.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            RequestError::UnknownClient | RequestError::UnknownUser => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_has_a_code_a_message_and_a_label() {
        let all = [
            ClientError::InvalidEnvelope(stelar::Error::NotAnObject),
            ClientError::InvalidBinaryEnvelope(stelar::Error::JsonSyntax),
            ClientError::BinaryWithoutEvent,
            ClientError::InvalidFrameEvent(stelar::Error::InvalidEventName),
            ClientError::InvalidJsonPayload(stelar::Error::JsonSyntax),
            ClientError::InvalidAckPayload(stelar::Error::JsonEof),
            ClientError::UnknownEvent,
            ClientError::UnknownBinaryEvent,
            ClientError::RelayDisabled,
            ClientError::NotMember,
            ClientError::Request(RequestError::InvalidRoom),
            ClientError::Forbidden(Forbidden::Join),
            ClientError::Forbidden(Forbidden::Publish),
            ClientError::Forbidden(Forbidden::Broadcast),
            ClientError::Forbidden(Forbidden::Direct),
        ];
        for e in all {
            assert!(!e.code().is_empty() && !e.message().is_empty() && !e.label().is_empty());
        }
        assert_eq!(
            ClientError::InvalidEnvelope(stelar::Error::NotAnObject).label(),
            stelar::Error::NotAnObject.label(),
            "a bad envelope is counted under the protocol's label only"
        );
        assert_eq!(RequestError::UnknownClient.status(), StatusCode::NOT_FOUND);
        assert_eq!(RequestError::InvalidTo.status(), StatusCode::BAD_REQUEST);
    }
}
