//! `gmp`: a Go-style runtime built, part by part, by the workbook's chapters.
//!
//! Vocabulary, as in Go's `proc.go`:
//!
//! - **G**: a function running on its own stack (part 05) with its own saved registers (the
//!   engine: corosensei, or part 04's switch), so it can stop in the middle (park, yield)
//!   and go on later, on the same M (see below). Its state machine is part 06.
//! - **M**: a kernel thread that runs Gs ("machine"), started by part 02 `osthread`.
//! - **P**: the right to run Gs, with its own run queue (part 07). There are exactly
//!   `procs` Ps; an M needs one to run a G, and an idle M gives its P back.
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
//! | `stack` | 5 | every G's stack: guarded slab by default ([`StackLayout`]); overflow reports |
//! | `g` | 6 | each G's state, [`park`] / [`GHandle::unpark`], run-twice and lost-wake-up checks |
//! | `runq` | 7 | each P's run queue: a 256-slot ring with runnext, overflow to the global queue |
//! | `steal` | 8 | where an M looks for work, stealing, spinning Ms, [`default_procs`] from cgroups |
//! | `syscall` | 9 | [`blocking`] calls: the P hand-off, sysmon's retake and clock, [`Bound`] |
//! | `netpoll` | 10 | [`net`]: `TcpListener` / `TcpStream` park their G on `WouldBlock`; idle Ms poll |
//! | `timer` | 11 | each P's timer heap: [`time::sleep`], [`time::Ticker`], [`time::timeout`], `recv_timeout` |
//!
//! Each part comes from `solutions/` unless its `mine-NN` feature is on; [`PARTS`] says
//! which. This is stage 2 of the runtime (chapters 7 and 8): Go's G-M-P with a run queue per
//! P and work stealing, a rendezvous channel ([`chan`]) and a WaitGroup ([`sync`]), with
//! blocking calls ([`blocking`], chapter 9: a sysmon thread hands their Ps on) and timers
//! ([`time`], chapter 11); the netpoller and full channels arrive chapter by chapter.
//!
//! A G that has started stays on the M (the OS thread) that first ran it, so a borrow of a
//! thread-local held across [`park`] or [`yield_now`] stays valid; only Gs that have not
//! started move between Ms. [`Builder::migrate_gs`] is the `unsafe` opt-in to Go's way,
//! where any G may resume on any M.

mod blocking;
pub mod builder;
pub mod chan;
mod engine;
mod g;
mod joincell;
mod maps;
mod metrics;
pub mod net;
mod parts;
mod sched;
pub mod sync;
mod task;
pub mod time;

pub use blocking::{BlockingError, Bound, Permit, blocking};
pub use builder::{BuildError, Builder, StackLayout, StackSize, default_procs};
pub use engine::Engine;
pub use g::{GHandle, current, park, stack_bounds, yield_now};
pub use maps::{MapHeadroom, kept_mappings, map_headroom};
pub use metrics::{Metrics, MetricsError, metrics};
pub use parts::g::ReadyError;
pub use parts::{PARTS, Source};
pub use sched::{Runtime, dump, dump_all, go, lock_os_thread, run, set_procs, unlock_os_thread};
pub use task::{JoinHandle, Panic};

/// Locks `m`, ignoring poison. Every runtime lock is taken only by the runtime's own code,
/// never around user code, so a poisoned one means a bug already reported by its own panic:
/// keep going rather than cascade. Each lock's declaration says why poison is harmless there.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
