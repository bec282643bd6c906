//! `testkit::side_by_side!()` must reach libtest: it sets `RUST_TEST_THREADS` before `main`.
//! Its own test binary, because the macro changes how the whole binary's tests are run.

testkit::side_by_side!();

#[test]
fn the_harness_is_told_to_run_tests_side_by_side() {
    let threads = std::env::var("RUST_TEST_THREADS").unwrap_or_default();
    let n: usize = threads.parse().unwrap_or(0);
    assert!(
        n >= testkit::SIDE_BY_SIDE,
        "expected RUST_TEST_THREADS >= {} set before main by side_by_side!, found {threads:?} \
         (or you set RUST_TEST_THREADS yourself: then yours wins)",
        testkit::SIDE_BY_SIDE
    );
}
