//! A reproduction of a lost wake-up in glommio 0.9 itself, kept for whoever upgrades glommio
//! or the kernel. Ignored by default: it fails intermittently (about one run in six on the
//! 2-core kernel 6.18 VM this crate was written on).
//!
//! Two executors ping-pong one byte over a Unix socketpair with glommio's own `UnixStream`
//! (no shardcast code involved) and no timer armed. Now and then an executor parks in
//! `io_uring_enter` and is never woken although its socket is readable: the exchange stalls
//! forever. Any armed glommio timer wakes it, which is why the runtime keeps a "wake guard"
//! timer on every shard (`Builder::wake_guard`, default 10 ms) so that such a stall lasts at
//! most one guard period. This affects every glommio socket, connections included, not only
//! the mesh doorbell. Known upstream: DataDog/glommio issues #326 and #547, PR #552.
//!
//! Run: `cargo test -p shardcast-shards --test glommio_wakeup -- --ignored --nocapture`
//! (repeat it; with `GUARD_MS=10` a timer task runs on both executors and it never stalls).

use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use shardcast_shards::glommio::{self, net::UnixStream, LocalExecutorBuilder, Placement};

#[test]
#[ignore = "reproduces an intermittent glommio bug; run by hand"]
fn glommio_unix_stream_ping_pong_without_timers() {
    const ROUND_TRIPS: u32 = 20_000;
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let (fa, fb) = (a.into_raw_fd(), b.into_raw_fd());
    let guard = std::env::var("GUARD_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let cpus = if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        (Placement::Fixed(0), Placement::Fixed(1))
    } else {
        (Placement::Unbound, Placement::Unbound)
    };
    let spawn_guard = move || {
        if let Some(ms) = guard {
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(Duration::from_millis(ms)).await;
                }
            })
            .detach();
        }
    };
    let echo = LocalExecutorBuilder::new(cpus.1)
        .io_memory(64 << 10)
        .spawn(move || async move {
            spawn_guard();
            // SAFETY: `fb` is an open socket whose ownership moves into the stream.
            let mut s = unsafe { UnixStream::from_raw_fd(fb) };
            let mut buf = [0u8; 64];
            for _ in 0..ROUND_TRIPS {
                assert!(s.read(&mut buf).await.unwrap() > 0);
                s.write_all(&[1]).await.unwrap();
            }
        })
        .unwrap();
    let ping = LocalExecutorBuilder::new(cpus.0)
        .io_memory(64 << 10)
        .spawn(move || async move {
            spawn_guard();
            // SAFETY: `fa` is an open socket whose ownership moves into the stream.
            let mut s = unsafe { UnixStream::from_raw_fd(fa) };
            let mut buf = [0u8; 64];
            for _ in 0..ROUND_TRIPS {
                s.write_all(&[1]).await.unwrap();
                assert!(s.read(&mut buf).await.unwrap() > 0);
            }
        })
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(ping.join().is_ok());
    });
    let finished = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("glommio stalled: lost wake-up");
    assert!(finished);
    echo.join().unwrap();
}
