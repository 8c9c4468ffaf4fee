//! Fan-out on one shard: one publish to a room of 10 000 local connections — the message is
//! encoded once per wire form and its frame queued on every member (`Hub::publish`).
//!
//! Runs inside a real one-shard `shardcast-shards` runtime (the hub needs its mesh and timer
//! handles), with connections registered in the hub but no sockets: what is measured is the
//! encode-once plus the per-recipient queueing, i.e. the server's CPU cost per delivery before
//! the `sendmsg` that follows (see PERF.md for the end-to-end figures). Per-recipient cost =
//! time per publish / members.
//!
//! Peer in the same run: the naive way, encoding the frame anew for every recipient.
//!
//! `cargo bench -p shardcast-bench --bench fanout -- --warm-up-time 1 --measurement-time 3`

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use shardcast::config::Config;
use shardcast::hub::client::Client;
use shardcast::hub::id::ClientId;
use shardcast::hub::outgoing::{Outgoing, WsForm};
use shardcast::hub::{Hub, ShardMsg};
use shardcast::stats::Transport;
use shardcast_shards::Runtime;

const MEMBERS: usize = 10_000;

fn make_clients(hub: &Rc<Hub>, n: usize, mix: &str) -> Vec<Rc<Client>> {
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    (0..n)
        .map(|i| {
            let (transport, form) = match mix {
                "ws" => (Transport::Ws, WsForm::Plain),
                "ws-deflate" => (Transport::Ws, WsForm::Deflate),
                "tcp" => (Transport::Tcp, WsForm::Plain),
                _ => match i % 3 {
                    0 => (Transport::Ws, WsForm::Plain),
                    1 => (Transport::Ws, WsForm::Deflate),
                    _ => (Transport::Tcp, WsForm::Plain),
                },
            };
            let c = hub.register(peer, transport);
            c.set_ws_form(form);
            hub.open(&c);
            hub.join(&c, "room").unwrap();
            c
        })
        .collect()
}

fn clear(clients: &[Rc<Client>]) {
    for c in clients {
        c.out().borrow_mut().clear();
    }
}

fn bench(c: &mut Criterion, hub: Rc<Hub>) {
    let data =
        Bytes::from_static(br#"{"user":"alice","text":"hello, room","n":12345,"tags":["a","b"]}"#);
    let mut group = c.benchmark_group("fanout_10k");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    for mix in ["ws", "tcp", "ws-deflate", "mixed"] {
        let clients = make_clients(&hub, MEMBERS, mix);
        clear(&clients);
        group.bench_function(BenchmarkId::new("encode_once", mix), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let msg = Outgoing::event("chat", Some(data.clone()));
                    let t = Instant::now();
                    let n = hub.publish("room", msg, None);
                    total += t.elapsed();
                    assert_eq!(n, MEMBERS);
                    clear(&clients);
                }
                total
            })
        });
        if mix == "ws" {
            // The naive peer: build the frame for each recipient.
            group.bench_function(BenchmarkId::new("encode_per_recipient", mix), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        for client in &clients {
                            let msg = Outgoing::event("chat", Some(data.clone()));
                            hub.send_to(client, &msg);
                        }
                        total += t.elapsed();
                        clear(&clients);
                    }
                    total
                })
            });
        }
        for client in &clients {
            hub.unregister(client);
        }
    }
    group.finish();
}

fn main() {
    // Criterion runs inside the shard (the hub is shard-local data); results come back as
    // the usual report. The runtime is started with one shard and no listeners.
    let done = Arc::new(Mutex::new(false));
    let flag = done.clone();
    let runtime = Runtime::builder()
        .messages::<ShardMsg>()
        .shards(1)
        .start(move |shard: shardcast_shards::Shard<ShardMsg>| {
            let flag = flag.clone();
            async move {
                let (timers, _exp) = shard.timers::<ClientId>();
                let hub = Rc::new(Hub::new(
                    0,
                    1,
                    Arc::new(Config::default()),
                    shard.mesh().clone(),
                    timers,
                    Arc::new(AtomicUsize::new(0)),
                ));
                let mut c = Criterion::default().configure_from_args();
                bench(&mut c, hub);
                c.final_summary();
                *flag.lock().unwrap() = true;
            }
        })
        .expect("start a one-shard runtime");
    runtime.join().expect("bench shard");
    assert!(*done.lock().unwrap(), "the bench ran");
}
