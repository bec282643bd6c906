//! A G's stack: taken from part 05's pool and charged to the process's map budget
//! (`maps.rs`) first, so running out of `vm.max_map_count` is a named error with room left
//! for malloc. Go: `stackalloc` / `stackfree` in `stack.go`.
//!
//! Not here: the pool itself (part 05), the budget's counting of `/proc/self/maps`
//! (`maps.rs`), when a G takes and gives back its stack (`g.rs`).

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::m::with_m;
use super::{Runtime, Shared};
use crate::builder::{HOT_STACKS, StackLayout};
use crate::lock;
use crate::maps;
use crate::parts::stack::{self, GUARD_REGIONS_SINCE, SLAB_CHUNK, StackMode};
use crate::task;

impl Runtime {
    /// How this runtime's G stacks are laid out: what the builder chose, or by default
    /// guarded slab stacks where the kernel has guard regions (Linux 6.13), else guarded.
    pub fn stack_layout(&self) -> StackLayout {
        match self.shared.stacks.mode() {
            StackMode::Guarded => StackLayout::Guarded,
            StackMode::GuardedSlab => StackLayout::GuardedSlab,
            StackMode::Slab => StackLayout::Slab,
        }
    }
}

/// Finished Gs' stacks a P keeps for its next Gs. Sixteen sent about one G in ten of a
/// nested fib to the pool, whose lock and cold stack lines the other M then shared: at two
/// Ps, 64 took a twentieth off fib(35) (73 to 70 ms) and 6% off its CPU. (Go keeps fewer,
/// as its stacks start small and its pool refills a cache in batches.) Bounded per P, not
/// per G: at most 64 stacks' touched pages stay resident while a P idles.
pub(crate) const P_STACK_CACHE: usize = 64;

/// Why the pool said no, until when that answer stands without asking again.
pub(super) struct Refusal {
    why: String,
    at: Instant,
    until: Instant,
    /// `maps::generation()` then: a runtime dropped since may have unmapped its stacks.
    generation: u64,
}

/// The shortest and longest time a refusal stands.
const REFUSAL_HOLD: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

impl Refusal {
    /// Holds 100 times as long as finding out took, so asking again costs at most 1% of the
    /// time; but at least 100 ms and at most 1 s, so a slow count on a loaded machine does
    /// not refuse for long after Gs have given their stacks back.
    fn new(why: String, took: Duration) -> Refusal {
        let now = Instant::now();
        Refusal {
            why,
            at: now,
            until: now + (took * 100).clamp(REFUSAL_HOLD.0, REFUSAL_HOLD.1),
            generation: maps::generation(),
        }
    }

    fn holds(&self) -> bool {
        Instant::now() < self.until && self.generation == maps::generation()
    }

    /// The refusal again, saying how old its figures are.
    fn repeat(&self) -> String {
        format!(
            "{} (as found {} ms ago)",
            self.why,
            self.at.elapsed().as_millis()
        )
    }
}

impl Shared {
    /// A stack for G `owner`, or why there is none. The pool may map only while the
    /// process keeps `maps::kept_mappings` free (see `maps.rs`), whatever part 05 does.
    /// The caller gives it back with `stack_returned` once the stack is dropped.
    pub(crate) fn alloc_stack(&self, owner: u64) -> Result<stack::GStack, String> {
        // The P's cache first: a finished G's stack, still held and paid for, pages warm.
        let cached = with_m(self.id, |m| m.p.as_mut().and_then(|p| p.stacks.pop())).flatten();
        if let Some(mut stack) = cached {
            stack.set_owner(owner);
            return Ok(stack);
        }
        let held = self.held_stacks.fetch_add(1, Relaxed) + 1;
        let got = self.alloc_charged(owner, held);
        if got.is_err() {
            self.held_stacks.fetch_sub(1, Relaxed);
        }
        got
    }

    /// A G ran to its end on this thread: its stack (`None` if the engine kept it) goes to
    /// the P's cache, or back to the pool when the cache is full. Go: `stackfree` into
    /// `p.mcache.stackcache`.
    pub(crate) fn stack_finished(&self, stack: Option<stack::GStack>) {
        let Some(stack) = stack else {
            self.stack_returned();
            return;
        };
        let full = with_m(self.id, |m| match m.p.as_mut() {
            Some(p) if p.stacks.len() < P_STACK_CACHE => {
                p.stacks.push(stack);
                None
            }
            _ => Some(stack),
        });
        // Not on an M of ours (or the cache is full): to the pool.
        if full.is_none_or(|left| left.is_some()) {
            self.stack_returned();
        }
    }

    /// Gives back the pages of the pool's free stacks past the hot limit (part 05's
    /// `release_cold`), if there are any: sysmon calls this about once a second, so a
    /// program that has never freed that many stacks never calls a learner's unfinished
    /// `release_cold`. Returns how many stacks' pages went back. Go: `bgscavenge`.
    pub(super) fn release_cold_stacks(&self) -> Result<usize, String> {
        panic::catch_unwind(AssertUnwindSafe(|| {
            if self.stacks.stats().free <= HOT_STACKS {
                return 0;
            }
            self.stacks.release_cold()
        }))
        .map_err(|payload| {
            format!(
                "stack (part 05): StackPool::stats or release_cold panicked: {} (book: \
                 ch05-stack.html#step-2)",
                task::payload_message(&*payload).unwrap_or("a non-string panic")
            )
        })
    }

    /// A stack from part 05 has been dropped (back in the pool).
    pub(crate) fn stack_returned(&self) {
        self.held_stacks.fetch_sub(1, Relaxed);
    }

    fn alloc_charged(&self, owner: u64, held: usize) -> Result<stack::GStack, String> {
        // A pool that reuses its free stacks maps only when this runtime holds more stacks
        // than ever before: pay for those first, by the runtime's own count.
        self.pay_up_to(held)?;
        let stack = self.stacks.alloc(owner).map_err(|e| {
            let mut why = e.to_string();
            if why.contains("vm.max_map_count") {
                why.push_str(&format!(
                    " (in gmp: Runtime::builder().guarded_slab_stacks() on Linux \
                     {GUARD_REGIONS_SINCE} or later, else unsafe {{ ....slab_stacks() }})"
                ));
            }
            maps::spend_all();
            *lock(&self.stack_refusal) = Some(Refusal::new(why.clone(), Duration::ZERO));
            why
        })?;
        // A pool that maps although it has free stacks shows in its own count: pay for
        // that now, or give the stack back (its mapping stays: at most one stack per M).
        if let Err(why) = self.pay_up_to(self.stacks.stats().mapped) {
            drop(stack);
            return Err(why);
        }
        Ok(stack)
    }

    /// Charges the map budget for `stacks` stacks in all, if more than already paid.
    fn pay_up_to(&self, stacks: usize) -> Result<(), String> {
        let paid = self.paid_stacks.load(Relaxed);
        if stacks <= paid {
            return Ok(());
        }
        let cost = self.mappings_for(stacks) - self.mappings_for(paid);
        if cost > 0 && !maps::take(cost) {
            self.make_room(cost)?;
        }
        self.paid_stacks.fetch_max(stacks, Relaxed);
        Ok(())
    }

    /// Mappings that `stacks` stacks take at most: a guarded stack is 2 (stack and guard),
    /// a chunk of `SLAB_CHUNK` slab or guarded-slab stacks 1 (its guard regions live inside
    /// the one mapping: `madvise(MADV_GUARD_INSTALL)` splits no VMA).
    fn mappings_for(&self, stacks: usize) -> usize {
        if self.slab {
            stacks.div_ceil(SLAB_CHUNK)
        } else {
            2 * stacks
        }
    }

    /// Counts the mappings (unless a recent refusal still holds) and says whether the pool
    /// may map `cost` more.
    fn make_room(&self, cost: usize) -> Result<(), String> {
        let mut refusal = lock(&self.stack_refusal);
        if let Some(r) = refusal.as_ref().filter(|r| r.holds()) {
            return Err(r.repeat());
        }
        *refusal = None;
        maps::refill(cost).map_err(|refused| {
            let (why, took) = match refused {
                maps::Refused::Full(reading) => (self.map_limit_message(&reading), reading.took),
                maps::Refused::Uncounted { why, took } => (
                    format!(
                        "cannot count this process's memory mappings ({why}), so gmp maps no \
                         more G stacks for now: past vm.max_map_count even malloc fails"
                    ),
                    took,
                ),
            };
            *refusal = Some(Refusal::new(why.clone(), took));
            why
        })
    }

    /// The named error at the map limit: how many stacks fit, the limit, the margin and the
    /// ways out.
    fn map_limit_message(&self, reading: &maps::Reading) -> String {
        let stacks = self.paid_stacks.load(Relaxed);
        let (mode, each, way_out) = match self.stacks.mode() {
            StackMode::Guarded => (
                "guarded",
                "2 mappings each".to_string(),
                if stack::guard_regions().is_ok() {
                    format!(
                        "use guarded slab stacks (Runtime::builder().guarded_slab_stacks(): \
                         {SLAB_CHUNK} stacks per mapping, each above a guard region), "
                    )
                } else {
                    format!(
                        "on Linux {GUARD_REGIONS_SINCE} or later use guarded slab stacks \
                         (Runtime::builder().guarded_slab_stacks(): {SLAB_CHUNK} per mapping, \
                         each guarded); here only slab stacks (unsafe {{ \
                         Runtime::builder().slab_stacks() }}: no guard pages), "
                    )
                },
            ),
            StackMode::GuardedSlab => (
                "guarded slab",
                format!("{SLAB_CHUNK} per mapping"),
                String::new(),
            ),
            StackMode::Slab => ("slab", format!("{SLAB_CHUNK} per mapping"), String::new()),
        };
        format!(
            "out of memory mappings: {stacks} {mode} stacks fit in this runtime ({each}); the \
             process has {} of vm.max_map_count = {} mappings, and gmp keeps the last {} for \
             malloc, thread stacks and the rest of the process; {way_out}keep fewer Gs alive \
             at once, or raise the limit (sudo sysctl -w vm.max_map_count=262144)",
            reading.mappings.unwrap_or(0),
            reading.headroom.max_map_count,
            reading.headroom.kept
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_stands_one_second_at_most_and_says_how_old_it_is() {
        // A count of 300 ms on a loaded machine: 100 times that would be 30 s of refusals.
        let r = Refusal::new("no room".to_string(), Duration::from_millis(300));
        assert!(
            r.until - r.at <= REFUSAL_HOLD.1,
            "held {:?}",
            r.until - r.at
        );
        assert!(r.holds());
        let again = r.repeat();
        assert!(
            again.starts_with("no room (as found ") && again.ends_with(" ms ago)"),
            "{again}"
        );
        let quick = Refusal::new("no room".to_string(), Duration::ZERO);
        assert_eq!(quick.until - quick.at, REFUSAL_HOLD.0, "the shortest hold");
    }
}
