//! A connection's write queue: frames waiting to be written, sent coalesced.
//!
//! Everything queued for a socket during a loop turn goes out in one `sendmsg(2)` with an
//! iovec per frame, however many frames that is (DESIGN.md: a `send` costs about 5 µs on
//! these VMs, so the number of sends decides fan-out speed). Frames are `Bytes`, so a
//! fan-out frame shared by thousands of sockets is never copied. The queue counts its bytes;
//! the connection layer compares that with the slow-consumer limit.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use bytes::{Buf, Bytes};

/// Most iovecs handed to one `sendmsg` (Linux IOV_MAX is 1024; beyond a few hundred the
/// kernel's per-iovec cost dominates and one call rarely drains more anyway).
const MAX_IOV: usize = 512;

/// Frames waiting for the socket.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    frames: VecDeque<Bytes>,
    /// Sum of `frames[i].len()`.
    bytes: usize,
    /// The front frame has been partly written: it must be finished before anything else
    /// goes out, or the peer's framing breaks.
    front_started: bool,
}

impl OutQueue {
    /// Queues a frame.
    pub(crate) fn push(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Bytes waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frames waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Drops everything queued that has not started to go out (a slow consumer being cut
    /// off, a connection failing). A partly written front frame is kept so the frame that
    /// follows (a close) is still read as a frame.
    pub(crate) fn clear(&mut self) {
        let keep = if self.front_started {
            self.frames.pop_front()
        } else {
            None
        };
        self.frames.clear();
        self.bytes = 0;
        if let Some(front) = keep {
            self.bytes = front.len();
            self.frames.push_back(front);
        }
    }

    /// The first frame, for the readiness probe when the socket is full.
    pub(crate) fn front(&self) -> Option<&Bytes> {
        self.frames.front()
    }

    /// Marks `n` bytes as written, dropping frames written whole and advancing a partially
    /// written one.
    pub(crate) fn consume(&mut self, mut n: usize) {
        self.bytes -= n.min(self.bytes);
        while n > 0 {
            let Some(front) = self.frames.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.frames.pop_front();
                self.front_started = false;
            } else {
                front.advance(n);
                self.front_started = true;
                return;
            }
        }
    }

    /// Writes as much as the socket takes in one `sendmsg` without blocking. Returns the
    /// bytes written; `WouldBlock` when the socket is full.
    pub(crate) fn write_to(&mut self, fd: RawFd) -> io::Result<usize> {
        // Only the entries used are initialised: most flushes carry one to a few frames, and
        // zeroing 512 iovecs (8 KiB) per flush would cost more than building them.
        let mut iov: [std::mem::MaybeUninit<libc::iovec>; MAX_IOV] =
            [const { std::mem::MaybeUninit::uninit() }; MAX_IOV];
        let mut count = 0;
        for frame in self.frames.iter().take(MAX_IOV) {
            iov[count].write(libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            });
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        // SAFETY: a zeroed msghdr is valid; we set only the iovec fields.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // `MaybeUninit<iovec>` has iovec's layout and the first `count` entries are written.
        msg.msg_iov = iov.as_mut_ptr().cast::<libc::iovec>();
        msg.msg_iovlen = count as _;
        loop {
            // SAFETY: every iovec points into a `Bytes` owned by `self.frames`, which is not
            // touched until the call returns; MSG_NOSIGNAL turns EPIPE into an error
            // instead of a SIGPIPE.
            let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
            if n >= 0 {
                let n = n as usize;
                self.consume(n);
                return Ok(n);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn consume_advances_across_frames() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b""));
        q.push(Bytes::from_static(b"defg"));
        assert_eq!(q.len(), 2);
        assert_eq!(q.bytes(), 7);
        q.consume(4);
        assert_eq!(q.bytes(), 3);
        assert_eq!(q.front().unwrap().as_ref(), b"efg");
        q.consume(3);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn clear_keeps_a_partly_written_front_frame() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abcdef"));
        q.push(Bytes::from_static(b"ghi"));
        q.clear();
        assert!(q.is_empty(), "nothing started: everything dropped");
        q.push(Bytes::from_static(b"abcdef"));
        q.push(Bytes::from_static(b"ghi"));
        q.consume(2);
        q.clear();
        assert_eq!(q.len(), 1);
        assert_eq!(q.front().unwrap().as_ref(), b"cdef");
        assert_eq!(q.bytes(), 4);
        q.consume(4);
        q.push(Bytes::from_static(b"x"));
        q.clear();
        assert!(q.is_empty(), "front finished: nothing kept");
    }

    #[test]
    fn one_sendmsg_carries_every_frame_in_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut q = OutQueue::default();
        let mut expected = Vec::new();
        for i in 0..700u32 {
            let f = format!("frame{i};");
            expected.extend_from_slice(f.as_bytes());
            q.push(Bytes::from(f));
        }
        let mut written = 0;
        while !q.is_empty() {
            written += q.write_to(a.as_raw_fd()).unwrap();
        }
        assert_eq!(written, expected.len());
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn full_socket_reports_would_block_and_keeps_data() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut q = OutQueue::default();
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        for _ in 0..64 {
            q.push(chunk.clone());
        }
        let total = q.bytes();
        let mut written = 0;
        let err = loop {
            match q.write_to(a.as_raw_fd()) {
                Ok(n) => written += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(q.bytes(), total - written);
    }
}
