//! Fuzz bodies for the stelar codecs: ordinary functions over arbitrary bytes that panic only
//! when an invariant breaks. Proptest runs them here on stable; `protocol::fuzzing` and the
//! `fuzz/` targets can call them where nightly is available.

use bytes::BytesMut;

use super::{binary, envelope, names, FrameDecoder};

/// Feeds `data` to a TCP frame decoder with a small max frame size, in chunks whose sizes
/// come from the data itself. Checks: no panic; the buffer never exceeds the decoder's
/// limit; every frame respects §4.1's bounds; every error has an ERROR frame.
pub fn tcp_frames(data: &[u8]) {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let dec = FrameDecoder::new(7 + usize::from(seed));
    let mut buf = BytesMut::new();
    let mut input = rest;
    let mut step = usize::from(seed % 13) + 1;
    while !input.is_empty() {
        let room = dec.buffer_limit() - buf.len();
        let take = step.min(input.len()).min(room.max(1));
        let (chunk, tail) = input.split_at(take);
        buf.extend_from_slice(chunk);
        input = tail;
        step = step % 17 + 1;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.event.len() <= super::frame::MAX_EVENT_LEN);
                    assert!(7 + f.event.len() + f.payload.len() <= dec.max_frame_size());
                }
                Ok(None) => {
                    assert!(buf.len() < dec.max_frame_size().max(7));
                    break;
                }
                Err(e) => {
                    assert!(e.error_frame().is_some(), "{e:?}");
                    return;
                }
            }
        }
    }
}

/// Parses `data` as a text envelope, an ACK payload, a binary message and a room name.
/// Checks: no panic; `data` spans lie inside the input; a parsed envelope re-encodes and
/// parses back to the same fields.
pub fn envelopes(data: &[u8]) {
    if let Ok(e) = envelope::parse(data) {
        if let Some(d) = e.data {
            let r = e.data_range(data).expect("data lies inside the input");
            assert_eq!(&data[r], d);
        }
        let again = envelope::TextEnvelope {
            event: &e.event,
            data: e.data,
            ack_name: e.ack_name.as_deref(),
            is_ack: e.is_ack,
            correlation_id: e.correlation_id.as_deref(),
        }
        .encode();
        let back = envelope::parse(&again).expect("our own encoding parses");
        assert_eq!(back, e);
    }
    let _ = envelope::parse_ack_payload(data);
    if let Ok(b) = binary::parse(data) {
        assert_eq!(&data[b.payload_range()], b.payload);
    }
    let _ = names::room_from_json(data, names::DEFAULT_MAX_ROOM_NAME_LEN);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]
        #[test]
        fn tcp_frames_body(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            tcp_frames(&data);
        }

        #[test]
        fn envelopes_body(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            envelopes(&data);
        }

        #[test]
        fn envelopes_body_on_near_valid(event in "[a-z]{1,8}", data in "[ -~]{0,30}", cut in any::<usize>()) {
            let mut text = format!(r#"{{"event":"{event}","data":{data}}}"#).into_bytes();
            envelopes(&text);
            text.truncate(cut % (text.len() + 1));
            envelopes(&text);
        }
    }
}
