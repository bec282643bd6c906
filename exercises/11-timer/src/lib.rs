//! Exercise 11, `timer` (skeleton: fill in every `todo!()`).
//!
//! The private fields below are the design the book walks through (index tracking). They
//! are yours to change: only the public API is the contract, and Go's lazy deletion is
//! allowed too, as long as `len` and `next_deadline` stay exact (chapter 11, "Taking a
//! timer out of the middle: index tracking", `ch11-timer.html#index-tracking`).
//!
//! Part 11, `timer`: one P's timers, Go's 4-ary min-heap ordered by deadline.
//!
//! What lives here: [`TimerHeap`], the timers of one P. [`TimerHeap::add`] puts a [`Token`]
//! in with a deadline (`when`, nanoseconds on the runtime's monotonic clock) and returns its
//! [`TimerId`]; [`TimerHeap::cancel`] takes it out again, [`TimerHeap::reset`] moves its
//! deadline; [`TimerHeap::next_deadline`] says when the earliest is due (the runtime sleeps
//! until then), and [`TimerHeap::run_expired`] hands every token whose deadline has come to
//! the runtime, earliest first, each exactly once.
//!
//! The items are opaque [`Token`]s (the runtime's names for what a timer wakes: a sleeping
//! G, a ticker), so the heap moves numbers and needs no `unsafe`: a heap that fires a token
//! early, twice, or after it was cancelled is a wrong answer the runtime reports by name.
//!
//! How: a 4-ary heap in a `Vec` (the children of heap index `i` are `4i+1 ..= 4i+4`, its
//! parent `(i-1)/4`): a shallower tree than a binary heap, so `add` and `run_expired` climb
//! fewer levels, and the four children of an entry sit in one or two cache lines. Cancel
//! and reset reach a timer in the middle of the heap through a side table, `slots`: a
//! [`TimerId`] names a slot there, which holds the timer's current index in the heap;
//! every move in the heap updates it ("Index tracking"). A slot carries a generation, so
//! the id of a timer that fired or was cancelled never names a later timer that reuses its
//! slot.
//!
//! Rejected: Go's lazy deletion (`deltimer` marks the timer a zombie and `cleantimers` drops
//! it when it reaches the top). It needs no index, but then `len` counts zombies and
//! `next_deadline` may report a zombie's deadline unless it first cleans the top; both must
//! be exact here, because the runtime checks them against its own count. A skiplist or
//! `BTreeMap` keyed by `(when, id)`: exact and simple, but an allocation per timer and a
//! deeper, pointer-chasing structure for the one operation that matters most, "the
//! earliest".
//!
//! Go: `p.timers` (`runtime/time.go`): `addtimer`/`doaddtimer`, `deltimer`, `modtimer`,
//! `siftupTimer`, `siftdownTimer`, `runtimer` (via `checkTimers`), `timers.wakeTime`.
//!
//! Not here: the clock, what a token stands for, which P's heap a timer goes in, and who
//! runs a P's expired timers when its M is busy (`gmp`'s `sched/timer.rs`); sleeping,
//! tickers and timeouts (`gmp::time`).
//!
//! Book: chapter 11, "Timers and sleeping" (`book/src/ch11-timer.md`).
#![warn(missing_docs)]
// A skeleton's parameters are unused until you fill it in.
#![allow(unused_variables, dead_code, unused_imports, unused_mut)]

use std::fmt;
use std::num::NonZeroU64;

/// An opaque item: the runtime's name for what a timer wakes. The heap only moves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token(NonZeroU64);

impl Token {
    /// A token with the value `v`.
    pub const fn new(v: NonZeroU64) -> Token {
        Token(v)
    }

    /// The value this token was made from.
    pub const fn get(self) -> NonZeroU64 {
        self.0
    }
}

/// Names one timer of one heap, from [`TimerHeap::add`] until it fires or is cancelled.
/// Ids are per heap: an id of another heap names nothing here, or another timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

/// Children per node. Go: `timerHeapN = 4`.
pub const ARITY: usize = 4;

/// A slot's heap index while its timer waits; otherwise the slot is free.
const FREE: u32 = u32::MAX;

/// One waiting timer, as stored in the heap.
#[derive(Clone, Copy, Debug)]
struct Entry {
    when: u64,
    token: Token,
    /// Its slot in `TimerHeap::slots`, which holds this entry's heap index.
    slot: u32,
}

/// Where a timer is: its heap index (or [`FREE`]) and the generation of the slot.
#[derive(Clone, Copy, Debug)]
struct Slot {
    index: u32,
    generation: u32,
}

/// The timers of one P: a 4-ary min-heap by deadline with index tracking. Go: `p.timers`.
///
/// Not `Sync` by design of its callers: the runtime keeps each P's heap behind a mutex, so
/// the P's own M and a thief on another M (Go's `checkTimers` on a victim) take turns.
#[derive(Default)]
pub struct TimerHeap {
    /// The heap: `heap[0]` is the earliest; each entry is due no earlier than its parent.
    heap: Vec<Entry>,
    /// Index tracking: `slots[e.slot].index` is where entry `e` is in `heap` ("Index
    /// tracking" in the crate docs).
    slots: Vec<Slot>,
    /// Slots whose timer left the heap, for the next `add`.
    free: Vec<u32>,
}

impl TimerHeap {
    /// An empty heap.
    pub fn new() -> TimerHeap {
        TimerHeap::default()
    }

    /// How many timers wait (added, and neither fired nor cancelled).
    pub fn len(&self) -> usize {
        todo!("ch11 step 1: how many timers wait: the heap's length (book: ch11-timer.html#step-1)")
    }

    /// Does no timer wait?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a timer that fires `token` once `now >= when`. Go: `addtimer` / `doaddtimer`.
    ///
    /// # Panics
    ///
    /// With 2^32 - 1 timers waiting at once (the slot index is 32 bits).
    pub fn add(&mut self, when: u64, token: Token) -> TimerId {
        todo!(
            "ch11 step 1: take a free slot, push the entry at the end, sift it up, return the slot and its generation as the id (book: ch11-timer.html#step-1)"
        )
    }

    /// Takes the timer `id` out before it fires; `false` if it already fired or was
    /// cancelled (then nothing changes). Go: `deltimer`.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        todo!(
            "ch11 step 3: find the timer with index_of and take it out with remove_at (book: ch11-timer.html#step-3)"
        )
    }

    /// Moves timer `id` to fire at `when` instead; `false` if it already fired or was
    /// cancelled (then nothing changes: add a new timer). Go: `modtimer` on a waiting timer.
    pub fn reset(&mut self, id: TimerId, when: u64) -> bool {
        todo!(
            "ch11 step 4: change the deadline in place, then sift up if it is earlier, down if later (book: ch11-timer.html#step-4)"
        )
    }

    /// The deadline of the earliest waiting timer, `None` if none waits. `&mut self` so a
    /// heap with lazy deletion may first drop cancelled timers off its top (Go:
    /// `cleantimers`); this one has none. Go: `timers.wakeTime`.
    pub fn next_deadline(&mut self) -> Option<u64> {
        todo!(
            "ch11 step 1: the earliest deadline is at the root, heap[0] (book: ch11-timer.html#step-1)"
        )
    }

    /// Takes out every timer with `when <= now`, earliest first, and hands each token to
    /// `fire`; returns how many fired. Timers due at the same instant fire in any order.
    /// Go: `checkTimers` -> `runtimer`.
    ///
    /// `fire` runs with the heap borrowed, so it cannot add timers; the runtime collects
    /// the tokens and acts on them after. If `fire` panics, the timers it has not been
    /// handed yet stay in the heap.
    pub fn run_expired(&mut self, now: u64, mut fire: impl FnMut(Token)) -> usize {
        todo!(
            "ch11 step 2: while the root is due (when <= now), take it out with remove_at(0) and fire its token (book: ch11-timer.html#step-2)"
        )
    }

    /// The heap index of timer `id`, if it still waits.
    fn index_of(&self, id: TimerId) -> Option<usize> {
        todo!(
            "ch11 step 3: find the id's slot; it names a waiting timer only if the slot is in use and its generation matches (book: ch11-timer.html#step-3)"
        )
    }

    /// Takes the entry at heap index `index` out: the last entry fills the hole and moves
    /// up or down to where it belongs; the slot is freed with a new generation.
    fn remove_at(&mut self, index: usize) -> Entry {
        todo!(
            "ch11 step 2: fill the hole with the last entry, sift it up and down, free the slot with a new generation (book: ch11-timer.html#step-2)"
        )
    }

    /// Moves the entry at `index` up while it is due before its parent. Go: `siftupTimer`.
    fn sift_up(&mut self, mut index: usize) {
        todo!(
            "ch11 step 1: move the entry up past every parent (index - 1) / 4 that is due later (book: ch11-timer.html#step-1)"
        )
    }

    /// Moves the entry at `index` down while a child is due before it, always to the
    /// earliest child. Go: `siftdownTimer`.
    fn sift_down(&mut self, mut index: usize) {
        todo!(
            "ch11 step 2: move the entry down to the earliest of its children 4i+1..=4i+4 while that one is due first (book: ch11-timer.html#step-2)"
        )
    }

    /// Writes `entry` at heap index `index` and tells its slot where it is now.
    fn place(&mut self, index: usize, entry: Entry) {
        self.heap[index] = entry;
        self.slots[entry.slot as usize].index = index as u32;
    }
}

impl fmt::Debug for TimerHeap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.heap.first() {
            Some(e) => write!(
                f,
                "TimerHeap ({} timers, next at {})",
                self.heap.len(),
                e.when
            ),
            None => write!(f, "TimerHeap (empty)"),
        }
    }
}
