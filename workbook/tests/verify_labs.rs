//! `verify`'s lab check on a copy of the repository: chapter 3's lab program compiles as the
//! book shows it, and a broken copy of it is named at the page's line.
//!
//! One test, not two: both would write `verify-labs/ch03-parker.rs` in the same target dir.
//! The check builds gmp and the solutions' libraries into `target/verify-selftest` (the
//! target dir verify_solution.rs uses too, so it stays warm between runs).

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use workbook::labs;
use workbook::verify::Problem;

const PAGE: &str = "book/src/ch03-parker.md";

fn check(root: &Path) -> Vec<Problem> {
    let root = root.to_path_buf();
    let target = common::repo_root().join("target/verify-selftest");
    testkit::watchdog(
        "labs::check on chapter 3 (builds gmp and the solutions once)",
        Duration::from_secs(900),
        move || labs::check(&root, Some(PAGE), Some(&target)),
    )
}

/// The page's line numbers (from 1) of the listing's marker and of the first line after it
/// that contains `needle`.
fn lines_of(text: &str, needle: &str) -> (usize, usize) {
    let marker = text
        .lines()
        .position(|l| l.trim() == labs::MARKER)
        .expect("chapter 3 has a lab listing: update this test if it moved")
        + 1;
    let found = text
        .lines()
        .enumerate()
        .skip(marker)
        .find(|(_, l)| l.contains(needle))
        .unwrap_or_else(|| panic!("chapter 3's listing no longer has `{needle}`: update this test"))
        .0
        + 1;
    (marker, found)
}

#[test]
fn a_lab_listing_that_does_not_compile_or_uses_a_part_its_page_does_not_add_is_named() {
    let copy = common::copy_repo();
    let root = copy.path();
    let page = root.join(PAGE);
    let original = fs::read_to_string(&page).unwrap();

    let problems = check(root);
    assert!(
        problems.is_empty(),
        "chapter 3's lab program should compile with part 03's solution:\n{problems:#?}"
    );

    let (marker, line) = lines_of(&original, "Parker::new()");
    fs::write(
        &page,
        original.replacen("Parker::new()", "Parker::new_with_a_typo()", 1),
    )
    .unwrap();
    let problems = check(root);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].subject, PAGE);
    let message = &problems[0].message;
    assert!(
        message.starts_with(&format!(
            "the lab program at line {marker} does not compile"
        )) && message.contains(&format!("{PAGE}:{line}:"))
            && message.contains("error[E0599]")
            && message.contains("new_with_a_typo"),
        "the message should name the page's line {line} and rustc's error:\n{message}"
    );

    // Chapter 2's part: the reader may not have finished it (the bug this check catches).
    fs::write(
        &page,
        original.replacen(
            "use parker::Parker;",
            "use parker::Parker;\nuse osthread::MBuilder;",
            1,
        ),
    )
    .unwrap();
    let problems = check(root);
    let messages: Vec<String> = problems.iter().map(Problem::to_string).collect();
    assert_eq!(problems.len(), 2, "{messages:#?}");
    assert!(
        messages[0].contains("unresolved import `osthread`"),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].starts_with(&format!(
            "{PAGE}: the lab program at line {marker} uses `osthread` (exercises/02-osthread), \
             which this page never adds to the lab"
        )) && messages[1].contains("cargo add --path \"$REPO/exercises/02-osthread\""),
        "{}",
        messages[1]
    );
}
