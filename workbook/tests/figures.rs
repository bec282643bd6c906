//! `book/figures.toml`: the book renders its tags, `verify` refuses literal figures and
//! unknown keys, on the repository and on broken copies of it.

mod common;

use std::fs;
use std::path::Path;

use workbook::verify;

fn listing(problems: &[verify::Problem]) -> String {
    problems.iter().map(|p| format!("  {p}\n")).collect()
}

#[test]
fn every_page_of_the_repository_takes_its_figures_from_the_data_file() {
    let problems = verify::check_figures(&common::repo_root());
    assert!(
        problems.is_empty(),
        "every figure in book/src should be a {{{{fig KEY}}}} tag of book/figures.toml:\n{}",
        listing(&problems)
    );
}

/// The first line of `page` with a tag of `key`, and its number (from 1).
fn line_with(page: &str, key: &str) -> (usize, String) {
    let tag = format!("{{{{fig {key}}}}}");
    page.lines()
        .enumerate()
        .find(|(_, l)| l.contains(&tag))
        .map(|(i, l)| (i + 1, l.to_string()))
        .unwrap_or_else(|| panic!("no page line uses {tag}"))
}

#[test]
fn a_wrong_literal_figure_and_an_unknown_key_fail_verify_naming_page_and_line() {
    let copy = common::copy_repo();
    let root = copy.path();
    let chapter = root.join("book/src/ch03-parker.md");
    let text = fs::read_to_string(&chapter).unwrap();
    // Go's hand-off, quoted by hand with a drifted value, as chapter 3 once did.
    let (line, original) = line_with(&text, "go.handoff");
    let wrong = original.replacen("{{fig go.handoff}}", "123–134 ns", 1);
    let text = text.replacen(&original, &wrong, 1);
    fs::write(&chapter, &text).unwrap();
    let problems = verify::check_figures(root);
    assert_eq!(problems.len(), 1, "{}", listing(&problems));
    let message = problems[0].to_string();
    assert!(
        message.contains(&format!("book/src/ch03-parker.md line {line}"))
            && message.contains("`123–134 ns`")
            && message.contains("no figure in book/figures.toml has this value")
            && message.contains("If it is the quantity of {{fig go.handoff}} (125–150\u{a0}ns"),
        "the message names page, line and literal: {message}"
    );

    // The right value, still written by hand: the message names the key to write.
    let right = original.replacen("{{fig go.handoff}}", "125–150 ns", 1);
    fs::write(&chapter, text.replacen(&wrong, &right, 1)).unwrap();
    let problems = verify::check_figures(root);
    assert_eq!(problems.len(), 1, "{}", listing(&problems));
    assert!(
        problems[0]
            .message
            .contains("write {{fig go.handoff}} instead"),
        "{}",
        problems[0]
    );

    // A tag whose key is not in the data file.
    let typo = original.replacen("{{fig go.handoff}}", "{{fig go.handof}}", 1);
    fs::write(&chapter, text.replacen(&wrong, &typo, 1)).unwrap();
    let problems = verify::check_figures(root);
    assert_eq!(problems.len(), 1, "{}", listing(&problems));
    assert!(
        problems[0].to_string().contains("ch03-parker.md line")
            && problems[0]
                .message
                .contains("unknown figure key `go.handof`"),
        "{}",
        problems[0]
    );
}

#[test]
fn a_chapter_marked_written_without_its_page_in_summary_is_named() {
    let copy = common::copy_repo();
    let root = copy.path();
    let data = root.join("book/figures.toml");
    let text = fs::read_to_string(&data).unwrap();
    // A chapter that is still a draft: 12 (chapters 9 to 11 are being written).
    let draft = "slug = \"ch12-preempt\"\npart = \"IV\"\nlib = \"preempt\"\nstatus = \"draft\"";
    assert!(
        text.contains(draft),
        "chapter 12 is a draft in the data file"
    );
    // Written, but without the instructor table's minutes: the data file is refused.
    let written = draft.replace("draft", "written");
    fs::write(&data, text.replace(draft, &written)).unwrap();
    let problems = verify::check_figures(root);
    assert_eq!(problems.len(), 1, "{}", listing(&problems));
    assert!(
        problems[0].subject == "book/figures.toml"
            && problems[0]
                .message
                .contains("chapter 12 (\"Preemption\") is written but lacks reading"),
        "{}",
        problems[0]
    );
    // With its minutes, but SUMMARY.md still has the draft entry
    // `- [Preemption]()`.
    let minutes = format!("{written}\nreading = 30\nexercise = 75\ndiscussion = 45");
    fs::write(&data, text.replace(draft, &minutes)).unwrap();
    let problems = verify::check_figures(root);
    assert_eq!(problems.len(), 1, "{}", listing(&problems));
    assert!(
        problems[0]
            .message
            .contains("SUMMARY.md does not link ch12-preempt.md"),
        "{}",
        problems[0]
    );
}

fn fixture_book(root: &Path, page: &str) {
    common::fixture_book(root, "", page);
    fs::write(
        root.join("book/figures.toml"),
        "[fig.go.handoff]\nvalue = \"125–150\"\nunit = \"ns\"\nsource = \"Go 1.27\"\nwhat = \"hand-off\"\n",
    )
    .unwrap();
}

#[test]
fn the_book_renders_tags_and_stops_at_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    fixture_book(&root, "# One\n\nGo hands off in {{fig go.handoff}}.\n");
    testkit::watchdog(
        "building a fixture book with a figure",
        testkit::DEFAULT_LIMIT,
        {
            let root = root.clone();
            move || workbook::book::build(&root).unwrap()
        },
    );
    let html = fs::read_to_string(root.join("target/book/ch01-one.html")).unwrap();
    assert!(
        html.contains("Go hands off in 125–150\u{a0}ns.") || html.contains("125–150&nbsp;ns"),
        "the tag is replaced by its value"
    );

    fs::write(
        root.join("book/src/ch01-one.md"),
        "# One\n\nGo hands off in {{fig go.handof}}.\n",
    )
    .unwrap();
    let err = testkit::watchdog(
        "building a fixture book with a typo",
        testkit::DEFAULT_LIMIT,
        {
            let root = root.clone();
            move || workbook::book::build(&root).unwrap_err()
        },
    );
    assert!(
        err.message().contains("book/src/ch01-one.md line 3")
            && err.message().contains("unknown figure key `go.handof`"),
        "{err}"
    );
}
