//! The stelar protocol's framing and envelopes (PROTOCOL.md).
