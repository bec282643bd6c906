//! The atomics and the `Arc` the ring is built from: std's in a normal build, loom's in a
//! `--cfg loom` build, so the loom model (`tests/loom.rs`) explores every interleaving of
//! the very code the runtime runs. Given complete in the exercise: use only these.

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
