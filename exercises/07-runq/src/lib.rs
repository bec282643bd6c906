//! Exercise 07, `runq` (skeleton: fill in every `todo!()`).
//!
//! Part 07, `runq`: one P's run queue, Go's lock-free ring with `runnext`, overflow and
//! steal-half.
//!
//! What lives here: [`new`] makes a ring of `N` slots (Go: 256, [`CAPACITY`]) and hands out
//! its two ends. [`Local`] is the owner P's end: it pushes at the tail, pops at the head, and
//! owns the `runnext` slot that a freshly readied or spawned G jumps into, so it runs next
//! (depth first). [`Stealer`] is everybody else's end: an idle P takes half of the ring into
//! its own with [`Stealer::steal_into`]. When the ring is full, [`Local::push_back`] moves
//! the older half plus the new item out in one batch, for the runtime's global queue.
//!
//! The items are opaque [`Token`]s (the runtime's names for runnable Gs), so the ring moves
//! numbers and needs no `unsafe`: a ring that loses or duplicates a token is a wrong answer
//! the runtime reports by name, never undefined behaviour.
//!
//! How: `head` and `tail` are `u32` counters that only grow (wrapping); slot `i % N` holds
//! item `i`. Only the owner writes slots and stores `tail`; everyone who takes items (the
//! owner's pop, thieves, the owner's overflow) reads the slots first and then commits by a
//! compare-and-swap of `head`, so exactly one taker wins each item and a loser reads again.
//!
//! Go: `p.runqhead`, `p.runqtail`, `p.runq`, `p.runnext`; `runqput`, `runqputslow`,
//! `runqget`, `runqgrab`, `runqsteal`, `runqlen` (`runtime/proc.go`).
//!
//! Not here: the global queue the overflow goes to and the order in which Ps look for work
//! (part 08), the map from tokens to Gs (`gmp`'s scheduler).
//!
//! Book: chapter 7, "Run queues" (`book/src/ch07-runq.md`).
#![warn(missing_docs)]
// A skeleton's parameters are unused until you fill it in.
#![allow(unused_variables, dead_code, unused_imports, unused_mut)]

mod sync;

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU64;

use sync::Ordering::{AcqRel, Acquire, Relaxed, Release};
use sync::{Arc, AtomicU32, AtomicU64};

/// An opaque item: the runtime's name for a runnable G. The ring only moves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token(NonZeroU64);

impl Token {
    /// A token with the value `v` (the runtime uses a G's id).
    pub const fn new(v: NonZeroU64) -> Token {
        Token(v)
    }

    /// The value this token was made from.
    pub const fn get(self) -> NonZeroU64 {
        self.0
    }

    /// The token stored in a slot as `bits`. A 0 means a take read a slot no push had filled.
    fn from_bits(bits: u64) -> Token {
        match NonZeroU64::new(bits) {
            Some(v) => Token(v),
            None => panic!(
                "runq: took an empty slot (0) as a token: a take read a slot outside [head, \
                 tail), or before the push that fills it was visible (tail stored before the \
                 slot, or without Release; book: ch07-runq.html#step-5)"
            ),
        }
    }

    fn bits(self) -> u64 {
        self.0.get()
    }
}

/// The number of slots of a P's ring in the runtime. Go: `len(p.runq)`.
pub const CAPACITY: usize = 256;

/// The shared state of one ring.
struct Ring<const N: usize> {
    /// The next item to take. Any taker advances it, by compare-and-swap only.
    head: AtomicU32,
    /// The next free slot. Only the owner stores it.
    tail: AtomicU32,
    /// The token that runs before the ring's items, or 0. Go: `p.runnext`.
    runnext: AtomicU64,
    /// Item `i` lives in `slots[i % N]`, as its token's bits.
    slots: Box<[AtomicU64]>,
}

impl<const N: usize> Ring<N> {
    fn slot(&self, i: u32) -> &AtomicU64 {
        // N is a power of two (checked by `new`), so the mask is `i % N`, also across the wrap.
        &self.slots[i as usize & (N - 1)]
    }
}

/// A new empty ring of `N` slots: the owner's end and a first stealer (clone it for more).
///
/// # Panics
///
/// If `N` is not a power of two between 2 and 2^31: the ring indexes its slots with
/// wrapping `u32` counters modulo `N`, which stays correct across the wrap only then.
pub fn new<const N: usize>() -> (Local<N>, Stealer<N>) {
    new_at(0)
}

/// Like [`new`], with `head` and `tail` starting at `start` instead of 0: the tests start
/// near `u32::MAX` to check that the ring keeps working when its counters wrap (after 2^32
/// pushes, a few hours of a busy P).
///
/// # Panics
///
/// As [`new`].
pub fn new_at<const N: usize>(start: u32) -> (Local<N>, Stealer<N>) {
    assert!(
        N >= 2 && N.is_power_of_two() && N <= 1 << 31,
        "runq::new::<{N}>: the capacity must be a power of two from 2 to 2^31 (the ring \
         indexes slots by wrapping u32 counters modulo N); the runtime uses runq::CAPACITY = 256"
    );
    let ring = Arc::new(Ring::<N> {
        head: AtomicU32::new(start),
        tail: AtomicU32::new(start),
        runnext: AtomicU64::new(0),
        slots: (0..N).map(|_| AtomicU64::new(0)).collect(),
    });
    let stealer = Stealer { ring: ring.clone() };
    let local = Local {
        ring,
        not_sync: PhantomData,
    };
    (local, stealer)
}

/// The owner P's end of a ring: push, pop, and the target of its own steals.
///
/// `Send` (a P moves between Ms) but not `Sync` and not `Clone`: only the P that owns the
/// ring pushes to it, which is what lets `push_back` store `tail` without a
/// compare-and-swap.
pub struct Local<const N: usize = CAPACITY> {
    ring: Arc<Ring<N>>,
    /// `Cell` is `Send + !Sync`: so is `Local`.
    not_sync: PhantomData<Cell<()>>,
}

impl<const N: usize> Local<N> {
    /// Puts `token` at the tail. Go: `runqput(pp, gp, next=false)`.
    ///
    /// On a full ring, moves the older half of the ring (`N/2` items, oldest first) and then
    /// `token` out through `overflow`, in FIFO order: the runtime puts them on its global
    /// queue (Go: `runqputslow`). `overflow` must not panic: the items it has not been handed
    /// yet would be lost.
    pub fn push_back(&mut self, token: Token, mut overflow: impl FnMut(Token)) {
        todo!(
            "ch07 step 1: put the token at the tail, or on a full ring call push_overflow (book: ch07-runq.html#step-1)"
        )
    }

    /// The full-ring path of `push_back`: commits the older half as taken, then hands it and
    /// `token` to `overflow`. `false` if a thief moved `head` first. Go: `runqputslow`.
    fn push_overflow(&self, token: Token, head: u32, overflow: &mut impl FnMut(Token)) -> bool {
        todo!(
            "ch07 step 2: commit the older half as taken, then hand it and the token to overflow (book: ch07-runq.html#step-2)"
        )
    }

    /// Puts `token` in `runnext`, so it is the next one [`pop`](Local::pop) returns; the token
    /// it displaces goes to the tail with [`push_back`](Local::push_back) (same overflow
    /// rule). Go: `runqput(pp, gp, next=true)`.
    pub fn push_next(&mut self, token: Token, overflow: impl FnMut(Token)) {
        todo!(
            "ch07 step 3: swap the token into runnext and push_back the one it displaces (book: ch07-runq.html#step-3)"
        )
    }

    /// The next token to run: `runnext` first, then the ring's head. Go: `runqget`.
    pub fn pop(&mut self) -> Option<Token> {
        todo!(
            "ch07 step 1: take the ring's head by compare-and-swap; runnext first comes in step 3 (book: ch07-runq.html#step-1)"
        )
    }

    /// How many tokens this P holds: the ring's items plus `runnext`.
    pub fn len(&self) -> usize {
        todo!(
            "ch07 step 1: tail minus head, wrapping, plus one if runnext holds a token (book: ch07-runq.html#step-1)"
        )
    }

    /// Does this P hold no token (ring and `runnext` empty)?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Another stealer of this ring, for the other Ps.
    pub fn stealer(&self) -> Stealer<N> {
        Stealer {
            ring: self.ring.clone(),
        }
    }
}

impl<const N: usize> fmt::Debug for Local<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "runq::Local<{N}> ({} tokens)", self.len())
    }
}

/// Every other P's end of a ring: steal from it, or look at how full it is. `Send + Sync`.
#[derive(Clone)]
pub struct Stealer<const N: usize = CAPACITY> {
    ring: Arc<Ring<N>>,
}

impl<const N: usize> Stealer<N> {
    /// Moves half of this (the victim's) ring, rounded up, into `thief`'s ring and returns
    /// one of the moved tokens to run now (the newest of them). When the victim's ring is
    /// empty and `runnext_too`, takes its `runnext` instead. `None`: nothing to take.
    /// Go: `runqsteal`, `runqgrab`.
    ///
    /// Go calls this only with an empty thief ring; here the batch is cut to the room the
    /// thief's ring has, so a steal never overflows it.
    ///
    /// # Panics
    ///
    /// If `thief` is this very ring: a P takes its own work with [`Local::pop`].
    pub fn steal_into(&self, thief: &mut Local<N>, runnext_too: bool) -> Option<Token> {
        todo!(
            "ch07 step 4: grab half the victim's ring into the thief's and return one to run (book: ch07-runq.html#step-4)"
        )
    }

    /// How many tokens the victim holds (ring plus `runnext`): a racy snapshot, for "is
    /// there work anywhere". It may be stale the moment it returns.
    pub fn len(&self) -> usize {
        todo!(
            "ch07 step 1: the same count from a stealer, as a racy snapshot (book: ch07-runq.html#step-1)"
        )
    }

    /// Does the victim look empty right now (ring and `runnext`)? A racy snapshot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<const N: usize> fmt::Debug for Stealer<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "runq::Stealer<{N}> (about {} tokens)", self.len())
    }
}
