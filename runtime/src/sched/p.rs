//! A P: the right to run Gs, with what only its holder touches: the owner's end of its run
//! queues (part 07's ring, and the runtime's LIFO between `runnext` and the ring), its
//! `find_runnable` state (part 08's `Finder`: schedtick, victim order) and its caches of
//! free G-table slots, G ids and stacks. Go: `type p struct` in `runtime2.go`.
//!
//! A P is an owned `Box<P>`: an M holds at most one (in its thread-local context, `m.rs`),
//! and it moves between Ms only by value, through the idle list or an M's `next_p` hand-off
//! (`mod.rs`). So "only the P's holder touches its queue's owner end" is a type fact, as for
//! tokio's `Box<Core>`. What thieves and dumps see of a P is its [`PQueues`], in `Shared`.
//!
//! Not here: the ring itself (part 07), where a G is looked for (`find.rs`).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_deque::{Steal, Stealer as DequeStealer, Worker};

use super::gtable::SlotCache;
use crate::parts::runq::{self, CAPACITY, Local, Stealer, Token};
use crate::parts::stack::GStack;
use crate::parts::steal::Finder;

pub(crate) struct P {
    /// Its index in `Shared::stealers`, 0..procs.
    pub(crate) id: usize,
    /// Go: `runq`, `runqhead`, `runqtail`, `runnext`; and the LIFO between.
    pub(crate) runq: Runq,
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
    /// A new P and the thieves' end of its queues, for `Shared::stealers`.
    pub(crate) fn new(id: usize, procs: usize) -> (Box<P>, PQueues) {
        let (ring, ring_stealer) = runq::new::<CAPACITY>();
        let lifo = Worker::new_lifo();
        let queues = PQueues {
            ring: ring_stealer,
            lifo: lifo.stealer(),
        };
        let p = Box::new(P {
            id,
            runq: Runq {
                ring,
                runnext_full: false,
                ring_passed: 0,
                bottom_passed: 0,
                turned: false,
                lifo,
            },
            finder: Finder::new(id, procs),
            slots: SlotCache::default(),
            stacks: Vec::new(),
            pinned_streak: 0,
            looks: 0,
            rng: Rng(0x9e37_79b9 ^ (id as u32).wrapping_mul(0x85eb_ca6b) | 1),
            goids: 0..0,
        });
        (p, queues)
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

/// Gs the LIFO holds; when it is full, they move on to the ring. A fork-join tree's parent
/// leaves one waiting child per level it descends (fib(35) to fib(10): 12 at most), so 16
/// keep a descent depth first (book, chapter 8). A fairness turn may stack two more; 18 is
/// below crossbeam's smallest buffer (64), so the LIFO never resizes.
pub(crate) const LIFO_DEPTH: usize = 16;

/// A P's run queues, as its holder uses them: part 07's `runnext` and ring, and between
/// them the runtime's LIFO, where a G pushed out of `runnext` waits, newest on top.
///
/// Go's `runnext` holds one G and sends the one it displaces to the ring's tail, to run
/// after everything older: a parent that descends a fork-join tree leaves its older children
/// to come out oldest first, and parks behind each of them, holding its stack (at the peak of
/// fib(35), thousands of parked Gs). The LIFO keeps up to [`LIFO_DEPTH`] displaced Gs for
/// this P to run newest first, so the tree runs depth first, as Cilk and rayon run it.
/// Thieves take from the ring first, then the LIFO's oldest, the biggest subtrees
/// (`PQueues`).
pub(crate) struct Runq {
    pub(crate) ring: Local<CAPACITY>,
    /// This P's holder put a G in `runnext` that has not come back out through `pop`. A thief
    /// may have taken it since: then the next `pop` or `push_next` takes the ring's head
    /// where it meant `runnext` (part 07's `pop` gives the one, else the other), so that G
    /// runs early or waits in the LIFO. Only the order changes; no G is lost or run twice.
    runnext_full: bool,
    /// Pops since the ring's head last had a turn or every queue was empty (`NEWEST_STREAK`).
    ring_passed: u32,
    /// Pops since the LIFO's bottom last had a turn or moved on (`BOTTOM_WAIT`).
    bottom_passed: u32,
    /// A fairness turn happened since `take_turned` last asked.
    turned: bool,
    lifo: Worker<Token>,
}

/// Pops that pass by the Gs waiting in the ring (taking newer ones) before its head gets a
/// turn. A program that keeps spawning refills `runnext` and the LIFO as fast as they empty;
/// without a bound the ring's Gs would wait for as long as it does. Go's cadence for its
/// global queue; in a fork-join tree the ring holds what a full LIFO moved there, and these
/// turns cost fib(35) at P=1 a few percent (book, chapter 8). (tokio allows a few polls of
/// its LIFO slot in a row; Go relies on preemption.)
pub(crate) const NEWEST_STREAK: u32 = 61;

/// Pops while the same G stays at the LIFO's bottom before it gets a turn: about a million,
/// a fraction of a second. In a fork-join tree at one P the bottom is the oldest sibling of
/// the descent, the biggest subtree, which rightly waits for most of the run: a turn every
/// ~10 ms (Go's time slice, about 32,000 pops here) started subtrees early, pushed their
/// siblings into the ring, and cost fib(35) at P=1 a fifth more time (book, chapter 8).
/// So this bound is only a backstop against a program that spawns forever; with two Ps or
/// more, an idle M steals the bottom first anyway. (The unit tests use a smaller one.)
pub(crate) const BOTTOM_WAIT: u32 = if cfg!(test) { 4096 } else { 1 << 20 };

impl Runq {
    /// Queues a G to run next on this P: into `runnext`, and the G it displaces on top of the
    /// LIFO (a full LIFO first moves to the ring's tail, oldest first); a full ring's half
    /// (part 07's overflow) goes into `spill`. Go: `runqput(pp, gp, next=true)`.
    ///
    /// Runs on the spawning G's own stack, which may be small: it calls crossbeam's `push`
    /// and `pop` only, which at this size never resize, so never pin crossbeam's epoch (a
    /// thread-local, deep frames in a debug build). Stealing, which pins, is for thieves on
    /// g0 (`PQueues`).
    pub(crate) fn push_next(&mut self, token: Token, spill: &mut Vec<Token>) {
        if self.runnext_full
            && let Some(displaced) = self.ring.pop()
        {
            if self.lifo.len() >= LIFO_DEPTH {
                // Full: the LIFO's Gs, all older than `displaced`, go on to the ring's tail,
                // oldest first, as Go's ring would have had them.
                for t in self.drain_lifo().into_iter().rev() {
                    self.ring.push_back(t, |t| spill.push(t));
                }
                self.bottom_passed = 0;
            }
            self.lifo.push(displaced);
        }
        self.ring.push_next(token, |t| spill.push(t));
        self.runnext_full = true;
    }

    /// At the ring's tail (a batch from the global queue). Go: `runqput(pp, gp, next=false)`.
    pub(crate) fn push_back(&mut self, token: Token, overflow: impl FnMut(Token)) {
        self.ring.push_back(token, overflow);
    }

    /// The next G to run: `runnext`, the LIFO's newest, the ring's head; but the ring's head
    /// gets a turn once [`NEWEST_STREAK`] pops have passed it by, and the LIFO's bottom once
    /// [`BOTTOM_WAIT`] have. Go: `runqget`.
    ///
    /// A turn takes Gs out of the queues for a moment (the one in `runnext` is set aside, the
    /// LIFO is unstacked), where a thief's last look before parking could miss them; the
    /// caller then makes sure an M is looking (`take_turned`).
    pub(crate) fn pop(&mut self) -> Option<Token> {
        // The counts go up on every pop, empty queues or not (asking costs a spawn chain a
        // twentieth of its time); a turn finds out whether anyone waits, and is then reset.
        let turn = if self.ring_passed >= NEWEST_STREAK {
            self.ring_passed = 0;
            self.turn(Turn::RingHead)
        } else if self.bottom_passed >= BOTTOM_WAIT {
            self.bottom_passed = 0;
            self.turn(Turn::LifoBottom)
        } else {
            None
        };
        if turn.is_some() {
            return turn;
        }
        let newest = if std::mem::take(&mut self.runnext_full) {
            self.ring.pop()
        } else {
            None
        };
        if let Some(t) = newest.or_else(|| self.lifo.pop()) {
            self.ring_passed += 1;
            self.bottom_passed += 1;
            return Some(t);
        }
        self.ring_passed = 0;
        self.bottom_passed = 0;
        self.ring.pop()
    }

    /// The oldest G of the ring or of the LIFO, if one waits there, ahead of the newer ones.
    fn turn(&mut self, turn: Turn) -> Option<Token> {
        let waiting = match turn {
            Turn::RingHead => !self.ring.is_empty(),
            Turn::LifoBottom => !self.lifo.is_empty(),
        };
        if !waiting {
            return None;
        }
        self.turned = true;
        // Part 07's `pop` gives `runnext` while it holds a G: set that one (the newest) aside
        // on the LIFO, so the ring's head or the LIFO's bottom can come out.
        if std::mem::take(&mut self.runnext_full)
            && let Some(next) = self.ring.pop()
        {
            self.lifo.push(next);
        }
        match turn {
            Turn::RingHead => self.ring.pop(),
            Turn::LifoBottom => {
                let mut newest_first = self.drain_lifo();
                let oldest = newest_first.pop();
                for t in newest_first.into_iter().rev() {
                    self.lifo.push(t);
                }
                oldest
            }
        }
    }

    /// Every G of the LIFO, newest first, by the owner's end alone. (A `Stealer` would reach
    /// the oldest directly, but pins crossbeam's epoch: see `push_next`.)
    fn drain_lifo(&mut self) -> Vec<Token> {
        std::iter::from_fn(|| self.lifo.pop()).collect()
    }

    /// Whether a `pop` since the last call made a fairness turn (see `pop`).
    pub(crate) fn take_turned(&mut self) -> bool {
        std::mem::take(&mut self.turned)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ring.is_empty() && self.lifo.is_empty()
    }
}

/// Which of the older Gs a fairness turn serves (`Runq::pop`).
enum Turn {
    RingHead,
    LifoBottom,
}

/// What other Ms see of a P's queues: the thieves' end of its ring (part 07) and of its LIFO.
#[derive(Clone)]
pub(crate) struct PQueues {
    pub(crate) ring: Stealer<CAPACITY>,
    pub(crate) lifo: DequeStealer<Token>,
}

impl PQueues {
    pub(crate) fn len(&self) -> usize {
        self.ring.len() + self.lifo.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ring.is_empty() && self.lifo.is_empty()
    }

    /// The LIFO's oldest G, if it has one.
    pub(crate) fn steal_oldest(&self) -> Option<Token> {
        steal_one(&self.lifo)
    }
}

/// One G from the far end of a LIFO, retrying while another thief races for it.
fn steal_one(from: &DequeStealer<Token>) -> Option<Token> {
    loop {
        match from.steal() {
            Steal::Success(t) => return Some(t),
            Steal::Empty => return None,
            Steal::Retry => std::hint::spin_loop(),
        }
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
