//! A hashed timer wheel: a plain data structure, with no clock and no executor inside.
//!
//! Time is an abstract `u64` tick supplied by the caller: [`TimerWheel::insert`] takes a
//! deadline tick, and [`TimerWheel::advance`] takes "now" and hands back every entry whose
//! deadline has been reached. The glue that maps ticks to real time and drives `advance` on a
//! shard lives in `timer/mod.rs`.
//!
//! Layout (Varghese & Lauck's scheme 6, "hashed wheel with unsorted lists"): `slots` is a power
//! of two; an entry with deadline `d` sits in the intrusive doubly-linked list of slot
//! `d & mask`. Entries live in one slab (`entries`), so insert and cancel are O(1) and allocate
//! nothing once the slab has grown to the peak number of live timers. Each entry stores its
//! absolute deadline, so a deadline more than one revolution away simply stays in its slot
//! while the wheel goes around, and is skipped until its tick comes ("going around the
//! wheel"); no round counters to maintain. `advance` visits each slot between the previous
//! "now" and the new one at most once, so a long jump costs at most one full revolution.
//!
//! Handles ([`TimerId`]) carry a generation, so cancelling a timer that already fired or was
//! cancelled (and whose slab entry may since hold a new timer) is a harmless no-op.

/// Identifies one inserted timer. Stale handles are detected by generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

/// Marks "no entry" in the intrusive links.
const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Entry<K> {
    /// `Some` while the entry is a live timer; `None` while it is on the free list.
    key: Option<K>,
    /// Effective deadline tick (never earlier than the tick after insertion).
    deadline: u64,
    /// Previous entry in the same slot (`NIL` at the head).
    prev: u32,
    /// Next entry in the same slot, or next free entry when on the free list.
    next: u32,
    /// Bumped each time the entry is freed, so that old `TimerId`s no longer match.
    generation: u32,
}

/// A hashed timer wheel holding keys of type `K`. See the module doc.
#[derive(Debug)]
pub struct TimerWheel<K> {
    /// Head entry of each slot's list (`NIL` if empty). Length is a power of two.
    slots: Box<[u32]>,
    mask: u64,
    entries: Vec<Entry<K>>,
    /// Head of the free list threaded through `Entry::next`.
    free: u32,
    /// The last tick passed to `advance`. Invariant: every live entry has `deadline > now`.
    now: u64,
    len: usize,
}

impl<K> TimerWheel<K> {
    /// A wheel with `slots` buckets (rounded up to a power of two, at least 1). With a 100 ms
    /// tick, 4096 slots make one revolution about 410 s, longer than any heartbeat or idle
    /// timeout, so in practice every entry is looked at only when it is due.
    pub fn new(slots: usize) -> Self {
        Self::with_capacity(slots, 0)
    }

    /// Like [`TimerWheel::new`], pre-allocating room for `capacity` live timers.
    pub fn with_capacity(slots: usize, capacity: usize) -> Self {
        let slots = slots.clamp(1, 1 << 30).next_power_of_two();
        Self {
            slots: vec![NIL; slots].into_boxed_slice(),
            mask: (slots - 1) as u64,
            entries: Vec::with_capacity(capacity),
            free: NIL,
            now: 0,
            len: 0,
        }
    }

    /// Number of live (inserted, not yet fired or cancelled) timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no timer is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The last tick the wheel was advanced to.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The number of slots (a power of two).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Inserts `key` to fire at tick `deadline`. A deadline at or before [`TimerWheel::now`]
    /// fires on the next `advance` that moves time forward. O(1).
    ///
    /// # Panics
    /// Only if more than `u32::MAX - 1` timers are live at once (which would take over
    /// 100 GiB of entries, so memory runs out first).
    pub fn insert(&mut self, deadline: u64, key: K) -> TimerId {
        let deadline = deadline.max(self.now.saturating_add(1));
        let index = match self.free {
            NIL => {
                let index = u32::try_from(self.entries.len())
                    .ok()
                    .filter(|&i| i != NIL)
                    .expect("timer wheel: more than u32::MAX - 1 live timers");
                self.entries.push(Entry {
                    key: None,
                    deadline,
                    prev: NIL,
                    next: NIL,
                    generation: 0,
                });
                index
            }
            index => {
                // `free` only ever holds indices of existing entries.
                self.free = self.entries[index as usize].next;
                index
            }
        };
        let entry = &mut self.entries[index as usize];
        entry.key = Some(key);
        entry.deadline = deadline;
        let generation = entry.generation;
        self.link(index);
        self.len += 1;
        TimerId { index, generation }
    }

    /// Cancels a timer, returning its key; `None` if `id` already fired or was cancelled.
    /// O(1).
    pub fn cancel(&mut self, id: TimerId) -> Option<K> {
        if !self.is_live(id) {
            return None;
        }
        self.unlink(id.index);
        Some(self.release(id.index))
    }

    /// Moves a live timer to a new deadline, keeping its `TimerId`. Returns `false` (and does
    /// nothing) if `id` is stale. O(1).
    pub fn reschedule(&mut self, id: TimerId, deadline: u64) -> bool {
        if !self.is_live(id) {
            return false;
        }
        self.unlink(id.index);
        let deadline = deadline.max(self.now.saturating_add(1));
        self.entries[id.index as usize].deadline = deadline;
        self.link(id.index);
        true
    }

    /// The effective deadline of a live timer.
    pub fn deadline(&self, id: TimerId) -> Option<u64> {
        self.is_live(id)
            .then(|| self.entries[id.index as usize].deadline)
    }

    /// True while `id` names a live timer.
    pub fn contains(&self, id: TimerId) -> bool {
        self.is_live(id)
    }

    /// Moves time forward to `now` and appends the key of every timer whose deadline is
    /// `<= now` to `expired`, returning how many were appended. Each timer fires exactly once.
    /// Calling with a `now` that is not later than the current tick does nothing. Keys come
    /// out in slot order, which is deadline order when `now` advances one tick at a time.
    ///
    /// Cost: O(1) when the wheel is empty; otherwise one visit per slot between the old and
    /// the new `now` (at most one revolution) plus the entries in those slots.
    pub fn advance(&mut self, now: u64, expired: &mut Vec<K>) -> usize {
        if now <= self.now {
            return 0;
        }
        let from = self.now;
        self.now = now;
        if self.len == 0 {
            return 0;
        }
        let before = expired.len();
        let steps = (now - from).min(self.slots.len() as u64);
        for tick in from + 1..=from + steps {
            let mut cursor = self.slots[(tick & self.mask) as usize];
            while cursor != NIL {
                let entry = &self.entries[cursor as usize];
                let next = entry.next;
                if entry.deadline <= now {
                    self.unlink(cursor);
                    expired.push(self.release(cursor));
                }
                cursor = next;
            }
        }
        expired.len() - before
    }

    fn is_live(&self, id: TimerId) -> bool {
        self.entries
            .get(id.index as usize)
            .is_some_and(|e| e.generation == id.generation && e.key.is_some())
    }

    /// Pushes entry `index` at the head of its deadline's slot.
    fn link(&mut self, index: u32) {
        let slot = (self.entries[index as usize].deadline & self.mask) as usize;
        let head = self.slots[slot];
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        let entry = &mut self.entries[index as usize];
        entry.prev = NIL;
        entry.next = head;
        self.slots[slot] = index;
    }

    /// Removes live entry `index` from its slot's list.
    fn unlink(&mut self, index: u32) {
        let (prev, next, deadline) = {
            let e = &self.entries[index as usize];
            (e.prev, e.next, e.deadline)
        };
        if prev == NIL {
            self.slots[(deadline & self.mask) as usize] = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    /// Puts an unlinked live entry on the free list and returns its key.
    fn release(&mut self, index: u32) -> K {
        self.len -= 1;
        let free = self.free;
        let entry = &mut self.entries[index as usize];
        entry.generation = entry.generation.wrapping_add(1);
        entry.next = free;
        entry.prev = NIL;
        self.free = index;
        // Only called on live entries (checked by `is_live` or found linked in a slot), whose
        // key is `Some` by the `Entry::key` invariant.
        entry
            .key
            .take()
            .expect("timer wheel: released entry was not live")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn fire(w: &mut TimerWheel<u32>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        w.advance(now, &mut out);
        out
    }

    #[test]
    fn fires_at_its_deadline_not_before() {
        let mut w = TimerWheel::new(8);
        w.insert(3, 30);
        w.insert(1, 10);
        w.insert(2, 20);
        assert_eq!(fire(&mut w, 0), Vec::<u32>::new());
        assert_eq!(fire(&mut w, 1), vec![10]);
        assert_eq!(fire(&mut w, 2), vec![20]);
        assert_eq!(fire(&mut w, 3), vec![30]);
        assert!(w.is_empty());
    }

    #[test]
    fn far_deadlines_go_around_the_wheel() {
        let mut w = TimerWheel::new(4);
        w.insert(2, 1);
        w.insert(2 + 4, 2);
        w.insert(2 + 40, 3);
        for now in 1..=41 {
            let got = fire(&mut w, now);
            match now {
                2 => assert_eq!(got, vec![1]),
                6 => assert_eq!(got, vec![2]),
                _ => assert!(got.is_empty(), "tick {now}: {got:?}"),
            }
        }
        assert_eq!(fire(&mut w, 42), vec![3]);
    }

    #[test]
    fn a_long_jump_fires_everything_due_once() {
        let mut w = TimerWheel::new(4);
        for k in 0..20u32 {
            w.insert(u64::from(k) + 1, k);
        }
        let mut got = fire(&mut w, 1000);
        got.sort_unstable();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadlines_fire_on_the_next_advance() {
        let mut w = TimerWheel::new(8);
        fire(&mut w, 100);
        let id = w.insert(5, 1);
        assert_eq!(w.deadline(id), Some(101));
        assert_eq!(fire(&mut w, 100), Vec::<u32>::new());
        assert_eq!(fire(&mut w, 101), vec![1]);
    }

    #[test]
    fn stale_cancel_is_harmless() {
        let mut w = TimerWheel::new(8);
        let a = w.insert(1, 1);
        assert_eq!(fire(&mut w, 1), vec![1]);
        // The slab entry is reused by `b`; the stale `a` must not cancel it.
        let b = w.insert(3, 2);
        assert_eq!(a.index, b.index);
        assert_eq!(w.cancel(a), None);
        assert!(!w.reschedule(a, 10));
        assert_eq!(w.cancel(b), Some(2));
        assert_eq!(w.cancel(b), None);
        assert_eq!(fire(&mut w, 10), Vec::<u32>::new());
    }

    #[test]
    fn reschedule_keeps_the_id() {
        let mut w = TimerWheel::new(8);
        let id = w.insert(2, 7);
        assert!(w.reschedule(id, 20));
        assert_eq!(fire(&mut w, 19), Vec::<u32>::new());
        assert!(w.contains(id));
        assert_eq!(fire(&mut w, 20), vec![7]);
        assert!(!w.contains(id));
    }

    #[test]
    fn empty_advance_is_constant_time_and_moves_now() {
        let mut w: TimerWheel<u32> = TimerWheel::new(8);
        assert_eq!(fire(&mut w, u64::MAX - 1), Vec::<u32>::new());
        assert_eq!(w.now(), u64::MAX - 1);
        let id = w.insert(0, 1);
        assert_eq!(w.deadline(id), Some(u64::MAX));
        assert_eq!(fire(&mut w, u64::MAX), vec![1]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert with deadline `now + delta` (delta may be 0 or exceed a revolution).
        Insert(u64),
        /// Cancel the n-th handle ever issued (modulo), possibly stale.
        Cancel(usize),
        /// Reschedule the n-th handle to `now + delta`.
        Reschedule(usize, u64),
        /// Advance by `step` ticks (0 = no-op).
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..70).prop_map(Op::Insert),
            2 => any::<usize>().prop_map(Op::Cancel),
            1 => (any::<usize>(), 0u64..70).prop_map(|(i, d)| Op::Reschedule(i, d)),
            3 => prop_oneof![0u64..3, 0u64..40].prop_map(Op::Advance),
        ]
    }

    #[derive(Debug)]
    struct Model {
        /// key -> (effective deadline, id)
        live: HashMap<u32, (u64, TimerId)>,
        cancelled: Vec<u32>,
        fired: HashMap<u32, u64>,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every inserted, non-cancelled timer fires exactly once, at the first `advance`
        /// whose `now` reaches its deadline (so at or after the deadline and, when time moves
        /// one tick at a time, within one tick of it); cancelled timers never fire.
        #[test]
        fn every_live_timer_fires_exactly_once_on_time(
            slots in prop_oneof![Just(1usize), Just(4), Just(16)],
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let mut w = TimerWheel::new(slots);
            let mut ids: Vec<(TimerId, u32)> = Vec::new();
            let mut m = Model { live: HashMap::new(), cancelled: Vec::new(), fired: HashMap::new() };
            let mut next_key = 0u32;
            let mut out = Vec::new();
            let mut check_advance = |w: &mut TimerWheel<u32>, m: &mut Model, to: u64| {
                let from = w.now();
                out.clear();
                w.advance(to, &mut out);
                for &k in &out {
                    let (deadline, _) = m.live.remove(&k).expect("fired a key that is not live");
                    prop_assert!(deadline > from && deadline <= to,
                        "key {} deadline {} fired in ({}, {}]", k, deadline, from, to);
                    prop_assert!(m.fired.insert(k, to).is_none(), "key {} fired twice", k);
                }
                // Nothing that is due stayed behind.
                for (k, (deadline, _)) in &m.live {
                    prop_assert!(*deadline > w.now(), "key {} due at {} missed at {}", k, deadline, to);
                }
                Ok(())
            };
            for op in ops {
                match op {
                    Op::Insert(delta) => {
                        let now = w.now();
                        let id = w.insert(now + delta, next_key);
                        let eff = (now + delta).max(now + 1);
                        prop_assert_eq!(w.deadline(id), Some(eff));
                        m.live.insert(next_key, (eff, id));
                        ids.push((id, next_key));
                        next_key += 1;
                    }
                    Op::Cancel(i) if !ids.is_empty() => {
                        let (id, key) = ids[i % ids.len()];
                        let got = w.cancel(id);
                        if m.live.remove(&key).is_some() {
                            prop_assert_eq!(got, Some(key));
                            m.cancelled.push(key);
                        } else {
                            prop_assert_eq!(got, None);
                        }
                    }
                    Op::Reschedule(i, delta) if !ids.is_empty() => {
                        let (id, key) = ids[i % ids.len()];
                        let now = w.now();
                        let ok = w.reschedule(id, now + delta);
                        if let Some(entry) = m.live.get_mut(&key) {
                            prop_assert!(ok);
                            entry.0 = (now + delta).max(now + 1);
                        } else {
                            prop_assert!(!ok);
                        }
                    }
                    Op::Advance(step) => {
                        let to = w.now() + step;
                        check_advance(&mut w, &mut m, to)?;
                    }
                    _ => {}
                }
                prop_assert_eq!(w.len(), m.live.len());
            }
            // Drain: everything still live fires once, nothing cancelled ever fires.
            let end = w.now() + 200;
            check_advance(&mut w, &mut m, end)?;
            prop_assert!(w.is_empty());
            prop_assert!(m.live.is_empty());
            for k in &m.cancelled {
                prop_assert!(!m.fired.contains_key(k), "cancelled key {} fired", k);
            }
            prop_assert_eq!(m.fired.len() + m.cancelled.len(), next_key as usize);
        }

        /// Ticking one at a time, a timer fires exactly at its effective deadline.
        #[test]
        fn single_steps_fire_exactly_at_the_deadline(
            deadlines in proptest::collection::vec(0u64..100, 1..60),
        ) {
            let mut w = TimerWheel::new(8);
            let mut want: HashMap<u32, u64> = HashMap::new();
            for (k, d) in deadlines.iter().enumerate() {
                w.insert(*d, k as u32);
                want.insert(k as u32, (*d).max(1));
            }
            let mut out = Vec::new();
            for now in 1..=100 {
                out.clear();
                w.advance(now, &mut out);
                for k in &out {
                    prop_assert_eq!(want.remove(k), Some(now));
                }
            }
            prop_assert!(want.is_empty());
        }
    }
}
