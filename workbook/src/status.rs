//! `cargo workbook status [--check]`: where the learner is, chapter by chapter.
//!
//! Without `--check` it only reads the state file that `watch` and `status --check` keep,
//! merged with the outcome records a plain `cargo test -p ex-NN-slug` leaves (no cargo run:
//! it prints at once), and marks a result as stale when the exercise's files changed after
//! it was taken. `--check` reruns `cargo test -p ex-NN-slug` for every
//! exercise, one after another, output captured, and records each result first.
//!
//! The table also shows the hint progress and which chapter is next: the first exercise
//! that is not done.

use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::parts::{self, Part};
use crate::poll::Snapshot;
use crate::state::{self, State};
use crate::testrun::Cargo;
use crate::{Result, hint};

/// The first part that is not done, in chapter order.
pub fn next_part<'a>(parts: &'a [Part], state: &State) -> Option<&'a Part> {
    parts.iter().find(|p| {
        !state
            .results
            .get(&p.key())
            .is_some_and(|r| r.status.is_done())
    })
}

/// Whether any file of the exercise changed after `since` (Unix seconds).
fn changed_after(root: &Path, part: &Part, since: u64) -> bool {
    let dir = part.exercise_dir(root);
    let snapshot = Snapshot::take(&[dir.join("src"), dir.join("tests"), dir.join("Cargo.toml")]);
    let newest = snapshot
        .newest()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    newest > since
}

/// The status table as text.
pub fn table(root: &Path, parts: &[Part], state: &State) -> String {
    let summary = parts::summary(root).unwrap_or_default();
    let rows: Vec<[String; 4]> = parts
        .iter()
        .map(|part| {
            let title = parts::chapter_title(&summary, part).unwrap_or_default();
            let chapter = format!("{:>2} {title}", part.number);
            let progress = match state.results.get(&part.key()) {
                None => "not started".to_string(),
                Some(rec) => {
                    let mut text = rec.status.describe();
                    if changed_after(root, part, rec.checked_at) {
                        text.push_str(" [changed since: `status --check` rechecks]");
                    }
                    text
                }
            };
            let hints = match hint::load(root, part) {
                Ok(hints) => format!(
                    "{} of {}",
                    state.hints_shown(&part.key()).min(hints.len()),
                    hints.len()
                ),
                Err(_) => "-".to_string(),
            };
            [chapter, part.exercise_package(), hints, progress]
        })
        .collect();
    let header = [
        "chapter".to_string(),
        "exercise".to_string(),
        "hints".to_string(),
        "state".to_string(),
    ];
    let widths: Vec<usize> = (0..3)
        .map(|i| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
    match next_part(parts, state) {
        Some(part) => out.push_str(&format!(
            "next: chapter {} ({}), exercise {}: `cargo workbook watch {}`\n",
            part.number,
            part.chapter_page_rel(),
            part.exercise_rel(),
            part.nn()
        )),
        None => out.push_str(
            "every exercise passes: the runtime can run on all of your parts \
             (`cargo test -p gmp --features mine-all`)\n",
        ),
    }
    if state.results.is_empty() {
        out.push_str(
            "(results come from `cargo test -p ex-NN-slug`, `cargo workbook watch` and \
             `cargo workbook status --check`; none recorded yet)\n",
        );
    }
    out
}

/// `status --check`: reruns every exercise's tests, recording each result.
pub fn check_all(root: &Path, parts: &[Part]) -> Result<()> {
    let cargo = Cargo::new(root);
    for part in parts {
        eprint!("checking {} ... ", part.exercise_package());
        let run = cargo.test(&part.exercise_package())?;
        let status = run.outcome.status();
        eprintln!("{} ({:.1} s)", status.describe(), run.elapsed.as_secs_f64());
        state::update(root, |s| s.record(&part.key(), status))?;
    }
    eprintln!();
    Ok(())
}

/// The `status` command.
pub fn run(root: &Path, parts: &[Part], check: bool) -> Result<()> {
    if check {
        check_all(root, parts)?;
    }
    let state = State::load(root)?;
    print!("{}", table(root, parts, &state));
    Ok(())
}
