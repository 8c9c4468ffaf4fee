//! Memory bounds and backpressure, against the real binary: what one peer can make the server
//! hold is bounded in bytes; a reader that keeps up is never cut off, a stalled one is, and it
//! sees the close frame when it reads again.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KIB: usize = 1024;
const MIB: u64 = 1024 * 1024;

/// Writes `batch` `times` times, with a deadline generous enough for a loaded 2-core machine.
async fn flood(s: &mut TcpStream, batch: &[u8], times: usize) {
    let write = async {
        for _ in 0..times {
            s.write_all(batch).await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), write)
        .await
        .expect("the flood was written within 60 s");
}

/// Floods `s` with `batch` (pings that are never answered by reading), then checks that the
/// server, which read (nearly) all of it, holds a few pongs for the peer and that its RSS grew
/// by less than 16 MiB over `before`.
async fn ping_flood(
    server: &ServerProc,
    s: &mut TcpStream,
    batch: &[u8],
    times: usize,
    before: u64,
) {
    flood(s, batch, times).await;
    let queued = server.metric("shardcast_output_queued_bytes").await;
    assert!(queued < 4096, "queued {queued} bytes for one pinging peer");
    let grown = rss(server).await.saturating_sub(before);
    assert!(
        grown < 16 * MIB,
        "RSS grew {grown} bytes during the ping flood"
    );
}

async fn rss(server: &ServerProc) -> u64 {
    server.metric("process_resident_memory_bytes").await
}

/// Waits (with the harness deadline) until `metric` is at least `at_least`.
async fn wait_metric(server: &ServerProc, metric: &str, at_least: u64) -> u64 {
    within(metric, async {
        loop {
            let v = server.metric(metric).await;
            if v >= at_least {
                return v;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

/// Reads a raw WebSocket socket until `needle` has arrived; returns everything read.
async fn read_ws_until(s: &mut TcpStream, mut got: Vec<u8>, needle: &str) -> Vec<u8> {
    within(needle, async {
        let mut chunk = [0u8; 4096];
        loop {
            if got.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                return std::mem::take(&mut got);
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before {needle}");
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

/// A raw WebSocket member of `room` that never reads after its `joined-room` (small receive
/// buffer, so it stalls fast). Returns the socket and everything read so far.
async fn stalled_member(server: &ServerProc, room: &str) -> (TcpStream, Vec<u8>) {
    let (mut s, rest) = raw_ws_small_rcvbuf(server.ws, "/").await;
    let join = format!(r#"{{"event":"join-room","data":"{room}"}}"#);
    s.write_all(&client_frame(1, join.as_bytes(), true))
        .await
        .unwrap();
    let read = read_ws_until(&mut s, rest, "joined-room").await;
    (s, read)
}

/// Messages in a burst.
const BURST: u64 = 2000;

/// `publisher` publishes [`BURST`] messages of 16 KiB to `room` as fast as it can while
/// `fast`, a member, reads them all, in order; returns `fast` once it has.
async fn burst(publisher: &mut Ws, mut fast: Ws, room: &str) -> Ws {
    let reader = tokio::spawn(async move {
        for i in 0..BURST {
            assert_eq!(fast.recv().await["data"]["i"], i, "message {i}");
        }
        fast
    });
    let pad = "p".repeat(16 * KIB);
    for i in 0..BURST {
        publisher
            .emit(
                "publish",
                json!({"room": room, "event": "m", "data": {"i": i, "pad": pad}}),
            )
            .await;
    }
    within("the fast reader got the burst", reader)
        .await
        .expect("fast reader")
}

#[tokio::test]
async fn a_websocket_ping_flood_costs_a_few_pending_pongs() {
    let server = ServerProc::start(&["--shards", "1"]);
    let mut witness = Ws::connect(&server.ws_url("/")).await;
    witness.whoami().await;
    let before = rss(&server).await;
    // A peer that pings and never reads: 300 000 pings of 125 bytes (39 MB). Each used to
    // queue its own pong (measured before the fix: RSS +66 MB for 400 000); now at most 16
    // wait at a time.
    const FLOOD: usize = 300;
    let (mut s, _) = raw_ws_small_rcvbuf(server.ws, "/").await;
    let batch: Vec<u8> = (0..1000)
        .flat_map(|_| client_frame(9, &[b'p'; 125], true))
        .collect();
    ping_flood(&server, &mut s, &batch, FLOOD, before).await;
    witness.emit("echo", json!("still here")).await;
    assert_eq!(
        witness.recv().await,
        json!({"event": "echo", "data": "still here"})
    );
}

#[tokio::test]
async fn a_tcp_ping_flood_costs_a_few_pending_pongs() {
    let server = ServerProc::start(&["--shards", "1"]);
    let mut witness = Tcp::connect(server.tcp.unwrap()).await;
    let before = rss(&server).await;
    // 2 000 000 PING frames of 7 bytes (14 MB), never reading the PONGs (before the fix each
    // cost ~30 bytes of queue: RSS +114 MB for 4 000 000).
    const FLOOD: usize = 200;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(server.tcp.unwrap()).await.unwrap();
    let batch: Vec<u8> = (0..10_000)
        .flat_map(|_| [0u8, 0, 0, 7, 0x03, 0, 0])
        .collect();
    ping_flood(&server, &mut s, &batch, FLOOD, before).await;
    witness.emit("echo", &json!(1)).await;
    assert_eq!(witness.recv_json().await, ("echo".to_owned(), json!(1)));
}

#[tokio::test]
async fn a_peer_that_sends_without_reading_is_not_read_either() {
    // Echo requests from a peer that never reads its replies: the server stops reading from
    // it once its own queue passes a quarter of max_queued_bytes (1 MiB of the default
    // 4 MiB), so TCP flow control holds the peer back instead of the server's memory.
    let server = ServerProc::start(&["--shards", "1"]);
    let mut witness = Ws::connect(&server.ws_url("/")).await;
    witness.whoami().await;
    let (mut s, _) = raw_ws_small_rcvbuf(server.ws, "/").await;
    let data = "e".repeat(KIB);
    let frame = client_frame(
        1,
        format!(r#"{{"event":"echo","data":"{data}"}}"#).as_bytes(),
        true,
    );
    let batch: Vec<u8> = (0..64).flat_map(|_| frame.clone()).collect();
    let written = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, done) = (written.clone(), done.clone());
        tokio::spawn(async move {
            // 64 MB of requests: far more than any buffer on the way may hold.
            for _ in 0..1000 {
                if s.write_all(&batch).await.is_err() {
                    break;
                }
                written.fetch_add(batch.len(), Ordering::Relaxed);
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    // The read pause engages: the peer's queue reaches the mark.
    wait_metric(&server, "shardcast_output_queued_bytes", MIB).await;
    let before = written.load(Ordering::Relaxed);
    // From now on the bound holds however long the peer pushes: sample it a while.
    for _ in 0..20 {
        let queued = server.metric("shardcast_output_queued_bytes").await;
        assert!(queued < 2 * MIB, "queued {queued} bytes");
        witness.emit("echo", json!("ok")).await;
        assert_eq!(witness.recv().await, json!({"event": "echo", "data": "ok"}));
    }
    assert!(!done.load(Ordering::Relaxed), "the peer wrote all 64 MB");
    // What the peer got written since the pause is bounded by the kernel's buffers.
    let since = written.load(Ordering::Relaxed) - before;
    assert!(
        since < 16 * MIB as usize,
        "{since} bytes accepted while paused"
    );
    assert_eq!(
        server
            .metric("shardcast_disconnects_total{reason=\"slow_consumer\"}")
            .await,
        0,
        "backpressure, not a disconnect"
    );
    writer.abort();
}

/// A burst to a room with a reader that keeps up and one that stalls, at the smallest
/// allowed max_queued_bytes (64 KiB): the first gets every message, the second is cut off
/// after slow_consumer_ms and finds the close frame when it reads again.
// Two worker threads: the fast reader must not wait for the publisher's loop to yield.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_reader_survives_a_burst_that_cuts_off_a_stalled_one() {
    let server = ServerProc::start_with_toml(
        "[limits]\nmax_queued_bytes = 65536\n[timeouts]\nslow_consumer_ms = 1000\n",
        &["--shards", "1"],
    );
    let (mut stalled, joined) = stalled_member(&server, "burst").await;
    let mut fast = Ws::connect(&server.ws_url("/")).await;
    fast.join("burst").await;
    let mut publisher = Ws::connect(&server.ws_url("/")).await;
    let mut fast = burst(&mut publisher, fast, "burst").await;
    // Traffic goes on until the stalled reader has been behind for slow_consumer_ms; the
    // fast reader keeps getting it.
    within("the stalled reader is cut off", async {
        let mut i = BURST;
        loop {
            publisher
                .emit(
                    "publish",
                    json!({"room": "burst", "event": "m", "data": {"i": i}}),
                )
                .await;
            assert_eq!(fast.recv().await["data"]["i"], i);
            i += 1;
            if i % 20 == 0
                && server
                    .metric("shardcast_disconnects_total{reason=\"slow_consumer\"}")
                    .await
                    == 1
            {
                return;
            }
        }
    })
    .await;
    // The stalled reader resumes late — 2.5 s after the cut, longer than the 2 s a closing
    // connection used to be kept, after which its close frame, stuck behind the full socket,
    // was never written and the reader saw only EOF. It reads what it had been sent, in
    // order, then close 1008. (This wait models the late reader; nothing waits on it.)
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let frames = server_frames(&read_until_eof(&mut stalled, joined).await);
    let (last, data) = frames.split_last().expect("frames");
    assert_eq!(last.0, 8, "ends with a close frame");
    assert_eq!(&last.1[..2], &1008u16.to_be_bytes());
    assert_eq!(&last.1[2..], b"Slow consumer");
    for (k, (op, payload)) in data.iter().skip(1).enumerate() {
        assert_eq!(*op, 1);
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(v["data"]["i"], k as u64, "in order, no gap");
    }
    // The fast reader was never cut.
    fast.emit("echo", json!("ok")).await;
    assert_eq!(fast.recv().await, json!({"event": "echo", "data": "ok"}));
    assert_eq!(
        server
            .metric("shardcast_disconnects_total{reason=\"slow_consumer\"}")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_budget_cuts_the_stalled_readers_first() {
    // Per-client limits out of the way: only the process budget (16 MiB) can act.
    let server = ServerProc::start_with_toml(
        "[limits]\nmax_queued_bytes = 1073741824\n[timeouts]\nslow_consumer_ms = 600000\n\
         [memory]\noutput_budget = 16777216\n",
        &["--shards", "1"],
    );
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(stalled_member(&server, "burst").await);
    }
    let mut fast = Ws::connect(&server.ws_url("/")).await;
    fast.join("burst").await;
    let mut publisher = Ws::connect(&server.ws_url("/")).await;
    let before = rss(&server).await;
    let mut fast = burst(&mut publisher, fast, "burst").await;
    // 32 MB went to each of three stalled readers; the budget held the total at 16 MiB, and
    // cut them, not the reader that kept up.
    let cut = server
        .metric("shardcast_disconnects_total{reason=\"output_budget\"}")
        .await;
    assert!((1..=3).contains(&cut), "{cut} cut off");
    let queued = server.metric("shardcast_output_queued_bytes").await;
    assert!(queued <= 16 * MIB, "{queued} bytes queued");
    let grown = rss(&server).await.saturating_sub(before);
    assert!(grown < 48 * MIB, "RSS grew {grown} bytes");
    fast.emit("echo", json!("ok")).await;
    assert_eq!(fast.recv().await, json!({"event": "echo", "data": "ok"}));
    // The stalled readers go: nothing stays counted for them, half-written frames included.
    drop(stalled);
    within("the stalled readers are gone", async {
        loop {
            let (_, body) = http(server.ws, "GET", "/health", &[], "").await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["activeConnections"] == 2 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(server.metric("shardcast_output_queued_bytes").await, 0);
}

#[tokio::test]
async fn the_input_budget_closes_the_connection_holding_the_most() {
    let server =
        ServerProc::start_with_toml("[memory]\ninput_budget = 1048576\n", &["--shards", "1"]);
    // A frame header announcing 1 MiB, then 900 KiB of it, then nothing: a trickler.
    let (mut trickler, rest) = raw_ws(server.ws, "/").await;
    let frame = client_frame(1, &vec![b'x'; 1024 * KIB], true);
    trickler.write_all(&frame[..900 * KIB]).await.unwrap();
    wait_metric(&server, "shardcast_input_held_bytes", 900 * KIB as u64).await;
    // A client sending a whole 200 KiB message pushes the shard over its budget: the
    // connection holding the most (the trickler) is closed, the message goes through.
    let mut ws = Ws::connect(&server.ws_url("/")).await;
    let data = "d".repeat(200 * KIB);
    ws.emit("echo", json!(data)).await;
    assert_eq!(ws.recv().await["data"], json!(data));
    let frames = server_frames(&read_until_eof(&mut trickler, rest).await);
    let last = frames.last().expect("a close frame");
    assert_eq!(last.0, 8);
    assert_eq!(&last.1[..2], &1013u16.to_be_bytes());
    assert_eq!(
        server
            .metric("shardcast_disconnects_total{reason=\"input_budget\"}")
            .await,
        1
    );
    assert!(server.metric("shardcast_input_held_bytes").await < 1024 * KIB as u64);
}

/// The server's resident set (VmRSS), read from /proc without asking the server anything: an
/// HTTP request would make it allocate, and some allocators (mimalloc) return freed memory
/// only when the thread that owns it calls into them again, which is not what an idle server
/// does.
fn vm_rss(server: &ServerProc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("the server's /proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .expect("VmRSS in kB");
    kb * 1024
}

/// Waits (with the harness deadline) until the server's RSS is at most `bound`; returns it.
async fn wait_rss_at_most(server: &ServerProc, bound: u64, what: &str) -> u64 {
    let mut last = 0;
    let waited = tokio::time::timeout(DEADLINE, async {
        loop {
            last = vm_rss(server);
            if last <= bound {
                return last;
            }
            // A poll interval, not a wait for something to happen: the deadline bounds it.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("{what}: RSS still {last} bytes after {DEADLINE:?}"))
}

/// The allocator gives memory back: after a burst that grew RSS by more than 100 MB, once every
/// client has gone, RSS comes back to within 32 MiB of what it was before, within the harness
/// deadline, while the server sits idle (nothing asks it anything meanwhile). glibc malloc kept
/// such a burst in its arenas for good (PERF.md, "Memory after a burst: the allocator"); the
/// binary's default allocator, jemalloc, purges freed pages from background threads within
/// about a second.
#[tokio::test]
async fn memory_freed_after_a_burst_goes_back_to_the_system() {
    // Nothing is cut during the burst: the stalled member's queue holds all of it.
    let server = ServerProc::start_with_toml(
        "[timeouts]\nslow_consumer_ms = 600000\n[memory]\noutput_budget = 1073741824\n",
        &["--shards", "1"],
    );
    let (stalled, _) = stalled_member(&server, "burst").await;
    let (mut publisher, _) = raw_ws(server.ws, "/").await;
    let before = vm_rss(&server);
    // 10 000 messages of 16 KiB (160 MiB), as fast as the server reads them.
    let publish = json!({"event": "publish",
        "data": {"room": "burst", "event": "m", "data": "p".repeat(16 * KIB)}});
    let frame = client_frame(1, publish.to_string().as_bytes(), true);
    let batch: Vec<u8> = (0..100).flat_map(|_| frame.clone()).collect();
    flood(&mut publisher, &batch, 100).await;
    wait_metric(&server, "shardcast_output_queued_bytes", 150 * MIB).await;
    let peak = vm_rss(&server);
    assert!(
        peak > before + 100 * MIB,
        "the burst grew RSS by only {} bytes",
        peak.saturating_sub(before)
    );
    // Every client goes; the server frees what it had queued for them.
    drop(stalled);
    drop(publisher);
    within("every client gone", async {
        while server
            .metric("shardcast_connections_active{transport=\"ws\"}")
            .await
            > 0
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    wait_rss_at_most(
        &server,
        before + 32 * MIB,
        &format!("memory back to within 32 MiB of {before} bytes after a burst to {peak}"),
    )
    .await;
}

/// With no --max-connections, clients may take the open-file limit less a reserve: past it
/// they are refused ("Server full") and `/health` still answers. (Before, 288 clients against
/// a limit of 256 descriptors ran the server out of them: connections hung unanswered.)
#[tokio::test]
async fn a_full_server_keeps_descriptors_for_health() {
    const OPEN_FILES: u64 = 256;
    let cap = (OPEN_FILES - 64 - OPEN_FILES / 64) as usize;
    let server = ServerProc::start_with_open_files(OPEN_FILES, &["--shards", "1", "--log=info"]);
    let line = server.expect_output("max_connections=");
    assert!(line.contains(&format!("max_connections={cap}")), "{line}");
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..cap + 100 {
        let mut ws = Ws::connect(&server.ws_url("/")).await;
        ws.send(json!({"event": "whoami", "data": null, "_ackName": "whoami"}))
            .await;
        match within("answer", futures_util::StreamExt::next(&mut ws.inner)).await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_))) => held.push(ws),
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 1008);
                assert_eq!(&*f.reason, "Server full");
                refused += 1;
            }
            other => panic!("expected an answer or a refusal, got {other:?}"),
        }
    }
    assert_eq!((held.len(), refused), (cap, 100));
    let (status, body) = http(server.ws, "GET", "/health", &[], "").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["activeConnections"], cap);
}
