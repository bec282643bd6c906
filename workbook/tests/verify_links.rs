//! `verify`'s static checks on a copy of the real repository, and on broken copies.

mod common;

use std::fs;

use workbook::parts::{self, Part};
use workbook::verify;

fn part(root: &std::path::Path, key: &str) -> Part {
    let all = parts::discover(root).unwrap();
    parts::find(&all, key).unwrap().clone()
}

#[test]
fn links_pass_on_the_repository_and_fail_when_a_chapter_loses_its_exercise() {
    let copy = common::copy_repo();
    let root = copy.path();
    let written = common::fill_missing_chapters(root);
    if !written.is_empty() {
        eprintln!(
            "note: no chapter page yet for {}; used fixture chapters",
            parts::list(&written)
        );
    }
    let problems = verify::check_links(root);
    assert!(
        problems.is_empty(),
        "the repository's chapters and exercises should link each other:\n{}",
        problems
            .iter()
            .map(|p| format!("  {p}\n"))
            .collect::<String>()
    );

    let procinfo = part(root, "01");
    let chapter = procinfo.chapter_file(root);
    let text = fs::read_to_string(&chapter).unwrap();
    fs::write(
        &chapter,
        text.replace("exercises/01-procinfo", "the exercise"),
    )
    .unwrap();
    let problems = verify::check_links(root);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].subject, "book/src/ch01-procinfo.md");
    let message = problems[0].to_string();
    assert!(
        message.contains("chapter 1 does not link its exercise")
            && message.contains("`exercises/01-procinfo`"),
        "{message}"
    );
}

#[test]
fn an_exercise_that_loses_its_chapter_link_is_named() {
    let root = common::fixture();
    let parker = part(root.path(), "parker");
    let lib = parker.exercise_dir(root.path()).join("src/lib.rs");
    fs::write(&lib, "//! No book here.\n").unwrap();
    let problems = verify::check_part_links(root.path(), &parker);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].subject, "exercises/03-parker/src/lib.rs");
    assert!(
        problems[0].message.contains("does not link its chapter"),
        "{problems:?}"
    );
}

#[test]
fn a_missing_step_anchor_is_named() {
    let root = common::fixture();
    let osthread = part(root.path(), "02");
    assert_eq!(verify::check_anchors(root.path(), &osthread), []);
    let chapter = osthread.chapter_file(root.path());
    let text = fs::read_to_string(&chapter).unwrap();
    fs::write(&chapter, text.replace("{#step-1}", "")).unwrap();
    let problems = verify::check_anchors(root.path(), &osthread);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].subject, "book/src/ch02-osthread.md");
    assert!(
        problems[0]
            .message
            .contains("links `ch02-osthread.html#step-1`, but book/src/ch02-osthread.md defines no `{#step-1}`"),
        "{problems:?}"
    );
}

#[test]
fn hints_files_and_the_summary_are_checked() {
    let root = common::fixture();
    let all = parts::discover(root.path()).unwrap();
    let files = verify::check_files(root.path(), &all[0]);
    // The fixture has no solutions: that is named, and the hints of 01 are fine.
    assert_eq!(files.len(), 1, "{files:#?}");
    assert!(files[0].message.contains("has no solution"), "{files:?}");
    let osthread = verify::check_files(root.path(), &all[1]);
    assert!(
        osthread
            .iter()
            .any(|p| p.subject == "exercises/02-osthread/hints.md"
                && p.message.starts_with("missing")),
        "{osthread:#?}"
    );
    fs::write(
        all[0].hints_file(root.path()),
        "## Hint 1\n\nOne.\n\n## Hint 3\n\nThree.\n",
    )
    .unwrap();
    let short = verify::check_files(root.path(), &all[0]);
    assert!(
        short.iter().any(|p| p.message.contains("has 2 hint(s)")),
        "{short:#?}"
    );
    assert!(
        short.iter().any(|p| p.message.contains("numbered [1, 3]")),
        "{short:#?}"
    );

    assert_eq!(verify::check_summary(root.path(), &all), []);
    let summary = root.path().join("book/src/SUMMARY.md");
    let text = fs::read_to_string(&summary).unwrap();
    fs::write(
        &summary,
        text.replace("(ch02-osthread.md)", "()") + "- [Gone](gone.md)\n",
    )
    .unwrap();
    let problems = verify::check_summary(root.path(), &all);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0]
            .message
            .contains("does not list ch02-osthread.md"),
        "{problems:?}"
    );
    assert!(
        problems[1].message.contains("links gone.md"),
        "{problems:?}"
    );
}

#[test]
fn every_exercise_test_records_its_outcome_for_status() {
    let root = common::repo_root();
    let all = parts::discover(&root).unwrap();
    assert!(all.len() >= 6, "{all:?}");
    for part in &all {
        let problems = verify::check_test_records(&root, part);
        assert!(
            problems.is_empty(),
            "every test must start with `{}`, or a plain `cargo test -p {}` never reaches \
             `status`:\n{}",
            verify::RECORD_LINE,
            part.exercise_package(),
            problems
                .iter()
                .map(|p| format!("  {p}\n"))
                .collect::<String>()
        );
    }
}
