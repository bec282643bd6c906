//! A P: the right to run Gs, with what only its holder touches: the owner's end of its run
//! queue (part 07), its `find_runnable` state (part 08's `Finder`: schedtick, victim order)
//! and its cache of free G-table slots. Go: `type p struct` in `runtime2.go`.
//!
//! A P is an owned `Box<P>`: an M holds at most one (in its thread-local context, `m.rs`),
//! and it moves between Ms only by value, through the idle list or an M's `next_p` hand-off
//! (`mod.rs`). So "only the P's holder touches its queue's owner end" is a type fact, as for
//! tokio's `Box<Core>`. What thieves and dumps see of a P is its `Stealer`, in `Shared`.
//!
//! Not here: the ring itself (part 07), where a G is looked for (`find.rs`).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::gtable::SlotCache;
use crate::parts::runq::{self, CAPACITY, Local, Stealer};
use crate::parts::stack::GStack;
use crate::parts::steal::Finder;

pub(crate) struct P {
    /// Its index in `Shared::stealers`, 0..procs.
    pub(crate) id: usize,
    /// Go: `runq`, `runqhead`, `runqtail`, `runnext`.
    pub(crate) runq: Local<CAPACITY>,
    /// Go: `schedtick` and the victim order of `findRunnable`'s steal loop.
    pub(crate) finder: Finder,
    pub(crate) slots: SlotCache,
    /// Stacks of finished Gs, for the next ones (`stackalloc.rs`). Go: `mcache.stackcache`.
    pub(crate) stacks: Vec<GStack>,
    /// Picks from the queue of started Gs in a row; bounds how long fresh Gs wait.
    pub(crate) pinned_streak: u32,
    /// Looks for work made with this P (`find.rs`, `HANDOFF_EVERY`).
    pub(crate) looks: u32,
    /// Go: `cheaprand` (here one per P).
    pub(crate) rng: Rng,
    /// G ids taken from the runtime's counter a batch at a time, so Ps do not contend on
    /// it per spawn. Go: `p.goidcache`, `goidcacheend`.
    goids: Range<u64>,
}

/// G ids a P takes from the runtime's counter at once. Go: `_GoidCacheBatch`.
const GOID_BATCH: u64 = 16;

impl P {
    /// A new P and the `Stealer` of its queue, for `Shared::stealers`.
    pub(crate) fn new(id: usize, procs: usize) -> (Box<P>, Stealer<CAPACITY>) {
        let (runq, stealer) = runq::new::<CAPACITY>();
        let p = Box::new(P {
            id,
            runq,
            finder: Finder::new(id, procs),
            slots: SlotCache::default(),
            stacks: Vec::new(),
            pinned_streak: 0,
            looks: 0,
            rng: Rng(0x9e37_79b9 ^ (id as u32).wrapping_mul(0x85eb_ca6b) | 1),
            goids: 0..0,
        });
        (p, stealer)
    }

    /// A new G's id from this P's batch, refilled from the runtime's `counter`.
    pub(crate) fn next_goid(&mut self, counter: &AtomicU64) -> u64 {
        if self.goids.is_empty() {
            let start = counter.fetch_add(GOID_BATCH, Relaxed);
            self.goids = start..start + GOID_BATCH;
        }
        let id = self.goids.start;
        self.goids.start += 1;
        id
    }
}

/// A cheap random number generator (xorshift32), for the victim order.
pub(crate) struct Rng(u32);

impl Rng {
    pub(crate) fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}
