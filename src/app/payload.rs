//! What a handler receives ([`Payload`]) and what it sends as JSON ([`Json`]).
//!
//! A payload is the exact bytes the client sent — the JSON text of `data`, or a binary
//! message's bytes — as a `Bytes` view of the read buffer (no copy). Handlers that want a
//! typed value deserialize it with serde ([`Payload::json`]) or get a simd-json DOM
//! ([`Payload::value`]); forwarding it needs neither.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::protocol::stelar::json;

/// An event's data as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    event: Box<str>,
    bytes: Option<Bytes>,
    binary: bool,
}

/// Why a payload could not be read as asked.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The event carried no data.
    #[error("the event carried no data")]
    Missing,
    /// It is a binary payload.
    #[error("binary payload, not JSON")]
    Binary,
    /// Not the expected shape.
    #[error("data does not match the expected type: {0}")]
    Shape(String),
}

impl Payload {
    pub(crate) fn json(event: &str, bytes: Option<Bytes>) -> Payload {
        Payload {
            event: event.into(),
            bytes,
            binary: false,
        }
    }

    pub(crate) fn binary(event: &str, bytes: Bytes) -> Payload {
        Payload {
            event: event.into(),
            bytes: Some(bytes),
            binary: true,
        }
    }

    /// The event (or ACK request's event) name.
    pub fn event(&self) -> &str {
        &self.event
    }

    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// The raw bytes: JSON text of `data` (verbatim), or the binary payload. `None` when the
    /// event had no `data`.
    pub fn raw(&self) -> Option<&Bytes> {
        self.bytes.as_ref()
    }

    /// The data as a [`Json`] value, for forwarding unchanged.
    pub fn to_json(&self) -> Option<Json> {
        match (&self.bytes, self.binary) {
            (Some(b), false) => Some(Json(b.clone())),
            _ => None,
        }
    }

    /// Deserializes the data.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        if self.binary {
            return Err(PayloadError::Binary);
        }
        let bytes = self.bytes.as_ref().ok_or(PayloadError::Missing)?;
        serde_json::from_slice(bytes).map_err(|e| PayloadError::Shape(e.to_string()))
    }

    /// The data parsed by simd-json into an owned DOM.
    pub fn value(&self) -> Result<simd_json::OwnedValue, PayloadError> {
        if self.binary {
            return Err(PayloadError::Binary);
        }
        let bytes = self.bytes.as_ref().ok_or(PayloadError::Missing)?;
        let mut copy = bytes.to_vec();
        simd_json::to_owned_value(&mut copy).map_err(|e| PayloadError::Shape(e.to_string()))
    }

    /// The data if it is a JSON string, unescaped.
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        if self.binary {
            return None;
        }
        crate::protocol::stelar::names::room_from_json(self.bytes.as_ref()?, usize::MAX)
            .ok()
            .filter(|_| {
                self.bytes
                    .as_ref()
                    .is_some_and(|b| b.first() == Some(&b'"'))
            })
    }
}

/// JSON text known to be valid, cheap to clone and to send to many clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Json(pub(crate) Bytes);

impl Json {
    /// Serializes a value.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Json {
        // Serializing to a Vec only fails for maps with non-string keys or a failing Serialize
        // impl; both are programming errors, answered with JSON null rather than a panic.
        Json(Bytes::from(
            serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()),
        ))
    }

    /// Wraps JSON text, checking that it is valid JSON.
    pub fn from_text(text: impl Into<Bytes>) -> Result<Json, PayloadError> {
        let bytes = text.into();
        json::validate(&bytes).map_err(|e| PayloadError::Shape(e.to_string()))?;
        Ok(Json(bytes))
    }

    /// A JSON string.
    pub fn string(s: &str) -> Json {
        let mut out = bytes::BytesMut::with_capacity(json::quoted_len(s));
        json::write_quoted(&mut out, s);
        Json(out.freeze())
    }

    /// `null`.
    pub fn null() -> Json {
        Json(Bytes::from_static(b"null"))
    }

    /// The JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON text as `Bytes`.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl From<&serde_json::Value> for Json {
    fn from(v: &serde_json::Value) -> Json {
        Json::from_value(v)
    }
}

impl From<serde_json::Value> for Json {
    fn from(v: serde_json::Value) -> Json {
        Json::from_value(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_readers() {
        let p = Payload::json("e", Some(Bytes::from_static(b"{\"a\":1}")));
        #[derive(serde::Deserialize)]
        struct A {
            a: u32,
        }
        assert_eq!(p.parse::<A>().unwrap().a, 1);
        assert!(p.as_str().is_none());
        let s = Payload::json("e", Some(Bytes::from_static(b"\"h\\u00e9\"")));
        assert_eq!(s.as_str().unwrap(), "hé");
        let n = Payload::json("e", None);
        assert!(matches!(n.parse::<u32>(), Err(PayloadError::Missing)));
        let v = Payload::json("e", Some(Bytes::from_static(b"[1,2]")))
            .value()
            .unwrap();
        assert_eq!(simd_json::to_string(&v).unwrap(), "[1,2]");
    }

    #[test]
    fn json_builders() {
        assert_eq!(Json::string("a\"b").as_bytes(), b"\"a\\\"b\"");
        assert!(Json::from_text("{bad").is_err());
        assert_eq!(Json::from_value(&[1, 2]).as_bytes(), b"[1,2]");
    }
}
