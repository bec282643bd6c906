//! The learner's progress, kept in the plain-text file `.workbook/state` at the root.
//!
//! `watch` and `status --check` record each exercise's last test result; `hint` records
//! how many hints were shown; `status` only reads the file, so it prints at once without
//! running 17 crates' tests. The file is gitignored, meant to be readable, and safe to
//! delete (everything goes back to "not started", hints to the first one).
//!
//! Format, one fact per line, `#` starts a comment, unknown lines are skipped:
//!
//! ```text
//! result 01-procinfo 1732360000 done 12
//! result 02-osthread 1732360000 failing 3 14 step2_starts_a_named_thread
//! result 03-parker 1732360000 does-not-compile src/lib.rs:12:5: error[E0308]: mismatched types
//! result 04-context 1732360000 crashed signal 11 (SIGSEGV) in `--test context`
//! hints 01-procinfo 2
//! ```
//!
//! The number after the part is the Unix time of the check.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

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
        /// The first failing test in name order: the step to work on.
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
            };
            out.push_str(&format!("result {key} {} {rest}\n", rec.checked_at));
        }
        for (key, n) in &self.hints {
            out.push_str(&format!("hints {key} {n}\n"));
        }
        out
    }

    /// Reads `root/.workbook/state`; a missing file is an empty state.
    pub fn load(root: &Path) -> Result<State> {
        let path = path(root);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(State::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io_error("reading", &path)(e)),
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
        state.hints.insert("01-procinfo".into(), 2);
        let back = State::parse(&state.render());
        assert_eq!(back.hints, state.hints);
        assert_eq!(back.results.len(), 4);
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
}
