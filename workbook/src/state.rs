//! The learner's progress, kept in the plain-text file `.workbook/state` at the root.
//!
//! `watch` and `status --check` record each exercise's last test result; `hint` records
//! how many hints were shown; `status` only reads the file, so it prints at once without
//! running 17 crates' tests. The file is gitignored, meant to be readable, and safe to
//! delete (everything goes back to "not started", hints to the first one).
//!
//! A plain `cargo test -p ex-NN-slug` reaches the file too: every exercise test writes its
//! outcome to `.workbook/tests/NN-slug/` (`testkit::record`), and [`State::load`] merges
//! those records when they are newer than the file's result (see [`from_records`]).
//!
//! Format, one fact per line, `#` starts a comment, unknown lines are skipped:
//!
//! ```text
//! result 01-procinfo 1732360000 done 12
//! result 02-osthread 1732360000 failing 3 14 step2_starts_a_named_thread
//! result 03-parker 1732360000 does-not-compile src/lib.rs:12:5: error[E0308]: mismatched types
//! result 04-context 1732360000 crashed signal 11 (SIGSEGV) in `--test context`
//! result 05-stack 1732360000 partial 4 17 step2_guard_page_is_mapped
//! hints 01-procinfo 2
//! ```
//!
//! The number after the part is the Unix time of the check.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use testkit::record::{self, Outcome, Record};

use crate::{Result, io_error};

/// `.workbook/state`, relative to the root.
pub const STATE_REL: &str = ".workbook/state";

/// The last known test result of one exercise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every test passes.
    Done {
        /// How many tests ran.
        tests: usize,
    },
    /// Some tests fail.
    Failing {
        /// How many failed.
        failed: usize,
        /// How many ran.
        total: usize,
        /// The first failing test in the test file's order: the step to work on.
        first: String,
    },
    /// The exercise (or its tests) does not compile.
    DoesNotCompile {
        /// The first compiler error line.
        error: String,
    },
    /// A test binary died (a signal, an abort) before reporting.
    Crashed {
        /// What cargo said about it.
        message: String,
    },
    /// Cargo itself failed before any test ran (a broken manifest, a missing package).
    CargoFailed {
        /// Cargo's first error line.
        message: String,
    },
    /// Every test that ran passed, but some of the binary's tests have not run since it
    /// was built (a filtered `cargo test -p ex-NN-slug step1`).
    Partial {
        /// How many passed.
        passed: usize,
        /// How many the test binaries hold.
        total: usize,
        /// The first test, in the test file's order, that has not run.
        next: String,
    },
}

impl Status {
    /// One line for the status table.
    pub fn describe(&self) -> String {
        match self {
            Status::Done { tests } => format!("done ({tests} tests pass)"),
            Status::Failing {
                failed,
                total,
                first,
            } => format!("failing: {failed} of {total} tests (first: {first})"),
            Status::DoesNotCompile { error } => format!("does not compile: {error}"),
            Status::Crashed { message } => format!("crashed: {message}"),
            Status::CargoFailed { message } => format!("cargo failed: {message}"),
            Status::Partial {
                passed,
                total,
                next,
            } => format!("{passed} of {total} tests pass, the others not run yet (next: {next})"),
        }
    }

    /// Whether the exercise is finished.
    pub fn is_done(&self) -> bool {
        matches!(self, Status::Done { .. })
    }
}

/// A recorded result and when it was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The result.
    pub status: Status,
    /// Unix time (seconds) of the check.
    pub checked_at: u64,
}

/// Everything the state file holds, keyed by the part's `NN-slug`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Last test result per part.
    pub results: BTreeMap<String, Recorded>,
    /// Hints shown so far per part (0 or absent: none yet).
    pub hints: BTreeMap<String, usize>,
}

impl State {
    /// Parses the file's text; lines it does not understand are skipped.
    pub fn parse(text: &str) -> State {
        let mut state = State::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            match words.next() {
                Some("result") => {
                    let (Some(key), Some(time)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let Ok(checked_at) = time.parse() else {
                        continue;
                    };
                    if let Some(status) = parse_status(&words.collect::<Vec<_>>()) {
                        state
                            .results
                            .insert(key.to_string(), Recorded { status, checked_at });
                    }
                }
                Some("hints") => {
                    if let (Some(key), Some(Ok(n))) = (words.next(), words.next().map(str::parse)) {
                        state.hints.insert(key.to_string(), n);
                    }
                }
                _ => {}
            }
        }
        state
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# cargo workbook: your progress (written by `watch`, `status --check` and `hint`).\n\
             # Plain text, safe to delete: everything goes back to \"not started\".\n",
        );
        for (key, rec) in &self.results {
            let rest = match &rec.status {
                Status::Done { tests } => format!("done {tests}"),
                Status::Failing {
                    failed,
                    total,
                    first,
                } => format!("failing {failed} {total} {}", one_line(first)),
                Status::DoesNotCompile { error } => {
                    format!("does-not-compile {}", one_line(error))
                }
                Status::Crashed { message } => format!("crashed {}", one_line(message)),
                Status::CargoFailed { message } => format!("cargo-failed {}", one_line(message)),
                Status::Partial {
                    passed,
                    total,
                    next,
                } => format!("partial {passed} {total} {}", one_line(next)),
            };
            out.push_str(&format!("result {key} {} {rest}\n", rec.checked_at));
        }
        for (key, n) in &self.hints {
            out.push_str(&format!("hints {key} {n}\n"));
        }
        out
    }

    /// Reads `root/.workbook/state` (a missing file is an empty state), then takes each
    /// exercise's test records where they are newer than the file's result.
    pub fn load(root: &Path) -> Result<State> {
        let path = path(root);
        let mut state = match fs::read_to_string(&path) {
            Ok(text) => State::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io_error("reading", &path)(e)),
        };
        state.merge_records(root);
        Ok(state)
    }

    /// Replaces each exercise's result by the one its test records give, when those are
    /// newer (a plain `cargo test -p ex-NN-slug` ran after the last workbook command).
    pub fn merge_records(&mut self, root: &Path) {
        let keys: Vec<String> = fs::read_dir(root.join(record::DIR_REL))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        for key in keys {
            let Some(from_records) = from_records(root, &key) else {
                continue;
            };
            let newer = self
                .results
                .get(&key)
                .is_none_or(|old| from_records.checked_at > old.checked_at);
            if newer {
                self.results.insert(key, from_records);
            }
        }
    }

    /// Writes `root/.workbook/state` (through a temporary file, so a reader never sees half).
    pub fn save(&self, root: &Path) -> Result<()> {
        let path = path(root);
        let dir = path.parent().expect("the state file is inside .workbook/");
        fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        let tmp = dir.join(format!("state.tmp.{}", std::process::id()));
        fs::write(&tmp, self.render()).map_err(io_error("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_error("writing", &path))
    }

    /// Records a test result taken now.
    pub fn record(&mut self, key: &str, status: Status) {
        self.results.insert(
            key.to_string(),
            Recorded {
                status,
                checked_at: unix_now(),
            },
        );
    }

    /// Hints shown so far for a part.
    pub fn hints_shown(&self, key: &str) -> usize {
        self.hints.get(key).copied().unwrap_or(0)
    }
}

/// The state file's path.
pub fn path(root: &Path) -> PathBuf {
    root.join(STATE_REL)
}

/// Loads the state, applies `change`, and saves it: the one way commands update the file,
/// so two commands running at once lose at most each other's latest line.
pub fn update<T>(root: &Path, change: impl FnOnce(&mut State) -> T) -> Result<T> {
    let mut state = State::load(root)?;
    let value = change(&mut state);
    state.save(root)?;
    Ok(value)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Exercise `key`'s result from its test records, or `None` when there is no record for
/// its current test binaries (never run, or rebuilt since).
///
/// Each binary that wrote a record is asked for every test it holds (`<binary> --list`,
/// which runs nothing): the exercise is done when every one of them passed, failing when
/// one failed or never finished (the first in the test file's order, which is the
/// chapter's step order, is the one to work on), and partial when the others have not run since the binary was built. A test
/// whose record still says `running` crashed the binary or was killed (or is running now):
/// it counts as failing, and [`UNFINISHED`] says so after its name.
pub fn from_records(root: &Path, key: &str) -> Option<Recorded> {
    let fresh: Vec<Record> = record::load(root, key)
        .into_iter()
        .filter(|r| !r.is_stale())
        .collect();
    let newest_ms = fresh.iter().map(|r| r.at_ms).max()?;
    let mut binaries: BTreeMap<&Path, Vec<&Record>> = BTreeMap::new();
    for r in &fresh {
        binaries.entry(&r.binary).or_default().push(r);
    }
    let (mut total, mut passed) = (0, 0);
    let (mut failed, mut not_run) = (Vec::new(), Vec::new());
    for (binary, records) in binaries {
        let listed = list_tests(binary)?;
        total += listed.len();
        for test in listed {
            match records.iter().find(|r| r.test == test).map(|r| r.outcome) {
                Some(Outcome::Pass) => passed += 1,
                Some(Outcome::Fail) => failed.push(test),
                Some(Outcome::Running) => failed.push(format!("{test} {UNFINISHED}")),
                None => not_run.push(test),
            }
        }
    }
    let rank = crate::testrun::StepOrder::of(root, key);
    failed.sort_by_cached_key(|t| rank.of_test(t));
    not_run.sort_by_cached_key(|t| rank.of_test(t));
    let status = if let Some(first) = failed.first() {
        Status::Failing {
            failed: failed.len(),
            total,
            first: first.clone(),
        }
    } else if let Some(next) = not_run.first() {
        Status::Partial {
            passed,
            total,
            next: next.clone(),
        }
    } else {
        Status::Done { tests: total }
    };
    Some(Recorded {
        status,
        checked_at: newest_ms / 1000,
    })
}

/// Said after the name of a test whose record still says `running`.
pub const UNFINISHED: &str = "(did not finish: the test binary crashed or was killed \
                              mid-test, or it is still running)";

/// The tests a libtest binary holds (`--list --format terse`: `name: test` lines).
fn list_tests(binary: &Path) -> Option<Vec<String>> {
    let out = Command::new(binary)
        .args(["--list", "--format", "terse"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_string)
            .collect(),
    )
}

fn parse_status(words: &[&str]) -> Option<Status> {
    let rest = |from: usize| words.get(from..).unwrap_or_default().join(" ");
    match *words.first()? {
        "done" => Some(Status::Done {
            tests: words.get(1)?.parse().ok()?,
        }),
        "failing" => Some(Status::Failing {
            failed: words.get(1)?.parse().ok()?,
            total: words.get(2)?.parse().ok()?,
            first: rest(3),
        }),
        "does-not-compile" => Some(Status::DoesNotCompile { error: rest(1) }),
        "crashed" => Some(Status::Crashed { message: rest(1) }),
        "cargo-failed" => Some(Status::CargoFailed { message: rest(1) }),
        "partial" => Some(Status::Partial {
            passed: words.get(1)?.parse().ok()?,
            total: words.get(2)?.parse().ok()?,
            next: rest(3),
        }),
        _ => None,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_status_and_hints() {
        let mut state = State::default();
        state.record("01-procinfo", Status::Done { tests: 12 });
        state.record(
            "02-osthread",
            Status::Failing {
                failed: 3,
                total: 14,
                first: "step2_starts_a_named_thread".into(),
            },
        );
        state.record(
            "03-parker",
            Status::DoesNotCompile {
                error: "src/lib.rs:12:5: error[E0308]: mismatched\ntypes".into(),
            },
        );
        state.record(
            "04-context",
            Status::Crashed {
                message: "signal 11 (SIGSEGV)".into(),
            },
        );
        state.record(
            "05-stack",
            Status::Partial {
                passed: 4,
                total: 17,
                next: "step2_x".into(),
            },
        );
        state.hints.insert("01-procinfo".into(), 2);
        let back = State::parse(&state.render());
        assert_eq!(back.hints, state.hints);
        assert_eq!(back.results.len(), 5);
        assert_eq!(back.results["05-stack"], state.results["05-stack"]);
        assert_eq!(back.results["01-procinfo"], state.results["01-procinfo"]);
        assert_eq!(back.results["02-osthread"], state.results["02-osthread"]);
        assert_eq!(
            back.results["03-parker"].status,
            Status::DoesNotCompile {
                error: "src/lib.rs:12:5: error[E0308]: mismatched types".into()
            },
            "a message is kept on one line"
        );
        assert_eq!(back.results["04-context"], state.results["04-context"]);
    }

    #[test]
    fn skips_lines_it_does_not_understand() {
        let state = State::parse(
            "# comment\nresult 01-procinfo notanumber done 3\nresult 02-x 5 weird\n\
             hints 01-procinfo x\nsomething else\nhints 02-osthread 1\n",
        );
        assert!(state.results.is_empty());
        assert_eq!(state.hints_shown("02-osthread"), 1);
        assert_eq!(state.hints_shown("01-procinfo"), 0);
    }

    #[test]
    fn saves_and_loads_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), State::default());
        update(dir.path(), |s| s.hints.insert("01-procinfo".into(), 3)).unwrap();
        let loaded = State::load(dir.path()).unwrap();
        assert_eq!(loaded.hints_shown("01-procinfo"), 3);
        assert!(dir.path().join(".workbook/state").is_file());
    }

    /// Writes a record for `test` of this very test binary, as testkit's guard would.
    fn write_record(root: &Path, key: &str, test: &str, outcome: Outcome, binary_mtime_ns: u128) {
        let binary = std::env::current_exe().unwrap();
        let dir = record::dir(root, key);
        fs::create_dir_all(&dir).unwrap();
        let rec = Record {
            test: test.into(),
            outcome,
            at_ms: unix_now() * 1000 + 999,
            binary,
            binary_mtime_ns,
        };
        fs::write(dir.join(test), rec.render()).unwrap();
    }

    #[test]
    fn records_of_a_plain_test_run_override_an_older_result() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let me = std::env::current_exe().unwrap();
        let mtime = record::mtime_ns(&me).unwrap();
        let mut tests = list_tests(&me).expect("this test binary lists its tests");
        tests.sort();
        assert!(tests.len() > 3, "{tests:?}");
        update(root, |s| {
            s.results.insert(
                "03-parker".into(),
                Recorded {
                    status: Status::Done { tests: 1 },
                    checked_at: 1,
                },
            )
        })
        .unwrap();

        write_record(root, "03-parker", &tests[1], Outcome::Pass, mtime);
        let partial = State::load(root).unwrap().results["03-parker"]
            .status
            .clone();
        assert_eq!(
            partial,
            Status::Partial {
                passed: 1,
                total: tests.len(),
                next: tests[0].clone()
            },
            "one test ran: the others are not run yet, and the old result is replaced"
        );

        for (i, test) in tests.iter().enumerate() {
            let outcome = if i == 2 { Outcome::Fail } else { Outcome::Pass };
            write_record(root, "03-parker", test, outcome, mtime);
        }
        let failing = State::load(root).unwrap().results["03-parker"]
            .status
            .clone();
        assert_eq!(
            failing,
            Status::Failing {
                failed: 1,
                total: tests.len(),
                first: tests[2].clone()
            }
        );

        // A crash mid-test: the test's record still says running, and that is no pass even
        // though the same binary passed it before.
        write_record(root, "03-parker", &tests[2], Outcome::Running, mtime);
        let crashed = State::load(root).unwrap().results["03-parker"]
            .status
            .clone();
        assert_eq!(
            crashed,
            Status::Failing {
                failed: 1,
                total: tests.len(),
                first: format!("{} {UNFINISHED}", tests[2])
            }
        );
        let row = crashed.describe();
        assert!(
            row.starts_with("failing: 1 of ")
                && row.contains("did not finish")
                && row.contains("crashed or was killed"),
            "{row}"
        );

        write_record(root, "03-parker", &tests[2], Outcome::Pass, mtime);
        let done = update(root, |s| s.results["03-parker"].status.clone()).unwrap();
        assert_eq!(done, Status::Done { tests: tests.len() });
        let saved = fs::read_to_string(path(root)).unwrap();
        assert!(
            saved.contains(&format!("done {}", tests.len())),
            "the merged result reaches the state file: {saved}"
        );

        for test in &tests {
            write_record(root, "03-parker", test, Outcome::Fail, mtime - 1);
        }
        let stale = State::load(root).unwrap().results["03-parker"]
            .status
            .clone();
        assert_eq!(
            stale,
            Status::Done { tests: tests.len() },
            "records of a binary since rebuilt are ignored: the saved result stands"
        );
    }
}
