//! A one-shot, shard-local signal: fired once, awaited by any number of tasks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
pub struct Stop {
    fired: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Stop {
    pub fn fire(&self) {
        self.fired.set(true);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub fn fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once fired. Meant for a few long-lived waiters (accept loops): each waiting
    /// task keeps one waker here until the signal fires.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        StopWait(self)
    }
}

struct StopWait<'a>(&'a Stop);

impl Future for StopWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.fired.get() {
            return Poll::Ready(());
        }
        let mut wakers = self.0.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone()); // one per task, however often polled
        }
        Poll::Pending
    }
}
