//! Fan-out on one shard: one publish to a room of 10 000 local connections — the message is
//! encoded once per wire form and its frame queued on every member (`Hub::publish`).
//!
//! Runs inside a real one-shard `shardcast-shards` runtime (the hub needs its mesh and timer
//! handles), with connections registered in the hub but no sockets (driven through
//! `shardcast::internals`, feature `bench-internals`): what is measured is the encode-once
//! plus the per-recipient queueing, i.e. the server's CPU cost per delivery before the
//! `sendmsg` that follows (see PERF.md for the end-to-end figures). Per-recipient cost =
//! time per publish / members.
//!
//! Peer in the same run: the naive way, encoding the frame anew for every recipient.
//!
//! `cargo bench -p shardcast-bench --bench fanout -- --warm-up-time 1 --measurement-time 3`

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use shardcast::internals::{on_one_shard, FanoutBench, Message, Mix};

const MEMBERS: usize = 10_000;

fn bench(c: &mut Criterion, mut hub: FanoutBench) {
    let data =
        Bytes::from_static(br#"{"user":"alice","text":"hello, room","n":12345,"tags":["a","b"]}"#);
    let mut group = c.benchmark_group("fanout_10k");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    for (name, mix) in [
        ("ws", Mix::Ws),
        ("tcp", Mix::Tcp),
        ("ws-deflate", Mix::WsDeflate),
        ("mixed", Mix::Mixed),
    ] {
        hub.add_members("room", MEMBERS, mix);
        group.bench_function(BenchmarkId::new("encode_once", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let msg = Message::event("chat", data.clone());
                    let t = Instant::now();
                    let n = hub.publish("room", msg);
                    total += t.elapsed();
                    assert_eq!(n, MEMBERS);
                    hub.clear_queues();
                }
                total
            })
        });
        if mix == Mix::Ws {
            // The naive peer: build the frame for each recipient.
            group.bench_function(BenchmarkId::new("encode_per_recipient", name), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        hub.send_each("chat", &data);
                        total += t.elapsed();
                        hub.clear_queues();
                    }
                    total
                })
            });
        }
        hub.remove_members();
    }
    group.finish();
}

fn main() {
    // Criterion runs inside the shard (the hub is shard-local data); results come back as
    // the usual report.
    on_one_shard(|hub| {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c, hub);
        c.final_summary();
    });
}
