//! `cargo workbook watch [NN]`: reruns one exercise's tests on every save.
//!
//! It watches `exercises/NN-slug` (src/, tests/, Cargo.toml), polling every 100 ms; on a
//! change it prints "checking…" at once, waits until the files have been quiet for
//! 300 ms, and runs `cargo test -p ex-NN-slug` (only that package: feedback in seconds,
//! not a rebuild of the world). Then it names the stage the exercise is at: does not
//! compile (the first compiler error), N of M tests fail (the first failing test by name,
//! the first line of its panic message, the book section it points to), or passes, and
//! then which chapter is next. Each result is recorded in the state file for `status`.
//!
//! Without NN it watches the first exercise that is not done. Ctrl-C ends it.

use std::path::Path;
use std::time::Duration;

use crate::parts::Part;
use crate::poll::Watcher;
use crate::state::{self, State};
use crate::testrun::{Cargo, Outcome, TestRun};
use crate::{Result, book, rel, status};

/// How often the exercise's files are polled.
pub const POLL: Duration = Duration::from_millis(100);
/// How long the files must be quiet before a run.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// What to tell the learner about one run of `part`'s tests.
pub fn report(root: &Path, parts: &[Part], part: &Part, run: &TestRun) -> String {
    let package = part.exercise_package();
    let secs = run.elapsed.as_secs_f64();
    match &run.outcome {
        Outcome::DoesNotCompile { error } => format!(
            "{package} does not compile ({secs:.1} s):\n  {error}\n  \
             (`cargo test -p {package}` shows every error in full)\n"
        ),
        Outcome::Fails { failed, total } => {
            let first = &failed[0];
            let mut out = format!(
                "{package}: {} of {total} tests fail ({secs:.1} s)\n  first: {}\n",
                failed.len(),
                first.test
            );
            if !first.message.is_empty() {
                out.push_str(&format!("  says:  {}\n", first.message));
            }
            if let Some(link) = first.link.clone().or_else(|| step_link(part, &first.test)) {
                out.push_str(&format!("  read:  {}\n", book_location(root, &link)));
            }
            out
        }
        Outcome::Passes { total } => {
            let mut out = format!(
                "{package} passes: all {total} tests ({secs:.1} s). Chapter {} is done.\n",
                part.number
            );
            match parts.iter().find(|p| p.number > part.number) {
                Some(next) => out.push_str(&format!(
                    "next: chapter {} (`cargo workbook watch {}`)\n",
                    next.number,
                    next.nn()
                )),
                None => out.push_str(
                    "That is the last exercise written so far; `cargo workbook status` shows \
                     the chapters still to do.\n",
                ),
            }
            out
        }
        Outcome::Crashed { message } => format!(
            "{package}: {message} ({secs:.1} s)\n  a crash is a bug too (a bad pointer, a stack \
             overflow): `cargo test -p {package} -- --test-threads=1` shows which test was running\n"
        ),
        Outcome::CargoFailed { message } => format!(
            "cargo could not test {package}: {message}\n  (run `cargo test -p {package}` to see all of it)\n"
        ),
    }
}

/// `chNN-slug.html#step-N` for a test named `stepN_…`, when its output had no link.
fn step_link(part: &Part, test: &str) -> Option<String> {
    let n: String = test
        .strip_prefix("step")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!n.is_empty()).then(|| format!("{}#step-{n}", part.chapter_html()))
}

/// A book link as the learner can open it: the built page if the book is built, else the
/// link and the markdown file it comes from.
fn book_location(root: &Path, link: &str) -> String {
    let page = link.split('#').next().unwrap_or(link);
    let html = book::html_dir(root);
    if html.join(page).is_file() {
        let anchor = link.strip_prefix(page).unwrap_or("");
        return format!("{}{anchor}", book::file_url(&html.join(page)));
    }
    format!(
        "{link} (book/src/{}; `cargo workbook book` builds the HTML)",
        page.replace(".html", ".md")
    )
}

/// Runs `part`'s tests once, records the result, and prints the report.
pub fn check_once(root: &Path, parts: &[Part], part: &Part) -> Result<TestRun> {
    let run = Cargo::new(root).test(&part.exercise_package())?;
    state::update(root, |s| s.record(&part.key(), run.outcome.status()))?;
    print!("{}", report(root, parts, part, &run));
    Ok(run)
}

/// The `watch` command: check now, then on every save, until Ctrl-C.
pub fn run(root: &Path, parts: &[Part], part: Option<&Part>) -> Result<()> {
    let part = match part {
        Some(part) => part,
        None => {
            let state = State::load(root)?;
            match status::next_part(parts, &state) {
                Some(part) => part,
                None => {
                    let last = parts.last().expect("discover found at least one part");
                    println!(
                        "every exercise passes (as far as the state file knows); watching the \
                         last one, {}. Name another with `cargo workbook watch NN`.",
                        last.label()
                    );
                    last
                }
            }
        }
    };
    let dir = part.exercise_dir(root);
    let roots = vec![dir.join("src"), dir.join("tests"), dir.join("Cargo.toml")];
    let mut watcher = Watcher::new(roots, POLL, DEBOUNCE);
    println!(
        "watching {} for exercise {} (chapter {}: {}); Ctrl-C stops",
        rel(root, &dir),
        part.label(),
        part.number,
        part.chapter_page_rel()
    );
    println!("checking…");
    check_once(root, parts, part)?;
    loop {
        let changed = watcher.wait(|changed| {
            let names: Vec<String> = changed.iter().map(|p| rel(root, p)).collect();
            println!("\n{} changed: checking…", names.join(", "));
        });
        if !changed.is_empty() {
            check_once(root, parts, part)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testrun::Failure;

    fn parts() -> Vec<Part> {
        ["01-procinfo", "02-osthread"]
            .iter()
            .map(|n| Part::from_folder_name(n).unwrap())
            .collect()
    }

    fn run(outcome: Outcome) -> TestRun {
        TestRun {
            package: "ex-01-procinfo".into(),
            outcome,
            elapsed: Duration::from_millis(1500),
            stdout: String::new(),
            stderr: String::new(),
        }
    }

    #[test]
    fn reports_each_stage() {
        let parts = parts();
        let root = Path::new("/nonexistent");
        let failing = report(
            root,
            &parts,
            &parts[0],
            &run(Outcome::Fails {
                failed: vec![Failure {
                    test: "step2_reads_this_process".into(),
                    message: "not yet implemented: ch01 step 2".into(),
                    link: None,
                }],
                total: 12,
            }),
        );
        assert!(
            failing.starts_with("ex-01-procinfo: 1 of 12 tests fail (1.5 s)\n"),
            "{failing}"
        );
        assert!(
            failing.contains("first: step2_reads_this_process"),
            "{failing}"
        );
        assert!(
            failing.contains("says:  not yet implemented: ch01 step 2"),
            "{failing}"
        );
        assert!(
            failing.contains("read:  ch01-procinfo.html#step-2 (book/src/ch01-procinfo.md;"),
            "the step is found from the test name: {failing}"
        );
        let passes = report(root, &parts, &parts[0], &run(Outcome::Passes { total: 12 }));
        assert!(passes.contains("passes: all 12 tests"), "{passes}");
        assert!(
            passes.contains("next: chapter 2 (`cargo workbook watch 02`)"),
            "{passes}"
        );
        let broken = report(
            root,
            &parts,
            &parts[0],
            &run(Outcome::DoesNotCompile {
                error: "src/lib.rs:1:1: error[E0425]".into(),
            }),
        );
        assert!(
            broken.starts_with("ex-01-procinfo does not compile"),
            "{broken}"
        );
        assert!(broken.contains("src/lib.rs:1:1: error[E0425]"), "{broken}");
    }
}
