//! Criterion benches for the WebSocket codec (`shardcast::protocol::ws`), over in-memory
//! buffers: unmasking throughput, decoding masked client frames (server role, the hot path)
//! and unmasked server frames (client role, the load generator), UTF-8 validation,
//! permessage-deflate both ways on a ~1 KiB JSON message, and encoding server frames.
//!
//! Method: decode benches prebuild a read buffer holding many frames, copy it in the
//! (untimed) setup of each batch, and time decoding every frame, dropping each message; the
//! reported element throughput is frames per second, so ns/frame = 1e9 / (elem/s). Run with
//! `cargo bench -p shardcast-bench --bench ws -- --warm-up-time 1 --measurement-time 3` and
//! quote medians: the machine is shared and noisy.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardcast::protocol::ws::codec::{
    server_frame, server_text, write_frame, Compressor, Decoder, DecoderConfig, Role,
};
use shardcast::protocol::ws::deflate::{Deflater, Inflater};
use shardcast::protocol::ws::frame::OpCode;
use shardcast::protocol::ws::mask::apply_mask;
use shardcast::protocol::ws::utf8::Utf8Validator;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// ASCII JSON-ish text of exactly `len` bytes.
fn json_text(len: usize) -> Vec<u8> {
    let unit = br#"{"event":"chat","data":{"room":"lobby","msg":"hello there","n":12345}},"#;
    unit.iter().copied().cycle().take(len).collect()
}

/// A realistic ~1 KiB JSON message for the deflate benches.
fn json_message() -> Vec<u8> {
    json_tick(0)
}

/// The `seq`-th of a stream of similar ticker messages (numbers change, keys repeat).
fn json_tick(seq: usize) -> Vec<u8> {
    let mut s = String::from(r#"{"event":"tick","data":["#);
    for i in 0..12 {
        s.push_str(&format!(
            r#"{{"symbol":"SYM{i}","bid":{},"ask":{},"volume":{},"ts":1718000000{i:03}}},"#,
            100 + i * 7 + seq * 13,
            101 + i * 7 + seq * 17,
            5000 + i * 311 + seq * 7919
        ));
    }
    s.pop();
    s.push_str("]}");
    s.into_bytes()
}

fn bench_unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in [64usize, 1024, 64 * 1024, 1024 * 1024] {
        let mut buf = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{size}"), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY)))
        });
    }
    group.finish();
}

/// Decodes every frame of `wire` with a fresh clone of it per batch.
fn bench_decode(c: &mut Criterion, group_name: &str, role: Role, opcode: OpCode) {
    let mut group = c.benchmark_group(group_name);
    for size in [64usize, 1024, 64 * 1024] {
        let payload = json_text(size);
        // Enough frames per batch to amortise the setup copy: ~4 MiB or at least 64 frames.
        let frames = (4 * 1024 * 1024 / (size + 14)).max(64);
        let mut wire = BytesMut::new();
        for _ in 0..frames {
            let mask = (role == Role::Server).then_some(KEY);
            write_frame(&mut wire, opcode, true, false, &payload, mask);
        }
        let mut decoder = Decoder::new(DecoderConfig::new(role));
        group.throughput(Throughput::Elements(frames as u64));
        group.bench_function(format!("{size}"), |b| {
            b.iter_batched(
                || wire.clone(),
                |mut buf| {
                    let mut n = 0;
                    while let Ok(Some(m)) = decoder.decode(&mut buf) {
                        black_box(&m);
                        n += 1;
                    }
                    assert_eq!(n, frames);
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// The floor under any zero-copy decoder: split each 64-byte frame off the read buffer, make
/// it `Bytes` and drop it (two atomic refcount operations), with no parsing at all.
fn bench_split_floor(c: &mut Criterion) {
    let frames = 4 * 1024 * 1024 / 78;
    let wire = BytesMut::from(&vec![0u8; frames * 78][..]);
    let mut group = c.benchmark_group("floor_split_freeze_drop");
    group.throughput(Throughput::Elements(frames as u64));
    group.bench_function("64", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut buf| {
                while buf.len() >= 78 {
                    let mut frame = buf.split_to(78);
                    bytes::Buf::advance(&mut frame, 14);
                    black_box(frame.freeze());
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn bench_decode_server_role(c: &mut Criterion) {
    bench_decode(c, "decode_masked_text", Role::Server, OpCode::Text);
    bench_decode(c, "decode_masked_binary", Role::Server, OpCode::Binary);
}

fn bench_decode_client_role(c: &mut Criterion) {
    bench_decode(c, "decode_unmasked_text", Role::Client, OpCode::Text);
}

fn bench_utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for size in [1024usize, 64 * 1024] {
        // Mixed ASCII and multi-byte text, as chat messages are.
        let text: Vec<u8> = "hello wörld — κόσμε 😀 "
            .bytes()
            .cycle()
            .take(size)
            .collect();
        let text = match std::str::from_utf8(&text) {
            Ok(_) => text,
            Err(e) => text[..e.valid_up_to()].to_vec(),
        };
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("validator_{size}"), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(&text)).unwrap();
                v.finish().unwrap();
            })
        });
        group.bench_function(format!("validator_4k_chunks_{size}"), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                for chunk in black_box(&text).chunks(4093) {
                    v.feed(chunk).unwrap();
                }
                v.finish().unwrap();
            })
        });
        group.bench_function(format!("std_from_utf8_{size}"), |b| {
            b.iter(|| std::str::from_utf8(black_box(&text)).is_ok())
        });
    }
    group.finish();
}

fn bench_deflate(c: &mut Criterion) {
    let msg = json_message();
    let mut group = c.benchmark_group("deflate_1k_json");
    group.throughput(Throughput::Bytes(msg.len() as u64));
    // A stream of similar (not identical) messages, as a ticker or chat sends: with context
    // takeover, later messages refer back to earlier ones.
    let stream: Vec<Vec<u8>> = (0..64).map(json_tick).collect();
    for (name, no_ctx) in [("no_context_takeover", true), ("context_takeover", false)] {
        let mut deflater = Deflater::new(no_ctx, 15);
        let mut out = BytesMut::with_capacity(4096);
        let mut next = 0;
        group.bench_function(format!("compress_{name}"), |b| {
            b.iter(|| {
                next = (next + 1) % stream.len();
                out.clear();
                deflater.compress(black_box(&stream[next]), &mut out);
                black_box(out.len())
            })
        });
    }
    let mut deflater = Deflater::new(false, 10);
    let mut out = BytesMut::with_capacity(4096);
    group.bench_function("compress_window_10_rle", |b| {
        b.iter(|| {
            out.clear();
            deflater.compress(black_box(&msg), &mut out);
            black_box(out.len())
        })
    });

    let mut compressed = BytesMut::new();
    Deflater::new(true, 15).compress(&msg, &mut compressed);
    println!(
        "deflate_1k_json: {} bytes -> {} bytes",
        msg.len(),
        compressed.len()
    );
    let mut inflater = Inflater::new(true);
    group.bench_function("inflate_no_context_takeover", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            inflater
                .push(black_box(&compressed), &mut out, 1 << 20)
                .unwrap();
            inflater.finish(&mut out, 1 << 20).unwrap();
            black_box(out)
        })
    });
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_server_frame");
    for size in [64usize, 1024] {
        let payload = json_text(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("text_{size}"), |b| {
            b.iter(|| black_box(server_text(black_box(&payload))))
        });
    }
    let msg = json_message();
    let mut compressor = Compressor::new(Deflater::new(true, 15), 256);
    group.throughput(Throughput::Bytes(msg.len() as u64));
    group.bench_function("compressed_1k_json", |b| {
        b.iter(|| black_box(compressor.server_frame(OpCode::Text, black_box(&msg))))
    });
    group.bench_function("uncompressed_1k_json", |b| {
        b.iter(|| black_box(server_frame(OpCode::Text, black_box(&msg))))
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_unmask,
    bench_split_floor,
    bench_decode_server_role,
    bench_decode_client_role,
    bench_utf8,
    bench_deflate,
    bench_encode
);
criterion_main!(benches);
