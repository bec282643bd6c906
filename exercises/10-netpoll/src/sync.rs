//! The atomics a poll descriptor and the poller's wake flag are built from: std's in a
//! normal build, loom's in a `--cfg loom` build, so the loom models (`tests/loom.rs`)
//! explore every interleaving of the very code the runtime runs. Given complete in the
//! exercise: use only these.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
