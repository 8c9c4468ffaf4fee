//! Counting loss, duplicates and reordering from per-publisher sequence numbers.
//!
//! Each receiver keeps one [`SeqWindow`] per publisher it hears from: the next sequence
//! number expected and a 128-bit map of which of the last 128 numbers arrived. An arrival
//! at or past the expected number is in order (skipping ahead leaves holes that a later
//! arrival may fill); one behind it is a duplicate if its bit is set, otherwise a late
//! (reordered) arrival that fills a hole. An arrival more than 128 behind cannot be told
//! apart from a very old duplicate; it is counted as reordered (servers that duplicate do so
//! promptly, while a server that reorders by more than 128 messages is already broken).
//!
//! Loss itself is decided by the report, which knows how many messages each publisher sent
//! and to how many receivers (`expected − unique received`); [`SeqWindow::holes`] gives the
//! gaps visible inside one receiver's stream.

/// How one arrival relates to the stream so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next one expected, or further ahead (leaving holes).
    InOrder,
    /// Behind the newest, filling a hole.
    Reordered,
    /// Seen before.
    Duplicate,
}

/// One publisher's stream as one receiver sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqWindow {
    /// Highest sequence number seen + 1 (0: none yet).
    next: u64,
    /// Bit `i` set: `next - 1 - i` has arrived.
    seen: u128,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Arrivals of a number already received.
    pub duplicates: u64,
    /// Arrivals behind the newest that filled a hole.
    pub reordered: u64,
}

impl SeqWindow {
    /// Records the arrival of `seq`.
    #[inline]
    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            let shift = seq - self.next + 1;
            self.seen = if shift >= 128 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.next = seq + 1;
            self.unique += 1;
            return Arrival::InOrder;
        }
        let age = self.next - 1 - seq;
        if age < 128 {
            let bit = 1u128 << age;
            if self.seen & bit != 0 {
                self.duplicates += 1;
                return Arrival::Duplicate;
            }
            self.seen |= bit;
        }
        self.unique += 1;
        self.reordered += 1;
        Arrival::Reordered
    }

    /// Numbers below the newest seen that have not arrived (so far).
    pub fn holes(&self) -> u64 {
        self.next.saturating_sub(self.unique)
    }

    /// Highest sequence number seen + 1.
    pub fn next(&self) -> u64 {
        self.next
    }
}

/// Totals over many windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeqTotals {
    /// Distinct messages received.
    pub unique: u64,
    /// Duplicate arrivals.
    pub duplicates: u64,
    /// Late (reordered) arrivals.
    pub reordered: u64,
    /// Holes inside received streams.
    pub holes: u64,
}

impl SeqTotals {
    /// Adds one window.
    pub fn add_window(&mut self, w: &SeqWindow) {
        self.unique += w.unique;
        self.duplicates += w.duplicates;
        self.reordered += w.reordered;
        self.holes += w.holes();
    }

    /// Adds other totals.
    pub fn merge(&mut self, o: &SeqTotals) {
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.holes += o.holes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_stream() {
        let mut w = SeqWindow::default();
        for s in 0..1000 {
            assert_eq!(w.observe(s), Arrival::InOrder);
        }
        assert_eq!(
            (w.unique, w.duplicates, w.reordered, w.holes()),
            (1000, 0, 0, 0)
        );
    }

    #[test]
    fn gap_then_fill_then_duplicate() {
        let mut w = SeqWindow::default();
        assert_eq!(w.observe(0), Arrival::InOrder);
        assert_eq!(w.observe(3), Arrival::InOrder);
        assert_eq!(w.holes(), 2);
        assert_eq!(w.observe(1), Arrival::Reordered);
        assert_eq!(w.observe(1), Arrival::Duplicate);
        assert_eq!(w.observe(3), Arrival::Duplicate);
        assert_eq!(w.holes(), 1);
        assert_eq!((w.unique, w.duplicates, w.reordered), (3, 2, 1));
    }

    #[test]
    fn first_arrival_late_counts_holes_before_it() {
        let mut w = SeqWindow::default();
        w.observe(5);
        assert_eq!(w.holes(), 5);
        assert_eq!(w.next(), 6);
    }

    #[test]
    fn far_jump_clears_map() {
        let mut w = SeqWindow::default();
        w.observe(0);
        w.observe(1000);
        assert_eq!(w.observe(999), Arrival::Reordered);
        assert_eq!(w.observe(1000), Arrival::Duplicate);
        assert_eq!(w.holes(), 998);
    }

    proptest! {
        /// Any permutation of 0..n with some numbers repeated: unique = n, duplicates =
        /// repeats, holes = 0 at the end, and in-order + reordered = n.
        #[test]
        fn permutation_with_repeats(n in 1u64..200, seed: u64, repeats in proptest::collection::vec(0u64..200, 0..20)) {
            let mut order: Vec<u64> = (0..n).collect();
            // Local shuffles only (displacement < 64), like a real network.
            let mut x = seed | 1;
            for i in 0..order.len() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                let j = (i + (x % 64) as usize).min(order.len() - 1);
                order.swap(i, j);
            }
            let mut w = SeqWindow::default();
            let mut dups = 0;
            let mut in_order = 0;
            for (i, s) in order.iter().enumerate() {
                if w.observe(*s) == Arrival::InOrder { in_order += 1; }
                if let Some(&r) = repeats.get(i) {
                    if r < n && order[..=i].contains(&r) && w.next() - 1 - r < 128 {
                        prop_assert_eq!(w.observe(r), Arrival::Duplicate);
                        dups += 1;
                    }
                }
            }
            prop_assert_eq!(w.unique, n);
            prop_assert_eq!(w.duplicates, dups);
            prop_assert_eq!(w.holes(), 0);
            prop_assert_eq!(in_order + w.reordered, n);
        }
    }
}
