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
];
