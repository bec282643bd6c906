//! The table of live Gs (Go: `allgs`) and the runtime's side of every run queue: a runnable
//! G is put in its slot's `queued` cell and travels through the queues as a [`Token`], a
//! plain number. Part 07's ring and the other queues only move tokens; the G comes back out
//! of the table through [`GTable::take_queued`], which hands each queued G out exactly once.
//!
//! That is what keeps a broken ring sound: a token handed out twice, forged, or for a G that
//! was never queued finds an empty cell or a G of another id and becomes a named error, never
//! a second M resuming the same G. Go's ring holds `*g` pointers directly and trusts itself.
//!
//! Slots live in chunks allocated once and kept until the runtime is dropped, so a slot's
//! address never changes and reading it needs no lock. Each P keeps a few free slot numbers
//! of its own (`SlotCache`), so spawning and exiting take no shared lock on the hot path.
//!
//! Not here: the queues themselves (part 07's ring in `p.rs`, the global queue and each M's
//! queue of started Gs in `mod.rs`).

use std::num::NonZeroU64;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::live::{LiveCell, Readers};
use crate::g::G;
use crate::lock;
use crate::parts::runq::Token;

/// Slots per chunk, and chunks at most: 4,194,304 live Gs.
const CHUNK: usize = 4096;
const CHUNKS: usize = 1024;
/// The most Gs alive at once in one runtime.
pub(crate) const MAX_LIVE_GS: usize = CHUNK * CHUNKS;

/// Free slot numbers a P keeps before giving half back, and takes at once when empty.
const CACHE_MAX: usize = 128;
const CACHE_BATCH: usize = 64;

pub(crate) struct GTable {
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
    /// Slots never used yet: the next one to hand out.
    next: AtomicU32,
    /// Slots given back by Ps with full caches, and by Gs ending off any P.
    free: Mutex<Vec<u32>>,
    /// Dumps and shutdown, reading `live` cells while their Gs come and go (`live.rs`).
    readers: Readers<G>,
}

/// Each slot on a cache line of its own. A G's slot is written when it is entered, queued,
/// taken and freed, by whichever M does it, and slots move between the Ps' caches as Gs
/// cross; packed four to a line, two Ps' slots shared lines, which cost a nested fib at two
/// Ps several percent more CPU once the P's LIFO (`p.rs`) had removed the costs that hid it
/// (book, chapter 8). A line pair (128 bytes) measured the same. The price: 48 bytes more
/// per slot, so a chunk of 4,096 slots takes 256 KiB, written when it is made.
#[repr(align(64))]
struct Slot {
    /// The live G, for dumps and shutdown. Go: `allgs`. Filled at a G's start, taken at its
    /// end, read under the table's `readers` guard: no lock on the path every G takes.
    live: LiveCell<G>,
    /// While the G is queued somewhere: a strong count of it, from `Arc::into_raw`.
    queued: AtomicPtr<G>,
}

/// A P's own free slot numbers.
#[derive(Default)]
pub(crate) struct SlotCache(Vec<u32>);

/// What a queue handed out that the table cannot honour. Each names the rule broken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// The cell was empty: this G's token came out of a queue twice, or was never put in.
    HandedOutTwice { g: u32 },
    /// The cell holds another G: a stale token (its G finished, the slot was reused).
    Stale { g: u32, found: u64 },
    /// The token names no slot the table ever gave out.
    Forged { token: u64 },
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::HandedOutTwice { g } => write!(
                f,
                "G {g} handed out twice: its token came out of a run queue when it was not in one"
            ),
            TokenError::Stale { g, found } => write!(
                f,
                "a token of G {g} came out of a run queue after G {g} had left it (its slot \
                 now holds G {found}): a token handed out twice"
            ),
            TokenError::Forged { token } => write!(
                f,
                "token {token:#x} came out of a run queue but was never put into one"
            ),
        }
    }
}

impl GTable {
    pub(crate) fn new() -> GTable {
        GTable {
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
            next: AtomicU32::new(0),
            free: Mutex::new(Vec::new()),
            readers: Readers::new(),
        }
    }

    fn slot(&self, index: u32) -> Option<&Slot> {
        let index = index as usize;
        let chunk = self.chunks.get(index / CHUNK)?.get()?;
        Some(&chunk[index % CHUNK])
    }

    fn slot_or_make(&self, index: u32) -> &Slot {
        let index = index as usize;
        let chunk = self.chunks[index / CHUNK].get_or_init(|| {
            (0..CHUNK)
                .map(|_| Slot {
                    live: LiveCell::new(),
                    queued: AtomicPtr::new(ptr::null_mut()),
                })
                .collect()
        });
        &chunk[index % CHUNK]
    }

    /// Enters `g` in a free slot (from `cache` when there is one) and sets `G::slot`.
    ///
    /// # Errors
    ///
    /// When [`MAX_LIVE_GS`] Gs are alive: the message names the limit.
    pub(crate) fn insert(&self, g: &Arc<G>, cache: Option<&mut SlotCache>) -> Result<(), String> {
        let index = match cache {
            Some(cache) => match cache.0.pop() {
                Some(i) => Some(i),
                None => {
                    let mut free = lock(&self.free);
                    let from = free.len().saturating_sub(CACHE_BATCH);
                    cache.0.extend(free.drain(from..));
                    drop(free);
                    cache.0.pop()
                }
            },
            None => lock(&self.free).pop(),
        };
        let index = match index {
            Some(i) => i,
            None => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                if i as usize >= MAX_LIVE_GS {
                    self.next.fetch_sub(1, Ordering::Relaxed);
                    return Err(format!(
                        "G {} could not start: {MAX_LIVE_GS} Gs are alive, the most one gmp \
                         runtime holds; wait for some to finish before starting more",
                        g.id()
                    ));
                }
                i
            }
        };
        g.slot.store(index, Ordering::Relaxed);
        self.slot_or_make(index).live.fill(g.clone());
        Ok(())
    }

    /// Takes `g` out of the table; its slot goes to `cache` (or the shared list).
    pub(crate) fn remove(&self, g: &G, cache: Option<&mut SlotCache>) {
        let index = g.slot.load(Ordering::Relaxed);
        let Some(slot) = self.slot(index) else { return };
        // Not there: shutdown took it first, and keeps the slot.
        if !slot.live.take_if(g, &self.readers) {
            return;
        }
        match cache {
            Some(cache) => {
                cache.0.push(index);
                if cache.0.len() > CACHE_MAX {
                    lock(&self.free).extend(cache.0.drain(..CACHE_BATCH));
                }
            }
            None => lock(&self.free).push(index),
        }
    }

    /// Marks `g` queued and returns its token.
    ///
    /// # Errors
    ///
    /// If `g` is queued already (part 06 readied it twice, say): the message names the G.
    pub(crate) fn put_queued(&self, g: Arc<G>) -> Result<Token, String> {
        let index = g.slot.load(Ordering::Relaxed);
        let id = g.id();
        let slot = self
            .slot(index)
            .expect("gmp bug: a queued G has a slot in the table");
        let raw = Arc::into_raw(g).cast_mut();
        if let Err(_already) =
            slot.queued
                .compare_exchange(ptr::null_mut(), raw, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: `raw` came from `Arc::into_raw` just above and was not stored.
            drop(unsafe { Arc::from_raw(raw) });
            return Err(format!(
                "G {id} was put in a run queue while already in one: part 06 (g) answered \
                 Ready::Enqueue twice for one park, or the runtime queued it twice"
            ));
        }
        Ok(token(index, id))
    }

    /// The G a queue handed out, taken out of its cell: each queued G comes out once.
    pub(crate) fn take_queued(&self, token: Token) -> Result<Arc<G>, TokenError> {
        let bits = token.get().get();
        let g = (bits >> 32) as u32;
        let index = (bits as u32).wrapping_sub(1);
        let slot = self.slot(index).ok_or(TokenError::Forged { token: bits })?;
        let raw = slot.queued.swap(ptr::null_mut(), Ordering::AcqRel);
        if raw.is_null() {
            return Err(TokenError::HandedOutTwice { g });
        }
        // SAFETY: a non-null `queued` is always a count from `Arc::into_raw` (`put_queued`),
        // and the swap above made this call its only owner.
        let taken = unsafe { Arc::from_raw(raw) };
        if taken.id() as u32 != g {
            let found = taken.id();
            // Give the other G its cell back: only `put_queued` of that G fills it, and that
            // G is still queued (its cell was full), so nobody else writes it meanwhile.
            slot.queued
                .store(Arc::into_raw(taken).cast_mut(), Ordering::Release);
            return Err(TokenError::Stale { g, found });
        }
        Ok(taken)
    }

    /// Every live G (for dumps and shutdown).
    pub(crate) fn live(&self) -> Vec<Arc<G>> {
        let used = (self.next.load(Ordering::Relaxed) as usize).min(MAX_LIVE_GS);
        let guard = self.readers.read();
        (0..used as u32)
            .filter_map(|i| self.slot(i).and_then(|s| s.live.clone_out(&guard)))
            .collect()
    }

    /// Takes every live G out of the table and every queued count out of the queues'
    /// cells (shutdown, after the Ms stopped).
    pub(crate) fn drain(&self) -> Vec<Arc<G>> {
        let used = (self.next.load(Ordering::Relaxed) as usize).min(MAX_LIVE_GS);
        let mut out = Vec::new();
        for i in 0..used as u32 {
            let Some(slot) = self.slot(i) else { continue };
            let raw = slot.queued.swap(ptr::null_mut(), Ordering::AcqRel);
            if !raw.is_null() {
                // SAFETY: as in `take_queued`: the swap made us the only owner of the count.
                drop(unsafe { Arc::from_raw(raw) });
            }
            out.extend(slot.live.take(&self.readers));
        }
        out
    }

    /// Takes the live Gs that `pick` chooses out of the table, with their queued counts
    /// (shutdown: each M takes the Gs that live on it).
    pub(crate) fn drain_where(&self, pick: impl Fn(&G) -> bool) -> Vec<Arc<G>> {
        let used = (self.next.load(Ordering::Relaxed) as usize).min(MAX_LIVE_GS);
        let mut out = Vec::new();
        let guard = self.readers.read();
        for i in 0..used as u32 {
            let Some(slot) = self.slot(i) else { continue };
            let Some(g) = slot.live.take_where(&guard, &pick) else {
                continue;
            };
            out.push(g);
            let raw = slot.queued.swap(ptr::null_mut(), Ordering::AcqRel);
            if !raw.is_null() {
                // SAFETY: as in `take_queued`: the swap made us the only owner of the count.
                drop(unsafe { Arc::from_raw(raw) });
            }
        }
        out
    }

    /// Is `g` in a queue now? (dumps)
    pub(crate) fn is_queued(&self, g: &G) -> bool {
        self.slot(g.slot.load(Ordering::Relaxed))
            .is_some_and(|s| ptr::eq(s.queued.load(Ordering::Acquire), g))
    }
}

impl Drop for GTable {
    fn drop(&mut self) {
        // Counts still in cells (a runtime that broke before draining): give them back.
        for chunk in self.chunks.iter().filter_map(OnceLock::get) {
            for slot in chunk.iter() {
                let raw = slot.queued.swap(ptr::null_mut(), Ordering::AcqRel);
                if !raw.is_null() {
                    // SAFETY: as in `take_queued`.
                    drop(unsafe { Arc::from_raw(raw) });
                }
            }
        }
    }
}

/// Slot `index` + 1 in the low half (never zero), the G's id in the high half for checks.
fn token(index: u32, id: u64) -> Token {
    let bits = ((id as u32 as u64) << 32) | (index as u64 + 1);
    Token::new(NonZeroU64::new(bits).expect("the low half is at least 1"))
}
