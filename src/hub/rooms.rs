//! One shard's view of the rooms: its local members, and which other shards have members.
//!
//! Rooms are partitioned (DESIGN.md "Thread-per-core, shared-nothing"): a shard keeps only
//! its local members, plus a [`ShardSet`] per room naming the *other* shards that have
//! members, so a publish is delivered locally and handed to exactly those shards.
//!
//! Interest travels as data: when a room gains its first local member the shard announces
//! [`Interest::Add`] to every other shard, and when it loses its last, [`Interest::Remove`].
//! A join is confirmed to the client only once every other shard has acknowledged the
//! announcement ([`Rooms::handle_ack`]), so the `joined-room` confirmation means "every
//! publish from now on, from any shard, reaches you". Joins to a room that is already
//! announced are confirmed at once.
//!
//! This is plain data: no sockets, no channels, no clocks. The caller (the shard) sends
//! the announcements this returns and feeds acknowledgements back in, which keeps the
//! logic testable without threads.

use std::rc::Rc;
use std::sync::Arc;

use ahash::{HashMap, HashMapExt};

/// Most shards a process may run (ids are `u16`, sets are bitmaps of this size).
pub(crate) const MAX_SHARDS: usize = 256;

/// A set of shard numbers, as a bitmap.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct ShardSet([u64; MAX_SHARDS / 64]);

impl ShardSet {
    /// Adds `shard`.
    pub(crate) fn insert(&mut self, shard: u16) {
        let s = shard as usize % MAX_SHARDS;
        self.0[s / 64] |= 1 << (s % 64);
    }
    /// Removes `shard`.
    pub(crate) fn remove(&mut self, shard: u16) {
        let s = shard as usize % MAX_SHARDS;
        self.0[s / 64] &= !(1 << (s % 64));
    }
    /// Whether `shard` is in the set.
    #[cfg(test)]
    pub(crate) fn contains(&self, shard: u16) -> bool {
        let s = shard as usize % MAX_SHARDS;
        self.0[s / 64] & (1 << (s % 64)) != 0
    }
    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
    /// The shards in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &word)| {
            let mut w = word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros();
                w &= w - 1;
                Some((i * 64 + bit as usize) as u16)
            })
        })
    }
}

/// A set of connection slots kept contiguous, so fan-out walks a plain slice, with O(1)
/// insert and remove (swap-remove plus a position index).
#[derive(Debug, Default)]
struct MemberSet {
    order: Vec<u32>,
    /// Invariant: `order[pos[s]] == s` for every member `s`.
    pos: HashMap<u32, u32>,
}

impl MemberSet {
    fn insert(&mut self, slot: u32) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.pos.entry(slot) {
            e.insert(self.order.len() as u32);
            self.order.push(slot);
        }
    }

    fn remove(&mut self, slot: u32) -> bool {
        let Some(at) = self.pos.remove(&slot) else {
            return false;
        };
        let at = at as usize;
        self.order.swap_remove(at);
        if let Some(&moved) = self.order.get(at) {
            self.pos.insert(moved, at as u32);
        }
        true
    }

    fn as_slice(&self) -> &[u32] {
        &self.order
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// An announcement to every other shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    /// `shard` now has members of `room`; acknowledge with `epoch`.
    Add {
        /// Room name.
        room: Arc<str>,
        /// The announcing shard.
        shard: u16,
        /// Echoed in the acknowledgement so a stale one is recognised.
        epoch: u64,
    },
    /// `shard` no longer has members of `room`.
    Remove {
        /// Room name.
        room: Arc<str>,
        /// The announcing shard.
        shard: u16,
    },
}

/// What became of a join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Join {
    /// Member now, and the room is announced: confirm at once.
    Confirmed,
    /// Member now (local publishes reach it), but other shards have not acknowledged the
    /// room yet: confirm when [`Rooms::handle_ack`] releases this slot.
    Pending,
    /// The shard-wide room limit refused a new room.
    TooManyRooms,
}

/// What became of a leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Leave {
    /// Was a member and left.
    Left {
        /// The join had not been confirmed yet: confirm it before confirming the leave,
        /// so the client sees `joined-room` then `left-room`.
        was_pending: bool,
    },
    /// Was not a member (stelar still answers `left-room`).
    NotMember,
}

#[derive(Debug)]
struct LocalRoom {
    /// Local members by connection slot.
    members: MemberSet,
    /// Identifies the current announcement; acks carrying another epoch are stale.
    epoch: u64,
    /// Acknowledgements still missing for `epoch`. Zero = announced.
    missing_acks: u32,
    /// Members whose confirmation waits for the announcement.
    waiters: Vec<u32>,
}

#[derive(Debug, Default)]
struct Entry {
    local: Option<LocalRoom>,
    /// Other shards that have members.
    remote: ShardSet,
}

/// One shard's room registry.
#[derive(Debug)]
pub(crate) struct Rooms {
    shard: u16,
    shard_count: u16,
    /// Acknowledgements a room's first local member waits for beyond the other shards': 1
    /// when a cluster bridge must subscribe first (`cluster/`), else 0.
    extra_acks: u32,
    max_rooms: usize,
    next_epoch: u64,
    /// Invariant: an entry exists iff it has local members or `remote` is non-empty, so
    /// `rooms.len()` is this shard's view of how many rooms exist in the process.
    rooms: HashMap<Rc<str>, Entry>,
}

impl Rooms {
    /// A registry for `shard` of `shard_count`; `max_rooms` caps how many rooms this shard
    /// will let exist (its view of the whole process).
    pub(crate) fn new(shard: u16, shard_count: u16, max_rooms: usize) -> Self {
        Rooms {
            shard,
            shard_count,
            extra_acks: 0,
            max_rooms,
            next_epoch: 1,
            rooms: HashMap::new(),
        }
    }

    /// Makes a room's first local member also wait for the cluster bridge's acknowledgement
    /// (it subscribes to the room's channel first), and announces rooms to it.
    pub(crate) fn enable_cluster(&mut self) {
        self.extra_acks = 1;
    }

    /// Changes the cap on rooms (a reload); rooms beyond it stay, new ones are refused.
    pub(crate) fn set_max_rooms(&mut self, max_rooms: usize) {
        self.max_rooms = max_rooms;
    }

    /// Rooms known to exist anywhere in the process (eventually consistent).
    pub(crate) fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room exists.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Adds `slot` to `room`. Announcements to send to every other shard are pushed to
    /// `announce`.
    pub(crate) fn join(&mut self, room: &str, slot: u32, announce: &mut Vec<Interest>) -> Join {
        if let Some(entry) = self.rooms.get_mut(room) {
            if let Some(local) = entry.local.as_mut() {
                local.members.insert(slot);
                if local.missing_acks == 0 {
                    return Join::Confirmed;
                }
                if !local.waiters.contains(&slot) {
                    local.waiters.push(slot);
                }
                return Join::Pending;
            }
        } else if self.rooms.len() >= self.max_rooms {
            return Join::TooManyRooms;
        }
        // First local member: announce.
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let others = u32::from(self.shard_count.saturating_sub(1)) + self.extra_acks;
        let mut members = MemberSet::default();
        members.insert(slot);
        let local = LocalRoom {
            members,
            epoch,
            missing_acks: others,
            waiters: if others == 0 { Vec::new() } else { vec![slot] },
        };
        let key: Rc<str> = Rc::from(room);
        let entry = self.rooms.entry(key).or_default();
        entry.local = Some(local);
        if others == 0 {
            return Join::Confirmed;
        }
        announce.push(Interest::Add {
            room: Arc::from(room),
            shard: self.shard,
            epoch,
        });
        Join::Pending
    }

    /// Removes `slot` from `room`.
    pub(crate) fn leave(&mut self, room: &str, slot: u32, announce: &mut Vec<Interest>) -> Leave {
        let Some(entry) = self.rooms.get_mut(room) else {
            return Leave::NotMember;
        };
        let Some(local) = entry.local.as_mut() else {
            return Leave::NotMember;
        };
        if !local.members.remove(slot) {
            return Leave::NotMember;
        }
        let was_pending = match local.waiters.iter().position(|w| *w == slot) {
            Some(i) => {
                local.waiters.swap_remove(i);
                true
            }
            None => false,
        };
        if local.members.is_empty() {
            entry.local = None;
            if self.shard_count > 1 || self.extra_acks > 0 {
                announce.push(Interest::Remove {
                    room: Arc::from(room),
                    shard: self.shard,
                });
            }
            if entry.remote.is_empty() {
                self.rooms.remove(room);
            }
        }
        Leave::Left { was_pending }
    }

    /// Applies another shard's announcement. Returns the acknowledgement to send back to
    /// the announcing shard, if one is due.
    pub(crate) fn handle_interest(&mut self, interest: &Interest) -> Option<(u16, Arc<str>, u64)> {
        match interest {
            Interest::Add { room, shard, epoch } => {
                match self.rooms.get_mut(&**room) {
                    Some(entry) => entry.remote.insert(*shard),
                    None => {
                        let mut entry = Entry::default();
                        entry.remote.insert(*shard);
                        self.rooms.insert(Rc::from(&**room), entry);
                    }
                }
                Some((*shard, room.clone(), *epoch))
            }
            Interest::Remove { room, shard } => {
                if let Some(entry) = self.rooms.get_mut(&**room) {
                    entry.remote.remove(*shard);
                    if entry.remote.is_empty() && entry.local.is_none() {
                        self.rooms.remove(&**room);
                    }
                }
                None
            }
        }
    }

    /// Applies an acknowledgement of our announcement. Returns the slots whose joins are
    /// now confirmed (empty while acknowledgements are missing, or when the ack is stale).
    pub(crate) fn handle_ack(&mut self, room: &str, epoch: u64) -> Vec<u32> {
        let Some(local) = self.rooms.get_mut(room).and_then(|e| e.local.as_mut()) else {
            return Vec::new();
        };
        if local.epoch != epoch || local.missing_acks == 0 {
            return Vec::new();
        }
        local.missing_acks -= 1;
        if local.missing_acks == 0 {
            std::mem::take(&mut local.waiters)
        } else {
            Vec::new()
        }
    }

    /// Local members of `room` (empty if none).
    pub(crate) fn members(&self, room: &str) -> &[u32] {
        match self.rooms.get(room).and_then(|e| e.local.as_ref()) {
            Some(local) => local.members.as_slice(),
            None => &[],
        }
    }

    /// Other shards with members of `room`.
    #[cfg(test)]
    pub(crate) fn remote_shards(&self, room: &str) -> ShardSet {
        self.rooms
            .get(room)
            .map_or_else(ShardSet::default, |e| e.remote)
    }

    /// Local members and remote shards of `room` in one lookup.
    pub(crate) fn route(&self, room: &str) -> (&[u32], ShardSet) {
        match self.rooms.get(room) {
            Some(e) => (
                e.local
                    .as_ref()
                    .map(|l| l.members.as_slice())
                    .unwrap_or(&[]),
                e.remote,
            ),
            None => (&[], ShardSet::default()),
        }
    }

    /// Names of rooms with local members, with their local member counts.
    pub(crate) fn local_rooms(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.rooms
            .iter()
            .filter_map(|(name, e)| e.local.as_ref().map(|l| (&**name, l.members.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shard_set_iterates_in_order() {
        let mut s = ShardSet::default();
        for x in [200, 0, 63, 64, 5] {
            s.insert(x);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 5, 63, 64, 200]);
        s.remove(63);
        assert!(!s.contains(63));
        assert!(s.contains(64));
        assert!(!s.is_empty());
    }

    #[test]
    fn cluster_bridge_acknowledges_like_a_shard() {
        let mut r = Rooms::new(0, 1, 10);
        r.enable_cluster();
        let mut out = Vec::new();
        assert_eq!(r.join("a", 1, &mut out), Join::Pending);
        let epoch = match out.as_slice() {
            [Interest::Add {
                room,
                shard: 0,
                epoch,
            }] if &**room == "a" => *epoch,
            other => panic!("{other:?}"),
        };
        // A second member waits for the same acknowledgement.
        assert_eq!(r.join("a", 2, &mut out), Join::Pending);
        assert_eq!(r.handle_ack("a", epoch + 1), Vec::<u32>::new());
        assert_eq!(r.handle_ack("a", epoch), vec![1, 2]);
        assert_eq!(r.join("a", 3, &mut out), Join::Confirmed);
        out.clear();
        for slot in [1, 2, 3] {
            r.leave("a", slot, &mut out);
        }
        assert!(matches!(
            out.as_slice(),
            [Interest::Remove { shard: 0, .. }]
        ));
    }

    #[test]
    fn single_shard_confirms_at_once() {
        let mut r = Rooms::new(0, 1, 10);
        let mut out = Vec::new();
        assert_eq!(r.join("a", 1, &mut out), Join::Confirmed);
        assert_eq!(r.join("a", 2, &mut out), Join::Confirmed);
        assert!(out.is_empty());
        assert_eq!(r.members("a"), &[1, 2]);
        assert_eq!(
            r.leave("a", 1, &mut out),
            Leave::Left { was_pending: false }
        );
        assert_eq!(r.leave("a", 1, &mut out), Leave::NotMember);
        assert_eq!(
            r.leave("a", 2, &mut out),
            Leave::Left { was_pending: false }
        );
        assert!(r.is_empty());
        assert!(out.is_empty());
    }

    /// Two shards exchanging announcements by hand, as the mesh would.
    #[test]
    fn join_waits_for_acks_then_publish_routes_remote() {
        let mut a = Rooms::new(0, 2, 10);
        let mut b = Rooms::new(1, 2, 10);
        let mut out = Vec::new();
        assert_eq!(a.join("lobby", 7, &mut out), Join::Pending);
        assert_eq!(a.join("lobby", 8, &mut out), Join::Pending);
        assert_eq!(out.len(), 1, "announced once");
        let ack = b.handle_interest(&out[0]).unwrap();
        assert_eq!(ack.0, 0);
        assert_eq!(b.remote_shards("lobby").iter().collect::<Vec<_>>(), vec![0]);
        assert_eq!(b.len(), 1);
        let mut released = a.handle_ack(&ack.1, ack.2);
        released.sort();
        assert_eq!(released, vec![7, 8]);
        assert_eq!(a.join("lobby", 9, &mut out), Join::Confirmed);
        // A stale ack changes nothing.
        assert!(a.handle_ack("lobby", ack.2).is_empty());

        out.clear();
        a.leave("lobby", 7, &mut out);
        a.leave("lobby", 8, &mut out);
        assert!(out.is_empty());
        a.leave("lobby", 9, &mut out);
        assert_eq!(out.len(), 1);
        assert!(b.handle_interest(&out[0]).is_none());
        assert!(b.is_empty());
        assert!(a.is_empty());
    }

    #[test]
    fn leave_while_pending_reports_it() {
        let mut a = Rooms::new(0, 3, 10);
        let mut out = Vec::new();
        a.join("r", 1, &mut out);
        assert_eq!(a.leave("r", 1, &mut out), Leave::Left { was_pending: true });
        // The late acks of the dead announcement are stale.
        if let Interest::Add { epoch, .. } = &out[0] {
            assert!(a.handle_ack("r", *epoch).is_empty());
        }
    }

    #[test]
    fn re_announce_uses_new_epoch() {
        let mut a = Rooms::new(0, 2, 10);
        let mut out = Vec::new();
        a.join("r", 1, &mut out);
        a.leave("r", 1, &mut out);
        a.join("r", 1, &mut out);
        let epochs: Vec<u64> = out
            .iter()
            .filter_map(|i| match i {
                Interest::Add { epoch, .. } => Some(*epoch),
                _ => None,
            })
            .collect();
        assert_eq!(epochs.len(), 2);
        assert!(a.handle_ack("r", epochs[0]).is_empty(), "stale");
        assert_eq!(a.handle_ack("r", epochs[1]), vec![1]);
    }

    #[test]
    fn room_limit_counts_remote_rooms() {
        let mut a = Rooms::new(0, 2, 2);
        let mut out = Vec::new();
        a.handle_interest(&Interest::Add {
            room: Arc::from("x"),
            shard: 1,
            epoch: 1,
        });
        assert_eq!(a.join("y", 1, &mut out), Join::Pending);
        assert_eq!(a.join("z", 1, &mut out), Join::TooManyRooms);
        // Joining a room that exists elsewhere is not a new room.
        assert_eq!(a.join("x", 1, &mut out), Join::Pending);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8, u8, u32),
        Leave(u8, u8, u32),
        Deliver,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, 0u8..4, 0u32..6).prop_map(|(s, r, c)| Op::Join(s, r, c)),
            (0u8..3, 0u8..4, 0u32..6).prop_map(|(s, r, c)| Op::Leave(s, r, c)),
            Just(Op::Deliver),
        ]
    }

    proptest! {
        /// Three shards, random joins/leaves, announcements delivered in per-sender order at
        /// random moments. After everything is delivered, each shard's remote view equals
        /// the truth, and every joined member still present has been confirmed.
        #[test]
        fn views_converge(ops in proptest::collection::vec(op(), 1..80)) {
            let n = 3u16;
            let mut shards: Vec<Rooms> = (0..n).map(|s| Rooms::new(s, n, 1000)).collect();
            // In-flight messages: (to, msg). Acks are (to, room, epoch).
            let mut inflight: Vec<(u16, Interest)> = Vec::new();
            let mut acks: Vec<(u16, Arc<str>, u64)> = Vec::new();
            let mut confirmed: std::collections::HashSet<(u16, String, u32)> = Default::default();
            let deliver = |shards: &mut Vec<Rooms>, inflight: &mut Vec<(u16, Interest)>, acks: &mut Vec<(u16, Arc<str>, u64)>, confirmed: &mut std::collections::HashSet<(u16, String, u32)>| {
                loop {
                    if !inflight.is_empty() {
                        let (to, msg) = inflight.remove(0);
                        if let Some(ack) = shards[to as usize].handle_interest(&msg) {
                            acks.push(ack);
                        }
                    } else if !acks.is_empty() {
                        let (to, room, epoch) = acks.remove(0);
                        for slot in shards[to as usize].handle_ack(&room, epoch) {
                            confirmed.insert((to, room.to_string(), slot));
                        }
                    } else {
                        break;
                    }
                }
            };
            for op in ops {
                match op {
                    Op::Join(s, r, c) => {
                        let mut out = Vec::new();
                        let room = format!("r{r}");
                        match shards[s as usize].join(&room, c, &mut out) {
                            Join::Confirmed => { confirmed.insert((s as u16, room.clone(), c)); }
                            Join::Pending => {}
                            Join::TooManyRooms => unreachable!(),
                        }
                        for i in out { for t in 0..n { if t != s as u16 { inflight.push((t, i.clone())); } } }
                    }
                    Op::Leave(s, r, c) => {
                        let mut out = Vec::new();
                        let room = format!("r{r}");
                        if let Leave::Left { .. } = shards[s as usize].leave(&room, c, &mut out) {
                            confirmed.remove(&(s as u16, room.clone(), c));
                        }
                        for i in out { for t in 0..n { if t != s as u16 { inflight.push((t, i.clone())); } } }
                    }
                    Op::Deliver => deliver(&mut shards, &mut inflight, &mut acks, &mut confirmed),
                }
            }
            deliver(&mut shards, &mut inflight, &mut acks, &mut confirmed);
            for r in 0..4 {
                let room = format!("r{r}");
                for s in 0..n {
                    let expected: Vec<u16> = (0..n).filter(|&o| o != s && !shards[o as usize].members(&room).is_empty()).collect();
                    prop_assert_eq!(shards[s as usize].remote_shards(&room).iter().collect::<Vec<_>>(), expected);
                    for &m in shards[s as usize].members(&room) {
                        prop_assert!(confirmed.contains(&(s, room.clone(), m)), "member {} of {} on {} unconfirmed", m, room, s);
                    }
                }
            }
        }
    }
}
