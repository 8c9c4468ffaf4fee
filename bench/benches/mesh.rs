//! The cross-shard hop: what it costs to send a message from one shard to another and have it
//! processed there, measured against peers in the same run.
//!
//! Two scenarios, each for three transports:
//! - `mesh_pingpong/*`: shard 0 sends a ping to shard 1, which answers; one iteration is one
//!   round trip (two hops, each usually waking an idle receiver: the latency path).
//! - `mesh_burst/*`: shard 0 sends a batch of `BURST` messages to shard 1, which acknowledges
//!   the batch once it has processed the last one; one iteration is one batch (the throughput
//!   path: the receiver drains in batches and rarely parks). Reported as elements/s.
//!
//! Transports:
//! - `shardcast_mesh`: this crate's runtime (`shardcast-shards`), two pinned shards, bounded
//!   crossbeam inbox + armed doorbell, `Inbox::recv_batch`; `_unpinned` with `pin(false)`.
//! - `glommio_shared_channel`: glommio's own cross-executor channel between two executors
//!   pinned the same way, `send().await` / `recv().await` per message; `_unpinned` likewise.
//! - `std_mpsc_threads`: `std::sync::mpsc::sync_channel` between two plain threads (blocking
//!   receive: futex park/unpark), the baseline without any executor.
//!
//! Pinned and unpinned variants are both measured because on a shared, loaded machine a pinned
//! thread waits for its one CPU while an unpinned one runs wherever a CPU is free; the
//! difference is scheduling, not the channel.
//!
//! Timing is taken inside the sending shard/thread (criterion's `iter_custom`), so set-up and
//! the control channel are not measured. Run with:
//! `cargo bench -p shardcast-bench --bench mesh -- --warm-up-time 1 --measurement-time 3`

use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardcast_shards::glommio::channels::shared_channel;
use shardcast_shards::glommio::{LocalExecutorBuilder, Placement};
use shardcast_shards::Runtime;

/// Messages per burst iteration.
const BURST: u64 = 1000;

enum Msg {
    /// Bench thread → shard 0: run `iters` round trips, report the elapsed time.
    RunPingPong {
        iters: u64,
        done: mpsc::Sender<Duration>,
    },
    /// Bench thread → shard 0: run `batches` bursts, report the elapsed time.
    RunBurst {
        batches: u64,
        done: mpsc::Sender<Duration>,
    },
    Ping,
    Pong,
    Data {
        last: bool,
    },
    BatchDone,
}

/// What shard 0 is measuring right now.
enum Run {
    Idle,
    PingPong {
        left: u64,
        start: Instant,
        done: mpsc::Sender<Duration>,
    },
    Burst {
        left: u64,
        start: Instant,
        done: mpsc::Sender<Duration>,
    },
}

fn send(mesh: &shardcast_shards::ShardMesh<Msg>, to: usize, msg: Msg) {
    // Inbox capacity (16 384) exceeds what is ever in flight (one burst of `BURST`).
    if mesh.send(to, msg).is_err() {
        panic!("bench message to shard {to} not delivered");
    }
}

fn send_burst(mesh: &shardcast_shards::ShardMesh<Msg>) {
    for i in 0..BURST {
        send(
            mesh,
            1,
            Msg::Data {
                last: i + 1 == BURST,
            },
        );
    }
}

fn start_runtime(pin: bool) -> Runtime<Msg> {
    Runtime::builder()
        .shards(2)
        .pin(pin)
        .messages::<Msg>()
        .start(|shard| async move {
            let mut inbox = shard.take_inbox().expect("inbox");
            let mesh = shard.mesh().clone();
            let mut run = Run::Idle;
            let mut batch = Vec::with_capacity(256);
            let mut received = 0u64;
            let work = async {
                loop {
                    batch.clear();
                    inbox.recv_batch(&mut batch).await;
                    for msg in batch.drain(..) {
                        match msg {
                            Msg::RunPingPong { iters, done } => {
                                run = Run::PingPong {
                                    left: iters,
                                    start: Instant::now(),
                                    done,
                                };
                                send(&mesh, 1, Msg::Ping);
                            }
                            Msg::RunBurst { batches, done } => {
                                run = Run::Burst {
                                    left: batches,
                                    start: Instant::now(),
                                    done,
                                };
                                send_burst(&mesh);
                            }
                            Msg::Ping => send(&mesh, 0, Msg::Pong),
                            Msg::Data { last } => {
                                received += 1;
                                if last {
                                    send(&mesh, 0, Msg::BatchDone);
                                }
                            }
                            Msg::Pong | Msg::BatchDone => match &mut run {
                                Run::PingPong { left, start, done }
                                | Run::Burst { left, start, done } => {
                                    *left -= 1;
                                    if *left == 0 {
                                        let _ = done.send(start.elapsed());
                                        run = Run::Idle;
                                    } else if matches!(msg, Msg::Pong) {
                                        send(&mesh, 1, Msg::Ping);
                                    } else {
                                        send_burst(&mesh);
                                    }
                                }
                                Run::Idle => {}
                            },
                        }
                    }
                }
            };
            futures_lite_or(work, shard.shutdown()).await;
            std::hint::black_box(received);
        })
        .expect("start the runtime")
}

/// `futures_lite::future::or` without adding a dependency to the bench crate.
async fn futures_lite_or(
    a: impl std::future::Future<Output = ()>,
    b: impl std::future::Future<Output = ()>,
) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

fn run_on_runtime(
    rt: &Runtime<Msg>,
    iters: u64,
    make: impl FnOnce(mpsc::Sender<Duration>) -> Msg,
) -> Duration {
    if iters == 0 {
        return Duration::ZERO;
    }
    let (tx, rx) = mpsc::channel();
    if rt.mesh().send(0, make(tx)).is_err() {
        panic!("control message not delivered");
    }
    rx.recv_timeout(Duration::from_secs(120))
        .expect("shard 0 reports")
}

/// Two glommio executors pinned to CPUs 0 and 1 joined by two shared channels. `sender` runs
/// on executor A with (to B, from B) and returns the elapsed time; B echoes or acknowledges.
fn glommio_pair(iters: u64, burst: bool, pin: bool) -> Duration {
    let (to_b, b_in) = shared_channel::new_bounded::<u64>(16 * 1024);
    let (to_a, a_in) = shared_channel::new_bounded::<u64>(16 * 1024);
    let cpus = if pin {
        two_cpus()
    } else {
        (Placement::Unbound, Placement::Unbound)
    };
    let b = LocalExecutorBuilder::new(cpus.1)
        .io_memory(64 << 10)
        .spawn(move || async move {
            let rx = b_in.connect().await;
            let tx = to_a.connect().await;
            let mut count = 0u64;
            while let Some(v) = rx.recv().await {
                if !burst {
                    let _ = tx.send(v).await;
                } else {
                    count += 1;
                    if count % BURST == 0 {
                        let _ = tx.send(count).await;
                    }
                }
            }
        })
        .expect("executor B");
    let a = LocalExecutorBuilder::new(cpus.0)
        .io_memory(64 << 10)
        .spawn(move || async move {
            let tx = to_b.connect().await;
            let rx = a_in.connect().await;
            let start = Instant::now();
            for i in 0..iters {
                if burst {
                    for j in 0..BURST {
                        let _ = tx.send(j).await;
                    }
                } else {
                    let _ = tx.send(i).await;
                }
                let _ = rx.recv().await;
            }
            start.elapsed()
        })
        .expect("executor A");
    let elapsed = a.join().expect("executor A ran");
    b.join().expect("executor B ran");
    elapsed
}

fn two_cpus() -> (Placement, Placement) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n >= 2 {
        (Placement::Fixed(0), Placement::Fixed(1))
    } else {
        (Placement::Unbound, Placement::Unbound)
    }
}

/// Two plain threads joined by two `sync_channel`s; same protocol as `glommio_pair`.
fn std_pair(iters: u64, burst: bool) -> Duration {
    let (to_b, b_in) = mpsc::sync_channel::<u64>(16 * 1024);
    let (to_a, a_in) = mpsc::sync_channel::<u64>(16 * 1024);
    let b = std::thread::spawn(move || {
        let mut count = 0u64;
        while let Ok(v) = b_in.recv() {
            if !burst {
                let _ = to_a.send(v);
            } else {
                count += 1;
                if count % BURST == 0 {
                    let _ = to_a.send(count);
                }
            }
        }
    });
    let start = Instant::now();
    for i in 0..iters {
        if burst {
            for j in 0..BURST {
                let _ = to_b.send(j);
            }
        } else {
            let _ = to_b.send(i);
        }
        let _ = a_in.recv();
    }
    let elapsed = start.elapsed();
    drop(to_b);
    b.join().expect("thread B");
    elapsed
}

fn mesh(c: &mut Criterion) {
    let pinned = start_runtime(true);
    let unpinned = start_runtime(false);

    let mut g = c.benchmark_group("mesh_pingpong");
    for (name, rt) in [
        ("shardcast_mesh", &pinned),
        ("shardcast_mesh_unpinned", &unpinned),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                run_on_runtime(rt, iters, |done| Msg::RunPingPong { iters, done })
            })
        });
    }
    g.bench_function("glommio_shared_channel", |b| {
        b.iter_custom(|iters| glommio_pair(iters, false, true))
    });
    g.bench_function("glommio_shared_channel_unpinned", |b| {
        b.iter_custom(|iters| glommio_pair(iters, false, false))
    });
    g.bench_function("std_mpsc_threads", |b| {
        b.iter_custom(|iters| std_pair(iters, false))
    });
    g.finish();

    let mut g = c.benchmark_group("mesh_burst");
    g.throughput(Throughput::Elements(BURST));
    for (name, rt) in [
        ("shardcast_mesh", &pinned),
        ("shardcast_mesh_unpinned", &unpinned),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                run_on_runtime(rt, iters, |done| Msg::RunBurst {
                    batches: iters,
                    done,
                })
            })
        });
    }
    g.bench_function("glommio_shared_channel", |b| {
        b.iter_custom(|iters| glommio_pair(iters, true, true))
    });
    g.bench_function("glommio_shared_channel_unpinned", |b| {
        b.iter_custom(|iters| glommio_pair(iters, true, false))
    });
    g.bench_function("std_mpsc_threads", |b| {
        b.iter_custom(|iters| std_pair(iters, true))
    });
    g.finish();

    for rt in [pinned, unpinned] {
        rt.shutdown_handle().trigger();
        rt.join().expect("shards ended");
    }
}

criterion_group!(benches, mesh);
criterion_main!(benches);
