//! The few OS calls the runtime needs that neither `std` nor glommio expose: CPU affinity,
//! `RLIMIT_MEMLOCK`, the per-thread signal mask, `SO_REUSEPORT` listening sockets with a chosen
//! backlog, the exclusive claim on a port, and the non-blocking socketpair used as a doorbell.
//!
//! Sockets and socket addresses go through `socket2` (creation with close-on-exec, options,
//! `bind`, `listen`, `sockaddr` conversion, `send`, `shutdown`); `libc` is called directly only
//! for what `socket2` does not cover: affinity, rlimits, capabilities and signal masks. Every
//! `unsafe` block of the crate that talks to the OS lives here, each with the reason it is
//! sound. Nothing here allocates per message or per connection; these run at start-up, except
//! [`ring`], which runs when a sender wakes an idle shard (see `doorbell.rs`).

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

/// Returns `Err(last_os_error)` when a libc call reported failure with `-1`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The CPUs this process may run on (its affinity mask, which honours `taskset` and cgroup
/// cpusets), in ascending order.
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: `cpu_set_t` is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: we pass the exact size of the set we own; pid 0 means the calling thread.
    check(unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set) })?;
    let max = 8 * mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `CPU_ISSET` reads the set we own; `cpu < CPU_SETSIZE` by construction of `max`.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Pins the calling thread to one CPU.
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= 8 * mem::size_of::<libc::cpu_set_t>() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: as in `allowed_cpus`; `cpu` was bounds-checked above, so `CPU_SET` stays inside.
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        check(libc::sched_setaffinity(
            0,
            mem::size_of::<libc::cpu_set_t>(),
            &set,
        ))?;
    }
    Ok(())
}

/// A resource limit as `(soft, hard)` (`u64::MAX` for unlimited).
fn rlimit(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: we pass a valid pointer to an `rlimit` we own.
    check(unsafe { libc::getrlimit(resource, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises a soft resource limit to the hard one (no privilege needed). Returns the new
/// `(soft, hard)`.
fn raise_soft_limit(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    let (soft, hard) = rlimit(resource)?;
    if soft < hard {
        let lim = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: we pass a valid pointer to an `rlimit` we own.
        check(unsafe { libc::setrlimit(resource, &lim) })?;
    }
    rlimit(resource)
}

/// Raises the soft `RLIMIT_MEMLOCK` to the hard limit. Returns the new `(soft, hard)`.
pub(crate) fn raise_memlock_soft_limit() -> io::Result<(u64, u64)> {
    raise_soft_limit(libc::RLIMIT_MEMLOCK)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: every connection is a descriptor, and
/// the usual soft default (1024) would cap a server far below what it can serve. Returns the
/// soft limit in force afterwards (the old one if raising failed).
pub fn raise_open_file_limit() -> io::Result<u64> {
    match raise_soft_limit(libc::RLIMIT_NOFILE) {
        Ok((soft, _)) => Ok(soft),
        Err(_) => rlimit(libc::RLIMIT_NOFILE).map(|(soft, _)| soft),
    }
}

/// Whether this process holds `CAP_IPC_LOCK` in its effective set (then locked memory is not
/// limited by `RLIMIT_MEMLOCK`). Read from `/proc/self/status`; false when unreadable.
pub(crate) fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Blocks `signals` in the calling thread (and in every thread it spawns later, which inherit
/// the mask).
pub(crate) fn block_signals_in_current_thread(signals: &[libc::c_int]) -> io::Result<()> {
    set_signal_mask(libc::SIG_BLOCK, signals)
}

/// Unblocks `signals` in the calling thread.
pub(crate) fn unblock_signals_in_current_thread(signals: &[libc::c_int]) -> io::Result<()> {
    set_signal_mask(libc::SIG_UNBLOCK, signals)
}

fn set_signal_mask(how: libc::c_int, signals: &[libc::c_int]) -> io::Result<()> {
    // SAFETY: `sigset_t` is plain data and initialised by `sigemptyset` before use;
    // `pthread_sigmask` only changes the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(how, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// A connected pair of non-blocking, close-on-exec Unix stream sockets: `(read end, write
/// end)`. Used as a doorbell: glommio can await the read end (its reads are `recv`, which an
/// eventfd does not support), and any thread can `send` one byte into the write end.
pub(crate) fn doorbell_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    // `Socket::pair` adds close-on-exec itself.
    let (read, write) = Socket::pair(Domain::UNIX, Type::STREAM.nonblocking(), None)?;
    Ok((read.into(), write.into()))
}

/// Sends one byte into a doorbell's write end without blocking and without SIGPIPE. A full
/// socket buffer (`EAGAIN`) means the reader already has bytes to wake on; a closed peer
/// (`EPIPE`) means the shard has ended. Neither needs anything from the sender, so errors are
/// deliberately ignored.
pub(crate) fn ring(fd: BorrowedFd<'_>) {
    // `MSG_NOSIGNAL`: socket2 passes the flags through as given, and a SIGPIPE would kill a
    // sender whose shard has ended.
    let _ = SockRef::from(&fd).send_with_flags(&[1], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
}

/// Creates a listening TCP socket on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`, so that
/// every shard can bind its own socket on the same port and the kernel spreads connections
/// among them. The socket is left in blocking mode, as glommio's own `TcpListener::bind`
/// leaves it: glommio toggles `O_NONBLOCK` around its direct `accept` and otherwise submits an
/// io_uring accept. The kernel caps `backlog` at `net.core.somaxconn`.
pub(crate) fn reuseport_listener(addr: SocketAddr, backlog: u32) -> io::Result<OwnedFd> {
    let socket = tcp_socket(addr)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX))?;
    Ok(socket.into())
}

/// A new blocking TCP socket of `addr`'s family (close-on-exec: `Socket::new` sets it
/// atomically).
fn tcp_socket(addr: SocketAddr) -> io::Result<Socket> {
    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
}

/// Claims `addr` for this process: binds a plain socket there, with `SO_REUSEADDR` (so sockets
/// in TIME_WAIT do not count) but without `SO_REUSEPORT`, so that any other socket on the port
/// — including another process's `SO_REUSEPORT` group under the same user, which would
/// otherwise silently share it — makes this fail with `EADDRINUSE`. Port 0 lets the kernel
/// choose a port nobody holds. Returns the claim with the address it holds.
///
/// While the claim is held (bound, never listening), `SO_REUSEPORT` listeners of this process
/// can still bind the same address: two sockets that both set `SO_REUSEADDR` may share a port
/// as long as neither listens. A socket without `SO_REUSEADDR` is refused meanwhile, and one
/// with it that starts listening first makes our bind fail, so no other program ends up
/// sharing the port silently. A caller holds the claim until its own listeners are up.
pub(crate) fn claim_exclusive(addr: SocketAddr) -> io::Result<(OwnedFd, SocketAddr)> {
    let socket = tcp_socket(addr)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SockAddr::from(addr))?;
    let claimed = local_addr(&socket)?;
    Ok((socket.into(), claimed))
}

/// Stops a listening socket at once: `shutdown(SHUT_RD)` moves it out of LISTEN (new
/// connections are refused) and fails any accept in flight. Closing the descriptor is not
/// enough, because an io_uring accept in flight holds its own reference to the socket, which
/// keeps it listening until the request is cancelled. Errors (already closed) are ignored.
pub(crate) fn stop_listening(fd: RawFd) {
    // SAFETY: the caller keeps `fd` open for the duration of this call (glommio's listener
    // owns it and outlives the call); the borrow does not escape.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let _ = SockRef::from(&fd).shutdown(std::net::Shutdown::Read);
}

/// The address a socket is bound to (reads the port the kernel chose for port 0).
pub(crate) fn local_addr(fd: &impl AsFd) -> io::Result<SocketAddr> {
    SockRef::from(fd).local_addr()?.as_socket().ok_or_else(|| {
        // Only TCP sockets of an IP family are created here.
        io::Error::new(io::ErrorKind::InvalidInput, "not an IPv4 or IPv6 socket")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn allowed_cpus_is_not_empty_and_sorted() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn two_reuseport_sockets_share_a_kernel_chosen_port() {
        let first = reuseport_listener("127.0.0.1:0".parse().unwrap(), 64).unwrap();
        let addr = local_addr(&first).unwrap();
        assert_ne!(addr.port(), 0);
        let second = reuseport_listener(addr, 64).unwrap();
        assert_eq!(local_addr(&second).unwrap(), addr);
        // A connection is accepted by one of the two sockets.
        let _client = std::net::TcpStream::connect(addr).unwrap();
    }

    #[test]
    fn a_claim_sees_a_reuseport_group_as_in_use() {
        let (claim, claimed) = claim_exclusive("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(claimed.port(), 0);
        let group = reuseport_listener(claimed, 16).unwrap();
        drop(claim);
        let err = claim_exclusive(local_addr(&group).unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_held_claim_admits_our_reuseport_group_and_refuses_plain_binds() {
        let (_claim, addr) = claim_exclusive("127.0.0.1:0".parse().unwrap()).unwrap();
        // While the claim is held, a socket without SO_REUSEADDR cannot bind the port.
        let plain = tcp_socket(addr).unwrap();
        let err = plain.bind(&SockAddr::from(addr)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // Our group can, and listens.
        let first = reuseport_listener(addr, 16).unwrap();
        let second = reuseport_listener(addr, 16).unwrap();
        assert_eq!(local_addr(&first).unwrap(), addr);
        assert_eq!(local_addr(&second).unwrap(), addr);
        let _client = std::net::TcpStream::connect(addr).unwrap();
        // From now on nobody else can listen there (std's listener sets SO_REUSEADDR).
        let err = std::net::TcpListener::bind(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_listener_that_beats_our_group_to_the_claimed_port_makes_our_bind_fail() {
        let (_claim, addr) = claim_exclusive("127.0.0.1:0".parse().unwrap()).unwrap();
        // SO_REUSEADDR lets another program bind next to the claim; once it listens, our
        // group fails loudly instead of sharing the port.
        let other = std::net::TcpListener::bind(addr).unwrap();
        let err = reuseport_listener(addr, 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(other);
    }

    #[test]
    fn a_port_held_without_reuseport_is_reported_in_use() {
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = reuseport_listener(plain.local_addr().unwrap(), 64).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn ipv6_loopback_binds_when_available() {
        // Some CI sandboxes have no IPv6: only check the round trip where it exists.
        if let Ok(fd) = reuseport_listener("[::1]:0".parse().unwrap(), 16) {
            let addr = local_addr(&fd).unwrap();
            assert!(addr.is_ipv6());
            assert_ne!(addr.port(), 0);
        }
    }

    #[test]
    fn doorbell_pair_carries_rung_bytes() {
        let (read, write) = doorbell_pair().unwrap();
        ring(write.as_fd());
        ring(write.as_fd());
        let mut stream = std::os::unix::net::UnixStream::from(read);
        let mut buf = [0u8; 8];
        assert_eq!(stream.read(&mut buf).unwrap(), 2);
        // Non-blocking: nothing more to read.
        assert_eq!(
            stream.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // Ringing a doorbell whose reader is gone is harmless (EPIPE ignored, no SIGPIPE).
        drop(stream);
        ring(write.as_fd());
    }

    #[test]
    fn memlock_soft_limit_can_be_raised_to_hard() {
        let (soft, hard) = raise_memlock_soft_limit().unwrap();
        assert_eq!(soft, hard);
    }
}
