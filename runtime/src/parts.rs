//! Which implementation of each part the runtime is built on: the solution by default, the
//! learner's exercise when its `mine-NN` feature is on. Nothing else in the runtime names
//! a part crate directly, so swapping a part is one line here.

#[cfg(feature = "mine-01")]
pub(crate) use procinfo_mine as procinfo;
#[cfg(not(feature = "mine-01"))]
pub(crate) use procinfo_ref as procinfo;

#[cfg(feature = "mine-02")]
pub(crate) use osthread_mine as osthread;
#[cfg(not(feature = "mine-02"))]
pub(crate) use osthread_ref as osthread;

#[cfg(feature = "mine-03")]
pub(crate) use parker_mine as parker;
#[cfg(not(feature = "mine-03"))]
pub(crate) use parker_ref as parker;

// Part 04, the asm engine, exists on x86_64 only.
#[cfg(all(feature = "mine-04", target_arch = "x86_64"))]
pub(crate) use context_mine as context;
#[cfg(all(not(feature = "mine-04"), target_arch = "x86_64"))]
pub(crate) use context_ref as context;

#[cfg(feature = "mine-05")]
pub(crate) use stack_mine as stack;
#[cfg(not(feature = "mine-05"))]
pub(crate) use stack_ref as stack;

#[cfg(feature = "mine-06")]
pub(crate) use g_mine as g;
#[cfg(not(feature = "mine-06"))]
pub(crate) use g_ref as g;

#[cfg(feature = "mine-07")]
pub(crate) use runq_mine as runq;
#[cfg(not(feature = "mine-07"))]
pub(crate) use runq_ref as runq;

#[cfg(feature = "mine-08")]
pub(crate) use steal_mine as steal;
#[cfg(not(feature = "mine-08"))]
pub(crate) use steal_ref as steal;

#[cfg(feature = "mine-10")]
pub(crate) use netpoll_mine as netpoll;
#[cfg(not(feature = "mine-10"))]
pub(crate) use netpoll_ref as netpoll;
#[cfg(feature = "mine-09")]
pub(crate) use syscall_mine as syscall;
#[cfg(not(feature = "mine-09"))]
pub(crate) use syscall_ref as syscall;

#[cfg(feature = "mine-11")]
pub(crate) use timer_mine as timer;
#[cfg(not(feature = "mine-11"))]
pub(crate) use timer_ref as timer;

/// Where a part's code comes from in this build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The complete solution in `solutions/NN-slug`.
    Solution,
    /// The learner's code in `exercises/NN-slug` (feature `mine-NN`).
    Mine,
}

/// Every part this runtime is built from, in chapter order: `(number, name, source)`.
pub const PARTS: &[(u8, &str, Source)] = &[
    (
        1,
        "procinfo",
        if cfg!(feature = "mine-01") {
            Source::Mine
        } else {
            Source::Solution
        },
    ),
    (
        2,
        "osthread",
        if cfg!(feature = "mine-02") {
            Source::Mine
        } else {
            Source::Solution
        },
    ),
    (
        3,
        "parker",
        if cfg!(feature = "mine-03") {
            Source::Mine
        } else {
            Source::Solution
        },
    ),
    (
        4,
        "context",
        if cfg!(feature = "mine-04") {
            Source::Mine
        } else {
            Source::Solution
        },
    ),
    (
        5,
        "stack",
        if cfg!(feature = "mine-05") {
            Source::Mine
        } else {
            Source::Solution
        },
    ),
    (
        6,
        "g",
        if cfg!(feature = "mine-06") {
            Source::Mine
        } else {
            Source::Solution
        },
    ),
    (
        7,
        "runq",
        if cfg!(feature = "mine-07") {
            Source::Mine
        } else {
            Source::Solution
        },
    ),
    (
        8,
        "steal",
        if cfg!(feature = "mine-08") {
            Source::Mine
        } else {
            Source::Solution
        },
    ),
    (
        9,
        "syscall",
        if cfg!(feature = "mine-09") {
            Source::Mine
        } else {
            Source::Solution
        },
    ),
    (
        10,
        "netpoll",
        if cfg!(feature = "mine-10") {
            Source::Mine
        } else {
            Source::Solution
        },
    ),
    (
        11,
        "timer",
        if cfg!(feature = "mine-11") {
            Source::Mine
        } else {
            Source::Solution
        },
    ),
];
