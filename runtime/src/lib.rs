//! `gmp`: a Go-style runtime built, part by part, by the workbook's chapters.
//!
//! Vocabulary, as in Go's `proc.go`:
//!
//! - **G**: a task, a function to run with its own state. (Stage 0: a closure that runs to
//!   completion; chapter 6 gives it a stack so it can stop in the middle.)
//! - **M**: a kernel thread that runs Gs ("machine"), started by part 02 `osthread`.
//! - **P**: the right to run Gs. There are exactly `procs` Ps; an M needs one to run a G.
//!   (Stage 0: one M per P, so M and P are not yet separate; chapter 8 splits them.)
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
//! | `parker` | 3 | idle Ms sleep until [`go`] has work for them |
//!
//! Each part comes from `solutions/` unless its `mine-NN` feature is on; [`PARTS`] says
//! which. This is stage 0 of the runtime: the scheduler loop, run queues, stealing, timers,
//! the netpoller and channels arrive chapter by chapter.

pub mod builder;
mod metrics;
mod parts;
mod sched;
mod task;

pub use builder::{BuildError, Builder, StackSize};
pub use metrics::{Metrics, MetricsError, metrics};
pub use parts::{PARTS, Source};
pub use sched::{Runtime, dump, dump_all, go, run};
pub use task::{JoinHandle, Panic};
