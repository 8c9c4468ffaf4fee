#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shardcast::protocol::fuzzing::ws_frames(data));
