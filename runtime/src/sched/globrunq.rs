//! The global run queue (Go: `sched.runq`, `globrunqput`, `globrunqget`): where a full P
//! ring spills half of itself, where Gs made outside any M go, and where Ms look every 61st
//! time and when their own queues are empty.
//!
//! A `VecDeque` under its own lock, like Go's, rather than a lock-free queue: it is used in
//! batches (a ring spills 129 Gs at once, a P takes back up to 128), and one lock for a batch
//! costs less than a compare-and-swap per G. Its length is mirrored in an atomic, so the many
//! "is it empty?" looks take no lock.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::lock;
use crate::parts::runq::Token;

pub(crate) struct GlobalQueue {
    /// A leaf lock: nothing else is taken while it is held. Never held around user code.
    q: Mutex<VecDeque<Token>>,
    len: AtomicUsize,
}

impl GlobalQueue {
    pub(crate) fn new() -> GlobalQueue {
        GlobalQueue {
            q: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
        }
    }

    pub(crate) fn push(&self, t: Token) {
        let mut q = lock(&self.q);
        q.push_back(t);
        self.len.store(q.len(), Ordering::SeqCst);
    }

    /// Adds `batch` at the tail, in order, under one lock. Go: `globrunqputbatch`.
    pub(crate) fn push_batch(&self, batch: &mut Vec<Token>) {
        if batch.is_empty() {
            return;
        }
        let mut q = lock(&self.q);
        q.extend(batch.drain(..));
        self.len.store(q.len(), Ordering::SeqCst);
    }

    /// The head, and up to `more` further Gs given to `take` in order, under one lock.
    pub(crate) fn pop_batch(&self, more: usize, mut take: impl FnMut(Token)) -> Option<Token> {
        if self.is_empty() {
            return None;
        }
        let mut q = lock(&self.q);
        let first = q.pop_front()?;
        let n = more.min(q.len());
        q.drain(..n).for_each(&mut take);
        self.len.store(q.len(), Ordering::SeqCst);
        Some(first)
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
