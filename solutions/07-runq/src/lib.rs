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
        let ring = &*self.ring;
        loop {
            // Acquire: pairs with the takers' Release commit of head, so their reads of the
            // slots they took happen before this push rewrites one of them.
            let head = ring.head.load(Acquire);
            // Relaxed: only this owner stores tail.
            let tail = ring.tail.load(Relaxed);
            if tail.wrapping_sub(head) < N as u32 {
                // Relaxed: the Release store of tail below publishes the slot.
                ring.slot(tail).store(token.bits(), Relaxed);
                // Release: whoever Acquire-loads this tail sees the slot, and everything
                // the runtime wrote to the G before pushing it.
                ring.tail.store(tail.wrapping_add(1), Release);
                return;
            }
            if self.push_overflow(token, head, &mut overflow) {
                return;
            }
            // A thief took items between our loads and the commit: there is room now.
        }
    }

    /// The full-ring path of `push_back`: commits the older half as taken, then hands it and
    /// `token` to `overflow`. `false` if a thief moved `head` first. Go: `runqputslow`.
    fn push_overflow(&self, token: Token, head: u32, overflow: &mut impl FnMut(Token)) -> bool {
        let ring = &*self.ring;
        let half = (N / 2) as u32;
        // Release, as every taker's commit: the slots it frees are rewritten only after an
        // Acquire load of head sees this. Relaxed on failure: the caller loads head again.
        if ring
            .head
            .compare_exchange(head, head.wrapping_add(half), Release, Relaxed)
            .is_err()
        {
            return false;
        }
        // The committed slots are outside [head, tail) now and only this owner writes slots,
        // so they still hold the items: read them after the commit, not into a buffer before.
        for i in 0..half {
            let bits = ring.slot(head.wrapping_add(i)).load(Relaxed);
            overflow(Token::from_bits(bits));
        }
        overflow(token);
        true
    }

    /// Puts `token` in `runnext`, so it is the next one [`pop`](Local::pop) returns; the token
    /// it displaces goes to the tail with [`push_back`](Local::push_back) (same overflow
    /// rule). Go: `runqput(pp, gp, next=true)`.
    pub fn push_next(&mut self, token: Token, overflow: impl FnMut(Token)) {
        // AcqRel: Release publishes the G to a thief that takes runnext; Acquire because a
        // thief may just have emptied it.
        let old = self.ring.runnext.swap(token.bits(), AcqRel);
        if old != 0 {
            self.push_back(Token::from_bits(old), overflow);
        }
    }

    /// The next token to run: `runnext` first, then the ring's head. Go: `runqget`.
    pub fn pop(&mut self) -> Option<Token> {
        let ring = &*self.ring;
        // Relaxed peek: a thief may take it first; the compare-and-swap decides.
        let next = ring.runnext.load(Relaxed);
        // Acquire: pairs with push_next's Release.
        if next != 0
            && ring
                .runnext
                .compare_exchange(next, 0, Acquire, Relaxed)
                .is_ok()
        {
            return Some(Token::from_bits(next));
        }
        loop {
            // Acquire: pairs with thieves' Release commits (Go: LoadAcq, "synchronize with
            // other consumers").
            let head = ring.head.load(Acquire);
            // Relaxed: only this owner stores tail.
            let tail = ring.tail.load(Relaxed);
            if head == tail {
                return None;
            }
            let bits = ring.slot(head).load(Relaxed);
            // Release: commits the take; the slot is rewritten only after it (see push_back).
            if ring
                .head
                .compare_exchange(head, head.wrapping_add(1), Release, Relaxed)
                .is_ok()
            {
                return Some(Token::from_bits(bits));
            }
            // A thief took this item first: read the new head.
        }
    }

    /// How many tokens this P holds: the ring's items plus `runnext`.
    pub fn len(&self) -> usize {
        let ring = &*self.ring;
        // Relaxed: a count, not a claim; head only grows, and tail is ours.
        let head = ring.head.load(Relaxed);
        let tail = ring.tail.load(Relaxed);
        let runnext = ring.runnext.load(Relaxed) != 0;
        tail.wrapping_sub(head) as usize + usize::from(runnext)
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
        assert!(
            !Arc::ptr_eq(&self.ring, &thief.ring),
            "runq::Stealer::steal_into: the thief is the victim's own ring; a P steals only \
             from other Ps and takes its own work with Local::pop"
        );
        let victim = &*self.ring;
        let mine = &*thief.ring;
        // Relaxed: we are the thief ring's owner, the only one who stores its tail.
        let mine_tail = mine.tail.load(Relaxed);
        // Acquire: as in push_back, the slots we are about to write were freed by takers.
        let mine_head = mine.head.load(Acquire);
        // Room in our ring; it only grows while we work (others may take from it). The
        // token we return needs no slot.
        let room = N as u32 - mine_tail.wrapping_sub(mine_head);
        loop {
            // Acquire: pairs with other takers' Release commits (Go: LoadAcq).
            let head = victim.head.load(Acquire);
            // Acquire: pairs with the victim owner's Release store of tail, so the slots
            // below tail are written.
            let tail = victim.tail.load(Acquire);
            let avail = tail.wrapping_sub(head);
            let take = avail - avail / 2;
            if take == 0 {
                if !runnext_too {
                    return None;
                }
                // Relaxed peek; the compare-and-swap decides.
                let next = victim.runnext.load(Relaxed);
                if next == 0 {
                    return None;
                }
                // Acquire: pairs with push_next's Release, so the G's state is visible.
                if victim
                    .runnext
                    .compare_exchange(next, 0, Acquire, Relaxed)
                    .is_ok()
                {
                    return Some(Token::from_bits(next));
                }
                // The owner popped it or put another one there: look again.
                continue;
            }
            if take > (N / 2) as u32 {
                // head and tail were read at different moments and do not fit together.
                continue;
            }
            let take = take.min(room + 1);
            // Copy all but the newest into our free slots: invisible to our takers until
            // our tail moves, so a failed commit below just copies again.
            for i in 0..take - 1 {
                let bits = victim.slot(head.wrapping_add(i)).load(Relaxed);
                mine.slot(mine_tail.wrapping_add(i)).store(bits, Relaxed);
            }
            let run_now = victim.slot(head.wrapping_add(take - 1)).load(Relaxed);
            // Release: commits the take; the victim's owner rewrites these slots only after
            // an Acquire load of head sees it.
            if victim
                .head
                .compare_exchange(head, head.wrapping_add(take), Release, Relaxed)
                .is_ok()
            {
                if take > 1 {
                    // Release: publishes the copied slots to our own takers.
                    mine.tail.store(mine_tail.wrapping_add(take - 1), Release);
                }
                return Some(Token::from_bits(run_now));
            }
            // Another taker won: read head and tail again.
        }
    }

    /// How many tokens the victim holds (ring plus `runnext`): a racy snapshot, for "is
    /// there work anywhere". It may be stale the moment it returns.
    pub fn len(&self) -> usize {
        let ring = &*self.ring;
        // Head first: tail only grows, so a later tail is never behind this head.
        // Acquire on both, as Go's runqlen, so the pair is from this side of recent commits.
        let head = ring.head.load(Acquire);
        let tail = ring.tail.load(Acquire);
        // Between the two loads the ring may have turned over: never report more than N.
        let items = (tail.wrapping_sub(head) as usize).min(N);
        let runnext = ring.runnext.load(Relaxed) != 0;
        items + usize::from(runnext)
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
