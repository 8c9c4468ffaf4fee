//! Live reload: what the server rebuilds from a new configuration on SIGHUP.
//!
//! A reload is all or nothing. The new [`Config`] is validated, then every registered
//! [`Reloadable`] *prepares* its new state from it (reads certificate and key files, parses
//! JWT keys, ...) without applying anything. Only when every part prepared successfully are
//! the prepared states *committed*, in registration order; otherwise the reload is refused as
//! a whole with the first part's reason, and the old state stays everywhere.

use std::sync::{Arc, Mutex};

use crate::config::Config;

/// A prepared change, applied by calling it. Must not fail.
pub(crate) type Commit = Box<dyn FnOnce() + Send>;

/// Something the server rebuilds from the configuration on reload (TLS certificates, JWT keys,
/// the configuration the shards read, ...).
pub(crate) trait Reloadable: Send + Sync {
    /// A short name for logs ("tls", "jwt", ...).
    fn name(&self) -> &'static str;
    /// Builds the new state from `new` without applying it. `Err` (a reason naming the file or
    /// setting) refuses the whole reload.
    fn prepare(&self, new: &Config) -> Result<Commit, String>;
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
#[error("{part}: {reason}")]
pub struct ReloadError {
    /// The part that refused.
    pub part: &'static str,
    /// Why.
    pub reason: String,
}

/// The parts a running server reloads, in order.
#[derive(Default, Clone)]
pub(crate) struct Reloader {
    parts: Arc<Mutex<Vec<Arc<dyn Reloadable>>>>,
}

impl Reloader {
    /// Adds a part; parts are prepared and committed in the order they were added.
    pub(crate) fn register(&self, part: Arc<dyn Reloadable>) {
        self.parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(part);
    }

    /// Prepares every part from `new`, then commits all of them, or none.
    pub(crate) fn apply(&self, new: &Config) -> Result<(), ReloadError> {
        let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut commits = Vec::with_capacity(parts.len());
        for part in &parts {
            let commit = part.prepare(new).map_err(|reason| ReloadError {
                part: part.name(),
                reason,
            })?;
            commits.push(commit);
        }
        for commit in commits {
            commit();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Part {
        name: &'static str,
        fail: bool,
        applied: Arc<AtomicUsize>,
    }

    impl Reloadable for Part {
        fn name(&self) -> &'static str {
            self.name
        }
        fn prepare(&self, _: &Config) -> Result<Commit, String> {
            if self.fail {
                return Err("bad file".into());
            }
            let applied = self.applied.clone();
            Ok(Box::new(move || {
                applied.fetch_add(1, Ordering::SeqCst);
            }))
        }
    }

    #[test]
    fn one_failing_part_refuses_the_whole_reload() {
        let applied = Arc::new(AtomicUsize::new(0));
        let r = Reloader::default();
        for (name, fail) in [("a", false), ("b", true), ("c", false)] {
            r.register(Arc::new(Part {
                name,
                fail,
                applied: applied.clone(),
            }));
        }
        let e = r.apply(&Config::default()).unwrap_err();
        assert_eq!(e.part, "b");
        assert_eq!(applied.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn every_part_commits_when_all_prepare() {
        let applied = Arc::new(AtomicUsize::new(0));
        let r = Reloader::default();
        for name in ["a", "b"] {
            r.register(Arc::new(Part {
                name,
                fail: false,
                applied: applied.clone(),
            }));
        }
        r.apply(&Config::default()).unwrap();
        assert_eq!(applied.load(Ordering::SeqCst), 2);
    }
}
