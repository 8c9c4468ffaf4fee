//! Shard-local timers: one hashed wheel per shard (`wheel.rs`) driven by one glommio timer.
//!
//! Per-connection timeouts (in shardcast: handshake and auth deadlines; the open connections'
//! heartbeats are a sweep over their own table) go into one wheel per shard instead of one
//! timer object per connection. [`timers`] returns a pair:
//!
//! - [`Timers<K>`], a cheap clonable handle that shard-local code uses to insert, cancel and
//!   reschedule `(deadline, key)` entries;
//! - [`Expirations<K>`], the single consumer: one task per shard loops on
//!   [`Expirations::next_batch`], which sleeps on a glommio timer until the next tick boundary,
//!   advances the wheel and hands back the keys that expired.
//!
//! Ticking policy: the glommio timer is armed only while the wheel is non-empty. An empty
//! wheel costs nothing; the first insert wakes the consumer. With a live wheel the consumer
//! wakes once per tick (default 100 ms, `Builder::timer_tick`), whatever the number of timers.
//!
//! Precision: a deadline is rounded up to a tick boundary, so an entry fires at or after its
//! deadline and at most one tick (plus scheduling delay) late. Time is read from
//! `Instant::now()` here, never in the wheel, which stays a pure data structure.

mod wheel;

pub use wheel::{TimerId, TimerWheel};

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Default number of wheel slots (see [`TimerWheel::new`]).
pub const DEFAULT_WHEEL_SLOTS: usize = 4096;

struct Shared<K> {
    wheel: RefCell<TimerWheel<K>>,
    origin: Instant,
    tick: Duration,
    /// The consumer's waker while it waits for the wheel to become non-empty.
    idle: Cell<Option<Waker>>,
}

impl<K> Shared<K> {
    /// The tick containing `at` (floor): time `origin + t * tick` is the start of tick `t`.
    fn tick_at(&self, at: Instant) -> u64 {
        ticks(at.saturating_duration_since(self.origin), self.tick, false)
    }

    /// The instant tick `t` starts (saturating ~584 years after `origin`).
    fn tick_start(&self, t: u64) -> Instant {
        let ns = self.tick.as_nanos().saturating_mul(u128::from(t));
        let offset = Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX));
        self.origin.checked_add(offset).unwrap_or(self.origin)
    }

    /// The first tick boundary at or after `deadline` (ceiling), so that firing when the wheel
    /// reaches it is never early.
    fn deadline_tick(&self, deadline: Instant) -> u64 {
        ticks(
            deadline.saturating_duration_since(self.origin),
            self.tick,
            true,
        )
    }
}

/// `elapsed / tick` in whole ticks, rounded down or up, saturating.
fn ticks(elapsed: Duration, tick: Duration, round_up: bool) -> u64 {
    let tick_ns = tick.as_nanos().max(1);
    let ns = elapsed.as_nanos();
    let t = if round_up {
        ns.div_ceil(tick_ns)
    } else {
        ns / tick_ns
    };
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// Handle for inserting and cancelling shard-local timers. Clone it freely within the shard.
pub struct Timers<K> {
    shared: Rc<Shared<K>>,
}

impl<K> Clone for Timers<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Rc::clone(&self.shared),
        }
    }
}

impl<K> fmt::Debug for Timers<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timers")
            .field("tick", &self.shared.tick)
            .field("len", &self.len())
            .finish()
    }
}

/// The consumer side: yields expired keys. Exactly one per wheel (it is not `Clone`).
pub struct Expirations<K> {
    shared: Rc<Shared<K>>,
}

impl<K> fmt::Debug for Expirations<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expirations")
            .field("tick", &self.shared.tick)
            .finish()
    }
}

/// Creates a shard-local timer wheel with the given tick granularity (clamped to at least
/// 1 ms) and [`DEFAULT_WHEEL_SLOTS`] slots.
pub fn timers<K>(tick: Duration) -> (Timers<K>, Expirations<K>) {
    timers_with_slots(tick, DEFAULT_WHEEL_SLOTS)
}

/// Like [`timers`] with an explicit slot count.
pub fn timers_with_slots<K>(tick: Duration, slots: usize) -> (Timers<K>, Expirations<K>) {
    let shared = Rc::new(Shared {
        wheel: RefCell::new(TimerWheel::new(slots)),
        origin: Instant::now(),
        tick: tick.max(Duration::from_millis(1)),
        idle: Cell::new(None),
    });
    (
        Timers {
            shared: Rc::clone(&shared),
        },
        Expirations { shared },
    )
}

impl<K> Timers<K> {
    /// The tick granularity.
    pub fn tick(&self) -> Duration {
        self.shared.tick
    }

    /// Number of live timers.
    pub fn len(&self) -> usize {
        self.shared.wheel.borrow().len()
    }

    /// True if no timer is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Schedules `key` to expire at `deadline` (rounded up to the tick).
    pub fn insert_at(&self, deadline: Instant, key: K) -> TimerId {
        let tick = self.shared.deadline_tick(deadline);
        let id = self.shared.wheel.borrow_mut().insert(tick, key);
        if let Some(waker) = self.shared.idle.take() {
            waker.wake();
        }
        id
    }

    /// Schedules `key` to expire `delay` from now.
    pub fn insert_after(&self, delay: Duration, key: K) -> TimerId {
        self.insert_at(deadline_after(delay), key)
    }

    /// Cancels a timer, returning its key; `None` if it already expired or was cancelled
    /// (stale handles are harmless).
    pub fn cancel(&self, id: TimerId) -> Option<K> {
        self.shared.wheel.borrow_mut().cancel(id)
    }

    /// Moves a live timer to `deadline`, keeping its id (e.g. an idle timeout refreshed by
    /// traffic). Returns `false` if `id` is stale.
    pub fn reschedule_at(&self, id: TimerId, deadline: Instant) -> bool {
        let tick = self.shared.deadline_tick(deadline);
        self.shared.wheel.borrow_mut().reschedule(id, tick)
    }

    /// Moves a live timer to `delay` from now. Returns `false` if `id` is stale.
    pub fn reschedule_after(&self, id: TimerId, delay: Duration) -> bool {
        self.reschedule_at(id, deadline_after(delay))
    }

    /// True while `id` names a live timer.
    pub fn contains(&self, id: TimerId) -> bool {
        self.shared.wheel.borrow().contains(id)
    }
}

/// `now + delay`, saturating far in the future instead of overflowing `Instant`.
fn deadline_after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl<K> Expirations<K> {
    /// Waits until at least one timer has expired, appends the expired keys to `out` and
    /// returns how many were appended (always at least 1). Must run on a glommio executor
    /// (it sleeps with `glommio::timer::sleep`). Loop on it in one task per shard.
    pub async fn next_batch(&mut self, out: &mut Vec<K>) -> usize {
        loop {
            let now_tick = self.shared.tick_at(Instant::now());
            let fired = self.shared.wheel.borrow_mut().advance(now_tick, out);
            if fired > 0 {
                return fired;
            }
            if self.shared.wheel.borrow().is_empty() {
                // Park without a timer until the first insert.
                poll_fn(|cx| {
                    if self.shared.wheel.borrow().is_empty() {
                        self.shared.idle.set(Some(cx.waker().clone()));
                        Poll::Pending
                    } else {
                        Poll::Ready(())
                    }
                })
                .await;
                continue;
            }
            let next_boundary = self.shared.tick_start(now_tick.saturating_add(1));
            let wait = next_boundary.saturating_duration_since(Instant::now());
            glommio::timer::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_rounding_never_fires_early() {
        let tick = Duration::from_millis(100);
        assert_eq!(ticks(Duration::from_millis(0), tick, true), 0);
        assert_eq!(ticks(Duration::from_millis(1), tick, true), 1);
        assert_eq!(ticks(Duration::from_millis(100), tick, true), 1);
        assert_eq!(ticks(Duration::from_millis(101), tick, true), 2);
        assert_eq!(ticks(Duration::from_millis(199), tick, false), 1);
        assert_eq!(
            ticks(Duration::MAX, Duration::from_nanos(1), false),
            u64::MAX
        );
    }

    #[test]
    fn handle_inserts_cancels_and_reschedules() {
        let (t, _exp) = timers::<u32>(Duration::from_millis(10));
        let a = t.insert_after(Duration::from_secs(5), 1);
        let b = t.insert_after(Duration::from_secs(5), 2);
        assert_eq!(t.len(), 2);
        assert!(t.reschedule_after(a, Duration::from_secs(9)));
        assert_eq!(t.cancel(b), Some(2));
        assert_eq!(t.cancel(b), None);
        assert!(!t.reschedule_after(b, Duration::from_secs(1)));
        assert!(t.contains(a));
        // A delay too large for `Instant` saturates instead of panicking.
        t.insert_after(Duration::MAX, 3);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn expirations_fire_in_order_within_one_tick_on_glommio() {
        let ex = glommio::LocalExecutorBuilder::default()
            .io_memory(64 << 10)
            .make()
            .unwrap();
        ex.run(async {
            let tick = Duration::from_millis(10);
            let (t, mut exp) = timers::<u32>(tick);
            let start = Instant::now();
            for (key, ms) in [(3u32, 90u64), (1, 30), (2, 60)] {
                t.insert_at(start + Duration::from_millis(ms), key);
            }
            let cancelled = t.insert_at(start + Duration::from_millis(45), 99);
            assert_eq!(t.cancel(cancelled), Some(99));
            let mut out = Vec::new();
            let mut seen = Vec::new();
            while seen.len() < 3 {
                out.clear();
                exp.next_batch(&mut out).await;
                let at = start.elapsed();
                for &k in &out {
                    let due = Duration::from_millis(u64::from(k) * 30);
                    assert!(at >= due, "key {k} fired early at {at:?}");
                    seen.push(k);
                }
            }
            assert_eq!(seen, vec![1, 2, 3]);
            assert!(t.is_empty());
        });
    }

    #[test]
    fn an_idle_consumer_wakes_on_the_first_insert() {
        let ex = glommio::LocalExecutorBuilder::default()
            .io_memory(64 << 10)
            .make()
            .unwrap();
        ex.run(async {
            let (t, mut exp) = timers::<&'static str>(Duration::from_millis(5));
            let consumer = glommio::spawn_local(async move {
                let mut out = Vec::new();
                exp.next_batch(&mut out).await;
                out
            });
            // Let the consumer park on the empty wheel first.
            futures_lite::future::yield_now().await;
            t.insert_after(Duration::from_millis(1), "late");
            assert_eq!(consumer.await, vec!["late"]);
        });
    }
}
