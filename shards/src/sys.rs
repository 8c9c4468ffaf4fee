//! The few Linux calls the runtime needs that neither `std` nor glommio expose: CPU affinity,
//! `RLIMIT_MEMLOCK`, the per-thread signal mask, `SO_REUSEPORT` listening sockets with a chosen
//! backlog, and the non-blocking socketpair used as a doorbell.
//!
//! Every `unsafe` block of the crate that talks to libc lives here, each with the reason it is
//! sound. Nothing here allocates per message or per connection; these run at start-up, except
//! [`ring`], which runs when a sender wakes an idle shard (see `doorbell.rs`).

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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

/// `RLIMIT_MEMLOCK` as `(soft, hard)` in bytes (`u64::MAX` for unlimited).
pub(crate) fn memlock_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: we pass a valid pointer to an `rlimit` we own.
    check(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft `RLIMIT_MEMLOCK` to the hard limit (no privilege needed). Returns the new
/// `(soft, hard)`.
pub(crate) fn raise_memlock_soft_limit() -> io::Result<(u64, u64)> {
    let (soft, hard) = memlock_limit()?;
    if soft < hard {
        let lim = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: we pass a valid pointer to an `rlimit` we own.
        check(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) })?;
    }
    memlock_limit()
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
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors `socketpair` writes.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: on success both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one byte into a doorbell's write end without blocking and without SIGPIPE. A full
/// socket buffer (`EAGAIN`) means the reader already has bytes to wake on; a closed peer
/// (`EPIPE`) means the shard has ended. Neither needs anything from the sender, so errors are
/// deliberately ignored.
pub(crate) fn ring(fd: BorrowedFd<'_>) {
    let byte = 1u8;
    // SAFETY: we send one byte from a valid stack location on a descriptor kept open by the
    // caller's borrow.
    let _ = unsafe {
        libc::send(
            fd.as_raw_fd(),
            (&byte as *const u8).cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
}

/// Creates a listening TCP socket on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`, so that
/// every shard can bind its own socket on the same port and the kernel spreads connections
/// among them. The socket is left in blocking mode, as glommio's own `TcpListener::bind`
/// leaves it: glommio toggles `O_NONBLOCK` around its direct `accept` and otherwise submits an
/// io_uring accept. The kernel caps `backlog` at `net.core.somaxconn`.
pub(crate) fn reuseport_listener(addr: SocketAddr, backlog: u32) -> io::Result<OwnedFd> {
    let fd = tcp_socket(addr)?;
    set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    bind(&fd, addr)?;
    let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open socket we own.
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// A new blocking TCP socket of `addr`'s family (close-on-exec).
fn tcp_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket creation; on success we take sole ownership of the descriptor.
    Ok(unsafe {
        OwnedFd::from_raw_fd(check(libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            libc::IPPROTO_TCP,
        ))?)
    })
}

/// Checks that nobody listens on `addr` by binding a plain socket there (`SO_REUSEADDR` only,
/// so sockets in TIME_WAIT do not count, but no `SO_REUSEPORT`, so any listener — including
/// another process's `SO_REUSEPORT` group under the same user, which would otherwise silently
/// share our port — makes it fail with `EADDRINUSE`). Returns the address with the port the
/// kernel chose if `addr` had port 0. The probe socket is closed on return.
pub(crate) fn probe_exclusive(addr: SocketAddr) -> io::Result<SocketAddr> {
    let fd = tcp_socket(addr)?;
    set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    bind(&fd, addr)?;
    local_addr(&fd)
}

fn set_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: we pass a pointer to a `c_int` and its exact size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn bind(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: `sockaddr_in` is plain data; every field we rely on is set below.
            let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            // SAFETY: pointer and length describe the `sockaddr_in` above.
            check(unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sin as *const libc::sockaddr_in).cast(),
                    mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            })?;
        }
        SocketAddr::V6(a) => {
            // SAFETY: `sockaddr_in6` is plain data; every field we rely on is set below.
            let mut sin6: libc::sockaddr_in6 = unsafe { mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: pointer and length describe the `sockaddr_in6` above.
            check(unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            })?;
        }
    }
    Ok(())
}

/// Stops a listening socket at once: `shutdown(SHUT_RD)` moves it out of LISTEN (new
/// connections are refused) and fails any accept in flight. Closing the descriptor is not
/// enough, because an io_uring accept in flight holds its own reference to the socket, which
/// keeps it listening until the request is cancelled. Errors (already closed) are ignored.
pub(crate) fn stop_listening(fd: libc::c_int) {
    // SAFETY: `shutdown` on a descriptor the caller keeps open; no memory is passed.
    let _ = unsafe { libc::shutdown(fd, libc::SHUT_RD) };
}

/// The address a socket is bound to (reads the port the kernel chose for port 0).
pub(crate) fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    // Borrow the descriptor as a std listener only to reuse std's sockaddr decoding;
    // `ManuallyDrop` keeps std from closing a descriptor it does not own.
    // SAFETY: `fd` stays open for the duration of this call.
    let std_listener =
        mem::ManuallyDrop::new(unsafe { std::net::TcpListener::from_raw_fd(fd.as_raw_fd()) });
    std_listener.local_addr()
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
    fn the_probe_sees_a_reuseport_group_as_in_use() {
        let probed = probe_exclusive("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(probed.port(), 0);
        let group = reuseport_listener(probed, 16).unwrap();
        let err = probe_exclusive(local_addr(&group).unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
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
