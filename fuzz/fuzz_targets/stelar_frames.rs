#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shardcast::protocol::fuzzing::stelar_frames(data));
