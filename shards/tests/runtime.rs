//! Integration tests of the runtime with real threads, executors and sockets: connections
//! spread across shards, every mesh message arrives (no lost wake-ups), shutdown reaches every
//! shard, start-up errors surface instead of hanging. Every wait has a deadline; nothing
//! sleeps.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use shardcast_shards::{Runtime, ShardExit, StartError};

/// Joins on a helper thread so a hung shard fails the test instead of hanging it.
fn join_within<M: Send + 'static>(
    rt: Runtime<M>,
    limit: Duration,
) -> Result<Vec<ShardExit>, shardcast_shards::JoinError> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(rt.join());
    });
    rx.recv_timeout(limit)
        .expect("runtime did not end before the deadline")
}

#[test]
fn connections_spread_across_shards() {
    const CONNS: usize = 200;
    let (tx, rx) = mpsc::channel::<usize>();
    let rt = Runtime::builder()
        .shards(2)
        .listen("tcp", "127.0.0.1:0")
        .start(move |shard| {
            let tx = tx.clone();
            async move {
                let listener = shard.take_listener("tcp").expect("configured");
                assert!(shard.take_listener("tcp").is_none(), "taken once");
                let counters = listener.counters();
                let id = shard.id();
                let mut held = Vec::new();
                // `accept_loop` consumes the listener; keep streams open until shutdown.
                let held_ref = &mut held;
                listener
                    .accept_loop(move |stream| {
                        held_ref.push(stream);
                        let _ = tx.send(id);
                    })
                    .await
                    .expect("accept loop");
                assert_eq!(counters.accepted() as usize, held.len());
            }
        })
        .expect("start");
    assert_eq!(rt.shards(), 2);
    let addr = rt.bound_addr("tcp").expect("bound");
    assert_ne!(addr.port(), 0);
    assert_eq!(rt.bound_addrs().len(), 1);

    let clients: Vec<TcpStream> = (0..CONNS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut per_shard = [0usize; 2];
    for _ in 0..CONNS {
        let left = deadline.saturating_duration_since(Instant::now());
        let id = rx
            .recv_timeout(left)
            .expect("every connection is accepted in time");
        per_shard[id] += 1;
    }
    assert_eq!(per_shard[0] + per_shard[1], CONNS);
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "both shards accept: {per_shard:?}"
    );

    rt.shutdown_handle().trigger();
    let exits = join_within(rt, Duration::from_secs(10)).expect("no panic");
    assert_eq!(exits, vec![ShardExit::Finished; 2]);
    // Every shard closed its socket when shutdown began: nobody accepts any more.
    assert!(TcpStream::connect(addr).is_err());
    drop(clients);
}

#[derive(Debug)]
enum Msg {
    /// A sequenced message from sender `from` (threads 0..T, shards 100 + id).
    Data { from: u32, seq: u32 },
    /// A lock-step ping: the shard answers on `reply` at once.
    Ping { reply: mpsc::SyncSender<()> },
}

/// Many threads and both shards send to both shards, in bursts (inbox often full) and in
/// lock-step (inbox parked before almost every message: the doorbell path). Every message
/// must arrive, in order per sender, before the deadline.
#[test]
fn mesh_stress_every_message_arrives() {
    const BURST_THREADS: u32 = 4;
    const BURST_MSGS: u32 = 50_000;
    const PING_THREADS: u32 = 2;
    const PINGS: u32 = 3_000;
    const SHARD_MSGS: u32 = 20_000;
    // Per shard: half of each burst thread's messages plus the other shard's.
    let expected_per_shard = (BURST_THREADS * BURST_MSGS / 2 + SHARD_MSGS) as u64;

    let (done_tx, done_rx) = mpsc::channel::<(usize, u64, Vec<String>)>();
    let rt = Runtime::builder()
        .shards(2)
        .messages::<Msg>()
        .inbox_capacity(1024)
        .inbox_batch(64)
        .start(move |shard| {
            let done_tx = done_tx.clone();
            async move {
                let id = shard.id();
                let mut inbox = shard.take_inbox().expect("inbox");
                // Shard-to-shard traffic, yielding whenever the peer's inbox is full.
                let mesh = shard.mesh().clone();
                let peer = 1 - id;
                shard
                    .spawn(async move {
                        for seq in 0..SHARD_MSGS {
                            let mut msg = Msg::Data {
                                from: 100 + id as u32,
                                seq,
                            };
                            loop {
                                match mesh.send(peer, msg) {
                                    Ok(()) => break,
                                    Err(e) => {
                                        assert_eq!(e.label(), "inbox_full");
                                        msg = e.into_inner();
                                        futures_lite::future::yield_now().await;
                                    }
                                }
                            }
                        }
                    })
                    .detach();
                let mut next: HashMap<u32, u32> = HashMap::new();
                let mut errors = Vec::new();
                let mut received = 0u64;
                let mut batch = Vec::new();
                while received < expected_per_shard {
                    batch.clear();
                    inbox.recv_batch(&mut batch).await;
                    for msg in batch.drain(..) {
                        match msg {
                            Msg::Data { from, seq } => {
                                let want = next.entry(from).or_insert(0);
                                if seq != *want && errors.len() < 10 {
                                    errors.push(format!("from {from}: got {seq}, want {want}"));
                                }
                                *want = seq + 1;
                                received += 1;
                            }
                            Msg::Ping { reply } => {
                                let _ = reply.send(());
                            }
                        }
                    }
                }
                let _ = done_tx.send((id, received, errors));
                // Keep answering pings until shutdown.
                let stop = shard.shutdown();
                futures_lite::future::or(stop, async {
                    loop {
                        batch.clear();
                        inbox.recv_batch(&mut batch).await;
                        for msg in batch.drain(..) {
                            if let Msg::Ping { reply } = msg {
                                let _ = reply.send(());
                            }
                        }
                    }
                })
                .await;
            }
        })
        .expect("start");

    let mesh = rt.mesh().clone();
    let mut threads = Vec::new();
    for t in 0..BURST_THREADS {
        let mesh = mesh.clone();
        threads.push(std::thread::spawn(move || {
            for seq in 0..BURST_MSGS {
                // Alternate targets in runs of 100 so each inbox sees bursts.
                let to = ((seq / 100) % 2) as usize;
                // Each shard must see a contiguous sequence per sender: number per target.
                let per_target_seq = (seq / 200) * 100 + seq % 100;
                let mut msg = Msg::Data {
                    from: t * 2 + to as u32,
                    seq: per_target_seq,
                };
                loop {
                    match mesh.send(to, msg) {
                        Ok(()) => break,
                        Err(e) => {
                            msg = e.into_inner();
                            std::thread::yield_now();
                        }
                    }
                }
            }
        }));
    }
    for t in 0..PING_THREADS {
        let mesh = mesh.clone();
        threads.push(std::thread::spawn(move || {
            let (reply, answered) = mpsc::sync_channel(1);
            for i in 0..PINGS {
                let to = ((i + t) % 2) as usize;
                let mut msg = Msg::Ping {
                    reply: reply.clone(),
                };
                loop {
                    match mesh.send(to, msg) {
                        Ok(()) => break,
                        Err(e) => {
                            msg = e.into_inner();
                            std::thread::yield_now();
                        }
                    }
                }
                answered
                    .recv_timeout(Duration::from_secs(10))
                    .unwrap_or_else(|_| panic!("ping {i} to shard {to} lost: a lost wake-up"));
            }
        }));
    }
    for t in threads {
        t.join().expect("sender thread");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (id, received, errors) = done_rx.recv_timeout(left).expect("all messages arrive");
        assert_eq!(received, expected_per_shard, "shard {id}");
        assert!(errors.is_empty(), "shard {id} saw reordering: {errors:?}");
    }
    let stats: Vec<_> = (0..2).map(|s| mesh.inbox_stats(s).unwrap()).collect();
    assert!(
        stats.iter().all(|s| s.len == 0 && s.capacity == 1024),
        "{stats:?}"
    );
    // The lock-step pings must have woken parked shards through the doorbell.
    assert!(
        stats.iter().map(|s| s.wakeups).sum::<u64>() > 0,
        "{stats:?}"
    );

    rt.shutdown_handle().trigger();
    assert_eq!(
        join_within(rt, Duration::from_secs(10)).unwrap(),
        vec![ShardExit::Finished; 2]
    );
}

#[test]
fn shutdown_is_observed_by_every_shard() {
    let observed = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&observed);
    let rt = Runtime::builder()
        .shards(3)
        .start(move |shard| {
            let seen = Arc::clone(&seen);
            async move {
                shard.shutdown().await;
                assert!(shard.is_shutting_down());
                assert!(shard.shutdown_handle().is_triggered());
                seen.fetch_add(1, Ordering::SeqCst);
            }
        })
        .expect("start");
    // More shards than this machine may have CPUs: they run unpinned, and still start.
    let handle = rt.shutdown_handle().clone();
    std::thread::spawn(move || handle.trigger()).join().unwrap();
    let exits = join_within(rt, Duration::from_secs(10)).unwrap();
    assert_eq!(exits, vec![ShardExit::Finished; 3]);
    assert_eq!(observed.load(Ordering::SeqCst), 3);
}

#[test]
fn the_drain_timeout_and_force_end_stuck_shards() {
    let rt = Runtime::builder()
        .shards(2)
        .drain_timeout(Duration::from_millis(100))
        .start(|_shard| std::future::pending::<()>())
        .expect("start");
    let started = Instant::now();
    rt.shutdown_handle().trigger();
    let exits = join_within(rt, Duration::from_secs(10)).unwrap();
    assert_eq!(exits, vec![ShardExit::DrainTimedOut; 2]);
    assert!(started.elapsed() >= Duration::from_millis(90));

    let rt = Runtime::builder()
        .shards(2)
        .drain_timeout(Duration::from_secs(3600))
        .start(|_shard| std::future::pending::<()>())
        .expect("start");
    rt.shutdown_handle().trigger();
    rt.shutdown_handle().force();
    let exits = join_within(rt, Duration::from_secs(10)).unwrap();
    assert_eq!(exits, vec![ShardExit::Forced; 2]);
}

#[test]
fn a_panicking_shard_shuts_the_others_down() {
    let rt = Runtime::builder()
        .shards(2)
        .start(|shard| async move {
            if shard.id() == 0 {
                panic!("shard 0 fails on purpose");
            }
            shard.shutdown().await;
        })
        .expect("start");
    let err = join_within(rt, Duration::from_secs(10)).unwrap_err();
    assert_eq!(err.shards, vec![0]);
    assert_eq!(err.exits, vec![ShardExit::Panicked, ShardExit::Finished]);
}

#[test]
fn dropping_the_runtime_stops_the_shards() {
    let (tx, rx) = mpsc::channel();
    let rt = Runtime::builder()
        .shards(2)
        .start(move |shard| {
            let tx = tx.clone();
            async move {
                struct Dropped(mpsc::Sender<usize>, usize);
                impl Drop for Dropped {
                    fn drop(&mut self) {
                        let _ = self.0.send(self.1);
                    }
                }
                let _d = Dropped(tx, shard.id());
                std::future::pending::<()>().await;
            }
        })
        .expect("start");
    drop(rt);
    let mut ended: Vec<usize> = (0..2)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    ended.sort_unstable();
    assert_eq!(ended, vec![0, 1]);
}

#[test]
fn an_address_in_use_fails_start_at_once() {
    // Held by a plain socket (another program).
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = Runtime::builder()
        .shards(2)
        .listen("ws", plain.local_addr().unwrap())
        .start(|_shard| async {})
        .unwrap_err();
    assert!(err.is_addr_in_use(), "{err}");
    assert_eq!(err.label(), "bind");

    // Held by another runtime: SO_REUSEPORT must not let a second instance silently share
    // the port.
    let first = Runtime::builder()
        .shards(1)
        .listen("ws", "127.0.0.1:0")
        .start(|shard| async move { shard.shutdown().await })
        .unwrap();
    let port = first.bound_addr("ws").unwrap();
    let err = Runtime::builder()
        .shards(1)
        .listen("ws", port)
        .start(|_shard| async {})
        .unwrap_err();
    assert!(err.is_addr_in_use(), "{err}");
    first.shutdown_handle().trigger();
    join_within(first, Duration::from_secs(10)).unwrap();
}

#[test]
fn configuration_errors_are_reported() {
    let err = Runtime::builder()
        .shards(0)
        .start(|_shard| async {})
        .unwrap_err();
    assert!(matches!(err, StartError::ZeroShards));
    let err = Runtime::builder()
        .shards(1)
        .listen("a", "127.0.0.1:0")
        .listen("a", "127.0.0.1:0")
        .start(|_shard| async {})
        .unwrap_err();
    assert_eq!(err.label(), "duplicate_listener");
    let err = Runtime::builder()
        .shards(1)
        .listen("a", "no-such-host.invalid:80")
        .start(|_shard| async {})
        .unwrap_err();
    assert_eq!(err.label(), "resolve");
}

/// `listen_next_to` with port 0: the follower is always bound at the port after its leader's,
/// also when several runtimes pick their pairs at the same time, and both accept.
#[test]
fn a_listener_next_to_another_gets_the_following_port() {
    const RUNTIMES: usize = 4;
    const ROUNDS: usize = 3;
    for _ in 0..ROUNDS {
        let starting: Vec<_> = (0..RUNTIMES)
            .map(|_| {
                std::thread::spawn(|| {
                    Runtime::builder()
                        .shards(2)
                        .pin(false)
                        .ring_depth(128)
                        // Before the listener it follows: the order does not matter.
                        .listen_next_to("next", "first")
                        .listen("first", "127.0.0.1:0")
                        .start(|shard| async move {
                            let first = shard.take_listener("first").expect("configured");
                            let next = shard.take_listener("next").expect("configured");
                            assert_eq!(next.local_addr().port(), first.local_addr().port() + 1);
                            let (a, b) = futures_lite::future::zip(
                                first.accept_loop(drop),
                                next.accept_loop(drop),
                            )
                            .await;
                            a.and(b).expect("accept loops");
                        })
                        .expect("start")
                })
            })
            .collect();
        let runtimes: Vec<Runtime> = starting.into_iter().map(|t| t.join().unwrap()).collect();
        let mut ports = HashSet::new();
        for rt in &runtimes {
            let first = rt.bound_addr("first").unwrap();
            let next = rt.bound_addr("next").unwrap();
            assert_eq!(next, SocketAddr::new(first.ip(), first.port() + 1));
            let names: Vec<&str> = rt.bound_addrs().iter().map(|b| b.name.as_str()).collect();
            assert_eq!(names, ["next", "first"], "configuration order");
            assert!(ports.insert(first.port()), "{first} bound twice");
            assert!(ports.insert(next.port()), "{next} bound twice");
            TcpStream::connect(first).unwrap();
            TcpStream::connect(next).unwrap();
        }
        for rt in runtimes {
            rt.shutdown_handle().trigger();
            let exits = join_within(rt, Duration::from_secs(10)).expect("no panic");
            assert_eq!(exits, vec![ShardExit::Finished; 2]);
        }
    }
}

/// With an explicit port, the follower binds exactly the next one, and fails (as a bind of
/// its own) when that port is taken.
#[test]
fn a_listener_next_to_an_explicit_port_takes_exactly_the_next_one() {
    // A free pair, found by a runtime and released.
    let probe = Runtime::builder()
        .shards(1)
        .listen("first", "127.0.0.1:0")
        .listen_next_to("next", "first")
        .start(|shard| async move { shard.shutdown().await })
        .unwrap();
    let (first, next) = (
        probe.bound_addr("first").unwrap(),
        probe.bound_addr("next").unwrap(),
    );
    probe.shutdown_handle().trigger();
    join_within(probe, Duration::from_secs(10)).unwrap();

    let rt = Runtime::builder()
        .shards(2)
        .listen("first", first)
        .listen_next_to("next", "first")
        .start(|shard| async move { shard.shutdown().await })
        .unwrap();
    assert_eq!(rt.bound_addr("next"), Some(next));
    rt.shutdown_handle().trigger();
    join_within(rt, Duration::from_secs(10)).unwrap();

    let squatter = std::net::TcpListener::bind(next).unwrap();
    let err = Runtime::builder()
        .shards(2)
        .listen("first", first)
        .listen_next_to("next", "first")
        .start(|_shard| async {})
        .unwrap_err();
    assert!(err.is_addr_in_use(), "{err}");
    assert!(
        matches!(&err, StartError::Bind { name, addr, .. } if name == "next" && *addr == next),
        "{err}"
    );
    drop(squatter);
}

#[test]
fn a_listener_next_to_an_unknown_or_taken_one_is_refused() {
    let err = Runtime::builder()
        .shards(1)
        .listen("first", "127.0.0.1:0")
        .listen_next_to("next", "frist")
        .start(|_shard| async {})
        .unwrap_err();
    assert_eq!(err.label(), "next_to_unknown", "{err}");
    // Following a follower is not supported: only one port comes after a listener.
    let err = Runtime::builder()
        .shards(1)
        .listen("first", "127.0.0.1:0")
        .listen_next_to("next", "first")
        .listen_next_to("after-next", "next")
        .start(|_shard| async {})
        .unwrap_err();
    assert_eq!(err.label(), "next_to_unknown", "{err}");
    let err = Runtime::builder()
        .shards(1)
        .listen("first", "127.0.0.1:0")
        .listen_next_to("next", "first")
        .listen_next_to("also-next", "first")
        .start(|_shard| async {})
        .unwrap_err();
    assert!(
        matches!(&err, StartError::NextToTaken { name, other, .. }
            if name == "also-next" && other == "next"),
        "{err}"
    );
}

#[test]
fn a_shard_setup_failure_is_reported_not_hung() {
    // io_uring refuses a ring this deep (more than IORING_MAX_ENTRIES): every shard's
    // executor fails to build, and start returns the error instead of waiting forever.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = Runtime::builder()
            .shards(2)
            .ring_depth(1 << 20)
            .listen("x", "127.0.0.1:0")
            .start(|_shard| async {});
        let _ = tx.send(r.map(|_| ()).map_err(|e| e.label()));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("start returned");
    assert_eq!(result, Err("executor"));
}

#[test]
fn timers_fire_on_a_shard() {
    let (tx, rx) = mpsc::channel();
    let rt = Runtime::builder()
        .shards(1)
        .timer_tick(Duration::from_millis(10))
        .start(move |shard| {
            let tx = tx.clone();
            async move {
                let (timers, mut expirations) = shard.timers::<&'static str>();
                let start = Instant::now();
                timers.insert_after(Duration::from_millis(50), "idle");
                let hb = timers.insert_after(Duration::from_millis(20), "heartbeat");
                assert!(timers.reschedule_after(hb, Duration::from_millis(30)));
                let gone = timers.insert_after(Duration::from_millis(10), "cancelled");
                timers.cancel(gone);
                let mut out = Vec::new();
                while out.len() < 2 {
                    expirations.next_batch(&mut out).await;
                }
                let _ = tx.send((out, start.elapsed()));
            }
        })
        .unwrap();
    let (fired, elapsed) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(fired, vec!["heartbeat", "idle"]);
    assert!(elapsed >= Duration::from_millis(50));
    join_within(rt, Duration::from_secs(10)).unwrap();
}

/// Shard-to-shard lock-step ping-pong: nearly every hop wakes a parked shard through its
/// doorbell. Runs with the default wake guard, as shipped; the doorbell protocol itself, with
/// no guard, is tested in `mesh.rs` with plain threads.
#[test]
fn shard_to_shard_ping_pong_never_stalls() {
    const ROUND_TRIPS: u32 = 20_000;
    #[derive(Debug)]
    enum Hop {
        Ping(u32),
        Pong(u32),
    }
    let (done_tx, done_rx) = mpsc::channel::<u32>();
    let rt = Runtime::builder()
        .shards(2)
        .messages::<Hop>()
        .start(move |shard| {
            let done_tx = done_tx.clone();
            async move {
                let mut inbox = shard.take_inbox().unwrap();
                let mesh = shard.mesh().clone();
                if shard.id() == 0 {
                    mesh.send(1, Hop::Ping(0)).unwrap();
                }
                let mut batch = Vec::new();
                let work = async {
                    loop {
                        batch.clear();
                        inbox.recv_batch(&mut batch).await;
                        for hop in batch.drain(..) {
                            match hop {
                                Hop::Ping(n) => mesh.send(0, Hop::Pong(n)).unwrap(),
                                Hop::Pong(n) if n + 1 == ROUND_TRIPS => {
                                    let _ = done_tx.send(n + 1);
                                }
                                Hop::Pong(n) => mesh.send(1, Hop::Ping(n + 1)).unwrap(),
                            }
                        }
                    }
                };
                futures_lite::future::or(work, shard.shutdown()).await;
            }
        })
        .unwrap();
    let n = done_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            let stats: Vec<_> = (0..2).map(|s| rt.mesh().inbox_stats(s)).collect();
            panic!("ping-pong stalled: {stats:?}")
        });
    assert_eq!(n, ROUND_TRIPS);
    rt.shutdown_handle().trigger();
    join_within(rt, Duration::from_secs(10)).unwrap();
}
