//! The atomics and the `Arc` the part is built from: std's in a normal build, loom's in a
//! `--cfg loom` build, so the loom models (`tests/loom.rs`) explore every interleaving of
//! the very code the runtime runs. Given complete in the exercise: use only these.

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
