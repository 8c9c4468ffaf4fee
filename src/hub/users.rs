//! Users: which connections belong to which user, per shard, and how many each user holds in
//! the whole process (for `limits.max_connections_per_user`).
//!
//! A connection gets its user once, at authentication (`Hub::set_user`, the single entry).
//! Each shard indexes its own connections by user ([`UserIndex`]: user → local slots), so a
//! send to a user is a lookup on every shard, like a room publish. The per-user cap needs a
//! process-wide count: [`UserCounts`] is a small map behind a mutex, touched only when a
//! connection is given a user and when it goes — never on the publish path — so the lock is
//! taken at connection rate, not message rate, and for a few hundred nanoseconds each time.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Mutex;

/// Why a connection could not be given a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserRefusal {
    /// The user already holds `limits.max_connections_per_user` connections in the process.
    #[error("too many connections for this user")]
    TooManyConnections,
    /// The user id is empty or longer than 256 bytes.
    #[error("invalid user id (1-256 bytes)")]
    InvalidUserId,
    /// The connection is closing or gone.
    #[error("client is not connected")]
    NotConnected,
}

impl UserRefusal {
    /// Counter label (`shardcast_refused_total{reason=…}`).
    pub fn label(self) -> &'static str {
        match self {
            UserRefusal::TooManyConnections => "user_connection_limit",
            UserRefusal::InvalidUserId => "user_invalid_id",
            UserRefusal::NotConnected => "user_not_connected",
        }
    }
    /// The WebSocket close code a refused connection gets (TCP: an ERROR frame with
    /// [`UserRefusal`]'s text), as for a failed authentication.
    pub fn close_code(self) -> u16 {
        4003
    }
}

/// Longest user id, in bytes.
pub(crate) const MAX_USER_ID: usize = 256;

/// Connections per user in the whole process (shared by every shard's hub).
#[derive(Debug, Default)]
pub(crate) struct UserCounts {
    counts: Mutex<HashMap<Box<str>, usize>>,
}

impl UserCounts {
    /// Counts one more connection of `user`, unless it holds `cap` already (0 = no cap).
    pub(crate) fn acquire(&self, user: &str, cap: usize) -> Result<(), UserRefusal> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.get(user).copied().unwrap_or(0);
        if cap > 0 && n >= cap {
            return Err(UserRefusal::TooManyConnections);
        }
        match counts.get_mut(user) {
            Some(n) => *n += 1,
            None => {
                counts.insert(user.into(), 1);
            }
        }
        Ok(())
    }

    /// Counts one connection of `user` less.
    pub(crate) fn release(&self, user: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                counts.remove(user);
            }
        }
    }

    /// Distinct users with a connection in the process.
    pub(crate) fn users(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Connections `user` holds in the process.
    pub(crate) fn count(&self, user: &str) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(user).copied().unwrap_or(0)
    }
}

/// One shard's connections by user: user → slots of local clients.
#[derive(Debug, Default)]
pub(crate) struct UserIndex {
    by_user: HashMap<Rc<str>, Vec<u32>>,
}

impl UserIndex {
    /// Adds `slot` under `user`.
    pub(crate) fn insert(&mut self, user: &Rc<str>, slot: u32) {
        let slots = self.by_user.entry(user.clone()).or_default();
        if !slots.contains(&slot) {
            slots.push(slot);
        }
    }

    /// Removes `slot` from `user`.
    pub(crate) fn remove(&mut self, user: &str, slot: u32) {
        if let Some(slots) = self.by_user.get_mut(user) {
            slots.retain(|s| *s != slot);
            if slots.is_empty() {
                self.by_user.remove(user);
            }
        }
    }

    /// The local slots of `user` (empty if none).
    pub(crate) fn slots(&self, user: &str) -> &[u32] {
        self.by_user.get(user).map_or(&[], Vec::as_slice)
    }

    /// Users with a local connection.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_user.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_every_connection_and_frees_on_release() {
        let c = UserCounts::default();
        c.acquire("a", 2).unwrap();
        c.acquire("a", 2).unwrap();
        assert_eq!(c.acquire("a", 2), Err(UserRefusal::TooManyConnections));
        c.acquire("b", 2).unwrap();
        c.release("a");
        c.acquire("a", 2).unwrap();
        assert_eq!(c.count("a"), 2);
        c.release("a");
        c.release("a");
        assert_eq!(c.count("a"), 0);
        assert!(
            c.counts.lock().unwrap().get("a").is_none(),
            "no empty entries"
        );
        // 0 = no cap.
        for _ in 0..10 {
            c.acquire("z", 0).unwrap();
        }
    }

    #[test]
    fn the_index_keeps_slots_per_user() {
        let mut i = UserIndex::default();
        let a: Rc<str> = Rc::from("a");
        i.insert(&a, 1);
        i.insert(&a, 2);
        i.insert(&a, 2);
        assert_eq!(i.slots("a"), &[1, 2]);
        i.remove("a", 1);
        assert_eq!(i.slots("a"), &[2]);
        i.remove("a", 2);
        assert_eq!(i.slots("a"), &[] as &[u32]);
        assert_eq!(i.len(), 0);
    }
}
