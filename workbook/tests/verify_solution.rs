//! `verify`'s cargo checks on a copy of the workspace whose solution 01 is broken.
//!
//! This builds part 01 twice (the skeleton against the runtime with `mine-01`, the solution
//! against the reference runtime) into `target/verify-selftest`, a target dir of its own
//! that stays between runs, so only the first run is slow.

mod common;

use std::fs;
use std::time::Duration;

use workbook::parts;
use workbook::verify;

#[test]
fn a_broken_solution_is_named_with_its_failing_test() {
    let copy = common::copy_repo();
    let root = copy.path().to_path_buf();
    let lib = root.join("solutions/01-procinfo/src/lib.rs");
    let text = fs::read_to_string(&lib).unwrap();
    let right = "threads: number(threads, \"Threads\")? as u32,";
    assert!(
        text.contains(right),
        "solutions/01-procinfo changed: update this test's sabotage"
    );
    fs::write(
        &lib,
        text.replace(right, "threads: number(threads, \"Threads\")? as u32 + 1,"),
    )
    .unwrap();

    let target = common::repo_root().join("target/verify-selftest");
    let problems = testkit::watchdog(
        "verify::check_part on a copy with a broken solution 01 (builds part 01)",
        Duration::from_secs(900),
        move || {
            let all = parts::discover(&root).unwrap();
            let procinfo = parts::find(&all, "01").unwrap();
            verify::check_part(&root, procinfo, Some(&target))
        },
    );
    assert_eq!(
        problems.len(),
        1,
        "the skeleton is red as it should be; only the solution fails: {problems:#?}"
    );
    let problem = &problems[0];
    assert_eq!(problem.subject, "sol-01-procinfo");
    assert!(
        problem.message.starts_with("the solution fails 1 of")
            && problem
                .message
                .contains("first step1_parses_every_field: assertion `left == right` failed"),
        "{problem}"
    );
}
