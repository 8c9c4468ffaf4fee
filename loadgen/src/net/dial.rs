//! Opening a client socket: non-blocking, optionally bound to a source address, connect
//! started, then put on the thread's ring ([`Tcp`]).
//!
//! The socket is made here with libc (glommio's `TcpStream::connect` cannot bind a source
//! address). The connect is left in flight (`EINPROGRESS`): the first send finds the socket
//! not yet writable and waits for a write-readiness poll, which fires when the connection is
//! established (or fails, and the send reports why); a first read likewise waits. So the
//! caller simply starts its handshake and times the whole of it.
//!
//! `IP_BIND_ADDRESS_NO_PORT` (Linux ≥ 4.2) defers the choice of source port to `connect`,
//! where the kernel only needs the full 4-tuple to be unique: every source address then
//! brings its own port range per destination.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::tcp::Tcp;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` outlives the call and the length matches its type.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Closes `fd` on drop unless released (error paths before glommio owns it).
struct FdGuard(RawFd);

impl Drop for FdGuard {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: we own this descriptor and nothing else refers to it.
            unsafe {
                libc::close(self.0);
            }
        }
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Options for [`open`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DialOptions {
    /// Bind to this local address first (port chosen at connect).
    pub source: Option<IpAddr>,
    /// `SO_LINGER {on, 0}`: closing sends RST and leaves no TIME_WAIT (connection storms,
    /// where TIME_WAIT would exhaust the source ports).
    pub linger_zero: bool,
}

/// Creates a socket, binds it, starts connecting to `addr` and puts it on the ring. Must
/// run on a glommio executor. Errors are the socket calls' (`EMFILE`, `EADDRNOTAVAIL`,
/// `ECONNREFUSED` when the kernel knows at once, …).
pub fn open(addr: SocketAddr, opts: DialOptions) -> io::Result<Tcp> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call.
    let fd = cvt(unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    let guard = FdGuard(fd);
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    if opts.linger_zero {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: `l` outlives the call and the length matches its type.
        cvt(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        })?;
    }
    if let Some(src) = opts.source {
        if src.is_ipv4() == addr.is_ipv4() {
            // Best effort: without it the kernel picks the port at bind time (fewer ports).
            let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1);
            let (sa, len) = sockaddr(SocketAddr::new(src, 0));
            // SAFETY: `sa` is a valid sockaddr of length `len`.
            cvt(unsafe { libc::bind(fd, (&sa as *const libc::sockaddr_storage).cast(), len) })?;
        }
    }
    let (sa, len) = sockaddr(addr);
    // SAFETY: `sa` is a valid sockaddr of length `len`.
    let r = unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_storage).cast(), len) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    std::mem::forget(guard);
    // SAFETY: `fd` is a valid, open, non-blocking TCP socket that nothing else owns.
    Tcp::adopt(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::AsyncWriteExt;

    #[test]
    fn binds_the_source_address_and_connects_in_flight() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ex = glommio::LocalExecutorBuilder::default()
            .io_memory(64 << 10)
            .make()
            .unwrap();
        let source: IpAddr = "127.0.0.3".parse().unwrap();
        ex.run(async move {
            let mut s = open(
                addr,
                DialOptions {
                    source: Some(source),
                    linger_zero: true,
                },
            )
            .unwrap();
            // The connect is still in flight: the first write waits for it.
            s.write_all(b"x").await.unwrap();
        });
        let (_c, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source);
    }
}
