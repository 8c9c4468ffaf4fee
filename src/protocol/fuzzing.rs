//! Fuzz bodies: ordinary library functions that feed arbitrary bytes to a decoder and check
//! its invariants (no panic, memory within the configured limits, errors mapped to a wire
//! answer). Proptest runs them on stable (below and beside each codec); the `fuzz/` targets
//! (cargo-fuzz layout, nightly) call them with coverage guidance.

use bytes::BytesMut;

use super::http::{self, BodyDecoder, Limits};
use super::ws::codec::{Decoder, DecoderConfig, InflateParams, Role};
use super::ws::handshake::{self, ServerConfig};

pub use super::stelar::fuzz::{envelopes, tcp_frames as stelar_frames};

/// WebSocket frames in both roles, with and without permessage-deflate, fed in chunks whose
/// sizes come from the data. Checks: no panic; the buffer never holds more than
/// `max_buffered()`; a decoded message respects the limits; every error has a close code.
pub fn ws_frames(data: &[u8]) {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let role = if seed & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let inflate = (seed & 2 != 0).then_some(InflateParams {
        no_context_takeover: seed & 4 != 0,
    });
    let max = 64 + usize::from(seed) * 8;
    let mut decoder = Decoder::new(DecoderConfig {
        role,
        max_frame_size: max,
        max_message_size: max * 2,
        inflate,
    });
    let mut buf = BytesMut::new();
    let mut input = rest;
    let mut step = usize::from(seed % 11) + 1;
    while !input.is_empty() {
        let take = step.min(input.len());
        let (chunk, tail) = input.split_at(take);
        buf.extend_from_slice(chunk);
        input = tail;
        step = step % 23 + 1;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(msg)) => {
                    use super::ws::codec::Message;
                    let len = match &msg {
                        Message::Text(b) => {
                            assert!(std::str::from_utf8(b).is_ok(), "text is UTF-8");
                            b.len()
                        }
                        Message::Binary(b) => b.len(),
                        Message::Ping(b) | Message::Pong(b) => {
                            assert!(b.len() <= 125);
                            b.len()
                        }
                        Message::Close(_) => 0,
                    };
                    assert!(len <= max * 2);
                }
                Ok(None) => {
                    assert!(buf.len() <= decoder.max_buffered(), "buffer past the limit");
                    break;
                }
                Err(e) => {
                    let code = e.close_code().get();
                    assert!(matches!(code, 1002 | 1007 | 1009), "{e:?}");
                    return;
                }
            }
        }
    }
}

/// The server's opening handshake and the HTTP request layer on arbitrary bytes. Checks: no
/// panic; a head is never accepted beyond the limit; every refusal has an HTTP answer; an
/// accepted upgrade consumed no more than the input.
pub fn ws_handshake(data: &[u8]) {
    let limits = Limits {
        max_head_size: 1024,
        max_body_size: 512,
    };
    let config = ServerConfig::default();
    let mut out = BytesMut::new();
    match handshake::accept_bytes(data, &limits, &config, &[], &mut out) {
        Ok(Some(n)) => {
            assert!(n.consumed <= data.len());
            assert!(out.starts_with(b"HTTP/1.1 101 "));
        }
        Ok(None) => assert!(data.len() < limits.max_head_size),
        Err(e) => {
            out.clear();
            assert!(e.write_response(&mut out), "{e:?} has an HTTP answer");
        }
    }
}

/// HTTP request heads and bodies (content-length and chunked) on arbitrary bytes. Checks: no
/// panic; bodies never pass the cap; errors have a status.
pub fn http_request(data: &[u8]) {
    let limits = Limits {
        max_head_size: 1024,
        max_body_size: 512,
    };
    let req = match http::parse_request(data, &limits) {
        Ok(Some(r)) => r.into_owned(),
        Ok(None) => return,
        Err(e) => {
            assert!(e.status().as_u16() >= 400);
            return;
        }
    };
    let mut rest = BytesMut::from(&data[req.head_len()..]);
    if let Ok(mut body) = BodyDecoder::new(req.body_kind(), &limits) {
        match body.decode(&mut rest) {
            Ok(Some(b)) => assert!(b.len() <= limits.max_body_size),
            Ok(None) => {}
            Err(e) => assert!(e.status().as_u16() >= 400),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..2048)
    }

    /// Arbitrary bytes built from a handshake-ish alphabet reach deeper than uniform noise.
    fn http_ish() -> impl Strategy<Value = Vec<u8>> {
        let parts = prop_oneof![
            Just(b"GET / HTTP/1.1\r\n".to_vec()),
            Just(b"Host: x\r\n".to_vec()),
            Just(b"Upgrade: websocket\r\n".to_vec()),
            Just(b"Connection: Upgrade\r\n".to_vec()),
            Just(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n".to_vec()),
            Just(b"Sec-WebSocket-Version: 13\r\n".to_vec()),
            Just(
                b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                    .to_vec()
            ),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"Content-Length: 5\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..16),
        ];
        proptest::collection::vec(parts, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn ws_frames_never_panic(data in bytes()) { ws_frames(&data); }
        #[test]
        fn ws_handshake_never_panics(data in http_ish()) { ws_handshake(&data); }
        #[test]
        fn http_request_never_panics(data in http_ish()) { http_request(&data); }
        #[test]
        fn stelar_frames_never_panic(data in bytes()) { stelar_frames(&data); }
        #[test]
        fn envelopes_never_panic(data in bytes()) { envelopes(&data); }
    }

    /// The smallest valid upgrade, with the key of RFC 6455 §1.3.
    const VALID_UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    /// The same request without its `Sec-WebSocket-Key` line.
    const KEYLESS_UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";

    /// Runs the server handshake on a complete request head, as the fuzz body does, but
    /// returns the outcome and the bytes written so the caller can check them.
    fn accept(
        request: &[u8],
    ) -> (
        Result<handshake::Negotiated<'static>, handshake::HandshakeError>,
        BytesMut,
    ) {
        static CONFIG: std::sync::OnceLock<ServerConfig> = std::sync::OnceLock::new();
        let config = CONFIG.get_or_init(ServerConfig::default);
        let req = http::parse_request(request, &Limits::default())
            .expect("a well-formed HTTP request")
            .expect("a complete head");
        let mut out = BytesMut::new();
        let r = handshake::accept(&req, config, &[], &mut out);
        (r, out)
    }

    #[test]
    fn a_valid_handshake_is_accepted() {
        // The fuzz body takes it without panicking...
        ws_handshake(VALID_UPGRADE);
        // ...and the handshake answers it with exactly RFC 6455 §1.3's 101: the accept value
        // of key `dGhlIHNhbXBsZSBub25jZQ==` is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
        let (r, out) = accept(VALID_UPGRADE);
        let n = r.expect("a valid upgrade is accepted");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        assert_eq!(n.consumed, VALID_UPGRADE.len());
        assert_eq!((n.subprotocol, n.deflate), (None, None));
    }

    #[test]
    fn a_handshake_without_a_key_is_refused() {
        ws_handshake(KEYLESS_UPGRADE);
        let (r, out) = accept(KEYLESS_UPGRADE);
        // RFC 6455 §4.2.1 5: the request MUST carry a |Sec-WebSocket-Key|.
        let e = r.expect_err("an upgrade without a key is refused");
        assert_eq!(e, handshake::HandshakeError::MissingKey);
        assert!(out.is_empty(), "no 101 is written for a refused upgrade");
        let mut answer = BytesMut::new();
        assert!(e.write_response(&mut answer));
        assert!(
            answer.starts_with(b"HTTP/1.1 400 "),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
}
