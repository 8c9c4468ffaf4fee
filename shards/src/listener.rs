//! Listeners: one `SO_REUSEPORT` socket per shard per configured address, all bound before any
//! shard starts, and the accept loop each shard runs on its own socket.
//!
//! Binding (DESIGN.md "Each shard binds its own SO_REUSEPORT listener on every port"): for each
//! named address, [`bind_group`] creates one socket per shard on the same port. Port 0 works:
//! the kernel chooses the port once and every shard's socket binds it. [`bind_pair`] binds a
//! second group at the port after a first group's, choosing a free pair when the first asks
//! for port 0. Everything is bound in the starting thread before a shard runs, so "address in
//! use" surfaces as a start error at once and the bound ports can be logged in one line.
//!
//! Accepting ([`Listener::accept_loop`]): accept on this shard's socket and hand each stream
//! to a callback, until shutdown begins, then close the socket (stop accepting). Errors are
//! classified (accept(2)): per-connection failures (`ECONNABORTED`, `EPROTO`, `EPERM`, network
//! errors) are counted and the loop goes on; resource exhaustion (`EMFILE`, `ENFILE`,
//! `ENOBUFS`, `ENOMEM`) is counted and the loop backs off (5 ms doubling to 500 ms) so that a
//! full fd table does not spin the CPU; anything else means the listener itself is broken and
//! ends the loop with an error. What a connection is (WebSocket, stelar) is not known here.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};

use crate::shutdown::ShardShutdown;
use crate::sys;

/// Yield to other tasks after this many back-to-back accepts (a connection storm must not
/// starve the connections already accepted).
const ACCEPTS_PER_YIELD: u32 = 32;
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// One configured address with its name, as bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundListener {
    /// The name given to `Builder::listen` (e.g. `"ws"`, `"tcp"`).
    pub name: String,
    /// The address every shard's socket is bound to (with the real port if 0 was asked).
    pub addr: SocketAddr,
}

/// One configured address as bound: the address every socket of the group shares (with the
/// kernel's port if port 0 was asked) and one listening socket per shard.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) addr: SocketAddr,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Binds `shards` listening sockets on `addr`, all on the same port (the kernel's choice if
/// `addr` has port 0).
///
/// An exclusive claim on the address comes first (`sys::claim_exclusive`: a bind without
/// `SO_REUSEPORT`). `SO_REUSEPORT` lets any process of the same user join a group on a port,
/// so without the claim a second server started by mistake on the same port would silently
/// take half the connections instead of failing with "address in use". For port 0 the claim
/// is also what picks the port. The claim is held until every socket of the group listens, so
/// the port is never released between being checked and being bound; a program that starts
/// listening on it in between makes our bind fail with "address in use" (see
/// `sys::claim_exclusive`). (Another process of the same user running this same sequence on
/// the same port in the microseconds before our first `listen` is not covered: two claims that
/// both set `SO_REUSEADDR` and do not listen may share a port.)
pub(crate) fn bind_group(addr: SocketAddr, shards: usize, backlog: u32) -> io::Result<Group> {
    let (claim, claimed) = sys::claim_exclusive(addr)?;
    let mut fds = Vec::with_capacity(shards);
    for _ in 0..shards {
        fds.push(sys::reuseport_listener(claimed, backlog)?);
    }
    // Our sockets listen now, which keeps out any socket that is not in our group.
    drop(claim);
    Ok(Group { addr: claimed, fds })
}

/// How many ports [`bind_pair`] takes from the kernel, when the first group asks for port 0,
/// before giving up on finding one whose next port is free too.
pub(crate) const PAIR_TRIES: u32 = 64;

/// Why [`bind_pair`] could not bind two groups on consecutive ports.
#[derive(Debug)]
pub(crate) enum PairError {
    /// Binding the first group failed.
    First(io::Error),
    /// The first group is bound at port 65535 (asked for explicitly): no port comes after it.
    NoNextPort(SocketAddr),
    /// Binding the second group at `addr`, the port after the first group's, failed.
    Second {
        /// The address tried.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The first group asked for port 0, and for each of the `tries` ports the kernel chose
    /// the next port was taken.
    NoFreePair {
        /// How many ports were tried.
        tries: u32,
    },
}

/// Binds a group on `first` and a second group at the port after the one the first is bound
/// to, with the same IP address (see [`bind_group`] for each).
///
/// An explicit port: the second group binds `port + 1`, and a failure there (in use, say) is
/// the second group's error. Port 0: the kernel chooses `p` for the first group, which stays
/// bound while the second tries `p + 1`; if that is in use (or `p` is 65535), both groups are
/// dropped and the kernel is asked again, at most `tries` times. A free pair is thus found
/// while holding it, rather than checked free and then bound: no port is released between
/// the check and the bind for another process to take.
pub(crate) fn bind_pair(
    first: SocketAddr,
    shards: usize,
    backlog: u32,
    tries: u32,
) -> Result<(Group, Group), PairError> {
    bind_pair_with(first, tries, |addr| bind_group(addr, shards, backlog))
}

/// [`bind_pair`] with the group binding supplied, so tests can make the next port taken.
fn bind_pair_with(
    first: SocketAddr,
    tries: u32,
    mut bind: impl FnMut(SocketAddr) -> io::Result<Group>,
) -> Result<(Group, Group), PairError> {
    let next_to = |group: &Group| {
        let port = group.addr.port().checked_add(1)?;
        let mut next = group.addr;
        next.set_port(port);
        Some(next)
    };
    if first.port() != 0 {
        let a = bind(first).map_err(PairError::First)?;
        let next = next_to(&a).ok_or(PairError::NoNextPort(a.addr))?;
        let b = bind(next).map_err(|source| PairError::Second { addr: next, source })?;
        return Ok((a, b));
    }
    for _ in 0..tries {
        let a = bind(first).map_err(PairError::First)?;
        let Some(next) = next_to(&a) else {
            continue;
        };
        match bind(next) {
            Ok(b) => return Ok((a, b)),
            // Dropping `a` here releases its port before the kernel picks again.
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(source) => return Err(PairError::Second { addr: next, source }),
        }
    }
    Err(PairError::NoFreePair { tries })
}

/// A fault of the accept path, each with its own counter label.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The process or system ran out of descriptors or memory (`EMFILE`, `ENFILE`,
    /// `ENOBUFS`, `ENOMEM`). Transient: the loop backs off and retries.
    #[error("accept: out of resources: {0}")]
    ResourceExhausted(#[source] io::Error),
    /// One incoming connection failed before it could be accepted (`ECONNABORTED`, `EPROTO`,
    /// `EPERM`, network errors). Transient: the loop continues at once.
    #[error("accept: connection failed: {0}")]
    ConnectionFailed(#[source] io::Error),
    /// The listening socket itself is unusable (`EBADF`, `EINVAL`, ...). Fatal for the loop.
    #[error("accept: listener broken: {0}")]
    ListenerBroken(#[source] io::Error),
}

impl AcceptError {
    fn classify(err: io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                Self::ResourceExhausted(err)
            }
            Some(
                libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::EINTR
                | libc::EAGAIN
                | libc::ENETDOWN
                | libc::ENETUNREACH
                | libc::ENONET
                | libc::EHOSTDOWN
                | libc::EHOSTUNREACH
                | libc::ENOPROTOOPT
                | libc::EOPNOTSUPP
                | libc::ETIMEDOUT
                | libc::ECONNRESET,
            ) => Self::ConnectionFailed(err),
            _ if err.kind() == io::ErrorKind::Interrupted => Self::ConnectionFailed(err),
            _ => Self::ListenerBroken(err),
        }
    }

    /// A short static label for counters (`accept_errors{reason="..."}`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::ResourceExhausted(_) => "resource_exhausted",
            Self::ConnectionFailed(_) => "connection_failed",
            Self::ListenerBroken(_) => "listener_broken",
        }
    }
}

/// Counters of one shard's listener. Shared (`Rc`) so the shard can read them while the
/// accept loop owns the listener.
#[derive(Debug, Default)]
pub struct AcceptCounters {
    accepted: Cell<u64>,
    connection_failed: Cell<u64>,
    resource_exhausted: Cell<u64>,
}

impl AcceptCounters {
    /// Connections accepted.
    pub fn accepted(&self) -> u64 {
        self.accepted.get()
    }
    /// Per-connection accept failures (the loop went on).
    pub fn connection_failed(&self) -> u64 {
        self.connection_failed.get()
    }
    /// Out-of-resource accept failures (the loop backed off).
    pub fn resource_exhausted(&self) -> u64 {
        self.resource_exhausted.get()
    }
}

fn bump(c: &Cell<u64>) {
    c.set(c.get().wrapping_add(1));
}

/// This shard's socket for one configured address.
pub struct Listener {
    name: Rc<str>,
    addr: SocketAddr,
    /// The socket's descriptor, owned by `inner` (glommio's listener exposes no `AsRawFd`).
    fd: RawFd,
    inner: TcpListener,
    shutdown: Rc<ShardShutdown>,
    counters: Rc<AcceptCounters>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish()
    }
}

impl Listener {
    /// Wraps a bound, listening socket. Must run on the shard's executor.
    pub(crate) fn attach(
        name: Rc<str>,
        addr: SocketAddr,
        fd: OwnedFd,
        shutdown: Rc<ShardShutdown>,
    ) -> Self {
        // SAFETY: `fd` is a bound, listening TCP socket that we own; ownership moves into
        // glommio's listener, which closes it on drop.
        let fd = fd.into_raw_fd();
        let inner = unsafe { TcpListener::from_raw_fd(fd) };
        Self {
            name,
            addr,
            fd,
            inner,
            shutdown,
            counters: Rc::default(),
        }
    }

    /// The name given to `Builder::listen`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address (shared by every shard's socket for this name).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// This listener's counters.
    pub fn counters(&self) -> Rc<AcceptCounters> {
        Rc::clone(&self.counters)
    }

    /// Refuses new connections from now on (see `sys::stop_listening`); the socket is closed
    /// when the listener drops.
    fn stop(&self) {
        sys::stop_listening(self.fd);
    }

    /// Accepts one connection (counting it, or counting and classifying the failure).
    pub async fn accept(&self) -> Result<TcpStream, AcceptError> {
        match self.inner.accept().await {
            Ok(stream) => {
                bump(&self.counters.accepted);
                Ok(stream)
            }
            Err(e) => {
                let err = AcceptError::classify(e.into());
                match &err {
                    AcceptError::ResourceExhausted(_) => bump(&self.counters.resource_exhausted),
                    AcceptError::ConnectionFailed(_) => bump(&self.counters.connection_failed),
                    AcceptError::ListenerBroken(_) => {}
                }
                Err(err)
            }
        }
    }

    /// Accepts connections and hands each to `on_stream` until shutdown begins on this shard;
    /// then returns `Ok(())` and drops the socket, so this shard stops accepting. Transient
    /// errors are counted (see [`Listener::counters`]) and handled as the module doc says;
    /// only a broken listener ends the loop with an error.
    ///
    /// `on_stream` typically spawns the connection's task (`Shard::spawn(...).detach()`).
    pub async fn accept_loop<F>(self, mut on_stream: F) -> Result<(), AcceptError>
    where
        F: FnMut(TcpStream),
    {
        let mut stop = self.shutdown.draining();
        let mut backoff = BACKOFF_MIN;
        let mut since_yield = 0u32;
        loop {
            let accepted = futures_lite::future::or(
                async {
                    (&mut stop).await;
                    None
                },
                async { Some(self.accept().await) },
            )
            .await;
            match accepted {
                None => {
                    self.stop();
                    return Ok(());
                }
                Some(Ok(stream)) => {
                    backoff = BACKOFF_MIN;
                    on_stream(stream);
                    since_yield += 1;
                    if since_yield >= ACCEPTS_PER_YIELD {
                        since_yield = 0;
                        futures_lite::future::yield_now().await;
                    }
                }
                Some(Err(AcceptError::ConnectionFailed(error))) => {
                    tracing::debug!(listener = %self.name, %error, "accept failed for one connection");
                }
                Some(Err(AcceptError::ResourceExhausted(error))) => {
                    tracing::warn!(listener = %self.name, %error, ?backoff, "accept: out of resources, backing off");
                    let slept = futures_lite::future::or(
                        async {
                            glommio::timer::sleep(backoff).await;
                            true
                        },
                        async {
                            (&mut stop).await;
                            false
                        },
                    )
                    .await;
                    if !slept {
                        self.stop();
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Some(Err(err @ AcceptError::ListenerBroken(_))) => {
                    tracing::error!(listener = %self.name, error = %err, "accept loop ended");
                    return Err(err);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn accept_errors_are_classified() {
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(
                AcceptError::classify(os(code)).label(),
                "resource_exhausted"
            );
        }
        for code in [libc::ECONNABORTED, libc::EPROTO, libc::EPERM, libc::EINTR] {
            assert_eq!(AcceptError::classify(os(code)).label(), "connection_failed");
        }
        for code in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK] {
            assert_eq!(AcceptError::classify(os(code)).label(), "listener_broken");
        }
    }

    #[test]
    fn bind_group_shares_one_port_and_port_zero_works() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 3, 128).unwrap();
        assert_ne!(group.addr.port(), 0);
        assert_eq!(group.fds.len(), 3);
        for fd in &group.fds {
            assert_eq!(sys::local_addr(fd).unwrap(), group.addr);
        }
    }

    #[test]
    fn a_group_refuses_to_join_another_group_on_its_port() {
        let first = bind_group("127.0.0.1:0".parse().unwrap(), 2, 16).unwrap();
        let err = bind_group(first.addr, 2, 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    fn assert_consecutive(a: &Group, b: &Group) {
        assert_ne!(a.addr.port(), 0);
        assert_eq!(b.addr.ip(), a.addr.ip());
        assert_eq!(
            b.addr.port(),
            a.addr.port() + 1,
            "{} then {}",
            a.addr,
            b.addr
        );
        for (group, fds) in [(a, &a.fds), (b, &b.fds)] {
            for fd in fds {
                assert_eq!(sys::local_addr(fd).unwrap(), group.addr);
            }
        }
    }

    #[test]
    fn pairs_on_port_zero_are_consecutive_even_when_many_are_bound_concurrently() {
        // Four threads each hold 25 pairs at once: every pair is consecutive, and no two
        // groups share a port (a group joining another's would show up as a repeated port).
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..25)
                        .map(|_| {
                            bind_pair("127.0.0.1:0".parse().unwrap(), 2, 16, PAIR_TRIES)
                                .expect("a free pair")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let pairs: Vec<(Group, Group)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let mut ports = std::collections::HashSet::new();
        for (a, b) in &pairs {
            assert_consecutive(a, b);
            assert!(ports.insert(a.addr.port()), "port {} bound twice", a.addr);
            assert!(ports.insert(b.addr.port()), "port {} bound twice", b.addr);
        }
        // Both groups of a pair accept connections.
        let (a, b) = &pairs[0];
        let _ca = std::net::TcpStream::connect(a.addr).unwrap();
        let _cb = std::net::TcpStream::connect(b.addr).unwrap();
    }

    #[test]
    fn a_taken_next_port_makes_port_zero_try_again() {
        let mut seconds_refused = 0;
        let (a, b) = bind_pair_with("127.0.0.1:0".parse().unwrap(), PAIR_TRIES, |addr| {
            if addr.port() != 0 && seconds_refused < 3 {
                seconds_refused += 1;
                return Err(io::Error::from(io::ErrorKind::AddrInUse));
            }
            bind_group(addr, 1, 16)
        })
        .unwrap();
        assert_eq!(seconds_refused, 3);
        assert_consecutive(&a, &b);
    }

    #[test]
    fn port_zero_gives_up_after_the_tries_with_a_clear_error() {
        let mut firsts = 0;
        let err = bind_pair_with("127.0.0.1:0".parse().unwrap(), 5, |addr| {
            if addr.port() == 0 {
                firsts += 1;
                bind_group(addr, 1, 16)
            } else {
                Err(io::Error::from(io::ErrorKind::AddrInUse))
            }
        })
        .unwrap_err();
        assert!(matches!(err, PairError::NoFreePair { tries: 5 }), "{err:?}");
        assert_eq!(firsts, 5);
        // Any other failure of the second group is reported at once.
        let err = bind_pair_with("127.0.0.1:0".parse().unwrap(), 5, |addr| {
            if addr.port() == 0 {
                bind_group(addr, 1, 16)
            } else {
                Err(io::Error::from(io::ErrorKind::PermissionDenied))
            }
        })
        .unwrap_err();
        let PairError::Second { source, .. } = &err else {
            panic!("expected the second group's error, got {err:?}");
        };
        assert_eq!(source.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn an_explicit_port_pairs_with_exactly_the_next_one() {
        // Find a free pair first, then ask for it explicitly.
        let (a, b) = bind_pair("127.0.0.1:0".parse().unwrap(), 1, 16, PAIR_TRIES).unwrap();
        let (first, second) = (a.addr, b.addr);
        drop((a, b));
        let (a, b) = bind_pair(first, 2, 16, PAIR_TRIES).unwrap();
        assert_eq!((a.addr, b.addr), (first, second));
        drop(b);
        // The next port taken: that is the second group's error, with no retry elsewhere.
        let squatter = std::net::TcpListener::bind(second).unwrap();
        drop(a);
        let err = bind_pair(first, 2, 16, PAIR_TRIES).unwrap_err();
        assert!(
            matches!(&err, PairError::Second { addr, source }
                if *addr == second && source.kind() == io::ErrorKind::AddrInUse),
            "{err:?}"
        );
        drop(squatter);
        // A first port with no next one.
        let err = bind_pair_with("127.0.0.1:65535".parse().unwrap(), 5, |addr| {
            Ok(Group {
                addr,
                fds: Vec::new(),
            })
        })
        .unwrap_err();
        assert!(
            matches!(err, PairError::NoNextPort(a) if a.port() == 65535),
            "{err:?}"
        );
    }

    #[test]
    fn accept_loop_counts_and_stops_on_shutdown() {
        let ex = glommio::LocalExecutorBuilder::default()
            .io_memory(64 << 10)
            .make()
            .unwrap();
        ex.run(async {
            let Group { addr, mut fds } =
                bind_group("127.0.0.1:0".parse().unwrap(), 1, 16).unwrap();
            let shutdown = ShardShutdown::new();
            let listener = Listener::attach("t".into(), addr, fds.remove(0), Rc::clone(&shutdown));
            let counters = listener.counters();
            let accepted = Rc::new(Cell::new(0));
            let five = crate::event::LocalEvent::new();
            let (seen, five_set) = (Rc::clone(&accepted), Rc::clone(&five));
            let task = glommio::spawn_local(listener.accept_loop(move |_s| {
                seen.set(seen.get() + 1);
                if seen.get() == 5 {
                    five_set.set();
                }
            }));
            let clients = std::thread::spawn(move || {
                (0..5)
                    .map(|_| std::net::TcpStream::connect(addr).unwrap())
                    .collect::<Vec<_>>()
            });
            glommio::timer::timeout(Duration::from_secs(10), async {
                five.wait().await;
                Ok(())
            })
            .await
            .expect("five connections accepted in time");
            assert_eq!(counters.accepted(), 5);
            // Let the executor poll for I/O so the next accept is submitted to io_uring.
            glommio::timer::sleep(Duration::from_millis(5)).await;
            shutdown_for_test(&shutdown);
            // Right after the loop returns, before the executor ends: the socket no longer
            // listens although glommio's accept may still be in flight in the ring.
            assert!(task.await.is_ok());
            drop(clients.join().unwrap());
            assert!(std::net::TcpStream::connect(addr).is_err());
        });
    }

    fn shutdown_for_test(s: &Rc<ShardShutdown>) {
        s.set_draining_for_test();
    }
}
