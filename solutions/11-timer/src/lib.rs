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
        self.heap.len()
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
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&s| s != FREE)
                    .expect("timer: 2^32 - 1 timers wait in one heap, the most it indexes");
                self.slots.push(Slot {
                    index: FREE,
                    generation: 0,
                });
                slot
            }
        };
        let index = self.heap.len();
        self.heap.push(Entry { when, token, slot });
        self.slots[slot as usize].index = index as u32;
        self.sift_up(index);
        TimerId((u64::from(self.slots[slot as usize].generation) << 32) | u64::from(slot))
    }

    /// Takes the timer `id` out before it fires; `false` if it already fired or was
    /// cancelled (then nothing changes). Go: `deltimer`.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        match self.index_of(id) {
            Some(index) => {
                self.remove_at(index);
                true
            }
            None => false,
        }
    }

    /// Moves timer `id` to fire at `when` instead; `false` if it already fired or was
    /// cancelled (then nothing changes: add a new timer). Go: `modtimer` on a waiting timer.
    pub fn reset(&mut self, id: TimerId, when: u64) -> bool {
        let Some(index) = self.index_of(id) else {
            return false;
        };
        let earlier = when < self.heap[index].when;
        self.heap[index].when = when;
        if earlier {
            self.sift_up(index);
        } else {
            self.sift_down(index);
        }
        true
    }

    /// The deadline of the earliest waiting timer, `None` if none waits. `&mut self` so a
    /// heap with lazy deletion may first drop cancelled timers off its top (Go:
    /// `cleantimers`); this one has none. Go: `timers.wakeTime`.
    pub fn next_deadline(&mut self) -> Option<u64> {
        self.heap.first().map(|e| e.when)
    }

    /// Takes out every timer with `when <= now`, earliest first, and hands each token to
    /// `fire`; returns how many fired. Timers due at the same instant fire in any order.
    /// Go: `checkTimers` -> `runtimer`.
    ///
    /// `fire` runs with the heap borrowed, so it cannot add timers; the runtime collects
    /// the tokens and acts on them after. If `fire` panics, the timers it has not been
    /// handed yet stay in the heap.
    pub fn run_expired(&mut self, now: u64, mut fire: impl FnMut(Token)) -> usize {
        let mut fired = 0;
        while let Some(first) = self.heap.first() {
            if first.when > now {
                break;
            }
            let entry = self.remove_at(0);
            fired += 1;
            fire(entry.token);
        }
        fired
    }

    /// The heap index of timer `id`, if it still waits.
    fn index_of(&self, id: TimerId) -> Option<usize> {
        let slot = self.slots.get((id.0 & u64::from(u32::MAX)) as usize)?;
        let waiting = slot.index != FREE && u64::from(slot.generation) == id.0 >> 32;
        waiting.then_some(slot.index as usize)
    }

    /// Takes the entry at heap index `index` out: the last entry fills the hole and moves
    /// up or down to where it belongs; the slot is freed with a new generation.
    fn remove_at(&mut self, index: usize) -> Entry {
        let last = self.heap.len() - 1;
        self.heap.swap(index, last);
        let removed = self
            .heap
            .pop()
            .expect("remove_at is called on a non-empty heap");
        if index < self.heap.len() {
            self.slots[self.heap[index].slot as usize].index = index as u32;
            // The entry moved into the hole came from a leaf: it may belong above the hole
            // (it was in another subtree) or below it. One of the two moves nothing.
            self.sift_up(index);
            self.sift_down(index);
        }
        let slot = &mut self.slots[removed.slot as usize];
        slot.index = FREE;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(removed.slot);
        removed
    }

    /// Moves the entry at `index` up while it is due before its parent. Go: `siftupTimer`.
    fn sift_up(&mut self, mut index: usize) {
        let moving = self.heap[index];
        while index > 0 {
            let parent = (index - 1) / ARITY;
            if self.heap[parent].when <= moving.when {
                break;
            }
            self.place(index, self.heap[parent]);
            index = parent;
        }
        self.place(index, moving);
    }

    /// Moves the entry at `index` down while a child is due before it, always to the
    /// earliest child. Go: `siftdownTimer`.
    fn sift_down(&mut self, mut index: usize) {
        let moving = self.heap[index];
        let len = self.heap.len();
        loop {
            let first = index * ARITY + 1;
            if first >= len {
                break;
            }
            let children = first..(first + ARITY).min(len);
            let earliest = children
                .min_by_key(|&c| self.heap[c].when)
                .expect("a range that starts below len is not empty");
            if self.heap[earliest].when >= moving.when {
                break;
            }
            self.place(index, self.heap[earliest]);
            index = earliest;
        }
        self.place(index, moving);
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
