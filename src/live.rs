//! The live configuration: what every shard reads through `Hub::config()`, swapped at run time
//! by a reload (SIGHUP or `Running::reload`), and the rules of a reload: which settings take
//! effect at once, which need a restart, and the diff the log shows.
//!
//! The hot path takes no lock: each shard keeps its own copy of the configuration (its own
//! `Arc`, so reference counts never bounce between cores) and compares one process-wide
//! generation number (one atomic load of a line that is written once per reload) with
//! the generation it copied. Only when they differ does the shard take the slow path: lock,
//! copy the new configuration, remember the generation. A reload therefore reaches every shard
//! the next time it looks, without any message or wake-up.
//!
//! What reads a setting at use time sees the new value at once (limits, relay switches, API
//! keys and CORS origins, timeouts armed later, the log filter). What is built once at start
//! (listening sockets, shard count, memory budgets, compressors) cannot change: those keys are
//! listed in [`RESTART_ONLY`]; a reload that changes them keeps their old values, applies the
//! rest, and the log says that they need a restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::reload::{Commit, Reloadable};

/// Keys (dotted paths in the TOML file) that only a restart changes. A reload that changes one
/// keeps the running value and names it in [`Changes::needs_restart`]. A setting added later
/// that is read only at start-up belongs here.
pub const RESTART_ONLY: &[&str] = &[
    "host",
    "port",
    "tcp_port",
    "shards",
    "memory",
    "timeouts.shutdown_timeout_ms",
    "compression.threshold",
    "tls.ws_port",
    "tls.tcp_port",
    "cluster",
    "dialect",
];

/// What the log shows instead of a secret's value.
pub const REDACTED: &str = "<redacted>";

/// Whether the setting at `path` is a secret whose value a log or a printout must not show.
pub fn is_secret(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.contains("secret")
        || last.contains("password")
        || last.contains("token")
        || last == "api_key"
        || last == "api_keys"
        // `redis://user:password@host`
        || path == "cluster.redis"
}

/// One setting that a reload changed, with both values as TOML (secrets redacted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The key path (`limits.max_connections`).
    pub key: String,
    /// The value before, or `None` when unset.
    pub old: Option<String>,
    /// The value after, or `None` when unset.
    pub new: Option<String>,
}

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Settings now in effect with a new value.
    pub applied: Vec<Change>,
    /// Settings whose new value needs a restart; the old value stays in effect.
    pub needs_restart: Vec<Change>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.needs_restart.is_empty()
    }
}

fn show(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(unset)")
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} -> {}",
            self.key,
            show(&self.old),
            show(&self.new)
        )
    }
}

/// `a, b, c` for a log line.
pub(crate) fn join_changes(changes: &[Change]) -> String {
    let mut out = String::new();
    for (i, c) in changes.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&c.to_string());
    }
    out
}

/// Flattens a TOML value into `path = value` leaves (arrays are leaves).
fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        other => {
            let shown = if is_secret(prefix) {
                format!("\"{REDACTED}\"")
            } else {
                other.to_string()
            };
            out.push((prefix.to_owned(), shown));
        }
    }
}

fn leaves(c: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(v) = toml::Value::try_from(c) {
        flatten("", &v, &mut out);
    }
    out.sort();
    out
}

/// The settings that differ between `old` and `new`, key by key, secrets redacted (a secret
/// that changed shows as `<redacted> -> <redacted>`).
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let (a, b) = (leaves(old), leaves(new));
    let mut keys: Vec<&String> = a.iter().chain(b.iter()).map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    let find = |set: &[(String, String)], k: &str| {
        set.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())
    };
    let mut out = Vec::new();
    for k in keys {
        let (o, n) = (find(&a, k), find(&b, k));
        // A secret's redacted text is the same before and after: compare the real values.
        let changed = if is_secret(k) {
            secret_value(old, k) != secret_value(new, k)
        } else {
            o != n
        };
        if changed {
            out.push(Change {
                key: k.clone(),
                old: o,
                new: n,
            });
        }
    }
    out
}

fn value_at<'a>(v: &'a toml::Value, path: &str) -> Option<&'a toml::Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn secret_value(c: &Config, path: &str) -> Option<String> {
    let v = toml::Value::try_from(c).ok()?;
    value_at(&v, path).map(ToString::to_string)
}

fn is_under(key: &str, root: &str) -> bool {
    key == root
        || key
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// `new`, with every [`RESTART_ONLY`] setting put back to its value in `old`, and the changes
/// split into those applied and those that need a restart.
pub fn effective(old: &Config, new: &Config) -> Result<(Config, Changes), String> {
    let all = diff(old, new);
    if all
        .iter()
        .all(|c| !RESTART_ONLY.iter().any(|r| is_under(&c.key, r)))
    {
        return Ok((
            new.clone(),
            Changes {
                applied: all,
                needs_restart: Vec::new(),
            },
        ));
    }
    let old_v = toml::Value::try_from(old).map_err(|e| e.to_string())?;
    let mut new_v = toml::Value::try_from(new).map_err(|e| e.to_string())?;
    for root in RESTART_ONLY {
        let (parent, leaf) = match root.rsplit_once('.') {
            Some((p, l)) => (Some(p), l),
            None => (None, *root),
        };
        let from = value_at(&old_v, root).cloned();
        let table = match parent {
            Some(p) => path_table(&mut new_v, p),
            None => new_v.as_table_mut(),
        };
        if let Some(table) = table {
            match from {
                Some(v) => {
                    table.insert(leaf.to_owned(), v);
                }
                None => {
                    table.remove(leaf);
                }
            }
        }
    }
    let kept: Config = new_v
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())?;
    let (needs_restart, applied) = all
        .into_iter()
        .partition(|c| RESTART_ONLY.iter().any(|r| is_under(&c.key, r)));
    Ok((
        kept,
        Changes {
            applied,
            needs_restart,
        },
    ))
}

fn path_table<'a>(v: &'a mut toml::Value, path: &str) -> Option<&'a mut toml::Table> {
    path.split('.')
        .try_fold(v, |v, k| v.get_mut(k))
        .and_then(toml::Value::as_table_mut)
}

/// The configuration the shards read, swappable at run time. Shared by every shard's hub.
#[derive(Debug)]
pub(crate) struct LiveConfig {
    /// Bumped (after `current` is replaced) by every committed reload.
    generation: AtomicU64,
    current: Mutex<Arc<Config>>,
    /// The open-file limit `limits.max_connections = 0` is resolved against.
    open_files: u64,
    reloads_ok: AtomicU64,
    reloads_refused: AtomicU64,
}

impl LiveConfig {
    /// `config` (with `limits.max_connections` already resolved) as the first generation.
    pub(crate) fn new(config: Config, open_files: u64) -> LiveConfig {
        LiveConfig {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(config)),
            open_files,
            reloads_ok: AtomicU64::new(0),
            reloads_refused: AtomicU64::new(0),
        }
    }

    /// The current generation; one atomic load (the hot path's only cost).
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current configuration and its generation (the slow path: a lock).
    pub(crate) fn load(&self) -> (u64, Arc<Config>) {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        // Read under the lock: `swap` bumps the generation while holding it.
        (self.generation.load(Ordering::Acquire), current.clone())
    }

    fn swap(&self, config: Arc<Config>) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *current = config;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// `new` as the shards will run it: `limits.max_connections = 0` resolved as at start-up.
    pub(crate) fn resolve(&self, mut new: Config) -> Config {
        new.limits.max_connections = new.connection_cap(self.open_files);
        new
    }

    /// Counts a reload by its outcome.
    pub(crate) fn count(&self, ok: bool) {
        let c = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_refused
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads so far: (committed, refused).
    pub(crate) fn reloads(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_refused.load(Ordering::Relaxed),
        )
    }
}

/// The live configuration as a [`Reloadable`]: its commit makes `new` what every shard reads.
pub(crate) struct LivePart(pub(crate) Arc<LiveConfig>);

impl Reloadable for LivePart {
    fn name(&self) -> &'static str {
        "config"
    }
    fn prepare(&self, new: &Config) -> Result<Commit, String> {
        new.validate().map_err(|e| e.to_string())?;
        let live = self.0.clone();
        let new = Arc::new(new.clone());
        Ok(Box::new(move || live.swap(new)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_keys_and_redacts_secrets() {
        let old = Config::default();
        let mut new = old.clone();
        new.limits.max_rooms_per_client = 7;
        new.api_key = Some("s3cret".into());
        let d = diff(&old, &new);
        let shown: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "api_key: (unset) -> \"<redacted>\"",
                "limits.max_rooms_per_client: 50 -> 7"
            ]
        );
        // A changed secret shows as changed, its values hidden.
        let mut newer = new.clone();
        newer.api_key = Some("other".into());
        let d = diff(&new, &newer);
        assert_eq!(d.len(), 1);
        assert!(!d[0].to_string().contains("other"));
        assert!(diff(&new, &new.clone()).is_empty());
    }

    #[test]
    fn restart_only_settings_keep_their_old_values() {
        let old = Config::default();
        let mut new = old.clone();
        new.port = 4000;
        new.tcp_port = Some(4444);
        new.memory.mesh_overflow = 2 << 20;
        new.limits.max_rooms = 9;
        let (kept, changes) = effective(&old, &new).unwrap();
        assert_eq!(kept.port, old.port);
        assert_eq!(kept.tcp_port, None);
        assert_eq!(kept.memory, old.memory);
        assert_eq!(kept.limits.max_rooms, 9);
        let keys: Vec<&str> = changes.needs_restart.iter().map(|c| &*c.key).collect();
        assert_eq!(keys, ["memory.mesh_overflow", "port", "tcp_port"]);
        assert_eq!(changes.applied.len(), 1);
        assert_eq!(changes.applied[0].key, "limits.max_rooms");
    }

    #[test]
    fn a_commit_reaches_readers_by_generation() {
        let live = Arc::new(LiveConfig::new(Config::default(), 1024));
        let (g0, _) = live.load();
        let mut new = Config::default();
        new.limits.max_rooms = 3;
        let commit = LivePart(live.clone()).prepare(&new).unwrap();
        assert_eq!(live.generation(), g0, "prepare applies nothing");
        commit();
        let (g1, c) = live.load();
        assert_ne!(g1, g0);
        assert_eq!(c.limits.max_rooms, 3);
        let mut bad = Config::default();
        bad.limits.max_frame_size = 1;
        assert!(LivePart(live).prepare(&bad).is_err());
    }
}
