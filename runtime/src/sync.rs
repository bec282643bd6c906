//! Synchronisation for Gs. Stage 1 has [`WaitGroup`]; `Mutex` arrives in chapter 13.
//!
//! Not here: channels (`chan.rs`).

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::g::Waiter;
use crate::lock;
use crate::parts::g::WaitReason;

/// Waits for a set of Gs to finish: `add` before starting each, `done` at its end, `wait`
/// until the count is back to zero. Clones share one counter. Go: `sync.WaitGroup`.
///
/// ```
/// let total = gmp::run(|| {
///     let wg = gmp::sync::WaitGroup::new();
///     let sum = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
///     for i in 1..=4 {
///         wg.add(1);
///         let (wg, sum) = (wg.clone(), sum.clone());
///         gmp::go(move || {
///             sum.fetch_add(i, std::sync::atomic::Ordering::Relaxed);
///             wg.done();
///         });
///     }
///     wg.wait();
///     sum.load(std::sync::atomic::Ordering::Relaxed)
/// });
/// assert_eq!(total, 10);
/// ```
#[derive(Clone, Default)]
pub struct WaitGroup {
    /// Only counts and waiters live here, no user code runs under it (`crate::lock`).
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    count: usize,
    waiters: Vec<Waiter>,
}

impl fmt::Debug for WaitGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WaitGroup {{ count: {} }}", lock(&self.inner).count)
    }
}

impl WaitGroup {
    /// A WaitGroup with a count of zero.
    pub fn new() -> WaitGroup {
        WaitGroup::default()
    }

    /// Adds `n` to the count.
    pub fn add(&self, n: usize) {
        lock(&self.inner).count += n;
    }

    /// Takes one off the count; at zero, wakes every waiter.
    ///
    /// # Panics
    ///
    /// If the count is already zero (more `done`s than `add`s), as Go's
    /// "sync: negative WaitGroup counter".
    pub fn done(&self) {
        let waiters = {
            let mut inner = lock(&self.inner);
            if inner.count == 0 {
                drop(inner);
                panic!(
                    "WaitGroup::done called with the count at zero: call add(1) before \
                     starting each G that calls done()"
                );
            }
            inner.count -= 1;
            if inner.count > 0 {
                return;
            }
            std::mem::take(&mut inner.waiters)
        };
        waiters.into_iter().for_each(Waiter::wake_owned);
    }

    /// Waits until the count is zero. In a G being torn down at shutdown (a destructor on
    /// its stack) it returns at once: no M will run that G again, so it could never wake.
    pub fn wait(&self) {
        let me = Waiter::current();
        loop {
            {
                let mut inner = lock(&self.inner);
                if inner.count == 0 {
                    return;
                }
                // Back from an early wake-up, it is listed already: once is enough, or
                // `done` would wake it twice and the list would grow with each early wake.
                if !inner.waiters.iter().any(|w| w.is(&me)) {
                    inner.waiters.push(me.clone());
                }
            }
            if me.wait(WaitReason::WaitGroup).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_waiter_woken_early_is_listed_once() {
        let wg = WaitGroup::new();
        wg.add(1);
        // A wake-up left over from before: this thread's first park returns at once, and
        // `wait` loops with the count still 1.
        crate::sched::thread_parker().unpark();
        let other = wg.clone();
        let checker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let listed = lock(&other.inner).waiters.len();
            other.done();
            listed
        });
        wg.wait();
        assert_eq!(
            checker.join().expect("the checking thread ends"),
            1,
            "the waiting thread should be listed once after its early wake-up"
        );
    }
}
