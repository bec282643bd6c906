//! `cargo workbook verify [--only NN]`: checks the workbook itself, for authors and CI.
//!
//! Each check is a function of the root folder (and a part) returning the [`Problem`]s it
//! found, so the tests run them on a temporary copy of the repository:
//!
//! - [`check_files`]: the exercise has a solution that runs the exercise's own test files,
//!   a chapter page, and a hints file with at least [`MIN_HINTS`] hints numbered 1, 2, ...
//! - [`check_part_links`] / [`check_links`]: the chapter names its exercise (the literal
//!   `exercises/NN-slug` and `ex-NN-slug`), the exercise's `src/lib.rs` names its chapter
//!   (`chNN-slug`).
//! - [`check_anchors`]: every book link `chNN-slug.html#anchor` in the exercise's sources and
//!   tests (the `todo!()` messages) points at a page that defines `{#anchor}`.
//! - [`check_test_records`]: every `#[test]` in the exercise's test files starts with
//!   `let _outcome = testkit::record!();`, so `status` sees a plain `cargo test`'s result.
//! - [`check_summary`]: SUMMARY.md lists every exercise's chapter, and every entry that is not
//!   a draft (`- [Title]()`) has its file.
//! - [`check_figures`]: every page takes its figures from `book/figures.toml` (see
//!   [`crate::figures`]): no unknown tag key, no literal figure in prose; the chapter list
//!   there agrees with SUMMARY.md.
//! - [`check_skeleton`]: `cargo test -p ex-NN-slug --no-fail-fast` fails, with "not yet
//!   implemented" and a `chNN-slug.html#` link in its output, and without a compile error.
//! - [`check_solution`]: `cargo test -p sol-NN-slug` passes.
//! - [`crate::labs::check`]: every lab listing (`// ~/gmp-lab/src/main.rs`) compiles.
//!
//! The cargo checks run one after another with the caller's target dir
//! (`$CARGO_TARGET_DIR`, or the workspace's `target/`), so they reuse its builds.

use std::fmt;
use std::fs;
use std::path::Path;
use std::time::Instant;

use crate::parts::{self, Part};
use crate::testrun::{Cargo, Outcome, TestRun, book_links};
use crate::{Error, Result, hint};

/// The fewest hints an exercise may have.
pub const MIN_HINTS: usize = 3;

/// One thing wrong with the workbook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What it is about: a file, a package (`book/src/ch01-procinfo.md`, `sol-01-procinfo`).
    pub subject: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Problem {
    fn new(subject: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            subject: subject.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// (a) The exercise has a solution running its tests, a chapter page, and enough hints.
pub fn check_files(root: &Path, part: &Part) -> Vec<Problem> {
    let mut problems = Vec::new();
    let sol_manifest = format!("{}/Cargo.toml", part.solution_rel());
    match read(&root.join(&sol_manifest)) {
        None => problems.push(Problem::new(
            part.solution_rel(),
            format!(
                "exercise {} has no solution: create crate {} in {} (the same [lib] name, \
                 its [[test]] paths pointing at ../../{}/tests/)",
                part.label(),
                part.solution_package(),
                part.solution_rel(),
                part.exercise_rel()
            ),
        )),
        Some(manifest) => {
            let tests_dir = part.exercise_dir(root).join("tests");
            let mut tests: Vec<String> = fs::read_dir(&tests_dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|name| name.ends_with(".rs"))
                .collect();
            tests.sort();
            for test in tests {
                let wanted = format!("../../{}/tests/{test}", part.exercise_rel());
                if !manifest.contains(&wanted) {
                    problems.push(Problem::new(
                        sol_manifest.clone(),
                        format!(
                            "the solution does not run the exercise's test file {}/tests/{test}: \
                             add [[test]] with path = \"{wanted}\", or \"solution green\" proves nothing",
                            part.exercise_rel()
                        ),
                    ));
                }
            }
        }
    }
    if !part.chapter_file(root).is_file() {
        problems.push(Problem::new(
            part.chapter_rel(),
            format!(
                "exercise {} has no chapter page: write {} (and list it in SUMMARY.md)",
                part.label(),
                part.chapter_rel()
            ),
        ));
    }
    match read(&part.hints_file(root)) {
        None => problems.push(Problem::new(
            part.hints_rel(),
            format!(
                "missing: write at least {MIN_HINTS} progressive hints as `## Hint 1`, \
                 `## Hint 2`, ... (the first nudges, the last all but gives the answer)"
            ),
        )),
        Some(text) => {
            let hints = hint::parse(&text);
            if hints.len() < MIN_HINTS {
                problems.push(Problem::new(
                    part.hints_rel(),
                    format!(
                        "has {} hint(s); at least {MIN_HINTS} are needed (`## Hint 1`, `## Hint 2`, ...)",
                        hints.len()
                    ),
                ));
            }
            let numbers: Vec<usize> = hints.iter().map(|h| h.number).collect();
            if numbers.iter().enumerate().any(|(i, n)| *n != i + 1) {
                problems.push(Problem::new(
                    part.hints_rel(),
                    format!(
                        "hints are numbered {numbers:?}: number them 1, 2, 3, ... in order \
                         (`cargo workbook hint` shows them in file order)"
                    ),
                ));
            }
            for h in hints.iter().filter(|h| h.body.is_empty()) {
                problems.push(Problem::new(
                    part.hints_rel(),
                    format!("`## Hint {}` has no text under it", h.number),
                ));
            }
        }
    }
    problems
}

/// (a) The chapter names its exercise, and the exercise names its chapter.
pub fn check_part_links(root: &Path, part: &Part) -> Vec<Problem> {
    let mut problems = Vec::new();
    match read(&part.chapter_file(root)) {
        None => problems.push(Problem::new(
            part.chapter_rel(),
            format!(
                "chapter {} is missing, so nothing links exercise {} from the book",
                part.number,
                part.label()
            ),
        )),
        Some(chapter) => {
            for wanted in [part.exercise_rel(), part.exercise_package()] {
                if !chapter.contains(&wanted) {
                    problems.push(Problem::new(
                        part.chapter_rel(),
                        format!(
                            "chapter {} does not link its exercise: it never mentions `{wanted}` \
                             (name the folder `{}` and the test command `cargo test -p {}`)",
                            part.number,
                            part.exercise_rel(),
                            part.exercise_package()
                        ),
                    ));
                }
            }
        }
    }
    let lib_rel = format!("{}/src/lib.rs", part.exercise_rel());
    match read(&root.join(&lib_rel)) {
        None => problems.push(Problem::new(
            lib_rel,
            "missing: the exercise has no src/lib.rs",
        )),
        Some(lib) if !lib.contains(&part.chapter_stem()) => problems.push(Problem::new(
            lib_rel,
            format!(
                "the exercise does not link its chapter: its //! docs should say \
                 \"Book: chapter {}, ... (`{}`)\"",
                part.number,
                part.chapter_rel()
            ),
        )),
        Some(_) => {}
    }
    problems
}

/// (a) [`check_part_links`] for every part.
pub fn check_links(root: &Path) -> Vec<Problem> {
    match parts::discover(root) {
        Ok(parts) => parts
            .iter()
            .flat_map(|p| check_part_links(root, p))
            .collect(),
        Err(e) => vec![Problem::new("exercises/", e.to_string())],
    }
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether a chapter's markdown defines `anchor` (`{#anchor}` on a heading, or `id="anchor"`).
pub fn defines_anchor(markdown: &str, anchor: &str) -> bool {
    markdown.contains(&format!("{{#{anchor}}}"))
        || markdown.contains(&format!("{{#{anchor} "))
        || markdown.contains(&format!("id=\"{anchor}\""))
}

/// (b) Every book link in the exercise's sources and tests points at a defined anchor.
pub fn check_anchors(root: &Path, part: &Part) -> Vec<Problem> {
    let mut files = Vec::new();
    rust_files(&part.exercise_dir(root).join("src"), &mut files);
    rust_files(&part.exercise_dir(root).join("tests"), &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    // Links into a page that does not exist: one problem per page, not one per link.
    let mut missing_pages: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for file in files {
        let Some(text) = read(&file) else { continue };
        let file_rel = crate::rel(root, &file);
        for link in book_links(&text) {
            if !seen.insert((link.clone(), file_rel.clone())) {
                continue;
            }
            let (page, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let md_rel = format!("book/src/{}", page.replace(".html", ".md"));
            let Some(markdown) = read(&root.join(&md_rel)) else {
                let links = missing_pages.entry(md_rel).or_default();
                if !links.contains(&link) {
                    links.push(link.clone());
                }
                continue;
            };
            if !anchor.is_empty() && !defines_anchor(&markdown, anchor) {
                problems.push(Problem::new(
                    md_rel.clone(),
                    format!(
                        "{file_rel} links `{link}`, but {md_rel} defines no `{{#{anchor}}}`: \
                         give the step's heading an id, e.g. `### Step N: ... {{#{anchor}}}`"
                    ),
                ));
            }
        }
    }
    for (md_rel, mut links) in missing_pages {
        links.sort();
        problems.push(Problem::new(
            md_rel.clone(),
            format!(
                "{} links {}, but {md_rel} does not exist",
                part.exercise_rel(),
                links
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    problems
}

/// The line every exercise test starts with (see `testkit::record`).
pub const RECORD_LINE: &str = "let _outcome = testkit::record!();";

/// (b) Every test in the exercise's test files records its outcome: its first statement is
/// [`RECORD_LINE`]. A test without it is invisible to `status` after a plain `cargo test`,
/// so the exercise could never show as done.
pub fn check_test_records(root: &Path, part: &Part) -> Vec<Problem> {
    let mut files = Vec::new();
    rust_files(&part.exercise_dir(root).join("tests"), &mut files);
    files.sort();
    let mut problems = Vec::new();
    for file in files {
        let Some(text) = read(&file) else { continue };
        for test in tests_missing_the_record(&text) {
            problems.push(Problem::new(
                crate::rel(root, &file),
                format!(
                    "test `{test}` does not record its outcome: make `{RECORD_LINE}` its first \
                     line, or `cargo workbook status` never sees it pass"
                ),
            ));
        }
    }
    problems
}

/// The names of the `#[test]` functions in `source` whose body does not start with
/// [`RECORD_LINE`].
pub fn tests_missing_the_record(source: &str) -> Vec<String> {
    let lines: Vec<&str> = source.lines().collect();
    let mut missing = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        if line.trim() != "#[test]" {
            continue;
        }
        // The signature may span lines and follow other attributes: find its opening brace.
        let Some(fn_at) = (at + 1..lines.len()).find(|&i| lines[i].contains("fn ")) else {
            continue;
        };
        let name = lines[fn_at]
            .split("fn ")
            .nth(1)
            .and_then(|rest| rest.split(['(', '<']).next())
            .unwrap_or("?")
            .trim()
            .to_string();
        let body_at = (fn_at..lines.len()).find(|&i| lines[i].trim_end().ends_with('{'));
        let first = body_at.and_then(|i| lines.get(i + 1)).map(|l| l.trim());
        if first != Some(RECORD_LINE) {
            missing.push(name);
        }
    }
    missing
}

/// (e) SUMMARY.md lists the chapter of each of `parts`, and every non-draft entry exists.
pub fn check_summary(root: &Path, parts: &[Part]) -> Vec<Problem> {
    let entries = match parts::summary(root) {
        Ok(entries) => entries,
        Err(e) => return vec![Problem::new(parts::SUMMARY_REL, e.to_string())],
    };
    let mut problems = Vec::new();
    for part in parts {
        if parts::chapter_title(&entries, part).is_none() {
            problems.push(Problem::new(
                parts::SUMMARY_REL,
                format!(
                    "does not list {} (chapter {} has exercise {}): add `- [Title]({})`",
                    part.chapter_file_name(),
                    part.number,
                    part.exercise_package(),
                    part.chapter_file_name()
                ),
            ));
        }
    }
    for entry in &entries {
        let Some(file) = &entry.file else { continue };
        let path = file.split('#').next().unwrap_or(file);
        if !root.join("book/src").join(path).is_file() {
            problems.push(Problem::new(
                parts::SUMMARY_REL,
                format!(
                    "line {} links {file} (\"{}\"), which does not exist: write book/src/{path}, \
                     or make the entry a draft: `- [{}]()`",
                    entry.line, entry.title, entry.title
                ),
            ));
        }
    }
    problems
}

/// (f) The pages take every figure from `book/figures.toml`, and its chapter list agrees
/// with SUMMARY.md. A problem names page, line, the literal and the key to write.
pub fn check_figures(root: &Path) -> Vec<Problem> {
    crate::figures::check_pages(root)
        .into_iter()
        .chain(crate::figures::check_chapters(root))
        .map(|p| {
            // The messages already start with "page line N:" or "page:".
            let message = p
                .message
                .strip_prefix(&format!("{} line {}: ", p.page, p.line))
                .or_else(|| p.message.strip_prefix(&format!("{}: ", p.page)))
                .unwrap_or(&p.message)
                .to_string();
            let subject = if p.line == 0 {
                p.page
            } else {
                format!("{} line {}", p.page, p.line)
            };
            Problem::new(subject, message)
        })
        .collect()
}

fn cargo_test(root: &Path, package: &str, target_dir: Option<&Path>) -> Result<TestRun> {
    Cargo::new(root).with_target_dir(target_dir).test(package)
}

/// (c) The skeleton compiles, and its tests fail with todo!() messages that name the book.
///
/// `target_dir`: `None` builds where the caller does (`$CARGO_TARGET_DIR` or `target/`).
pub fn check_skeleton(root: &Path, part: &Part, target_dir: Option<&Path>) -> Vec<Problem> {
    let package = part.exercise_package();
    let run = match cargo_test(root, &package, target_dir) {
        Ok(run) => run,
        Err(e) => return vec![Problem::new(package, e.to_string())],
    };
    let mut problems = Vec::new();
    let mut problem = |message: String| problems.push(Problem::new(package.clone(), message));
    match &run.outcome {
        Outcome::DoesNotCompile { error } => problem(format!(
            "the skeleton is broken: it does not compile ({error}). A skeleton must build and \
             fail at run time with todo!(); fix {}",
            part.exercise_rel()
        )),
        Outcome::CargoFailed { message } => {
            problem(format!("cargo could not test the skeleton: {message}"))
        }
        Outcome::Passes { total } => problem(format!(
            "the skeleton passes all {total} tests: it must be red until the learner fills it \
             in (are the todo!() bodies in {rel}/src gone?). If you filled them in yourself, \
             this check is not for you: `verify` checks an untouched checkout, as CI does; \
             `cargo workbook status` checks your parts (and `cargo workbook reset` puts a \
             skeleton back)",
            rel = part.exercise_rel()
        )),
        Outcome::Crashed { message } => problem(format!(
            "{message}: a learner would meet a crash, not the todo!() message of the step to do"
        )),
        Outcome::Fails { .. } => {
            let output = format!("{}\n{}", run.stdout, run.stderr);
            if !output.contains("not yet implemented") {
                problem(
                    "its tests fail, but none with a todo!() message (\"not yet implemented\"): \
                     the bodies to fill in should be todo!(\"... (book: chNN-slug.html#step-N)\")"
                        .to_string(),
                );
            }
            let link = format!("{}#", part.chapter_html());
            if !output.contains(&link) {
                problem(format!(
                    "no failure names its book section: put `(book: {link}step-N)` in each \
                     todo!() message"
                ));
            }
        }
    }
    problems
}

/// (d) The solution passes the exercise's tests.
///
/// `target_dir`: `None` builds where the caller does (`$CARGO_TARGET_DIR` or `target/`).
pub fn check_solution(root: &Path, part: &Part, target_dir: Option<&Path>) -> Vec<Problem> {
    let package = part.solution_package();
    let run = match cargo_test(root, &package, target_dir) {
        Ok(run) => run,
        Err(e) => return vec![Problem::new(package, e.to_string())],
    };
    let message = match &run.outcome {
        Outcome::Passes { .. } => return Vec::new(),
        Outcome::Fails { failed, total } => {
            let first = &failed[0];
            let mut text = format!(
                "the solution fails {} of {total} tests; first {}: {}",
                failed.len(),
                first.test,
                if first.message.is_empty() {
                    "(no panic message)"
                } else {
                    &first.message
                }
            );
            if failed.len() > 1 {
                let others: Vec<&str> = failed[1..]
                    .iter()
                    .take(5)
                    .map(|f| f.test.as_str())
                    .collect();
                text.push_str(&format!("; also {}", others.join(", ")));
            }
            text.push_str(&format!(" (`cargo test -p {package}` shows it all)"));
            text
        }
        Outcome::DoesNotCompile { error } => format!("the solution does not compile: {error}"),
        Outcome::Crashed { message } => format!("the solution's tests crashed: {message}"),
        Outcome::CargoFailed { message } => format!("cargo could not test the solution: {message}"),
    };
    vec![Problem::new(package, message)]
}

/// (c) and (d) for one part: the skeleton is red and the solution is green.
pub fn check_part(root: &Path, part: &Part, target_dir: Option<&Path>) -> Vec<Problem> {
    let mut problems = check_skeleton(root, part, target_dir);
    problems.extend(check_solution(root, part, target_dir));
    problems
}

/// The result of one named check.
#[derive(Clone, Debug)]
pub struct CheckResult {
    /// The part it is about (`01 procinfo`), or `book`.
    pub subject: String,
    /// What was checked.
    pub what: String,
    /// What is wrong; empty if it passed.
    pub problems: Vec<Problem>,
    /// How long it took, for the slow (cargo) checks.
    pub seconds: Option<f64>,
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.problems.is_empty() {
            "ok  "
        } else {
            "FAIL"
        };
        write!(f, "{mark}  {:<14} {}", self.subject, self.what)?;
        if let Some(s) = self.seconds {
            write!(f, " ({s:.1} s)")?;
        }
        for p in &self.problems {
            write!(f, "\n        - {p}")?;
        }
        Ok(())
    }
}

/// Runs every check (or those of one part), printing a line per check as it finishes,
/// then a summary. `Err` if any check failed.
pub fn run(root: &Path, parts: &[Part], only: Option<&Part>) -> Result<()> {
    let selected: Vec<Part> = match only {
        Some(part) => vec![part.clone()],
        None => parts.to_vec(),
    };
    let mut results: Vec<CheckResult> = Vec::new();
    let mut report = |result: CheckResult| {
        println!("{result}");
        results.push(result);
    };
    println!(
        "verify: {} exercise(s): {}",
        selected.len(),
        parts::list(&selected)
    );
    for part in &selected {
        let subject = part.label();
        report(CheckResult {
            subject: subject.clone(),
            what: "has a solution running its tests, a chapter page, hints".into(),
            problems: check_files(root, part),
            seconds: None,
        });
        report(CheckResult {
            subject: subject.clone(),
            what: "chapter and exercise link each other".into(),
            problems: check_part_links(root, part),
            seconds: None,
        });
        report(CheckResult {
            subject: subject.clone(),
            what: "every book link in its sources has its anchor".into(),
            problems: check_anchors(root, part),
            seconds: None,
        });
        report(CheckResult {
            subject,
            what: "every test records its outcome for `status`".into(),
            problems: check_test_records(root, part),
            seconds: None,
        });
    }
    report(CheckResult {
        subject: "book".into(),
        what: "SUMMARY.md lists the chapters; its entries exist".into(),
        problems: check_summary(root, &selected)
            .into_iter()
            // With --only, the other chapters' entries are someone else's business.
            .filter(|p| only.is_none_or(|part| p.message.contains(&part.chapter_file_name())))
            .collect(),
        seconds: None,
    });
    if only.is_none() {
        report(CheckResult {
            subject: "book".into(),
            what: format!(
                "every figure comes from {} (no unknown key, no literal in prose)",
                crate::figures::FIGURES_REL
            ),
            problems: check_figures(root),
            seconds: None,
        });
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    println!("running each skeleton's and solution's tests, one at a time (target dir: {target})");
    for part in &selected {
        let started = Instant::now();
        let problems = check_skeleton(root, part, None);
        report(CheckResult {
            subject: part.label(),
            what: format!(
                "skeleton is red with todo!() and book links (cargo test -p {})",
                part.exercise_package()
            ),
            problems,
            seconds: Some(started.elapsed().as_secs_f64()),
        });
        let started = Instant::now();
        let problems = check_solution(root, part, None);
        report(CheckResult {
            subject: part.label(),
            what: format!(
                "solution is green (cargo test -p {})",
                part.solution_package()
            ),
            problems,
            seconds: Some(started.elapsed().as_secs_f64()),
        });
    }
    let started = Instant::now();
    let problems = crate::labs::check(root, only.map(Part::chapter_rel).as_deref(), None);
    report(CheckResult {
        subject: "book".into(),
        what: "every lab listing compiles with what its page adds (labs.rs)".into(),
        problems,
        seconds: Some(started.elapsed().as_secs_f64()),
    });
    let failed: Vec<&CheckResult> = results.iter().filter(|r| !r.problems.is_empty()).collect();
    println!(
        "\nverify: {} checks, {} passed, {} failed",
        results.len(),
        results.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        return Ok(());
    }
    let problems: usize = failed.iter().map(|r| r.problems.len()).sum();
    Err(Error::new(format!(
        "verify failed: {} of {} checks found {problems} problem(s); each FAIL line above says \
         what is wrong and how to fix it",
        failed.len(),
        results.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_found_in_heading_attributes() {
        let md = "### Step 1: Parse {#step-1}\n### Step 2 {#step-2 .tip}\n<a id=\"step-3\"></a>\n";
        for anchor in ["step-1", "step-2", "step-3"] {
            assert!(defines_anchor(md, anchor), "{anchor}");
        }
        assert!(!defines_anchor(md, "step-4"));
        assert!(!defines_anchor(md, "step"));
    }

    #[test]
    fn a_test_without_the_record_line_is_named() {
        let source = "#[test]\nfn a() {\n    let _outcome = testkit::record!();\n}\n\n\
            #[test]\n#[ignore]\nfn b_long(\n) {\n    let x = 1;\n}\n\n\
            #[test]\nfn c() {\n    assert!(true);\n    let _outcome = testkit::record!();\n}\n\
            fn helper() {}\n";
        assert_eq!(tests_missing_the_record(source), ["b_long", "c"]);
    }
}
