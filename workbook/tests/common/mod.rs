//! What the workbook's integration tests share: temporary workbooks to run commands on.
//!
//! - [`copy_repo`]: a copy of this repository (without target/, .git/, .workbook/), with
//!   file times kept so cargo can reuse builds;
//! - [`fixture`]: a tiny made-up workbook (three exercises, hints, chapters) for the
//!   commands that never run cargo;
//! - [`fixture_book`]: a one-chapter book, for building with mdBook.

#![allow(dead_code)] // Each test file uses some of these.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A book of one chapter, `ch01-one.md` holding `page`, under `root`; `more_summary` is
/// appended to SUMMARY.md as extra entries (a draft, say).
pub fn fixture_book(root: &Path, more_summary: &str, page: &str) {
    fs::create_dir_all(root.join("book/src")).unwrap();
    fs::write(
        root.join("book.toml"),
        "[book]\ntitle = \"Fixture\"\nsrc = \"book/src\"\n\n[build]\nbuild-dir = \"target/book\"\n",
    )
    .unwrap();
    fs::write(
        root.join("book/src/SUMMARY.md"),
        format!("# Summary\n\n- [One](ch01-one.md)\n{more_summary}"),
    )
    .unwrap();
    fs::write(root.join("book/src/ch01-one.md"), page).unwrap();
}

/// The repository this crate lives in.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workbook/ is inside the repository")
        .to_path_buf()
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let path = entry.path();
        let target = to.join(&name);
        let file_type = entry.file_type().unwrap();
        if file_type.is_dir() {
            copy_tree(&path, &target);
        } else if file_type.is_file() {
            copy_file(&path, &target);
        }
    }
}

/// Copies a file and keeps its modification time, so cargo sees unchanged sources as
/// unchanged and reuses its builds.
fn copy_file(from: &Path, to: &Path) {
    fs::copy(from, to).unwrap();
    let modified = fs::metadata(from).unwrap().modified().unwrap();
    fs::File::options()
        .write(true)
        .open(to)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

/// A copy of the repository in a new temporary folder (without target/, .git/, .workbook/).
pub fn copy_repo() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("workbook-copy-")
        .tempdir()
        .unwrap();
    let repo = repo_root();
    for entry in fs::read_dir(&repo).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if [".git", "target", ".workbook"].contains(&name.to_str().unwrap_or("")) {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dir.path().join(&name));
        } else {
            copy_file(&entry.path(), &dir.path().join(&name));
        }
    }
    dir
}

/// A chapter page that links its exercise and defines the anchors the exercise points to.
pub fn fixture_chapter(root: &Path, part: &workbook::parts::Part) -> String {
    let mut anchors = std::collections::BTreeSet::new();
    for sub in ["src", "tests"] {
        for entry in fs::read_dir(part.exercise_dir(root).join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            for link in workbook::testrun::book_links(&text) {
                if let Some(anchor) = link.strip_prefix(&format!("{}#", part.chapter_html())) {
                    anchors.insert(anchor.to_string());
                }
            }
        }
    }
    let mut md = format!(
        "# Chapter {}\n\nYour part: `{}`, crate `{}`; `cargo test -p {}`.\n",
        part.number,
        part.exercise_rel(),
        part.exercise_package(),
        part.exercise_package()
    );
    for anchor in anchors {
        md.push_str(&format!("\n### {anchor} {{#{anchor}}}\n\nText.\n"));
    }
    md
}

/// Writes a fixture chapter for every part whose chapter page does not exist yet (the book
/// is written at the same time as this crate); returns the parts it wrote one for.
pub fn fill_missing_chapters(root: &Path) -> Vec<workbook::parts::Part> {
    let mut written = Vec::new();
    for part in workbook::parts::discover(root).unwrap() {
        let path = part.chapter_file(root);
        if !path.exists() {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, fixture_chapter(root, &part)).unwrap();
            written.push(part);
        }
    }
    written
}

/// Hints for the fixture's exercise 01.
pub const HINTS: &str = "# Hints for exercise 01\n\nTry on your own first.\n\n\
## Hint 1\n\nRead the status text line by line.\n\n\
## Hint 2: split\n\nUse `split_once(':')`.\n\n\
## Hint 3\n\nParse the first word after the colon as a number.\n";

/// A tiny workbook without cargo builds: exercises 01 procinfo, 02 osthread, 03 parker
/// (each with a lib.rs naming its chapter), hints for 01, chapters and a SUMMARY.
pub fn fixture() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("workbook-fixture-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    fs::write(root.join("Cargo.toml"), "[workspace]\n").unwrap();
    let mut summary = String::from("# Summary\n\n");
    for (n, slug) in [(1, "procinfo"), (2, "osthread"), (3, "parker")] {
        let key = format!("{n:02}-{slug}");
        let ex = root.join("exercises").join(&key);
        fs::create_dir_all(ex.join("src")).unwrap();
        fs::write(
            ex.join("Cargo.toml"),
            format!("[package]\nname = \"ex-{key}\"\n"),
        )
        .unwrap();
        fs::write(
            ex.join("src/lib.rs"),
            format!(
                "//! Book: chapter {n} (`book/src/ch{key}.md`).\n\
                 pub fn f() {{ todo!(\"step 1 (book: ch{key}.html#step-1)\") }}\n"
            ),
        )
        .unwrap();
        summary.push_str(&format!("- [Chapter {n}](ch{key}.md)\n"));
    }
    fs::write(root.join("exercises/01-procinfo/hints.md"), HINTS).unwrap();
    fs::create_dir_all(root.join("book/src")).unwrap();
    fs::write(root.join("book/src/SUMMARY.md"), summary).unwrap();
    fill_missing_chapters(root);
    dir
}

/// Runs the built `workbook` binary on the workbook at `root` with `args`.
pub fn workbook(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_workbook"))
        .args(args)
        .env(workbook::parts::ROOT_ENV, root)
        .current_dir(root)
        .output()
        .expect("the workbook binary runs")
}

/// stdout and stderr of an output, as text.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
