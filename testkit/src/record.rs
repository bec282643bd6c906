//! Outcome records: how each exercise test ended, whichever way the tests were run.
//!
//! `cargo workbook status` must be right after a plain `cargo test -p ex-NN-slug`, not only
//! after the workbook's own commands ran the tests. So every exercise test starts with
//! `let _outcome = testkit::record!();`: when the test ends, the guard writes one file,
//! `.workbook/tests/NN-slug/<test name>`, at the root of the workbook the exercise was
//! compiled in (found from the exercise's `CARGO_MANIFEST_DIR`). The guard writes it twice:
//! `running` when the test starts, then `pass` or `fail` when it ends. One line:
//!
//! ```text
//! pass 1732360000123 1732359999000000000 /path/to/target/debug/deps/parker-0123abcd
//! ```
//!
//! the outcome (`pass`, `fail` or `running`), when it was written (Unix milliseconds), the
//! test binary's modification time (Unix nanoseconds) and its path. `status` runs
//! `<binary> --list` to know every test the binary holds, and ignores records whose binary
//! has been rebuilt since (its time differs): the exercise is done only when every test of
//! the current binary passed. A test that crashed or was killed never reaches its drop, so
//! its record stays `running`, which is not a pass, even if the same binary passed it before.
//!
//! Only exercise crates (`ex-*`) record: the solutions run the same test files and are not
//! the learner's progress. A child run of [`isolated`](crate::isolated) does not record
//! either; its parent does.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the records live, relative to the workbook's root.
pub const DIR_REL: &str = ".workbook/tests";

/// Records that the test it is called in is running, then its outcome when the returned
/// guard is dropped: `let _outcome = testkit::record!();` as the test's first line.
#[macro_export]
macro_rules! record {
    () => {{
        fn here() {}
        $crate::record::Guard::start(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_MANIFEST_DIR"),
            ::std::any::type_name_of_val(&here),
        )
    }};
}

/// Writes the test's record when dropped; see [`record!`](crate::record!).
#[must_use = "bind it to a variable (`let _outcome = ...`): dropped at once it records a pass"]
#[derive(Debug)]
pub struct Guard {
    /// The record's file and what to write, or nothing when this run does not record.
    target: Option<(PathBuf, Record)>,
}

impl Guard {
    /// A guard for the test whose path is `here` minus its crate and last segment (the
    /// macro's marker function), in package `package` at `manifest_dir`. Writes the
    /// `running` record at once, replacing the last run's outcome.
    pub fn start(package: &str, manifest_dir: &str, here: &str) -> Guard {
        let target = Self::target(package, manifest_dir, here);
        if let Some((file, record)) = &target {
            write(file, record);
        }
        Guard { target }
    }

    fn target(package: &str, manifest_dir: &str, here: &str) -> Option<(PathBuf, Record)> {
        if !package.starts_with("ex-") || std::env::var_os(crate::ISOLATED_ENV).is_some() {
            return None;
        }
        let manifest_dir = Path::new(manifest_dir);
        let key = manifest_dir.file_name()?.to_str()?.to_string();
        let root = manifest_dir.parent()?.parent()?;
        if !root.join("Cargo.toml").is_file() {
            return None;
        }
        let segments: Vec<&str> = here.split("::").collect();
        if segments.len() < 3 {
            return None;
        }
        let test = segments[1..segments.len() - 1].join("::");
        let binary = std::env::current_exe().ok()?;
        let binary_mtime_ns = mtime_ns(&binary)?;
        let file = dir(root, &key).join(&test);
        Some((
            file,
            Record {
                test,
                outcome: Outcome::Running,
                at_ms: unix_ms(SystemTime::now()),
                binary,
                binary_mtime_ns,
            },
        ))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some((file, mut record)) = self.target.take() else {
            return;
        };
        record.outcome = if std::thread::panicking() {
            Outcome::Fail
        } else {
            Outcome::Pass
        };
        record.at_ms = unix_ms(SystemTime::now());
        write(&file, &record);
    }
}

/// Replaces `file` by `record`, whole (a rename), so `status` never reads half a line.
fn write(file: &Path, record: &Record) {
    // Best effort: a read-only checkout only loses `status`'s view of this run.
    let Some(dir) = file.parent() else { return };
    if fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join(format!(".{}.tmp.{}", record.test, std::process::id()));
    if fs::write(&tmp, record.render()).is_ok() {
        let _ = fs::rename(&tmp, file);
    }
}

/// How a test ended, or that it has not ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Pass,
    /// It panicked (an assertion, a watchdog).
    Fail,
    /// It started and never finished: the binary crashed or was killed mid-test, or the
    /// test is still running. Not a pass.
    Running,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Running => "running",
        }
    }
}

/// One test's last outcome, as written by a [`Guard`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The test's name as the harness lists it (`step2_unpark_wakes_a_parked_thread`).
    pub test: String,
    /// How it ended, or `Running`.
    pub outcome: Outcome,
    /// When it was written, Unix milliseconds.
    pub at_ms: u64,
    /// The test binary that ran it.
    pub binary: PathBuf,
    /// That binary's modification time then, Unix nanoseconds.
    pub binary_mtime_ns: u128,
}

impl Record {
    /// The record file's text.
    pub fn render(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.outcome.word(),
            self.at_ms,
            self.binary_mtime_ns,
            self.binary.display()
        )
    }

    /// Parses a record file of test `test`; `None` if it is not one.
    pub fn parse(test: &str, text: &str) -> Option<Record> {
        let line = text.lines().next()?;
        let mut words = line.splitn(4, ' ');
        let outcome = match words.next()? {
            "pass" => Outcome::Pass,
            "fail" => Outcome::Fail,
            "running" => Outcome::Running,
            _ => return None,
        };
        Some(Record {
            test: test.to_string(),
            outcome,
            at_ms: words.next()?.parse().ok()?,
            binary_mtime_ns: words.next()?.parse().ok()?,
            binary: PathBuf::from(words.next()?),
        })
    }

    /// Did the test pass? (`Running` is not a pass.)
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Pass
    }

    /// Was the binary rebuilt (or removed) since this record was written?
    pub fn is_stale(&self) -> bool {
        mtime_ns(&self.binary) != Some(self.binary_mtime_ns)
    }
}

/// The folder of exercise `key`'s records (`NN-slug`) in the workbook at `root`.
pub fn dir(root: &Path, key: &str) -> PathBuf {
    root.join(DIR_REL).join(key)
}

/// Every record of exercise `key`, in name order; files that are not records are skipped.
pub fn load(root: &Path, key: &str) -> Vec<Record> {
    let mut records: Vec<Record> = fs::read_dir(dir(root, key))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let test = entry.file_name().to_str()?.to_string();
            if test.starts_with('.') {
                return None;
            }
            Record::parse(&test, &fs::read_to_string(entry.path()).ok()?)
        })
        .collect();
    records.sort_by(|a, b| a.test.cmp(&b.test));
    records
}

/// A file's modification time in Unix nanoseconds.
pub fn mtime_ns(path: &Path) -> Option<u128> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(UNIX_EPOCH).ok()?.as_nanos())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_with_spaces_in_the_path() {
        for outcome in [Outcome::Pass, Outcome::Fail, Outcome::Running] {
            let record = Record {
                test: "step1_x".into(),
                outcome,
                at_ms: 17,
                binary: PathBuf::from("/a b/parker-12"),
                binary_mtime_ns: 1_700_000_000_123_456_789,
            };
            assert_eq!(Record::parse("step1_x", &record.render()), Some(record));
        }
        assert_eq!(Record::parse("x", "maybe 1 2 /p"), None, "unknown outcome");
        assert_eq!(Record::parse("x", "pass 1 /p"), None, "a field missing");
    }

    #[test]
    fn only_exercise_packages_in_a_workbook_record() {
        let root = tempfile_dir("testkit-record");
        fs::write(root.join("Cargo.toml"), "[workspace]\n").unwrap();
        let manifest = root.join("exercises/03-parker");
        let manifest = manifest.to_str().unwrap();
        let here = "parker::step2_x::here";
        assert!(
            Guard::start("sol-03-parker", manifest, here)
                .target
                .is_none()
        );
        assert!(
            Guard::start("ex-03-parker", "/nowhere/exercises/03-parker", here)
                .target
                .is_none(),
            "no Cargo.toml at the root: not a workbook"
        );
        drop(Guard::start("ex-03-parker", manifest, here));
        let records = load(&root, "03-parker");
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].test, "step2_x");
        assert!(records[0].passed(), "dropped without a panic: a pass");
        assert!(!records[0].is_stale(), "this binary was not rebuilt");
        let failed = std::thread::spawn({
            let manifest = manifest.to_string();
            move || {
                let _outcome = Guard::start("ex-03-parker", &manifest, "parker::m::t::here");
                panic!("the test fails");
            }
        })
        .join();
        assert!(failed.is_err());
        let records = load(&root, "03-parker");
        assert_eq!(records[0].test, "m::t", "module path kept, marker dropped");
        assert_eq!(
            records[0].outcome,
            Outcome::Fail,
            "dropped while panicking: a failure"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    /// A crash (abort, segfault, kill) skips every drop. The record the test started with
    /// must then say it never finished, not keep the pass of the same binary's last run.
    #[test]
    fn a_test_that_never_finishes_does_not_keep_its_last_pass() {
        let root = tempfile_dir("testkit-crash");
        fs::write(root.join("Cargo.toml"), "[workspace]\n").unwrap();
        let manifest = root.join("exercises/03-parker");
        let manifest = manifest.to_str().unwrap();
        let here = "parker::step2_x::here";
        drop(Guard::start("ex-03-parker", manifest, here));
        assert!(load(&root, "03-parker")[0].passed(), "the first run passes");

        let running = Guard::start("ex-03-parker", manifest, here);
        let records = load(&root, "03-parker");
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].outcome, Outcome::Running, "written at the start");
        assert!(!records[0].passed());
        // What a crash does to the guard: its drop never runs.
        std::mem::forget(running);
        let records = load(&root, "03-parker");
        assert_eq!(
            records[0].outcome,
            Outcome::Running,
            "the earlier pass must not survive a run that did not finish"
        );
        assert!(!records[0].is_stale(), "same binary: the record counts");
        fs::remove_dir_all(&root).unwrap();
    }

    fn tempfile_dir(prefix: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            unix_ms(SystemTime::now())
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
