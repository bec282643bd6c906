//! `gmp`: a Go-style runtime built, part by part, by the workbook's chapters.
//!
//! Vocabulary, as in Go's `proc.go`:
//!
//! - **G**: a function running on its own stack (part 05) with its own saved registers (the
//!   engine: corosensei, or part 04's switch), so it can stop in the middle (park, yield)
//!   and go on later, maybe on another M. Its state machine is part 06.
//! - **M**: a kernel thread that runs Gs ("machine"), started by part 02 `osthread`.
//! - **P**: the right to run Gs. There are exactly `procs` Ps; an M needs one to run a G.
//!   (Stage 1: one M per P, so M and P are not yet separate; chapter 8 splits them.)
//! - **g0**: each M's own stack, where the scheduler runs between Gs.
//!
//! ```
//! let sum = gmp::run(|| {
//!     let handles: Vec<_> = (1..=10u64).map(|i| gmp::go(move || i * i)).collect();
//!     handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
//! });
//! assert_eq!(sum, 385);
//! ```
//!
//! What the runtime is made of, and from which chapter:
//!
//! | part | chapter | used for |
//! |------|---------|----------|
//! | `procinfo` | 1 | [`metrics`]: threads, RSS, context switches from `/proc` |
//! | `osthread` | 2 | starting the Ms, named `gmp-m<N>` |
//! | `parker` | 3 | idle Ms sleep until [`go`] has work for them; threads outside wait |
//! | `context` | 4 | the asm engine: [`Engine::Asm`], `GMP_ENGINE=asm` (x86_64) |
//! | `stack` | 5 | every G's stack, guarded or slab ([`Builder::slab_stacks`]); overflow reports |
//! | `g` | 6 | each G's state, [`park`] / [`GHandle::unpark`], run-twice and lost-wake-up checks |
//!
//! Each part comes from `solutions/` unless its `mine-NN` feature is on; [`PARTS`] says
//! which. This is stage 1 of the runtime (chapter 6): Gs with stacks, g0's loop, one global
//! run queue, a rendezvous channel ([`chan`]) and a WaitGroup ([`sync`]). Local run queues,
//! stealing, timers, the netpoller and full channels arrive chapter by chapter.
//!
//! A G may resume on another M than the one it parked on: do not keep a reference to a
//! thread-local across [`park`], [`yield_now`] or any blocking call of this crate.

pub mod builder;
pub mod chan;
mod engine;
mod g;
mod maps;
mod metrics;
mod parts;
mod sched;
pub mod sync;
mod task;

pub use builder::{BuildError, Builder, StackSize};
pub use engine::Engine;
pub use g::{GHandle, current, park, stack_bounds, yield_now};
pub use maps::{MapHeadroom, kept_mappings, map_headroom};
pub use metrics::{Metrics, MetricsError, metrics};
pub use parts::g::ReadyError;
pub use parts::{PARTS, Source};
pub use sched::{Runtime, dump, dump_all, go, run};
pub use task::{JoinHandle, Panic};

/// Locks `m`, ignoring poison. Every runtime lock is taken only by the runtime's own code,
/// never around user code, so a poisoned one means a bug already reported by its own panic:
/// keep going rather than cascade. Each lock's declaration says why poison is harmless there.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
