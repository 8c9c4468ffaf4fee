//! Protection (issue 9, item 4): the origin allow-list, connections and handshakes per IP
//! address, and per-client message rate limits.
//!
//! Each check reads its settings at use time through `hub.config()` (a reload changes them),
//! answers in the transport's terms (HTTP 403 / 429 before the `101`, a TCP ERROR frame, a
//! `server:error` event, close 1008), and reports through [`reject`]: one counter per reason
//! (`shardcast_refused_total{reason=…}`), the application's `on_reject` hooks, and an info log
//! line limited to [`LOG_LINES_PER_SEC`] per shard (the rest are summed in a "suppressed" line)
//! so that an attack cannot flood the log.
//!
//! Process-wide state is the [`Guard`]: per-IP connection counts and handshake buckets in
//! striped mutex maps, touched once at accept (or at the upgrade request) and once at close,
//! never on the message path. Message buckets ([`RateState`]) live in the connection and cost
//! no allocation per message. `conn/` calls [`admit_ws`] / [`admit_tcp`] before it keeps any
//! client state; `app::dispatch` calls [`admit_message`] first for every inbound message.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use ipnet::IpNet;

use crate::app::dispatch::Env;
use crate::app::error::ClientError;
use crate::app::{App, Handshake, Refusal, RejectReason, Rejection};
use crate::config::{origin_matches, Rate};
use crate::hub::client::CloseCause;
use crate::hub::outgoing::Outgoing;
use crate::hub::Hub;
use crate::protocol::http::Request;
use crate::stats::Transport;

/// Rejection log lines per shard per second; the rest are counted and reported in one line.
pub(crate) const LOG_LINES_PER_SEC: u32 = 10;
/// Stripes of the process-wide maps (a connection locks one, briefly).
const STRIPES: usize = 16;
/// Handshake buckets kept per stripe. Beyond it, buckets that have refilled (and so say
/// nothing) are dropped; if none has, the new address is admitted untracked rather than
/// letting many addresses lock out everyone (`max_connections` still bounds the total).
const MAX_BUCKETS_PER_STRIPE: usize = 4096;

/// A token bucket: `tokens` refill at the rate's pace up to the burst, one per admission.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Bucket {
    tokens: f64,
    last_ms: u64,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn full(burst: u32, now_ms: u64) -> Bucket {
        Bucket {
            tokens: f64::from(burst.max(1)),
            last_ms: now_ms,
        }
    }

    /// Adds what `rate` earned since the last call, up to `burst` (at least 1).
    pub(crate) fn refill(&mut self, now_ms: u64, rate: Rate, burst: u32) {
        if now_ms > self.last_ms {
            self.tokens += (now_ms - self.last_ms) as f64 * rate.per_ms();
            self.last_ms = now_ms;
        }
        // Also after a reload lowered the burst.
        self.tokens = self.tokens.min(f64::from(burst.max(1)));
    }

    /// Whether a token is there.
    pub(crate) fn ready(&self) -> bool {
        self.tokens >= 1.0
    }

    /// Takes a token (after [`Bucket::ready`]).
    pub(crate) fn take(&mut self) {
        self.tokens -= 1.0;
    }

    /// Refills and takes a token if there is one.
    pub(crate) fn admit(&mut self, now_ms: u64, rate: Rate, burst: u32) -> bool {
        self.refill(now_ms, rate, burst);
        let ok = self.ready();
        if ok {
            self.take();
        }
        ok
    }
}

/// One client's message buckets; lives in `hub::client::Client`.
#[derive(Debug, Default)]
pub(crate) struct RateState {
    /// The all-messages bucket (`rate_limit.rate`), made full at first use.
    all: Option<Bucket>,
    /// One bucket per configured event this client has sent (at most as many as
    /// `rate_limit.events` has entries).
    events: Vec<(Box<str>, Bucket)>,
    /// Excesses in a row (reset by a message let through).
    strikes: u32,
    /// A `rate_limited` answer went out since the last message let through: the next one
    /// waits for a message to pass, so answers never outnumber what the limit lets through.
    answered: bool,
}

/// The process-wide per-IP tables (shared by every shard through `App`).
pub(crate) struct Guard {
    hasher: ahash::RandomState,
    /// Open clients per address; an entry goes when its count reaches 0.
    conns: [Mutex<ahash::HashMap<IpAddr, u32>>; STRIPES],
    /// Handshake buckets per address.
    handshakes: [Mutex<ahash::HashMap<IpAddr, Bucket>>; STRIPES],
    started: Instant,
}

impl Default for Guard {
    fn default() -> Guard {
        Guard {
            hasher: ahash::RandomState::new(),
            conns: std::array::from_fn(|_| Mutex::default()),
            handshakes: std::array::from_fn(|_| Mutex::default()),
            started: Instant::now(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent whatever a panicking holder did (single inserts/removes).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Guard {
    fn stripe(&self, ip: &IpAddr) -> usize {
        (self.hasher.hash_one(ip) as usize) % STRIPES
    }

    /// Counts a client from `ip`, or `None` when `limit` (0 = none) are already open.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<IpSlot> {
        let mut map = lock(&self.conns[self.stripe(&ip)]);
        let n = map.entry(ip).or_insert(0);
        if limit > 0 && *n as usize >= limit {
            if *n == 0 {
                map.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(IpSlot {
            guard: Some(self.clone()),
            ip,
        })
    }

    /// Open clients from `ip`.
    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> u32 {
        lock(&self.conns[self.stripe(&ip)])
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }

    fn release(&self, ip: IpAddr) {
        let mut map = lock(&self.conns[self.stripe(&ip)]);
        if let Some(n) = map.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }

    /// Takes a handshake token for `ip` (bursts of up to the rate's count).
    pub(crate) fn handshake(&self, ip: IpAddr, rate: Rate) -> bool {
        self.handshake_at(ip, rate, self.started.elapsed().as_millis() as u64)
    }

    fn handshake_at(&self, ip: IpAddr, rate: Rate, now: u64) -> bool {
        let burst = rate.count;
        let mut map = lock(&self.handshakes[self.stripe(&ip)]);
        if let Some(b) = map.get_mut(&ip) {
            return b.admit(now, rate, burst);
        }
        if map.len() >= MAX_BUCKETS_PER_STRIPE {
            // A full bucket says no more than an absent one.
            map.retain(|_, b| {
                b.refill(now, rate, burst);
                b.tokens < f64::from(burst.max(1))
            });
            if map.len() >= MAX_BUCKETS_PER_STRIPE {
                return true;
            }
        }
        let mut b = Bucket::full(burst, now);
        let ok = b.admit(now, rate, burst);
        map.insert(ip, b);
        ok
    }
}

/// One open client counted against its address; released on drop (when the connection task
/// ends).
pub(crate) struct IpSlot {
    /// `None` once handed over (`into_held`).
    guard: Option<Arc<Guard>>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.release(self.ip);
        }
    }
}

impl IpSlot {
    /// The slot of an open connection from socket peer `peer`, in 8 bytes: the address only
    /// when it is not the peer's (a client behind a trusted proxy). It is no longer released on
    /// drop: [`HeldIp::release`] must be called with the same guard and peer.
    pub(crate) fn into_held(mut self, peer: IpAddr) -> HeldIp {
        self.guard = None;
        if self.ip == peer.to_canonical() {
            HeldIp(None)
        } else {
            HeldIp(Some(Box::new(self.ip)))
        }
    }
}

/// One open client counted against its address, as an open connection keeps it (see
/// [`IpSlot::into_held`]): what an idle connection holds counts, so it keeps no guard and is
/// released explicitly ([`HeldIp::release`]); dropping it otherwise is a bug (the address
/// would keep a place), caught in debug builds.
#[must_use = "a held slot is released explicitly"]
pub(crate) struct HeldIp(Option<Box<IpAddr>>);

impl HeldIp {
    /// Releases the slot of a connection from socket peer `peer` in `guard`.
    pub(crate) fn release(self, guard: &Guard, peer: IpAddr) {
        let forwarded = std::mem::ManuallyDrop::new(self).0.take();
        guard.release(forwarded.map_or_else(|| peer.to_canonical(), |ip| *ip));
    }
}

impl Drop for HeldIp {
    fn drop(&mut self) {
        debug_assert!(
            std::thread::panicking(),
            "a held per-IP slot was dropped without being released"
        );
    }
}

/// The address a WebSocket client connects from: the socket peer, or, when the peer is a
/// trusted proxy, the first address in `X-Forwarded-For` (read right to left) that is not a
/// trusted proxy, else the left-most, else `X-Real-IP`. Unparseable headers are ignored.
pub(crate) fn client_ip(peer: IpAddr, trusted: &[IpNet], req: &Request<Bytes>) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return peer;
    }
    let headers = req.headers();
    // Only from a trusted proxy, and only at the handshake: not a hot path.
    let hops: Option<Vec<IpAddr>> = headers.list("x-forwarded-for").map(parse_hop).collect();
    if let Some(hops) = hops {
        if let Some(ip) = hops
            .iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .or(hops.first())
        {
            return *ip;
        }
    }
    if let Some(ip) = headers.get("x-real-ip").and_then(parse_hop) {
        return ip;
    }
    peer
}

/// One address of a forwarding header: `1.2.3.4`, `1.2.3.4:5`, `::1`, `[::1]`, `[::1]:5`.
fn parse_hop(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?.trim();
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

/// Checks a WebSocket upgrade request before the `101`: handshake rate, origin, connections
/// per IP, then the application's `check_handshake` vetoes. `Ok` holds the client's place in
/// the per-IP count for the life of the connection.
pub(crate) fn admit_ws(
    hub: &Hub,
    app: &App,
    peer: SocketAddr,
    req: &Request<Bytes>,
) -> Result<IpSlot, Refusal> {
    let ip = client_ip(peer.ip(), &hub.config().security.trusted_proxies, req);
    // A header that is not text cannot match any allowed origin.
    let origin = req
        .header("origin")
        .map(|o| std::str::from_utf8(o).unwrap_or("\u{fffd}"));
    admit(
        hub,
        app,
        &Handshake {
            ip,
            peer,
            transport: Transport::Ws,
            origin,
            path: Some(req.path()),
            request: Some(req),
        },
    )
}

/// Checks a TCP connection at accept, before any client state: handshake rate, connections
/// per IP (the socket peer: TCP has no forwarding headers), then the application's vetoes.
pub(crate) fn admit_tcp(hub: &Hub, app: &App, peer: SocketAddr) -> Result<IpSlot, Refusal> {
    admit(
        hub,
        app,
        &Handshake {
            ip: peer.ip().to_canonical(),
            peer,
            transport: Transport::Tcp,
            origin: None,
            path: None,
            request: None,
        },
    )
}

/// The checks both transports share, in order: handshake rate, origin (WebSocket only),
/// connections per IP, the application's vetoes.
fn admit(hub: &Hub, app: &App, hs: &Handshake<'_>) -> Result<IpSlot, Refusal> {
    let config = hub.config();
    let sec = &config.security;
    let refuse = |reason: RejectReason, refusal: Refusal| {
        reject(
            hub,
            app,
            &Rejection {
                reason,
                ip: hs.ip,
                transport: hs.transport,
                client: None,
                event: None,
                origin: hs.origin,
            },
        );
        Err(refusal)
    };
    if let Some(rate) = sec.handshake_rate_per_ip {
        if !app.guard.handshake(hs.ip, rate) {
            return refuse(
                RejectReason::HandshakeRate,
                Refusal::too_many_requests("Too many handshakes"),
            );
        }
    }
    if hs.transport == Transport::Ws {
        let mut allowed = config.allowed_origins().peekable();
        match hs.origin {
            Some(o) if allowed.peek().is_some() && !allowed.any(|p| origin_matches(p, o)) => {
                return refuse(
                    RejectReason::OriginNotAllowed,
                    Refusal::forbidden("Origin not allowed"),
                );
            }
            None if sec.require_origin => {
                return refuse(
                    RejectReason::OriginMissing,
                    Refusal::forbidden("Origin required"),
                );
            }
            _ => {}
        }
    }
    let Some(slot) = app.guard.acquire(hs.ip, sec.max_connections_per_ip) else {
        return refuse(
            RejectReason::PerIpLimit,
            Refusal::too_many_requests("Too many connections"),
        );
    };
    for check in &app.check_handshake {
        match std::panic::catch_unwind(AssertUnwindSafe(|| check(hs))) {
            Ok(Ok(())) => {}
            Ok(Err(refusal)) => return refuse(RejectReason::HandshakeVetoed, refusal),
            Err(_) => {
                hub.counters.error("handler_panic");
                return refuse(
                    RejectReason::HandshakeVetoed,
                    Refusal::new(500, "internal error"),
                );
            }
        }
    }
    Ok(slot)
}

/// The message rate limits, checked first for every inbound message (`event` names it;
/// `pong` is exempt). `false`: drop the message — it has been answered or the client is
/// being disconnected. No allocation unless the client sends a configured event for the first
/// time or is answered.
pub(crate) fn admit_message(env: &Env<'_>, event: &str) -> bool {
    let config = env.hub.config();
    let rl = &config.rate_limit;
    if rl.rate.is_none() && rl.events.is_empty() {
        return true;
    }
    let client = env.client;
    if client.close_requested() == Some(CloseCause::RateLimited) {
        // Struck out: the rest of what it sent goes unread.
        return false;
    }
    if event == "pong" {
        return true;
    }
    let now = env.hub.now_ms();
    let burst = rl.effective_burst();
    let mut st = client.rate_state();
    let all_ok = match rl.rate {
        Some(rate) => {
            let b = st.all.get_or_insert_with(|| Bucket::full(burst, now));
            b.refill(now, rate, burst);
            b.ready()
        }
        None => true,
    };
    let event_rate = rl.events.get(event).copied();
    let mut event_ok = true;
    if let Some(rate) = event_rate {
        let at = match st.events.iter().position(|(n, _)| &**n == event) {
            Some(i) => i,
            None => {
                if st.events.len() >= rl.events.len() {
                    // A reload renamed events: forget buckets for events no longer limited.
                    st.events.retain(|(n, _)| rl.events.contains_key(&**n));
                }
                st.events
                    .push((event.into(), Bucket::full(rate.count, now)));
                st.events.len() - 1
            }
        };
        let b = &mut st.events[at].1;
        b.refill(now, rate, rate.count);
        event_ok = b.ready();
    }
    if all_ok && event_ok {
        if let Some(b) = st.all.as_mut().filter(|_| rl.rate.is_some()) {
            b.take();
        }
        if event_rate.is_some() {
            if let Some((_, b)) = st.events.iter_mut().find(|(n, _)| &**n == event) {
                b.take();
            }
        }
        st.strikes = 0;
        st.answered = false;
        return true;
    }
    st.strikes = st.strikes.saturating_add(1);
    let strikes = st.strikes;
    let answer = !std::mem::replace(&mut st.answered, true);
    drop(st);
    let rejection = |reason| Rejection {
        reason,
        ip: client.peer().ip().to_canonical(),
        transport: client.transport(),
        client: Some(client.id),
        event: Some(event),
        origin: None,
    };
    reject(env.hub, env.app, &rejection(RejectReason::RateLimited));
    if answer {
        let err = ClientError::RateLimited;
        let msg = Outgoing::server_error(err.code(), err.message(), Some(event), None);
        env.hub.send_to(client, &msg);
    }
    if rl.strikes > 0 && strikes >= rl.strikes {
        reject(env.hub, env.app, &rejection(RejectReason::RateLimitStrikes));
        client.request_close(CloseCause::RateLimited);
    }
    false
}

/// Reports a rejection: counts it by reason, calls the application's `on_reject` hooks, and
/// logs it at info, at most [`LOG_LINES_PER_SEC`] lines per shard per second.
pub(crate) fn reject(hub: &Hub, app: &App, r: &Rejection<'_>) {
    hub.counters.refuse(r.reason.label());
    for hook in &app.on_reject {
        if std::panic::catch_unwind(AssertUnwindSafe(|| hook(r))).is_err() {
            hub.counters.error("handler_panic");
        }
    }
    LOG.with(|log| match log.allow(Instant::now()) {
        Verdict::Log { suppressed } => {
            if suppressed > 0 {
                tracing::info!(
                    suppressed,
                    "rejection log lines suppressed in the last second"
                );
            }
            tracing::info!(
                reason = r.reason.label(),
                ip = %r.ip,
                transport = ?r.transport,
                client = r.client.map(|c| c.to_string()),
                event = r.event,
                origin = r.origin,
                "rejected"
            );
        }
        Verdict::Suppress => {}
    });
}

thread_local! {
    /// This shard's rejection log limiter (a shard is a thread).
    static LOG: LogLimiter = LogLimiter::default();
}

/// Whether a rejection gets a log line.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Log it, after a line saying how many were suppressed (when any were).
    Log { suppressed: u64 },
    /// Count it as suppressed.
    Suppress,
}

/// At most [`LOG_LINES_PER_SEC`] lines per one-second window.
#[derive(Default)]
struct LogLimiter {
    window: Cell<Option<Instant>>,
    lines: Cell<u32>,
    suppressed: Cell<u64>,
}

impl LogLimiter {
    fn allow(&self, now: Instant) -> Verdict {
        let fresh = self
            .window
            .get()
            .is_none_or(|w| now.duration_since(w).as_millis() >= 1000);
        if fresh {
            self.window.set(Some(now));
            self.lines.set(0);
        }
        if self.lines.get() >= LOG_LINES_PER_SEC {
            self.suppressed.set(self.suppressed.get() + 1);
            return Verdict::Suppress;
        }
        self.lines.set(self.lines.get() + 1);
        Verdict::Log {
            suppressed: if fresh { self.suppressed.replace(0) } else { 0 },
        }
    }
}

/// The HTTP answer to a refused upgrade: `status`, `Connection: close`, the reason as text
/// (429s say `Retry-After: 1`).
pub(crate) fn write_refusal(refusal: &Refusal, out: &mut bytes::BytesMut) {
    use crate::protocol::http::{ResponseWriter, StatusCode};
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
    let mut w = ResponseWriter::new(out, status);
    w.keep_alive(false);
    if status == StatusCode::TOO_MANY_REQUESTS {
        w.header("Retry-After", b"1");
    }
    // A reason that is not a valid header-free body cannot fail here: bodies are any bytes.
    let _ = w.body("text/plain; charset=utf-8", refusal.reason.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn a_bucket_admits_its_burst_then_the_rate() {
        let r = rate("10/s");
        let mut b = Bucket::full(5, 0);
        let admitted = (0..100).filter(|_| b.admit(0, r, 5)).count();
        assert_eq!(admitted, 5);
        // 10/s = one per 100 ms.
        assert!(!b.admit(99, r, 5));
        assert!(b.admit(100, r, 5));
        assert!(!b.admit(100, r, 5));
        // A long pause refills to the burst, not beyond.
        let admitted = (0..100).filter(|_| b.admit(60_000, r, 5)).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn per_ip_slots_count_and_release() {
        let g = Arc::new(Guard::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let a = g.acquire(ip, 2).unwrap();
        let _b = g.acquire(ip, 2).unwrap();
        assert!(g.acquire(ip, 2).is_none());
        let _c = g.acquire(other, 2).unwrap();
        drop(a);
        assert_eq!(g.count(ip), 1);
        let _d = g.acquire(ip, 2).unwrap();
        // 0 = unlimited, still counted.
        let many: Vec<_> = (0..10).map(|_| g.acquire(other, 0).unwrap()).collect();
        assert_eq!(g.count(other), 11);
        drop(many);
        drop(_c);
        assert_eq!(g.count(other), 0);
    }

    #[test]
    fn a_held_slot_is_released_by_address() {
        let g = Arc::new(Guard::default());
        let peer: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let ip = peer.to_canonical();
        let forwarded: IpAddr = "198.51.100.7".parse().unwrap();
        // The socket peer's own address: nothing kept but the guard's count.
        let held = g.acquire(ip, 0).unwrap().into_held(peer);
        assert!(held.0.is_none());
        // Behind a trusted proxy: the forwarded address is kept.
        let behind = g.acquire(forwarded, 0).unwrap().into_held(peer);
        assert!(behind.0.is_some());
        assert_eq!((g.count(ip), g.count(forwarded)), (1, 1));
        held.release(&g, peer);
        behind.release(&g, peer);
        assert_eq!((g.count(ip), g.count(forwarded)), (0, 0));
        assert_eq!(std::mem::size_of::<HeldIp>(), 8);
    }

    #[test]
    fn handshake_buckets_are_per_address_and_bounded() {
        let g = Guard::default();
        let r = rate("3/m");
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!((0..5).filter(|_| g.handshake_at(ip, r, 0)).count(), 3);
        assert!(g.handshake_at("192.0.2.9".parse().unwrap(), r, 0));
        assert!(g.handshake_at(ip, r, 20_000));
        // Many addresses: the maps stay bounded.
        for i in 0..(STRIPES * MAX_BUCKETS_PER_STRIPE * 2) as u32 {
            g.handshake_at(IpAddr::from(i.to_be_bytes()), r, 0);
        }
        let total: usize = g.handshakes.iter().map(|m| lock(m).len()).sum();
        assert!(total <= STRIPES * MAX_BUCKETS_PER_STRIPE, "{total}");
    }

    fn request(head: &str) -> Request<Bytes> {
        let text = format!("GET /x HTTP/1.1\r\nHost: h\r\n{head}\r\n");
        crate::protocol::http::parse_request(text.as_bytes(), &Default::default())
            .unwrap()
            .unwrap()
            .into_owned()
    }

    #[test]
    fn forwarded_addresses_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        let xff = request("X-Forwarded-For: 203.0.113.5, 10.9.9.9\r\n");
        assert_eq!(client_ip(proxy, &trusted, &xff).to_string(), "203.0.113.5");
        assert_eq!(client_ip(stranger, &trusted, &xff), stranger);
        let spoofed = request("X-Forwarded-For: 1.1.1.1, 203.0.113.5\r\n");
        assert_eq!(
            client_ip(proxy, &trusted, &spoofed).to_string(),
            "203.0.113.5"
        );
        let real = request("X-Real-IP: [2001:db8::1]:443\r\n");
        assert_eq!(client_ip(proxy, &trusted, &real).to_string(), "2001:db8::1");
        let junk = request("X-Forwarded-For: nonsense\r\n");
        assert_eq!(client_ip(proxy, &trusted, &junk), proxy);
        assert_eq!(client_ip(proxy, &[], &xff), proxy);
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(client_ip(mapped, &trusted, &xff).to_string(), "203.0.113.5");
    }

    #[test]
    fn the_log_is_limited_per_second_and_reports_what_it_suppressed() {
        let l = LogLimiter::default();
        let t0 = Instant::now();
        for _ in 0..LOG_LINES_PER_SEC {
            assert_eq!(l.allow(t0), Verdict::Log { suppressed: 0 });
        }
        for _ in 0..25 {
            assert_eq!(l.allow(t0 + Duration::from_millis(500)), Verdict::Suppress);
        }
        assert_eq!(
            l.allow(t0 + Duration::from_millis(1000)),
            Verdict::Log { suppressed: 25 }
        );
        assert_eq!(
            l.allow(t0 + Duration::from_millis(1001)),
            Verdict::Log { suppressed: 0 }
        );
    }
}
