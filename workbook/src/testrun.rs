//! Runs `cargo test` for one package and reads what happened from its output.
//!
//! What lives here: [`Cargo`], the one place a child `cargo` is started (the same `cargo`
//! that runs us, in the workbook's root, with the caller's target dir unless told
//! otherwise), and [`parse`], which turns cargo's and libtest's text into an [`Outcome`]:
//! does not compile (first compiler error line), some tests fail (each failing test with
//! the first line of its panic message and the book link in it), passes, or a test binary
//! crashed.
//!
//! Only one package is ever tested at a time (`cargo test -p ex-NN-slug`), never the
//! workspace: feedback on one exercise must not wait for the world to rebuild.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::state::Status;
use crate::{Error, Result};

/// How to start a child `cargo` for a workbook at `root`.
#[derive(Clone, Debug)]
pub struct Cargo {
    root: PathBuf,
    target_dir: Option<PathBuf>,
}

impl Cargo {
    /// Cargo in `root`, with the caller's target dir (`$CARGO_TARGET_DIR`, or the
    /// workspace's `target/`).
    pub fn new(root: &Path) -> Cargo {
        Cargo {
            root: root.to_path_buf(),
            target_dir: None,
        }
    }

    /// The same, building into `dir` instead.
    pub fn with_target_dir(mut self, dir: Option<&Path>) -> Cargo {
        self.target_dir = dir.map(Path::to_path_buf);
        self
    }

    /// The workbook's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `cargo <args>` in the root, stdio inherited; the caller adds arguments and runs it.
    pub fn command(&self) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&self.root);
        if let Some(dir) = &self.target_dir {
            cmd.env("CARGO_TARGET_DIR", dir);
        }
        cmd
    }

    /// `cargo test -p <package> --no-fail-fast`, output captured and parsed.
    pub fn test(&self, package: &str) -> Result<TestRun> {
        let started = Instant::now();
        let mut cmd = self.command();
        cmd.arg("test")
            .arg("--manifest-path")
            .arg(self.root.join("Cargo.toml"))
            .args(["-p", package, "--no-fail-fast", "--color", "never"])
            .args(["--message-format", "short"])
            .env("CARGO_TERM_COLOR", "never")
            .env("CARGO_TERM_PROGRESS_WHEN", "never")
            .stdin(Stdio::null());
        let Output {
            status,
            stdout,
            stderr,
        } = cmd.output().map_err(|e| {
            Error::new(format!(
                "could not start `cargo test -p {package}`: {e} (is cargo on PATH?)"
            ))
        })?;
        let stdout = String::from_utf8_lossy(&stdout).into_owned();
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        let mut outcome = parse(&stdout, &stderr, status.success());
        if let Outcome::Fails { failed, .. } = &mut outcome {
            let key = package.split_once('-').map_or(package, |(_, key)| key);
            let rank = StepOrder::of(&self.root, key);
            failed.sort_by_cached_key(|f| rank.of_test(&f.test));
        }
        Ok(TestRun {
            package: package.to_string(),
            outcome,
            elapsed: started.elapsed(),
            stdout,
            stderr,
        })
    }
}

/// The order an exercise's tests stand in its test files, which is the order the chapter
/// takes its steps in: the first failing test in this order is the step to work on (name
/// order puts `step1_ignores_…` before `step1_parses_every_field`).
pub struct StepOrder {
    /// Each `fn name(` found in `exercises/<key>/tests/*.rs`, in file-name then line order.
    names: Vec<String>,
}

impl StepOrder {
    /// Reads `exercises/<key>/tests/*.rs`; an unreadable file only costs the ordering.
    pub fn of(root: &Path, key: &str) -> StepOrder {
        let mut files: Vec<_> = std::fs::read_dir(root.join("exercises").join(key).join("tests"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .collect();
        files.sort();
        let names = files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.trim_start().strip_prefix("fn "))
                    .filter_map(|rest| rest.split_once('(').map(|(name, _)| name.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        StepOrder { names }
    }

    /// A sort key for a test as `--list` or the harness names it (a test not found in the
    /// files sorts after those found, by name).
    pub fn of_test(&self, test: &str) -> (usize, String) {
        let name = test.split_whitespace().next().unwrap_or(test);
        let name = name.rsplit("::").next().unwrap_or(name);
        let at = self.names.iter().position(|n| n == name);
        (at.unwrap_or(usize::MAX), test.to_string())
    }
}

/// One `cargo test -p <package>` and what came of it.
#[derive(Clone, Debug)]
pub struct TestRun {
    /// The package tested.
    pub package: String,
    /// What happened.
    pub outcome: Outcome,
    /// How long it took, build included.
    pub elapsed: Duration,
    /// Everything cargo and the tests printed to stdout.
    pub stdout: String,
    /// Everything cargo and the compiler printed to stderr.
    pub stderr: String,
}

/// What a `cargo test` run came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every test passed.
    Passes {
        /// How many ran.
        total: usize,
    },
    /// Some tests failed.
    Fails {
        /// The failing tests, in the order of the test files (the first is the earliest step).
        failed: Vec<Failure>,
        /// How many tests ran.
        total: usize,
    },
    /// The package, its tests or a crate they build on does not compile.
    DoesNotCompile {
        /// The first compiler error, with its `file:line:col:` when the compiler gave one.
        error: String,
    },
    /// A test binary died without reporting (a signal such as SIGSEGV, an abort).
    Crashed {
        /// What cargo said, plus the runtime's last words if any.
        message: String,
    },
    /// Cargo itself failed (an unknown package, a broken manifest, no network...).
    CargoFailed {
        /// The first error line cargo printed.
        message: String,
    },
}

/// One failing test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Its name (`step1_parses_every_field`).
    pub test: String,
    /// The first line of its panic message (empty if none was printed).
    pub message: String,
    /// The book link in its output (`ch01-procinfo.html#step-1`), if any.
    pub link: Option<String>,
}

impl Outcome {
    /// The status the state file records for this outcome.
    pub fn status(&self) -> Status {
        match self {
            Outcome::Passes { total } => Status::Done { tests: *total },
            Outcome::Fails { failed, total } => Status::Failing {
                failed: failed.len(),
                total: *total,
                first: failed.first().map(|f| f.test.clone()).unwrap_or_default(),
            },
            Outcome::DoesNotCompile { error } => Status::DoesNotCompile {
                error: error.clone(),
            },
            Outcome::Crashed { message } => Status::Crashed {
                message: message.clone(),
            },
            Outcome::CargoFailed { message } => Status::CargoFailed {
                message: message.clone(),
            },
        }
    }
}

/// Reads cargo's stderr and libtest's stdout. `success` is cargo's exit status.
pub fn parse(stdout: &str, stderr: &str, success: bool) -> Outcome {
    if let Some(error) = first_compile_error(stderr) {
        return Outcome::DoesNotCompile { error };
    }
    let (passed, failed_count) = count_results(stdout);
    if let Some(message) = crash(stderr) {
        return Outcome::Crashed { message };
    }
    let mut failed: Vec<Failure> = stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("test ")?;
            let (name, result) = rest.rsplit_once(" ... ")?;
            (result.trim() == "FAILED").then(|| name.to_string())
        })
        .map(|test| {
            let block = failure_block(stdout, &test);
            Failure {
                message: panic_message(&block),
                link: book_link(&block),
                test,
            }
        })
        .collect();
    failed.sort_by(|a, b| a.test.cmp(&b.test));
    failed.dedup_by(|a, b| a.test == b.test);
    let total = passed + failed_count.max(failed.len());
    if !failed.is_empty() {
        return Outcome::Fails { failed, total };
    }
    if success {
        return Outcome::Passes { total };
    }
    Outcome::CargoFailed {
        message: stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or("cargo test failed without saying why")
            .to_string(),
    }
}

/// The first line that is a compiler error, if the build failed.
fn first_compile_error(stderr: &str) -> Option<String> {
    if !stderr.contains("error: could not compile") {
        return None;
    }
    let generic = |l: &str| {
        l.starts_with("error: could not compile")
            || l.starts_with("error: aborting")
            || l.starts_with("error: test failed")
            || l.starts_with("error: build failed")
    };
    let first = stderr
        .lines()
        .map(str::trim)
        .find(|l| {
            (l.starts_with("error") || l.contains(": error[") || l.contains(": error:"))
                && !generic(l)
        })
        .or_else(|| stderr.lines().find(|l| generic(l)))?;
    Some(first.to_string())
}

/// `(passed, failed)` summed over every `test result:` line.
fn count_results(stdout: &str) -> (usize, usize) {
    let mut passed = 0;
    let mut failed = 0;
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("test result: ") else {
            continue;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next()) {
                match (n.parse::<usize>(), what) {
                    (Ok(n), "passed") => passed += n,
                    (Ok(n), "failed") => failed += n,
                    _ => {}
                }
            }
        }
    }
    (passed, failed)
}

/// What the Rust runtime prints before it aborts a process.
const LAST_WORDS: &[&str] = &[
    "fatal runtime error",
    "has overflowed its stack",
    "panic in a destructor during cleanup",
    "panic in a function that cannot unwind",
    "thread caused non-unwinding panic",
];

/// If a test binary died by a signal or an abort: cargo's words and the binary's last ones.
fn crash(stderr: &str) -> Option<String> {
    let line = stderr.lines().map(str::trim).find(|l| {
        l.contains("process didn't exit successfully") && !l.contains("exit status: 101")
    })?;
    let how = line
        .rfind('(')
        .map(|i| line[i..].trim_matches(['(', ')']).to_string())
        .unwrap_or_else(|| line.to_string());
    let which = stderr
        .lines()
        .find_map(|l| {
            let rest = l.split_once("to rerun pass `")?.1;
            Some(format!(" in `{}`", rest.split('`').next()?))
        })
        .unwrap_or_default();
    // The runtime's last words, and the thread that said them (a watchdog's thread is
    // named after the test's operation).
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    let last_words = lines
        .iter()
        .position(|l| LAST_WORDS.iter().any(|w| l.contains(w)))
        .map(|at| {
            let thread = lines[..at]
                .iter()
                .rev()
                .find_map(|l| {
                    let name = l.strip_prefix("thread '")?.split('\'').next()?;
                    l.contains("panicked at").then_some(name)
                })
                .map(|name| format!(" (thread '{name}')"))
                .unwrap_or_default();
            format!(": {}{thread}", lines[at])
        })
        .unwrap_or_default();
    Some(format!("a test binary died ({how}){which}{last_words}"))
}

/// The captured output of one failing test (between `---- name stdout ----` and the next
/// block or the closing `failures:` list).
fn failure_block(stdout: &str, test: &str) -> String {
    let header = format!("---- {test} stdout ----");
    let mut lines = stdout.lines().skip_while(|l| l.trim() != header);
    if lines.next().is_none() {
        return String::new();
    }
    lines
        .take_while(|l| !l.starts_with("---- ") && l.trim() != "failures:")
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first line of the first panic message in a test's output.
fn panic_message(block: &str) -> String {
    let mut lines = block.lines();
    while let Some(line) = lines.next() {
        if let Some(at) = line.find("panicked at ") {
            let after = line[at + "panicked at ".len()..].trim_end();
            // Rust >= 1.73: `panicked at src/lib.rs:3:5:` and the message on the next lines.
            if after.ends_with(':') {
                return lines
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
                    .to_string();
            }
            return after.to_string();
        }
    }
    block
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// The first book link `chNN-slug.html#anchor` (or without `#anchor`) in `text`.
pub fn book_link(text: &str) -> Option<String> {
    book_links(text).into_iter().next()
}

/// Every book link `chNN-slug.html[#anchor]` in `text`, in order.
pub fn book_links(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut links = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find(".html") {
        let dot = from + found;
        from = dot + ".html".len();
        // Walk back over the page name: `ch`, two digits, `-`, then [a-z0-9-].
        let mut start = dot;
        while start > 0 && {
            let c = bytes[start - 1];
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
        } {
            start -= 1;
        }
        let stem = &text[start..dot];
        let is_chapter = stem.len() > 5
            && stem.starts_with("ch")
            && stem.as_bytes()[2].is_ascii_digit()
            && stem.as_bytes()[3].is_ascii_digit()
            && stem.as_bytes()[4] == b'-';
        if !is_chapter {
            continue;
        }
        let mut end = from;
        if bytes.get(end) == Some(&b'#') {
            end += 1;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'-' || bytes[end] == b'_')
            {
                end += 1;
            }
            if end == from + 1 {
                end = from;
            }
        }
        links.push(text[start..end].to_string());
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn failing_tests_are_ranked_in_the_order_of_the_test_file_not_by_name() {
        let root = tempfile::tempdir().unwrap();
        let tests = root.path().join("exercises/01-procinfo/tests");
        fs::create_dir_all(&tests).unwrap();
        fs::write(
            tests.join("procinfo.rs"),
            "#[test]\nfn step1_parses_every_field() {}\n#[test]\nfn step1_ignores_line_order() {}\n",
        )
        .unwrap();
        let order = StepOrder::of(root.path(), "01-procinfo");
        let mut failed = vec![
            "step1_ignores_line_order".to_string(),
            "unknown_test".to_string(),
            "step1_parses_every_field (did not finish)".to_string(),
        ];
        failed.sort_by_cached_key(|t| order.of_test(t));
        assert_eq!(
            failed,
            [
                "step1_parses_every_field (did not finish)",
                "step1_ignores_line_order",
                "unknown_test"
            ],
            "the first failing test must be the file's first step, whatever its name"
        );
    }

    const FAILING: &str = "
running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

running 4 tests
test step2_reads_this_process ... FAILED
test step1_parses_every_field ... FAILED
test step1_ignores_line_order ... ok
test whole_runtime_x ... FAILED

failures:

---- step2_reads_this_process stdout ----

thread 'step2_reads_this_process' panicked at exercises/01-procinfo/src/lib.rs:147:5:
not yet implemented: ch01 step 2: read /proc/<pid>/status (book: ch01-procinfo.html#step-2)
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace

---- step1_parses_every_field stdout ----

thread 'step1_parses_every_field' panicked at exercises/01-procinfo/tests/procinfo.rs:20:5:
assertion `left == right` failed: each field is a number (book: ch01-procinfo.html#step-1)
  left: 1
 right: 2

---- whole_runtime_x stdout ----
thread 'watched: gmp runtime' panicked at runtime/src/lib.rs:1:1:
boom

failures:
    step1_parses_every_field
    step2_reads_this_process
    whole_runtime_x

test result: FAILED. 1 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s
";

    #[test]
    fn reads_failures_in_name_order_with_message_and_link() {
        let Outcome::Fails { failed, total } = parse(FAILING, "error: test failed", false) else {
            panic!("expected Fails");
        };
        assert_eq!(total, 4);
        let names: Vec<_> = failed.iter().map(|f| f.test.as_str()).collect();
        assert_eq!(
            names,
            [
                "step1_parses_every_field",
                "step2_reads_this_process",
                "whole_runtime_x"
            ]
        );
        assert_eq!(
            failed[0].message,
            "assertion `left == right` failed: each field is a number (book: ch01-procinfo.html#step-1)"
        );
        assert_eq!(failed[0].link.as_deref(), Some("ch01-procinfo.html#step-1"));
        assert!(
            failed[1]
                .message
                .starts_with("not yet implemented: ch01 step 2")
        );
        assert_eq!(failed[1].link.as_deref(), Some("ch01-procinfo.html#step-2"));
        assert_eq!(failed[2].message, "boom");
        assert_eq!(failed[2].link, None);
    }

    #[test]
    fn reads_a_compile_error() {
        let stderr = "   Compiling ex-01-procinfo v0.1.0\n\
            warning: unused variable: `x`\n\
            exercises/01-procinfo/src/lib.rs:139:5: error[E0308]: mismatched types\n\
            error: could not compile `ex-01-procinfo` (lib) due to 1 previous error\n";
        assert_eq!(
            parse("", stderr, false),
            Outcome::DoesNotCompile {
                error: "exercises/01-procinfo/src/lib.rs:139:5: error[E0308]: mismatched types"
                    .into()
            }
        );
    }

    #[test]
    fn reads_a_pass_over_several_binaries() {
        let stdout = "running 2 tests\ntest a ... ok\ntest b ... ok\n\n\
            test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n\
            running 1 test\ntest c ... ok\n\
            test result: ok. 1 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(parse(stdout, "", true), Outcome::Passes { total: 3 });
    }

    #[test]
    fn reads_a_crash() {
        let stderr = "     Running tests/parker.rs (target/debug/deps/parker-1234)\n\
            thread 'watched: idle Ms' (12) panicked at library/core/src/panicking.rs:233:5:\n\
            fatal runtime error: stack overflow\n\
            error: test failed, to rerun pass `--test parker`\n\n\
            Caused by:\n  process didn't exit successfully: `/t/parker-1234` (signal: 6, SIGABRT: process abort signal)\n";
        let Outcome::Crashed { message } = parse("running 3 tests\n", stderr, false) else {
            panic!("expected Crashed");
        };
        assert_eq!(
            message,
            "a test binary died (signal: 6, SIGABRT: process abort signal) in `--test parker`: \
             fatal runtime error: stack overflow (thread 'watched: idle Ms')"
        );
    }

    #[test]
    fn reads_a_cargo_failure() {
        let stderr = "error: package ID specification `ex-42` did not match any packages\n";
        assert_eq!(
            parse("", stderr, false),
            Outcome::CargoFailed {
                message: stderr.trim().into()
            }
        );
    }

    #[test]
    fn finds_book_links() {
        assert_eq!(
            book_links("see ch03-parker.html#step-2, not x.html or ch3-a.html; ch16-senior.html."),
            ["ch03-parker.html#step-2", "ch16-senior.html"]
        );
        assert_eq!(
            book_link("(book: ch01-procinfo.html#)"),
            Some("ch01-procinfo.html".into())
        );
    }
}
