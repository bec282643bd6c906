//! `cargo workbook book` on a fixture book: mdBook as a library, with its search index.

mod common;

use std::fs;

#[test]
fn builds_a_book_with_a_search_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    common::fixture_book(
        root,
        "- [A draft]()\n",
        "# One\n\n### Step 1: Parse {#step-1}\n\nText.\n",
    );
    let index = testkit::watchdog("building a fixture book", testkit::DEFAULT_LIMIT, {
        let root = root.to_path_buf();
        move || workbook::book::build(&root).unwrap()
    });
    assert_eq!(index, root.join("target/book/index.html"));
    assert_eq!(workbook::book::html_dir(root), root.join("target/book"));
    let chapter = fs::read_to_string(root.join("target/book/ch01-one.html")).unwrap();
    assert!(chapter.contains("id=\"step-1\""), "the heading id is kept");
    let search_index = fs::read_dir(root.join("target/book"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("searchindex"));
    assert!(search_index, "feature `search` of mdbook-driver is on");
}

#[test]
fn a_missing_book_toml_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = workbook::book::build(dir.path()).unwrap_err();
    assert!(err.message().contains("there is no book.toml"), "{err}");
}
