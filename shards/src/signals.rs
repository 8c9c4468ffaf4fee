//! SIGINT / SIGTERM → [`Shutdown`]: first signal drains, second forces.
//!
//! Approach (the "self-pipe trick"): a process-wide handler, installed once with `sigaction`
//! (`SA_RESTART`), does the only async-signal-safe thing it needs: `write` the signal number as
//! one byte into a non-blocking pipe, saving and restoring `errno`. A dedicated thread
//! ("shardcast-signals") blocks on the read end and does the real work: for every registered
//! runtime it calls [`Shutdown::trigger`], or [`Shutdown::force`] if that runtime was already
//! draining. If no runtime is registered any more, it restores the default action and re-raises
//! the signal, so Ctrl-C still terminates a process that has finished with its runtimes.
//!
//! Why not `sigwait` with the signals blocked everywhere: that only works if *every* thread of
//! the process blocks them, including threads the embedding program created before the runtime
//! started (a logging thread, a Redis bridge); a single thread that does not block them would
//! take the default action and kill the process without a graceful shutdown. The handler works
//! whichever thread the kernel picks. Shard threads still block both signals
//! (`sys::block_shutdown_signals_in_current_thread`) so the handler never interrupts a shard's
//! io_uring loop.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::shutdown::{Inner, Phase, Shutdown};
use crate::sys::SHUTDOWN_SIGNALS;

/// Write end of the self-pipe, read by the handler. `-1` until installed.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// Runtimes to notify. A `Mutex` is fine: touched at start-up and per signal only.
static REGISTRY: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// Result of the one-time installation (handler + thread).
static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();

extern "C" fn on_signal(sig: libc::c_int) {
    // Async-signal-safe only: read an atomic, `write(2)`, and errno save/restore.
    // SAFETY: `__errno_location` returns the calling thread's errno slot, always valid.
    let saved = unsafe { *libc::__errno_location() };
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: writes one byte from the stack to the pipe. Non-blocking: if the pipe is
        // full, enough signals are already queued for the reader.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// Routes SIGINT/SIGTERM to `shutdown` (installing the process-wide handler on first use).
pub(crate) fn register(shutdown: &Shutdown) -> io::Result<()> {
    let installed = INSTALLED.get_or_init(|| install().map_err(|e| e.raw_os_error().unwrap_or(0)));
    if let Err(code) = installed {
        return Err(io::Error::from_raw_os_error(*code));
    }
    let mut registry = REGISTRY.lock().unwrap_or_else(|poison| poison.into_inner());
    registry.retain(|w| w.strong_count() > 0);
    registry.push(Arc::downgrade(&shutdown.inner));
    Ok(())
}

fn install() -> io::Result<()> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: `fds` has room for both ends.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let [read_fd, write_fd] = fds;
    // Only the handler's end is non-blocking; the thread blocks on the read end.
    // SAFETY: `write_fd` is the pipe end we just created.
    unsafe {
        let flags = libc::fcntl(write_fd, libc::F_GETFL);
        libc::fcntl(write_fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    PIPE_WRITE.store(write_fd, Ordering::Relaxed);

    std::thread::Builder::new()
        .name("shardcast-signals".into())
        .spawn(move || dispatch(read_fd))?;

    for sig in SHUTDOWN_SIGNALS {
        // SAFETY: `sigaction` is plain data, zeroed then filled; the handler is an
        // `extern "C" fn(c_int)` that only performs async-signal-safe operations.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) == -1 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The signal thread's loop: one byte per delivered signal.
fn dispatch(read_fd: libc::c_int) {
    // This thread may have inherited a mask that blocks the signals (if the runtime was
    // started from a thread that blocks them); it must not, to re-raise them below.
    if let Err(error) = crate::sys::unblock_shutdown_signals_in_current_thread() {
        tracing::warn!(%error, "could not unblock SIGINT/SIGTERM in the signal thread");
    }
    let mut buf = [0u8; 16];
    loop {
        // SAFETY: reads into a buffer we own from the pipe's read end, which is never closed.
        let n = unsafe { libc::read(read_fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %io::Error::last_os_error(), "signal pipe failed");
            return;
        }
        let n = usize::try_from(n).unwrap_or(0);
        for &sig in buf.iter().take(n) {
            // This thread is the only way signals reach the runtimes: a panic in delivery (a
            // logger that panics on a closed pipe, say) must not end it.
            let _ = std::panic::catch_unwind(|| deliver(libc::c_int::from(sig)));
        }
    }
}

fn deliver(sig: libc::c_int) {
    let name = if sig == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    let live: Vec<Shutdown> = {
        let mut registry = REGISTRY.lock().unwrap_or_else(|poison| poison.into_inner());
        registry.retain(|w| w.strong_count() > 0);
        registry
            .iter()
            .filter_map(Weak::upgrade)
            .map(|inner| Shutdown { inner })
            .collect()
    };
    if live.is_empty() {
        // Nobody to shut down gracefully: behave as if we had never installed a handler.
        // SAFETY: restoring the default disposition and re-raising is allowed outside a
        // handler; this thread does not block these signals, so the default action runs.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return;
    }
    // Act first, log second: logging may fail (or panic, with a logger that panics on a
    // closed pipe) and must never stand between a signal and the shutdown.
    for shutdown in live {
        if shutdown.phase() == Phase::Running {
            shutdown.trigger();
            tracing::info!(
                signal = name,
                "shutting down gracefully (send again to force)"
            );
        } else {
            shutdown.force();
            tracing::warn!(signal = name, "second signal: forcing shutdown");
        }
    }
}
