//! `cargo workbook bench [--quick] [--mine NN]... [--only SECTIONS]`: the class bench on the
//! solutions and on the learner's finished parts, then (full run only) the criterion benches.
//!
//! Everything measured lives in crate `gmp-benches`; this command only builds and runs it,
//! with the terminal inherited so the instructor sees the table as it is measured:
//!
//! 1. The learner's parts: every exercise `.workbook/state` has as done, plus those
//!    `--mine` names, that the class bench can swap in (a `mine-NN` feature in
//!    benches/Cargo.toml). If there are any, `cargo build --release -p gmp-benches --bin
//!    class-bench --features mine-NN,...` builds the bench on them; that binary, copied to
//!    `<target>/class-bench/mine/`, measures only the rows that run those parts and writes
//!    them to `<target>/class-bench/mine/rows.tsv`. A build error, a panic or a hang (a
//!    time limit) is written there as a failure, and the run goes on.
//! 2. `cargo run --release -p gmp-benches --bin class-bench -- [--quick] --mine-rows ...`
//!    measures the solution's rows, puts the learner's right below their twins (marked
//!    "your part NN", with the ratio) and writes `target/class-bench/report.{md,html,svg,json}`.
//! 3. Without `--quick`, `cargo bench -p gmp-benches` writes criterion's HTML reports under
//!    `target/criterion/`. `--quick` leaves it out: compiling criterion alone takes about
//!    two minutes on 2 cores, more than the whole quick run.
//!
//! A failing step 2 or 3 stops the command with its exit status. Afterwards it prints where
//! the reports are (under `$CARGO_TARGET_DIR` when that is set).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::parts::{self, Part};
use crate::state::State;
use crate::testrun::Cargo;
use crate::{Error, Result, io_error};

/// What `bench` was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The short run, without criterion.
    pub quick: bool,
    /// Exercises named with `--mine`, as typed.
    pub mine: Vec<String>,
    /// `--only`: the class-bench sections to run (the class bench checks the names).
    pub only: Option<String>,
}

/// The target dir the bench builds write to.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        }
        _ => root.join("target"),
    }
}

fn step(cargo: &Cargo, args: &[&str]) -> Result<()> {
    let status = run_step(cargo, args)?;
    if !status.success() {
        return Err(Error::new(format!(
            "`cargo {}` failed ({status}); its output above says why",
            args.join(" ")
        )));
    }
    Ok(())
}

fn run_step(cargo: &Cargo, args: &[&str]) -> Result<ExitStatus> {
    let shown = format!("cargo {}", args.join(" "));
    println!("\n==> {shown}");
    cargo
        .command()
        .args(args)
        .status()
        .map_err(|e| Error::new(format!("could not start `{shown}`: {e}")))
}

/// The parts the class bench can run on the learner's code: the numbers of the `mine-NN`
/// features in benches/Cargo.toml.
pub fn swappable(root: &Path) -> Result<Vec<u32>> {
    let path = root.join("benches/Cargo.toml");
    let text = fs::read_to_string(&path).map_err(io_error("reading", &path))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("mine-"))
        .filter_map(|rest| rest.split_once('=').map(|(nn, _)| nn.trim()))
        .filter(|nn| nn.len() == 2)
        .filter_map(|nn| nn.parse().ok())
        .collect())
}

/// Why a part runs as the learner's in this bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// `.workbook/state` has its tests passing.
    Done,
    /// `--mine` names it.
    Named,
}

/// The learner's parts to measure, with why each is measured as theirs.
pub type Chosen = Vec<(Part, Why)>;

/// The learner's parts to measure, in chapter order, and notes on done parts the class bench
/// cannot use. A `--mine` that names no exercise, or one without class-bench rows, is an
/// error naming the valid ones.
pub fn learner_parts(root: &Path, all: &[Part], named: &[String]) -> Result<(Chosen, Vec<String>)> {
    let swappable = swappable(root)?;
    let listed = || {
        all.iter()
            .filter(|p| swappable.contains(&p.number))
            .map(Part::label)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut chosen: Chosen = Vec::new();
    for typed in named {
        let part = parts::find(all, typed)
            .map_err(|e| Error::new(format!("--mine {typed}: {}", e.message())))?;
        if !swappable.contains(&part.number) {
            return Err(Error::new(format!(
                "--mine {typed}: the class bench has no rows on part {} yet (benches/Cargo.toml \
                 has no feature mine-{}); it can run on {}",
                part.label(),
                part.nn(),
                listed()
            )));
        }
        if !chosen.iter().any(|(p, _)| p == part) {
            chosen.push((part.clone(), Why::Named));
        }
    }
    let state = State::load(root)?;
    let mut notes = Vec::new();
    for part in all {
        let done = state
            .results
            .get(&part.key())
            .is_some_and(|r| r.status.is_done());
        if !done || chosen.iter().any(|(p, _)| p == part) {
            continue;
        }
        if swappable.contains(&part.number) {
            chosen.push((part.clone(), Why::Done));
        } else {
            notes.push(format!(
                "part {} is done, but the class bench has no rows on it yet",
                part.label()
            ));
        }
    }
    chosen.sort_by_key(|(p, _)| p.number);
    Ok((chosen, notes))
}

/// The time the learner's run may take before it counts as hung (a lost wake-up).
fn learner_limit(quick: bool) -> Duration {
    Duration::from_secs(if quick { 300 } else { 1800 })
}

/// The `bench` command.
pub fn run(root: &Path, all: &[Part], opts: &Options) -> Result<()> {
    let cargo = Cargo::new(root);
    let target = target_dir(root);
    let (mine, notes) = learner_parts(root, all, &opts.mine)?;
    for note in &notes {
        println!("note: {note}");
    }
    let mut extra: Vec<String> = Vec::new();
    if opts.quick {
        extra.push("--quick".into());
    }
    if let Some(only) = &opts.only {
        extra.extend(["--only".to_string(), only.clone()]);
    }
    let mut class: Vec<String> = [
        "run",
        "--release",
        "-p",
        "gmp-benches",
        "--bin",
        "class-bench",
        "--",
    ]
    .map(String::from)
    .to_vec();
    class.extend(extra.iter().cloned());
    if !mine.is_empty() {
        let rows = learner_rows(&cargo, &target, &mine, &extra, learner_limit(opts.quick))?;
        class.extend(["--mine-rows".to_string(), rows.display().to_string()]);
    } else {
        println!(
            "{}, so every row is the solution's; `--mine NN` measures an exercise anyway.",
            if notes.is_empty() {
                "No finished part yet (`cargo workbook status`)"
            } else {
                "None of your finished parts has rows in the class bench"
            }
        );
    }
    step(
        &cargo,
        &class.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    if !opts.quick {
        step(&cargo, &["bench", "-p", "gmp-benches"])?;
    }
    println!("\nreports:");
    let mut reports = vec![
        (
            "class bench (Markdown)",
            target.join("class-bench/report.md"),
        ),
        ("class bench (HTML)", target.join("class-bench/report.html")),
        ("class bench (SVG)", target.join("class-bench/report.svg")),
    ];
    if !opts.quick {
        reports.push(("criterion", target.join("criterion/report/index.html")));
    }
    for (what, path) in reports {
        let note = if path.is_file() { "" } else { " (not written)" };
        println!("  {what:<24} {}{note}", path.display());
    }
    Ok(())
}

/// Builds the class bench on the learner's parts and runs it for their rows; returns the
/// rows file, which holds the rows or says why there are none. Only an I/O error fails.
fn learner_rows(
    cargo: &Cargo,
    target: &Path,
    mine: &[(Part, Why)],
    extra: &[String],
    limit: Duration,
) -> Result<PathBuf> {
    let dir = target.join("class-bench/mine");
    fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
    let rows = dir.join("rows.tsv");
    match fs::remove_file(&rows) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_error("removing", &rows)(e));
        }
        _ => {}
    }
    println!("\nYour parts in this bench (their rows are marked as yours):");
    for (part, why) in mine {
        let why = match why {
            Why::Done => "its tests pass (cargo workbook status)",
            Why::Named => "named with --mine",
        };
        println!("  {}  {why}", part.label());
    }
    let features = mine
        .iter()
        .map(|(p, _)| format!("mine-{}", p.nn()))
        .collect::<Vec<_>>()
        .join(",");
    let labels = mine
        .iter()
        .map(|(p, _)| p.label())
        .collect::<Vec<_>>()
        .join(", ");
    let fail = |why: String| -> Result<PathBuf> {
        println!("\nYour parts' rows are left out: {why}");
        fs::write(
            &rows,
            format!("failed\t{}\n", why.replace(['\t', '\n'], " ")),
        )
        .map_err(io_error("writing", &rows))?;
        Ok(rows.clone())
    };
    let build = [
        "build",
        "--release",
        "-p",
        "gmp-benches",
        "--bin",
        "class-bench",
        "--features",
        &features,
    ];
    let status = run_step(cargo, &build)?;
    if !status.success() {
        return fail(format!(
            "the class bench did not build on your parts {labels} (cargo's errors are above; \
             `cargo test -p ex-NN-...` shows them too)"
        ));
    }
    // The solution's build overwrites target/release/class-bench: keep this one apart.
    let built = target.join("release/class-bench");
    let exe = dir.join("class-bench");
    let _ = fs::remove_file(&exe);
    fs::copy(&built, &exe).map_err(io_error("copying", &built))?;
    let mut args: Vec<String> = extra.to_vec();
    args.extend(["--mine-out".to_string(), rows.display().to_string()]);
    println!("\n==> {} {}", exe.display(), args.join(" "));
    let mut child = Command::new(&exe)
        .args(&args)
        .current_dir(cargo.root())
        .spawn()
        .map_err(|e| Error::new(format!("could not start {}: {e}", exe.display())))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return fail(format!(
                    "the run on your parts {labels} did not finish within {} s and was stopped: \
                     a lost wake-up or a G that never runs again? `cargo test -p` on each part \
                     says which",
                    limit.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(Error::new(format!("waiting for {}: {e}", exe.display()))),
        }
    };
    if !status.success() {
        return fail(format!(
            "the run on your parts {labels} failed ({status}); its output above says why"
        ));
    }
    if !rows.is_file() {
        return fail(format!(
            "the run on your parts {labels} wrote no rows to {}",
            rows.display()
        ));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workbook_with(features: &str, state: &str) -> (tempfile::TempDir, Vec<Part>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("benches")).unwrap();
        fs::write(
            root.join("benches/Cargo.toml"),
            format!("[features]\n{features}"),
        )
        .unwrap();
        fs::create_dir_all(root.join(".workbook")).unwrap();
        fs::write(root.join(".workbook/state"), state).unwrap();
        let all = ["01-procinfo", "03-parker", "06-g", "07-runq"]
            .iter()
            .map(|k| Part::from_folder_name(k).unwrap())
            .collect();
        (dir, all)
    }

    #[test]
    fn done_and_named_parts_are_measured_in_chapter_order() {
        let (dir, all) = workbook_with(
            "mine-01 = [\"gmp/mine-01\"]\nmine-03 = []\nmine-06 = [\"gmp/mine-06\"]\n",
            "result 06-g 1 done 9\nresult 03-parker 1 failing 1 5 x\nresult 07-runq 1 done 3\n",
        );
        let (mine, notes) = learner_parts(dir.path(), &all, &["parker".into()]).unwrap();
        let got: Vec<(u32, Why)> = mine.iter().map(|(p, w)| (p.number, *w)).collect();
        assert_eq!(got, [(3, Why::Named), (6, Why::Done)]);
        assert_eq!(
            notes,
            ["part 07 runq is done, but the class bench has no rows on it yet"]
        );
    }

    #[test]
    fn a_wrong_mine_is_named_with_the_valid_ones() {
        let (dir, all) = workbook_with("mine-01 = []\nmine-03 = []\n", "");
        let e = learner_parts(dir.path(), &all, &["9".into()]).unwrap_err();
        assert!(e.message().starts_with("--mine 9: no exercise 9"), "{e}");
        let e = learner_parts(dir.path(), &all, &["07".into()]).unwrap_err();
        assert!(
            e.message().contains("no rows on part 07 runq")
                && e.message().contains("it can run on 01 procinfo, 03 parker"),
            "{e}"
        );
    }
}
