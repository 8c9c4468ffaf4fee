//! SIGINT / SIGTERM → [`Shutdown`] (the first signal drains, the second forces), and SIGHUP →
//! the hangup hooks (`Builder::on_hangup`), which never ends the process.
//!
//! Approach: `signal-hook`'s iterator. On the first registration, [`Signals::new`] installs a
//! process-wide `sigaction` handler for the three signals, on the thread that starts the
//! runtime and before `start` returns, so a signal sent right after start-up is not lost. The
//! handler only does async-signal-safe work (it records the signal and writes a byte into a
//! socket pair); a dedicated thread ("shardcast-signals") iterates over the recorded signals
//! and does the real work, for every registered runtime:
//! - **SIGINT, SIGTERM**: [`Shutdown::trigger`], or [`Shutdown::force`] if that runtime was
//!   already draining.
//! - **SIGHUP**: the runtime's hangup hooks, in the order they were added, if it is still
//!   serving; with no hook anywhere, one info line says so and nothing else happens. The
//!   default action would terminate the process: a server must survive its terminal going
//!   away, and SIGHUP is the conventional "reload" signal (a later reload of configuration and
//!   certificates hooks in here).
//! - **No runtime registered any more** (each is unregistered when it is joined or dropped,
//!   whoever still holds a clone of its [`Shutdown`]): the signal's default action
//!   ([`emulate_default_handler`]: restore `SIG_DFL`, unblock, re-raise), so Ctrl-C (and
//!   SIGHUP) still terminate a process that has finished with its runtimes, as if no handler
//!   had ever been installed.
//!
//! Act first, log second: logging may fail (or panic, with a logger that panics on a closed
//! pipe) and must never stand between a signal and the shutdown. The thread is the only way
//! signals reach the runtimes, so a panic while handling one (a logger, a hangup hook) is
//! caught and the thread goes on with the next signal.
//!
//! Signals of one kind that arrive before the thread has picked up the previous one count as
//! one (`signal-hook` collates them, as the kernel does a pending signal): a second Ctrl-C
//! forces when it comes after the first was acted on, which takes microseconds.
//!
//! Why not `sigwait` with the signals blocked everywhere: that only works if *every* thread of
//! the process blocks them, including threads the embedding program created before the runtime
//! started (a logging thread, a Redis bridge); a single thread that does not block them would
//! take the default action and kill the process without a graceful shutdown. The handler works
//! whichever thread the kernel picks.
//!
//! Which threads take delivery: any thread that does not block the signal. Shard threads block
//! all three ([`block_in_current_thread`], inherited by glommio's helper thread). glommio 0.9
//! would survive the interruption (its reactor takes an `EINTR` from `io_uring_enter` for a
//! spurious wake-up), but a shard would still pay for the handler and a wasted reactor turn on
//! its pinned core, for nothing: the work happens on the signal thread anyway. The signal
//! thread, conversely, unblocks them, so one thread of the process always takes them even when
//! the runtime was started from a thread that blocks them (every thread it spawns would
//! otherwise inherit that mask, and the signals would stay pending forever).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use signal_hook::low_level::{emulate_default_handler, signal_name};

use crate::shutdown::{Phase, Shutdown};
use crate::sys;

/// Every signal this module handles.
const HANDLED: [libc::c_int; 3] = [SIGINT, SIGTERM, SIGHUP];

/// A hook run on SIGHUP (`Builder::on_hangup`).
pub(crate) type HangupHook = Arc<dyn Fn() + Send + Sync>;

/// One runtime that handles signals, registered until its [`Registered`] guard drops.
#[derive(Clone)]
struct Registration {
    id: u64,
    shutdown: Shutdown,
    on_hangup: Arc<[HangupHook]>,
}

/// Runtimes to notify. A `Mutex` is fine: touched at start-up, per signal and when a runtime
/// ends.
static REGISTRY: Mutex<Vec<Registration>> = Mutex::new(Vec::new());

/// Distinguishes registrations.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Keeps a runtime registered: the runtime holds it and drops it once its shards have ended.
/// Liveness of the [`Shutdown`] handle cannot tell instead: a clone outlives the shards (in a
/// caller's hands, or in a task that glommio leaks when a shard's executor ends with it still
/// pending), and signals would then keep going to a runtime that is gone.
#[derive(Debug)]
pub(crate) struct Registered {
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock_registry().retain(|r| r.id != self.id);
    }
}

fn lock_registry() -> std::sync::MutexGuard<'static, Vec<Registration>> {
    // The registry stays consistent whatever panicked while holding it (a push or a retain).
    REGISTRY.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Result of the one-time installation (handlers + thread), as a raw OS error.
static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();

/// Routes SIGINT/SIGTERM to `shutdown` and SIGHUP to `on_hangup` until the returned guard
/// drops (installing the handlers and the signal thread on first use).
pub(crate) fn register(
    shutdown: &Shutdown,
    on_hangup: Arc<[HangupHook]>,
) -> io::Result<Registered> {
    // Registered before the handlers exist, so the first signal they catch finds this runtime.
    let registered = Registered {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
    };
    lock_registry().push(Registration {
        id: registered.id,
        shutdown: shutdown.clone(),
        on_hangup,
    });
    let installed = INSTALLED.get_or_init(|| install().map_err(|e| e.raw_os_error().unwrap_or(0)));
    if let Err(code) = installed {
        return Err(io::Error::from_raw_os_error(*code)); // `registered` drops: unregistered
    }
    Ok(registered)
}

/// Blocks the handled signals in the calling thread and in the threads it spawns later. Shard
/// threads call this first thing (see the module doc, "Which threads take delivery").
pub(crate) fn block_in_current_thread() -> io::Result<()> {
    sys::block_signals_in_current_thread(&HANDLED)
}

fn install() -> io::Result<()> {
    // The thread first, waiting for its iterator: a handler installed without a thread to
    // read what it records would swallow every signal.
    let (tx, rx) = mpsc::sync_channel::<Signals>(1);
    std::thread::Builder::new()
        .name("shardcast-signals".into())
        .spawn(move || {
            if let Ok(signals) = rx.recv() {
                dispatch(signals);
            }
        })?;
    // Installs the handlers, here and now. On failure `tx` drops and the thread ends.
    let signals = Signals::new(HANDLED)?;
    // Cannot fail: the thread holds `rx` until it has received this.
    let _ = tx.send(signals);
    Ok(())
}

/// The signal thread's loop.
fn dispatch(mut signals: Signals) {
    // This thread may have inherited a mask that blocks the signals (if the runtime was
    // started from a thread that blocks them); it must not, so the process always has a
    // thread that takes them.
    if let Err(error) = sys::unblock_signals_in_current_thread(&HANDLED) {
        tracing::warn!(%error, "could not unblock the handled signals in the signal thread");
    }
    for sig in signals.forever() {
        // A panic in delivery (a logger that panics on a closed pipe, say) must not end the
        // only thread through which signals reach the runtimes.
        let _ = catch_unwind(|| deliver(sig));
    }
}

fn deliver(sig: libc::c_int) {
    // Copied out, so no hook or logger runs with the lock held.
    let live: Vec<Registration> = lock_registry().clone();
    if live.is_empty() {
        // Nobody to act for: behave as if we had never installed a handler. For the three
        // signals handled this terminates the process (re-raised with `SIG_DFL`, unblocked).
        let _ = emulate_default_handler(sig);
        return;
    }
    if sig == SIGHUP {
        hang_up(&live);
    } else {
        shut_down(sig, &live);
    }
}

/// SIGINT/SIGTERM: drain each runtime, or force one that is draining already.
fn shut_down(sig: libc::c_int, live: &[Registration]) {
    let (mut drained, mut forced) = (0usize, 0usize);
    for runtime in live {
        if runtime.shutdown.trigger() {
            drained += 1;
        } else {
            runtime.shutdown.force();
            forced += 1;
        }
    }
    let signal = signal_name(sig).unwrap_or("a shutdown signal");
    if drained > 0 {
        tracing::info!(signal, "shutting down gracefully (send again to force)");
    }
    if forced > 0 {
        tracing::warn!(signal, "second signal: forcing shutdown");
    }
}

/// SIGHUP: run the hangup hooks of every runtime still serving; never shut anything down.
fn hang_up(live: &[Registration]) {
    let serving: Vec<&Registration> = live
        .iter()
        .filter(|r| r.shutdown.phase() == Phase::Running)
        .collect();
    let (mut ran, mut panicked) = (0usize, 0usize);
    for hook in serving.iter().flat_map(|r| r.on_hangup.iter()) {
        ran += 1;
        // One hook's panic must not keep the others from running.
        if catch_unwind(AssertUnwindSafe(|| hook())).is_err() {
            panicked += 1;
        }
    }
    if serving.is_empty() {
        tracing::info!("SIGHUP received while shutting down: ignored");
    } else if ran == 0 {
        tracing::info!("SIGHUP received: nothing to reload yet, ignored");
    } else if panicked == 0 {
        tracing::info!(hooks = ran, "SIGHUP received: hangup hooks ran");
    } else {
        tracing::warn!(
            hooks = ran,
            panicked,
            "SIGHUP received: hangup hooks ran, and some panicked"
        );
    }
}
