//! A shard-local, set-once event that any number of local tasks can await.
//!
//! Used for "shutdown has begun" and "the drain deadline has passed" on a shard. Each waiting
//! future owns one slot in a small slab, so a future that is polled many times (for example
//! inside a `select` that wakes for other reasons) updates its waker in place instead of
//! piling up wakers: memory is bounded by the number of live waiters. Not `Send`: it lives on
//! its shard. Cross-thread signalling is the doorbell's job (`doorbell.rs`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A set-once event local to one shard.
#[derive(Debug, Default)]
pub(crate) struct LocalEvent {
    set: Cell<bool>,
    waiters: RefCell<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    /// Indices of `None` entries in `wakers`, for reuse.
    free: Vec<usize>,
}

impl LocalEvent {
    pub(crate) fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Sets the event and wakes every waiter. Idempotent.
    pub(crate) fn set(&self) {
        if self.set.replace(true) {
            return;
        }
        // Take the wakers out before waking so that a woken future's `Drop` (which borrows
        // `waiters`) cannot run while we hold the borrow.
        let wakers = std::mem::take(&mut self.waiters.borrow_mut().wakers);
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// A future that resolves once the event is set (immediately if it already is).
    pub(crate) fn wait(self: &Rc<Self>) -> Wait {
        Wait {
            event: Rc::clone(self),
            slot: None,
        }
    }

    #[cfg(test)]
    fn waiter_slots(&self) -> usize {
        let w = self.waiters.borrow();
        w.wakers.len() - w.free.len()
    }
}

/// Future returned by [`LocalEvent::wait`]. `Unpin`, so it can be polled by `&mut` in a loop.
#[derive(Debug)]
pub(crate) struct Wait {
    event: Rc<LocalEvent>,
    slot: Option<usize>,
}

impl Wait {
    fn release(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut w = self.event.waiters.borrow_mut();
            // After `set`, `wakers` was emptied: the slot index no longer exists, and there is
            // nothing to release.
            if let Some(entry) = w.wakers.get_mut(slot) {
                *entry = None;
                w.free.push(slot);
            }
        }
    }
}

impl Future for Wait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.is_set() {
            self.release();
            return Poll::Ready(());
        }
        let this = &mut *self;
        let mut w = this.event.waiters.borrow_mut();
        match this.slot.and_then(|s| w.wakers.get_mut(s)) {
            Some(Some(existing)) if existing.will_wake(cx.waker()) => {}
            Some(entry) => *entry = Some(cx.waker().clone()),
            None => {
                let slot = match w.free.pop() {
                    Some(slot) => slot,
                    None => {
                        w.wakers.push(None);
                        w.wakers.len() - 1
                    }
                };
                // `slot` is either a freed index (< len) or the one just pushed.
                if let Some(entry) = w.wakers.get_mut(slot) {
                    *entry = Some(cx.waker().clone());
                }
                this.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(f: &mut Wait, waker: &Waker) -> Poll<()> {
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn waiters_are_woken_once_and_then_ready() {
        let ev = LocalEvent::new();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut a = ev.wait();
        let mut b = ev.wait();
        assert!(poll(&mut a, &waker).is_pending());
        assert!(poll(&mut b, &waker).is_pending());
        ev.set();
        ev.set();
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
        assert!(poll(&mut a, &waker).is_ready());
        assert!(poll(&mut b, &waker).is_ready());
        // A wait created after the event is set is ready at once.
        assert!(poll(&mut ev.wait(), &waker).is_ready());
    }

    #[test]
    fn repeated_polls_and_drops_do_not_grow_memory() {
        let ev = LocalEvent::new();
        let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
        let mut w = ev.wait();
        for _ in 0..1000 {
            assert!(poll(&mut w, &waker).is_pending());
        }
        assert_eq!(ev.waiter_slots(), 1);
        for _ in 0..1000 {
            let mut tmp = ev.wait();
            assert!(poll(&mut tmp, &waker).is_pending());
        }
        assert_eq!(ev.waiter_slots(), 1);
        assert!(ev.waiters.borrow().wakers.len() <= 2);
        drop(w);
        assert_eq!(ev.waiter_slots(), 0);
    }
}
