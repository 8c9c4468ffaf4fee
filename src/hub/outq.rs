//! A connection's write queue: frames waiting to be written, sent coalesced, with their real
//! memory cost counted.
//!
//! Everything queued for a socket during a loop turn goes out in one `sendmsg(2)`: runs of
//! small frames copied into one buffer, larger frames with an iovec each (DESIGN.md: a `send`
//! costs about 5 µs on these VMs, so the number of sends decides fan-out speed). When that is
//! one buffer, the usual case, it goes out with `send(2)`: no message header and iovec array
//! for the kernel to copy in (1–5 % of the server's CPU at fan-out, PERF.md). Frames are
//! `Bytes`, so a large fan-out frame shared by thousands of sockets is never copied.
//!
//! **Pongs.** At most [`MAX_PONGS`] pongs wait at a time: each ping is answered (Autobahn
//! 2.10 checks that ten pings in a row get ten pongs), but past that bound a new pong
//! replaces the most recent waiting one, as RFC 6455 §5.5.3 allows ("MAY elect to send a Pong
//! frame for only the most recently processed Ping frame"). A peer that pings without reading
//! therefore costs a few small frames, not one per ping. Pongs go out before the other
//! waiting frames (after a frame already partly written, which must be finished first or the
//! peer's framing breaks).
//!
//! **Cost.** [`OutQueue::cost`] is what the queue holds in memory: payload bytes plus
//! [`FRAME_COST`] per frame for its slot and allocation. The hub keeps every queue's cost in
//! its shard's output budget and compares it with the slow-consumer limit (`hub/mod.rs`);
//! all mutation goes through the hub so the sum stays exact.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use bytes::{Buf, Bytes};

/// Frames up to this size are copied into one buffer per `sendmsg` rather than given an iovec
/// each ([`OutQueue::write_to`]).
const SMALL_FRAME: usize = 512;

/// The copy buffer's size: at most this much of a `sendmsg` is copied.
const COALESCE: usize = 16 * 1024;

thread_local! {
    /// The shard's copy buffer for [`OutQueue::write_to`] (allocated once, never grown:
    /// its capacity is what the copies are limited to).
    static SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(COALESCE));
}

/// Most iovecs handed to one `sendmsg` (Linux IOV_MAX is 1024; beyond a few hundred the
/// kernel's per-iovec cost dominates and one call rarely drains more anyway).
const MAX_IOV: usize = 512;

/// What a queued frame costs beyond its payload: its `Bytes` handle in the deque (32 bytes)
/// plus, for a frame built for this one connection, the allocator's header and rounding and
/// the shared-buffer header `Bytes` adds (measured at 24–48 bytes with glibc). Fan-out frames
/// shared by many queues are charged in full to each: the bound errs on the safe side.
pub(crate) const FRAME_COST: usize = 64;

/// Most pongs waiting at once; a pong beyond them replaces the newest.
pub(crate) const MAX_PONGS: usize = 16;

/// The pongs waiting: allocated at the first ping, most connections never get one (an idle
/// connection's memory counts: boxed, the `Client` fits a smaller size class).
#[derive(Debug, Default)]
// The box is the point: 8 bytes in every queue instead of a deque's 32.
#[allow(clippy::box_collection)]
struct Pongs(Option<Box<VecDeque<Bytes>>>);

impl Pongs {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn push_back(&mut self, pong: Bytes) {
        self.0.get_or_insert_with(Box::default).push_back(pong);
    }
    fn pop_back(&mut self) -> Option<Bytes> {
        self.0.as_mut()?.pop_back()
    }
    fn pop_front(&mut self) -> Option<Bytes> {
        self.0.as_mut()?.pop_front()
    }
    #[cfg(test)]
    fn front(&self) -> Option<&Bytes> {
        self.0.as_ref()?.front()
    }
    fn front_mut(&mut self) -> Option<&mut Bytes> {
        self.0.as_mut()?.front_mut()
    }
    fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.0.iter().flat_map(|q| q.iter())
    }
    fn clear(&mut self) {
        if let Some(q) = self.0.as_mut() {
            q.clear();
        }
    }
}

/// Frames waiting for the socket.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    frames: VecDeque<Bytes>,
    /// Sum of `frames[i].len()`, and whether the front frame is partly written.
    len: Len,
    /// Pending pongs (at most [`MAX_PONGS`]), sent before `frames` unless the front frame is
    /// partly written.
    pongs: Pongs,
}

/// The sum of the queued frames' lengths, and in its top bit whether the front frame has been
/// partly written (it must then be finished before anything else goes out, or the peer's
/// framing breaks): one word, where a length and a flag took two (an idle connection's memory
/// counts, PERF.md).
#[derive(Debug, Default, Clone, Copy)]
struct Len(usize);

impl Len {
    const STARTED: usize = 1 << (usize::BITS - 1);

    fn bytes(self) -> usize {
        self.0 & !Self::STARTED
    }

    fn started(self) -> bool {
        self.0 & Self::STARTED != 0
    }

    fn set_started(&mut self, on: bool) {
        self.0 = if on {
            self.0 | Self::STARTED
        } else {
            self.0 & !Self::STARTED
        };
    }

    fn set_bytes(&mut self, n: usize) {
        debug_assert!(n < Self::STARTED);
        self.0 = (self.0 & Self::STARTED) | n;
    }

    fn add(&mut self, n: usize) {
        self.set_bytes(self.bytes() + n);
    }

    fn sub(&mut self, n: usize) {
        self.set_bytes(self.bytes() - n);
    }
}

impl OutQueue {
    /// Queues a frame.
    pub(crate) fn push(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        self.len.add(frame.len());
        self.frames.push_back(frame);
    }

    /// Queues a pong; with [`MAX_PONGS`] already waiting it replaces the newest (§5.5.3).
    pub(crate) fn push_pong(&mut self, pong: Bytes) {
        if pong.is_empty() {
            return;
        }
        if self.pongs.len() >= MAX_PONGS {
            self.pongs.pop_back();
        }
        self.pongs.push_back(pong);
    }

    /// Memory held: payload bytes plus [`FRAME_COST`] per frame.
    pub(crate) fn cost(&self) -> usize {
        let pongs: usize = self.pongs.iter().map(|p| p.len() + FRAME_COST).sum();
        self.len.bytes() + self.frames.len() * FRAME_COST + pongs
    }

    /// Frames waiting (pongs included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.frames.len() + self.pongs.len()
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.pongs.is_empty()
    }

    /// Drops everything queued that has not started to go out (a slow consumer being cut
    /// off, a connection failing). A partly written front frame is kept so the frame that
    /// follows (a close) is still read as a frame.
    pub(crate) fn clear(&mut self) {
        let keep = if self.len.started() {
            self.frames.pop_front()
        } else {
            None
        };
        self.frames.clear();
        self.pongs.clear();
        self.len.set_bytes(0);
        self.shrink();
        if let Some(front) = keep {
            self.len.set_bytes(front.len());
            self.frames.push_back(front);
        }
    }

    /// A drained queue holds no allocation: an idle connection costs nothing here (a deque
    /// keeps its slots otherwise: 128 bytes after a single frame, and whatever a burst grew
    /// it to). Giving it back costs an allocation on the next push, one per write at most,
    /// against a `sendmsg` of microseconds.
    fn shrink(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            self.frames = VecDeque::new();
        }
        if self.pongs.is_empty() {
            self.pongs = Pongs::default();
        }
    }

    /// The frame that goes out next.
    #[cfg(test)]
    pub(crate) fn front(&self) -> Option<&Bytes> {
        if self.len.started() {
            return self.frames.front();
        }
        self.pongs.front().or(self.frames.front())
    }

    /// The frames in the order they go out.
    fn in_order(&self) -> impl Iterator<Item = &Bytes> {
        let (first, rest) = if self.len.started() {
            (self.frames.front(), self.frames.range(1..))
        } else {
            (None, self.frames.range(..))
        };
        first.into_iter().chain(self.pongs.iter()).chain(rest)
    }

    /// Marks `n` bytes as written, in [`OutQueue::in_order`] order: dropping frames written
    /// whole and advancing a partially written one.
    pub(crate) fn consume(&mut self, mut n: usize) {
        if self.len.started() {
            n = self.consume_front(n);
        }
        while n > 0 {
            let Some(pong) = self.pongs.front_mut() else {
                break;
            };
            if n >= pong.len() {
                n -= pong.len();
                self.pongs.pop_front();
            } else {
                // A partly written pong becomes the started front frame.
                pong.advance(n);
                if let Some(rest) = self.pongs.pop_front() {
                    self.len.add(rest.len());
                    self.frames.push_front(rest);
                    self.len.set_started(true);
                }
                return;
            }
        }
        while n > 0 && !self.frames.is_empty() {
            n = self.consume_front(n);
        }
        self.shrink();
    }

    /// Consumes up to `n` bytes of the front frame; returns what is left of `n`.
    fn consume_front(&mut self, n: usize) -> usize {
        let Some(front) = self.frames.front_mut() else {
            return n;
        };
        if n >= front.len() {
            let len = front.len();
            self.len.sub(len);
            self.frames.pop_front();
            self.len.set_started(false);
            n - len
        } else {
            front.advance(n);
            self.len.sub(n);
            self.len.set_started(true);
            0
        }
    }

    /// Hands the frames, in order, to `w` (a TLS session's plaintext writer) in one
    /// vectored write of at most `max` bytes, and consumes what it took.
    pub(crate) fn write_into(&mut self, w: &mut dyn io::Write, max: usize) -> usize {
        const IOV: usize = 64;
        let mut iov = [io::IoSlice::new(&[]); IOV];
        let (mut count, mut total) = (0, 0);
        for frame in self.in_order().take(IOV) {
            if total >= max {
                break;
            }
            let take = frame.len().min(max - total);
            iov[count] = io::IoSlice::new(&frame[..take]);
            count += 1;
            total += take;
        }
        let n = w.write_vectored(&iov[..count]).unwrap_or(0);
        self.consume(n);
        n
    }

    /// Writes as much as the socket takes in one `sendmsg` (`send` for one buffer) without
    /// blocking. Returns the bytes written; `WouldBlock` when the socket is full.
    ///
    /// Runs of small frames (up to [`SMALL_FRAME`] bytes each, [`COALESCE`] in all) are copied
    /// into one buffer and go out as one iovec: the kernel's cost per iovec (an iteration of
    /// its copy loop and a hardened-usercopy check each) is more than a copy of a small frame
    /// here. Larger frames go out from their own buffers, uncopied.
    pub(crate) fn write_to(&mut self, fd: RawFd) -> io::Result<usize> {
        if self.pongs.is_empty() && self.frames.len() == 1 {
            // The usual flush, one frame (a batch's answers, a reply, a fan-out's frame):
            // sent from its own buffer, with nothing to gather.
            let n = send_iov(fd, &[IoSlice::new(&self.frames[0])])?;
            self.consume(n);
            return Ok(n);
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            self.write_coalesced(fd, &mut scratch)
        })
    }

    fn write_coalesced(&mut self, fd: RawFd, scratch: &mut Vec<u8>) -> io::Result<usize> {
        // Only the entries used are initialised: most flushes carry one to a few frames, and
        // zeroing 512 iovecs (8 KiB) per flush would cost more than building them.
        let mut iov: [std::mem::MaybeUninit<libc::iovec>; MAX_IOV] =
            [const { std::mem::MaybeUninit::uninit() }; MAX_IOV];
        // Which iovecs point into `scratch`: their `iov_base` holds an offset until the
        // copies are done (the buffer's address is taken once, after the last copy).
        let mut copied = [0u64; MAX_IOV / 64];
        let mut count = 0;
        let mut run_open = false;
        for frame in self.in_order() {
            let len = frame.len();
            let small = len <= SMALL_FRAME && scratch.len() + len <= COALESCE;
            if small && run_open {
                scratch.extend_from_slice(frame);
                // SAFETY: entry `count - 1` was written when the run opened.
                unsafe { iov[count - 1].assume_init_mut() }.iov_len += len;
                continue;
            }
            if count == MAX_IOV {
                break;
            }
            if small {
                iov[count].write(libc::iovec {
                    iov_base: scratch.len() as *mut libc::c_void,
                    iov_len: len,
                });
                copied[count / 64] |= 1 << (count % 64);
                scratch.extend_from_slice(frame);
                run_open = true;
            } else {
                iov[count].write(libc::iovec {
                    iov_base: frame.as_ptr() as *mut libc::c_void,
                    iov_len: len,
                });
                run_open = false;
            }
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        let base = scratch.as_ptr();
        for (i, entry) in iov.iter_mut().enumerate().take(count) {
            if copied[i / 64] & (1 << (i % 64)) != 0 {
                // SAFETY: entry `i` is written; its offset and length lie within `scratch`.
                let e = unsafe { entry.assume_init_mut() };
                e.iov_base = unsafe { base.add(e.iov_base as usize) } as *mut libc::c_void;
            }
        }
        // SAFETY: the first `count` entries are written, and `IoSlice` has `iovec`'s layout
        // on Unix. Every one points into `scratch` or into a `Bytes` owned by `self.frames` or
        // `self.pongs`, none of which is touched until the call returns.
        let bufs = unsafe { std::slice::from_raw_parts(iov.as_ptr().cast::<IoSlice<'_>>(), count) };
        let n = send_iov(fd, bufs)?;
        self.consume(n);
        Ok(n)
    }
}

/// Writes `bufs` to the socket `fd` in one non-blocking call (retried on `EINTR`): `send` for
/// one buffer, the usual case (the kernel copies in no message header and iovec array),
/// `sendmsg` for more. `WouldBlock` when the socket is full; `MSG_NOSIGNAL` turns `EPIPE` into
/// an error instead of a `SIGPIPE`. The write queue and the TLS record writer both use it.
pub(crate) fn send_iov(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    // SAFETY: a zeroed msghdr is valid; only the iovec fields are set. `IoSlice` is
    // ABI-compatible with `iovec` on Unix, and the slices outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    loop {
        // SAFETY: see above: every pointer handed over is a live slice of `bufs`.
        let n = unsafe {
            match bufs {
                [one] => libc::send(fd, one.as_ptr().cast(), one.len(), flags),
                _ => libc::sendmsg(fd, &msg, flags),
            }
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn drain(q: &mut OutQueue) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(f) = q.front().cloned() {
            // One byte at a time: every frame boundary and partial write is exercised.
            out.push(f[0]);
            q.consume(1);
        }
        out
    }

    #[test]
    fn consume_advances_across_frames() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b""));
        q.push(Bytes::from_static(b"defg"));
        assert_eq!(q.len(), 2);
        assert_eq!(q.cost(), 7 + 2 * FRAME_COST);
        q.consume(4);
        assert_eq!(q.cost(), 3 + FRAME_COST);
        assert_eq!(q.front().unwrap().as_ref(), b"efg");
        q.consume(3);
        assert!(q.is_empty());
        assert_eq!(q.cost(), 0);
    }

    #[test]
    fn a_few_pongs_wait_however_many_pings_came() {
        let mut q = OutQueue::default();
        for i in 0..10u8 {
            q.push_pong(Bytes::from(vec![i]));
        }
        assert_eq!(
            drain(&mut q),
            (0..10).collect::<Vec<u8>>(),
            "each ping answered"
        );
        for i in 0..10_000u32 {
            q.push_pong(Bytes::from(i.to_be_bytes().to_vec()));
        }
        assert_eq!(q.len(), MAX_PONGS);
        assert_eq!(q.cost(), MAX_PONGS * (4 + FRAME_COST));
        let mut want: Vec<u8> = (0..MAX_PONGS as u32 - 1)
            .flat_map(u32::to_be_bytes)
            .collect();
        want.extend_from_slice(&9_999u32.to_be_bytes());
        assert_eq!(drain(&mut q), want, "the first ones, then the most recent");
    }

    #[test]
    fn the_pong_goes_first_unless_a_frame_is_half_written() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"de"));
        q.push_pong(Bytes::from_static(b"P"));
        assert_eq!(drain(&mut q), b"Pabcde");

        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"de"));
        q.consume(1);
        q.push_pong(Bytes::from_static(b"PQ"));
        assert_eq!(drain(&mut q), b"bcPQde");
    }

    #[test]
    fn a_half_written_pong_is_finished_before_anything_else() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push_pong(Bytes::from_static(b"PQR"));
        q.consume(1);
        // A newer pong may not cut into the one on the wire.
        q.push_pong(Bytes::from_static(b"XY"));
        assert_eq!(drain(&mut q), b"QRXYabc");
        assert_eq!(q.cost(), 0);
    }

    #[test]
    fn clear_keeps_a_partly_written_front_frame() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abcdef"));
        q.push(Bytes::from_static(b"ghi"));
        q.push_pong(Bytes::from_static(b"P"));
        q.clear();
        assert!(q.is_empty(), "nothing started: everything dropped");
        q.push(Bytes::from_static(b"abcdef"));
        q.push(Bytes::from_static(b"ghi"));
        q.consume(2);
        q.clear();
        assert_eq!(q.len(), 1);
        assert_eq!(q.front().unwrap().as_ref(), b"cdef");
        assert_eq!(q.cost(), 4 + FRAME_COST);
        q.consume(4);
        q.push(Bytes::from_static(b"x"));
        q.clear();
        assert!(q.is_empty(), "front finished: nothing kept");
    }

    #[test]
    fn a_drained_queue_holds_no_allocation() {
        let mut q = OutQueue::default();
        for _ in 0..10_000 {
            q.push(Bytes::from_static(b"x"));
        }
        q.push_pong(Bytes::from_static(b"P"));
        q.consume(5_000);
        assert!(q.frames.capacity() > 0, "not drained yet");
        q.consume(5_001);
        assert!(q.is_empty());
        assert_eq!(q.frames.capacity(), 0);
        assert!(q.pongs.0.is_none());
    }

    /// Takes at most `cap` bytes per write, like a TLS writer with little room left.
    struct Capped {
        out: Vec<u8>,
        cap: usize,
    }

    impl io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.cap);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(self.cap - n);
                self.out.extend_from_slice(&b[..k]);
                n += k;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_into_hands_frames_over_in_order_within_max_and_what_the_writer_takes() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"defg"));
        q.push_pong(Bytes::from_static(b"P"));
        let mut w = Capped {
            out: Vec::new(),
            cap: 3,
        };
        assert_eq!(q.write_into(&mut w, 100), 3);
        assert_eq!(w.out, b"Pab");
        w.cap = 100;
        assert_eq!(q.write_into(&mut w, 2), 2, "at most max");
        assert_eq!(q.write_into(&mut w, 100), 3);
        assert_eq!(w.out, b"Pabcdefg");
        assert!(q.is_empty());
        assert_eq!(q.cost(), 0);
    }

    #[test]
    fn one_sendmsg_carries_every_frame_in_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut q = OutQueue::default();
        let mut expected = b"PONG".to_vec();
        for i in 0..700u32 {
            let f = format!("frame{i};");
            expected.extend_from_slice(f.as_bytes());
            q.push(Bytes::from(f));
        }
        q.push_pong(Bytes::from_static(b"PONG"));
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
    fn mixed_sizes_go_out_whole_and_in_order_through_partial_writes() {
        // Small frames (copied), frames at and past the copy threshold (own iovecs), more than
        // one copy buffer's worth, pongs in between, and a socket that takes only part of a
        // call at a time: the bytes must arrive exactly as queued.
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        let mut q = OutQueue::default();
        let mut expected = Vec::new();
        let sizes = [1, 66, SMALL_FRAME, SMALL_FRAME + 1, 3000, 70, COALESCE, 5];
        let mut pongs_due = Vec::new();
        for i in 0..2000usize {
            let len = sizes[i % sizes.len()];
            let f: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            q.push(Bytes::from(f.clone()));
            pongs_due.push(f);
            if i % 97 == 0 {
                // A pong jumps the queue unless a frame is half written: keep the model
                // simple by writing everything queued so far first.
                while !q.is_empty() {
                    match q.write_to(a.as_raw_fd()) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
                for f in pongs_due.drain(..) {
                    expected.extend_from_slice(&f);
                }
                q.push_pong(Bytes::from_static(b"PONG"));
                expected.extend_from_slice(b"PONG");
            }
        }
        for f in pongs_due.drain(..) {
            expected.extend_from_slice(&f);
        }
        while !q.is_empty() {
            match q.write_to(a.as_raw_fd()) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(q.cost(), 0);
        drop(a);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes differ from what was queued");
    }

    /// A lone frame goes out from its own buffer in as many writes as the socket needs, and
    /// a pong queued while it is half written follows it, not inside it.
    #[test]
    fn a_lone_frame_goes_out_whole_through_partial_writes_before_a_pong() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let frame: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
        let mut q = OutQueue::default();
        q.push(Bytes::from(frame.clone()));
        let first = q.write_to(a.as_raw_fd()).unwrap();
        assert!(first > 0 && first < frame.len(), "{first}");
        q.push_pong(Bytes::from_static(b"PONG"));
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        while !q.is_empty() {
            match q.write_to(a.as_raw_fd()) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        drop(a);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), frame.len() + 4);
        assert!(got[..frame.len()] == frame[..], "the frame was cut");
        assert_eq!(&got[frame.len()..], b"PONG");
    }

    #[test]
    fn full_socket_reports_would_block_and_keeps_data() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut q = OutQueue::default();
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        for _ in 0..64 {
            q.push(chunk.clone());
        }
        let total = q.len.bytes();
        let mut written = 0;
        let err = loop {
            match q.write_to(a.as_raw_fd()) {
                Ok(n) => written += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(q.len.bytes(), total - written);
    }
}
