//! Solution 08, `steal`: where an idle P looks for work, and how many Ps there are.
//!
//! What lives here, in the order of chapter 8's steps:
//!
//! 1. [`VictimOrder`]: the order a thief visits the other Ps. Every P once, from a random
//!    start, with a random stride coprime to the P count, so two thieves rarely queue up
//!    behind the same victim. Go: `randomOrder` / `randomEnum` (`proc.go`).
//! 2. [`Spinning`]: how many Ms are *spinning* (looking for work without a G). At most half
//!    the busy Ps may have a spinning M, and the last M to stop spinning owes the others a
//!    wake-up or a recheck. Go: `sched.nmspinning`, `wakep`, `resetspinning` and the
//!    comment "Worker thread parking/unparking" at the top of `proc.go`.
//! 3. [`Finder`]: one P's `findRunnable` order over the [`Sources`] the runtime supplies:
//!    the global queue first every 61st schedtick, then the local queue, the global queue,
//!    the netpoller and finally four rounds of stealing. Go: `findRunnable`, `stealWork`.
//! 4. [`cgroup_cpu_limit`], [`default_procs`], [`procs_from_env`]: the default P count.
//!    A container's CPU limit lives in its cgroup (v1 `cpu.cfs_quota_us`, v2 `cpu.max`),
//!    possibly in a parent's; `GMP_PROCS` overrides it. Go: `cgroup_linux.go`,
//!    `internal/runtime/cgroup` (Go 1.25+).
//!
//! The part has no `unsafe` and no threads of its own: the runtime owns the queues, the Ms
//! and the parking; this part decides the order, the fairness and the counts.
//!
//! Book: chapter 8, "M:N and work stealing" (`book/src/ch08-steal.md`).
#![warn(missing_docs)]

mod cgroup;

pub use cgroup::{
    CgroupError, CpuLimit, MAX_PROCS, PROCS_ENV, ProcsError, cgroup_cpu_limit, default_procs,
    procs_from_env,
};

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// Every how many schedticks `find` looks at the global queue before the local one, so Gs
/// in the global queue are not starved by two Gs that keep readying each other locally.
/// Go: `pp.schedtick%61 == 0` in `findRunnable` (a prime, so it does not beat with the
/// period of a program's own loops).
pub const GLOBAL_EVERY: u32 = 61;

/// How many rounds over the other Ps `find` steals in. Go: `stealTries` in `stealWork`.
pub const STEAL_ROUNDS: usize = 4;

/// The order a thief visits the Ps: every index in `0..procs` exactly once, starting at a
/// random P and moving by a random stride that is coprime to `procs` (so the walk reaches
/// every P before it repeats). Go: `randomOrder` / `randomEnum` in `proc.go`.
#[derive(Clone, Debug)]
pub struct VictimOrder {
    procs: usize,
    /// Every stride in `1..=procs` that shares no factor with `procs`.
    coprimes: Vec<usize>,
}

impl VictimOrder {
    /// The order over `procs` Ps. With `procs == 0` it visits nothing.
    pub fn new(procs: usize) -> VictimOrder {
        let coprimes = (1..=procs).filter(|&i| gcd(i, procs) == 1).collect();
        VictimOrder { procs, coprimes }
    }

    /// How many Ps this order visits.
    pub fn procs(&self) -> usize {
        self.procs
    }

    /// One walk over every P, chosen by `random`: the start is `random % procs`, the stride
    /// the `(random / procs)`-th coprime (wrapping), as Go's `randomOrder.start` does.
    pub fn visit(&self, random: u32) -> impl Iterator<Item = usize> + '_ {
        let procs = self.procs;
        let random = random as usize;
        let (start, stride) = if procs == 0 {
            (0, 1)
        } else {
            (
                random % procs,
                self.coprimes[(random / procs) % self.coprimes.len()],
            )
        };
        (0..procs).scan(start, move |pos, _| {
            let here = *pos;
            *pos = (here + stride) % procs;
            Some(here)
        })
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The count of spinning Ms and the rules around it. Go: `sched.nmspinning`.
///
/// A spinning M holds a P but no G and is looking for work. Spinning costs CPU, so
/// [`try_start`](Spinning::try_start) lets at most half the busy Ps have one; and at
/// least one M spins whenever there may be work, so a G made runnable is picked up soon
/// without waking a thread for every G ([`claim_wake`](Spinning::claim_wake)).
///
/// Every operation is `SeqCst`: the protocol needs a store-load order. The last spinner
/// decrements the count and then rechecks the queues; a submitter enqueues a G and then
/// reads the count. With weaker orders both could read stale values and the G would wait
/// with every M asleep (Go's "delicate dance" in `proc.go`).
#[derive(Debug, Default)]
pub struct Spinning {
    count: AtomicUsize,
}

impl Spinning {
    /// No M spinning.
    pub fn new() -> Spinning {
        Spinning::default()
    }

    /// May this M start spinning, with `procs` Ps of which `idle_ps` are idle? Yes while
    /// twice the spinners are fewer than the busy Ps, and then it counts as spinning.
    /// Go: `findRunnable`'s `2*sched.nmspinning.Load() < gomaxprocs-sched.npidle.Load()`
    /// before `becomeSpinning`; here one compare-and-swap, so the limit is exact.
    pub fn try_start(&self, procs: usize, idle_ps: usize) -> bool {
        let busy = procs.saturating_sub(idle_ps);
        self.count
            .fetch_update(SeqCst, SeqCst, |n| {
                (n.saturating_mul(2) < busy).then_some(n + 1)
            })
            .is_ok()
    }

    /// A spinning M stops spinning, because it found a G or gives up. Returns `true` if it
    /// was the last spinning M: having found work, it must wake another M to spin in its
    /// place (Go: `resetspinning` calls `wakep`); giving up, it must recheck every queue
    /// after this call and before it parks (Go: the "spinning to non-spinning" transition
    /// in `findRunnable`), or a G submitted in between finds a spinner that never looks.
    ///
    /// # Panics
    ///
    /// If no M is spinning: every `stop` must match a `try_start` or `claim_wake` that
    /// returned `true` (Go throws "findRunnable: negative nmspinning").
    pub fn stop(&self) -> bool {
        match self
            .count
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        {
            Ok(before) => before == 1,
            Err(_) => panic!(
                "steal: Spinning::stop with no spinning M; every stop must match a try_start \
                 or claim_wake that returned true (book: ch08-steal.html#step-2)"
            ),
        }
    }

    /// `wakep`'s claim: `true` if no M was spinning; the count is then 1 and the caller
    /// owns that spinner: it starts or wakes an M that begins spinning (and later `stop`s).
    /// `false`: a spinner exists and will find the new G, so no wake-up is needed.
    /// If the claimer then finds no idle P, it gives the claim back with [`stop`](Spinning::stop)
    /// and ignores its result: every P is busy, and their Ms will reach the queued G.
    /// Go: `sched.nmspinning.CompareAndSwap(0, 1)` in `wakep`, undone when `pidlegetSpinning`
    /// finds no P.
    pub fn claim_wake(&self) -> bool {
        self.count.compare_exchange(0, 1, SeqCst, SeqCst).is_ok()
    }

    /// How many Ms are spinning now.
    pub fn count(&self) -> usize {
        self.count.load(SeqCst)
    }
}

/// Where `find` looks for a G. The runtime supplies the mechanics (its queues, its
/// netpoller, its random numbers); [`Finder`] supplies the order and the fairness.
pub trait Sources {
    /// What the sources hand out: a G, or a token for one.
    type G;
    /// The P's own queue: `runnext` first, then the local ring. Go: `runqget`.
    fn local(&mut self) -> Option<Self::G>;
    /// The global queue (it may move a batch into the local ring too, when that is empty).
    /// Go: `globrunqget`.
    fn global(&mut self) -> Option<Self::G>;
    /// A non-blocking poll of the network (`None` until chapter 10). Go: `netpoll(0)`.
    fn netpoll(&mut self) -> Option<Self::G>;
    /// Steals from P `victim` (half its ring into ours, returning one); with
    /// `runnext_too` it may also take the victim's `runnext`. Go: `runqsteal`.
    fn steal(&mut self, victim: usize, runnext_too: bool) -> Option<Self::G>;
    /// A cheap random number. Go: `cheaprand`.
    fn random(&mut self) -> u32;
}

/// One P's `findRunnable` state: its index, the P count, its schedtick and its victim
/// order. Owned by the P, so it needs no synchronisation.
#[derive(Clone, Debug)]
pub struct Finder {
    me: usize,
    procs: usize,
    schedtick: u32,
    order: VictimOrder,
}

impl Finder {
    /// The finder of P `me` in a runtime of `procs` Ps.
    pub fn new(me: usize, procs: usize) -> Finder {
        Finder {
            me,
            procs,
            schedtick: 0,
            order: VictimOrder::new(procs),
        }
    }

    /// The P count changed (Go: `procresize`): steal from `0..procs` from now on.
    pub fn resize(&mut self, procs: usize) {
        if procs != self.procs {
            self.procs = procs;
            self.order = VictimOrder::new(procs);
        }
    }

    /// This P's index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// The P count this finder steals over.
    pub fn procs(&self) -> usize {
        self.procs
    }

    /// One pass in Go's order, returning the first G found:
    ///
    /// 1. every [`GLOBAL_EVERY`]th schedtick (and the first), the global queue;
    /// 2. the local queue (`runnext`, then the ring);
    /// 3. the global queue;
    /// 4. the netpoller, without blocking;
    /// 5. if `may_steal`, [`STEAL_ROUNDS`] rounds over every other P in a fresh
    ///    [`VictimOrder`] walk each, taking the victim's `runnext` only in the last round
    ///    (it was just readied and its owner will likely run it soon; Go: `stealWork`).
    ///
    /// Counts a schedtick when it returns a G. `None`: nothing anywhere; the runtime then
    /// parks with the spinning protocol. Never steals from its own P.
    pub fn find<S: Sources>(&mut self, sources: &mut S, may_steal: bool) -> Option<S::G> {
        let found = self.look(sources, may_steal);
        if found.is_some() {
            self.schedtick = self.schedtick.wrapping_add(1);
        }
        found
    }

    fn look<S: Sources>(&self, sources: &mut S, may_steal: bool) -> Option<S::G> {
        if self.schedtick.is_multiple_of(GLOBAL_EVERY)
            && let Some(g) = sources.global()
        {
            return Some(g);
        }
        if let Some(g) = sources.local() {
            return Some(g);
        }
        if let Some(g) = sources.global() {
            return Some(g);
        }
        if let Some(g) = sources.netpoll() {
            return Some(g);
        }
        // With one P there is nobody to steal from: do not spend random numbers on it.
        if !may_steal || self.procs < 2 {
            return None;
        }
        for round in 0..STEAL_ROUNDS {
            let runnext_too = round + 1 == STEAL_ROUNDS;
            let random = sources.random();
            for victim in self.order.visit(random) {
                if victim == self.me {
                    continue;
                }
                if let Some(g) = sources.steal(victim, runnext_too) {
                    return Some(g);
                }
            }
        }
        None
    }

    /// How many Gs `find` has returned (wrapping). Go: `pp.schedtick`.
    pub fn schedtick(&self) -> u32 {
        self.schedtick
    }
}
