//! The one clock every measurement uses: `CLOCK_MONOTONIC` in nanoseconds.
//!
//! Monotonic time is shared by every process on the machine, so a publish time stamped by
//! one worker process (`--procs`) can be subtracted from the receive time taken in another:
//! end-to-end latency needs no clock synchronisation on one host. Wall-clock time appears
//! only in the report's environment (when the run started).

/// Nanoseconds on `CLOCK_MONOTONIC` (vDSO, about 20 ns).
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux, so
    // the call cannot fail (and if it did, `ts` would stay zero, never garbage).
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds since the Unix epoch (for the report's environment only).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_nanosecond_scale() {
        let a = now_ns();
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(2) {}
        let b = now_ns();
        assert!(b > a);
        let d = b - a;
        assert!((2_000_000..1_000_000_000).contains(&d), "{d}");
    }
}
