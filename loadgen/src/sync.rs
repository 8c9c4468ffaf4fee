//! Shard-local wake-ups: a set-once [`Signal`] and [`WakerSlots`], one waker per
//! connection task, so the shard's control task can wake every connection when the run
//! changes phase. Single-threaded (`Rc`/`Cell`): everything here lives on one shard.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// A flag that is set once and wakes whoever waits for it.
#[derive(Default)]
pub struct Signal {
    set: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        if !self.set.replace(true) {
            for w in self.waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Resolves once the flag is set.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.get() {
                Poll::Ready(())
            } else {
                let mut w = self.waiters.borrow_mut();
                if !w.iter().any(|x| x.will_wake(cx.waker())) {
                    w.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}

/// One optional waker per task slot.
#[derive(Default)]
pub struct WakerSlots {
    slots: RefCell<Vec<Option<Waker>>>,
}

impl WakerSlots {
    /// Slots for `n` tasks.
    pub fn with_len(n: usize) -> WakerSlots {
        WakerSlots {
            slots: RefCell::new(vec![None; n]),
        }
    }

    /// Remembers the waker of task `i`.
    pub fn register(&self, i: usize, w: &Waker) {
        let mut s = self.slots.borrow_mut();
        if let Some(slot) = s.get_mut(i) {
            match slot {
                Some(old) if old.will_wake(w) => {}
                _ => *slot = Some(w.clone()),
            }
        }
    }

    /// Forgets task `i` (it ended).
    pub fn clear(&self, i: usize) {
        if let Some(slot) = self.slots.borrow_mut().get_mut(i) {
            *slot = None;
        }
    }

    /// Wakes every registered task.
    pub fn wake_all(&self) {
        let wakers: Vec<Waker> = self.slots.borrow().iter().flatten().cloned().collect();
        for w in wakers {
            w.wake();
        }
    }
}
