//! [`Tcp`]: a plain TCP socket whose reads come through the thread's own io_uring
//! (`shardcast_shards::uring`, the ring the server's shards use) and whose writes are plain
//! non-blocking `send`s.
//!
//! Why not glommio's `TcpStream`: when a read comes up short, glommio 0.9 submits an io_uring
//! receive on a ring set up without `IORING_SETUP_COOP_TASKRUN`. Each time the server then
//! sends to that socket, the server's `sendmsg` runs the wake-up of that pending receive, and
//! io_uring notifies a running load generator thread with an inter-processor interrupt
//! (`task_work_add` → `kick_process`). In a VM an IPI is a VM exit, paid by the **server's**
//! CPU with interrupts off: measured against shardcast it was one IPI per ≈ 5 sends and ≈ 40 %
//! of the server's CPU (PERF.md, "Against native uWebSockets"). A load generator must not
//! charge its own wake-ups to the server it measures. The shards' ring sets up with
//! `COOP_TASKRUN`: the kernel posts the completion without an interrupt, as an epoll client
//! (or a remote client behind a NIC) costs the sender nothing beyond the socket's own work.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite};
use shardcast_shards::uring::{Ring, Socket};

/// A connected (or connecting) TCP socket on the thread's ring.
#[derive(Debug)]
pub struct Tcp {
    sock: Socket,
    /// Received bytes not yet handed to an `AsyncRead` caller.
    rbuf: BytesMut,
}

impl Tcp {
    /// Takes a non-blocking TCP socket (its connect may still be in flight: the first write
    /// waits for it). Must run on a glommio executor (the ring's driver is a task).
    pub fn adopt(fd: OwnedFd) -> io::Result<Tcp> {
        Ok(Tcp {
            sock: Ring::get()?.adopt(fd),
            rbuf: BytesMut::new(),
        })
    }

    /// Takes over an accepted glommio stream (the sink's listener is glommio's).
    pub fn from_glommio(stream: glommio::net::TcpStream) -> io::Result<Tcp> {
        Ok(Tcp {
            sock: Ring::get()?.adopt_glommio(stream)?,
            rbuf: BytesMut::new(),
        })
    }

    /// Appends what arrived to `out` (moved without a copy when `out` is empty); `Ok(0)` is
    /// the end of the stream.
    pub fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        if !self.rbuf.is_empty() {
            let n = self.rbuf.len();
            if out.is_empty() {
                *out = std::mem::take(&mut self.rbuf);
            } else {
                out.extend_from_slice(&self.rbuf);
                self.rbuf = BytesMut::new();
            }
            return Poll::Ready(Ok(n));
        }
        self.sock.poll_recv(cx, out)
    }
}

impl AsRawFd for Tcp {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.rbuf.is_empty() && ready!(this.sock.poll_recv(cx, &mut this.rbuf))? == 0 {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(this.rbuf.len());
        buf[..n].copy_from_slice(&this.rbuf[..n]);
        this.rbuf.advance(n);
        if this.rbuf.is_empty() {
            // An idle connection keeps no read buffer.
            this.rbuf = BytesMut::new();
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let fd = self.sock.as_raw_fd();
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes; MSG_NOSIGNAL turns EPIPE into an
            // error, not a SIGPIPE.
            let n = unsafe {
                libc::send(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                return Poll::Ready(Ok(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Full (or still connecting): wait until the socket takes bytes again.
                Some(libc::EAGAIN) => ready!(self.sock.poll_writable(cx)),
                Some(libc::EINTR) => {}
                _ => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: the descriptor belongs to this live socket.
        if unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_WR) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOTCONN) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dial::{self, DialOptions};
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::io::{Read, Write};

    fn on_executor<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .io_memory(64 << 10)
            .spawn(move || async move { f().await })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn echoes_both_ways_and_sees_the_end_of_the_stream() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // Echo until the client's FIN, then close.
            let mut buf = [0u8; 65536];
            loop {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).unwrap();
            }
        });
        on_executor(move || async move {
            let mut tcp = dial::open(addr, DialOptions::default()).unwrap();
            // More than one read takes (`uring::RECV_MAX`) and more than a socket buffer takes
            // at once.
            let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let mut got = BytesMut::new();
            let mut off = 0;
            while off < sent.len() || got.len() < sent.len() {
                if off < sent.len() {
                    let end = (off + 16_384).min(sent.len());
                    tcp.write_all(&sent[off..end]).await.unwrap();
                    off = end;
                }
                // Alternate the two read paths: `poll_read_buf` and `AsyncRead`.
                if got.len() % 2 == 0 {
                    let n = std::future::poll_fn(|cx| tcp.poll_read_buf(cx, &mut got))
                        .await
                        .unwrap();
                    assert!(n > 0);
                } else {
                    let mut small = [0u8; 1000];
                    let n = tcp.read(&mut small).await.unwrap();
                    assert!(n > 0);
                    got.extend_from_slice(&small[..n]);
                }
            }
            assert_eq!(&got[..], &sent[..]);
            tcp.close().await.unwrap();
            let mut rest = [0u8; 16];
            assert_eq!(
                tcp.read(&mut rest).await.unwrap(),
                0,
                "the peer's FIN reads as 0"
            );
        });
        peer.join().unwrap();
    }

    #[test]
    fn a_refused_connect_fails_the_first_write() {
        // A port that was just free: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        on_executor(move || async move {
            match dial::open(addr, DialOptions::default()) {
                // The kernel may know at once…
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED)),
                // …or the in-flight connect fails and the write reports it.
                Ok(mut tcp) => {
                    let e = tcp.write_all(b"x").await.unwrap_err();
                    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}");
                }
            }
        });
    }
}
