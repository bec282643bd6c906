//! The command line as a learner meets it: the built binary, run on temporary workbooks.

mod common;

use std::fs;

use common::{fixture, text, workbook};

#[test]
fn an_unknown_command_lists_the_commands() {
    let root = fixture();
    let out = workbook(root.path(), &["frobnicate"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.starts_with(
            "error: unknown command `frobnicate`: the commands are book, serve, status, watch, \
             hint, reset, bench, verify, help"
        ),
        "{stderr}"
    );
}

#[test]
fn an_unknown_exercise_lists_the_exercises() {
    let root = fixture();
    for args in [
        &["hint", "42"][..],
        &["watch", "42"],
        &["reset", "42", "--yes"],
    ] {
        let out = workbook(root.path(), args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(
                "error: no exercise 42: the exercises are 01 procinfo, 02 osthread, 03 parker"
            ),
            "{args:?}: {stderr}"
        );
    }
    let (_, stderr) = text(&workbook(root.path(), &["verify", "--only", "stacks"]));
    assert!(
        stderr.contains("no exercise stacks: the exercises are 01 procinfo"),
        "{stderr}"
    );
}

#[test]
fn help_lists_the_commands_and_the_exercises() {
    let root = fixture();
    for args in [&[][..], &["help"], &["--help"], &["hint", "--help"]] {
        let out = workbook(root.path(), args);
        let (stdout, _) = text(&out);
        assert!(out.status.success());
        for command in [
            "book", "serve", "status", "watch", "hint", "reset", "bench", "verify",
        ] {
            assert!(
                stdout.contains(&format!("\n  {command} ")),
                "{command} in {stdout}"
            );
        }
        assert!(
            stdout.contains("Exercises: 01 procinfo, 02 osthread, 03 parker"),
            "{stdout}"
        );
    }
}

#[test]
fn a_root_that_is_not_a_workbook_is_named() {
    let empty = tempfile::tempdir().unwrap();
    let (_, stderr) = text(&workbook(empty.path(), &["status"]));
    assert!(stderr.contains("is not the workbook"), "{stderr}");
    assert!(stderr.contains("GMP_WORKBOOK_ROOT"), "{stderr}");
}

#[test]
fn hints_come_one_at_a_time_and_are_remembered() {
    let root = fixture();
    let hint = |args: &[&str]| {
        let mut all = vec!["hint"];
        all.extend_from_slice(args);
        let out = workbook(root.path(), &all);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{all:?}: {stderr}");
        stdout
    };
    let first = hint(&["1"]);
    assert!(
        first.starts_with("Hint 1 of 3 (exercise 01 procinfo)"),
        "{first}"
    );
    assert!(
        first.contains("Read the status text line by line."),
        "{first}"
    );
    assert!(!first.contains("split_once"), "one hint at a time: {first}");
    assert!(
        first.contains("`cargo workbook hint 01` shows hint 2 of 3"),
        "{first}"
    );

    let second = hint(&["01"]);
    assert!(second.starts_with("Hint 2 of 3: split"), "{second}");
    assert!(second.contains("split_once"), "{second}");
    assert!(hint(&["procinfo", "--again"]).starts_with("Hint 2 of 3: split"));

    let state = fs::read_to_string(root.path().join(".workbook/state")).unwrap();
    assert!(state.contains("hints 01-procinfo 2"), "{state}");

    assert!(hint(&["1"]).starts_with("Hint 3 of 3"));
    let none = hint(&["1"]);
    assert!(
        none.starts_with("no more hints: you have seen all 3 hints"),
        "{none}"
    );
    assert!(none.contains("solutions/01-procinfo"), "{none}");

    assert!(hint(&["1", "--reset"]).contains("start over"));
    assert!(hint(&["1"]).starts_with("Hint 1 of 3"));
}

#[test]
fn an_exercise_without_hints_says_which_file_is_missing() {
    let root = fixture();
    let out = workbook(root.path(), &["hint", "2"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("exercises/02-osthread/hints.md"),
        "{stderr}"
    );
}

#[test]
fn status_reads_the_state_file_without_running_cargo() {
    let root = fixture();
    let (stdout, _) = text(&workbook(root.path(), &["status"]));
    assert_eq!(stdout.matches("not started").count(), 3, "{stdout}");
    assert!(stdout.contains("next: chapter 1"), "{stdout}");

    // A result from the future, so no file counts as changed since.
    fs::create_dir_all(root.path().join(".workbook")).unwrap();
    fs::write(
        root.path().join(".workbook/state"),
        "result 01-procinfo 99999999999 done 12\n\
         result 02-osthread 99999999999 failing 3 14 step2_starts_a_named_thread\n\
         hints 01-procinfo 2\n",
    )
    .unwrap();
    let (stdout, _) = text(&workbook(root.path(), &["status"]));
    let row = |n: &str| {
        stdout
            .lines()
            .find(|l| l.contains(&format!("ex-{n}")))
            .unwrap_or_else(|| panic!("no row for {n} in {stdout}"))
            .to_string()
    };
    assert!(
        row("01-procinfo").contains("done (12 tests pass)"),
        "{stdout}"
    );
    assert!(
        row("01-procinfo").contains("2 of 3"),
        "hint progress: {stdout}"
    );
    assert!(
        row("02-osthread").contains("failing: 3 of 14 tests (first: step2_starts_a_named_thread)"),
        "{stdout}"
    );
    assert!(row("03-parker").contains("not started"), "{stdout}");
    assert!(stdout.contains("next: chapter 2"), "{stdout}");
    assert!(stdout.contains("cargo workbook watch 02"), "{stdout}");
}

#[test]
fn reset_backs_up_and_restores_the_skeleton_from_git() {
    let root = fixture();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(root.path())
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", text(&out).1);
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "skeleton"]);
    let lib = root.path().join("exercises/02-osthread/src/lib.rs");
    let skeleton = fs::read_to_string(&lib).unwrap();
    fs::write(&lib, "// my work\n").unwrap();
    fs::write(lib.with_file_name("extra.rs"), "// mine too\n").unwrap();

    let (stdout, _) = text(&workbook(root.path(), &["reset", "2"]));
    assert!(
        stdout.contains("nothing changed"),
        "no answer means no: {stdout}"
    );
    assert_eq!(fs::read_to_string(&lib).unwrap(), "// my work\n");

    let out = workbook(root.path(), &["reset", "osthread", "--yes"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(fs::read_to_string(&lib).unwrap(), skeleton);
    assert!(!lib.with_file_name("extra.rs").exists());
    let saved = stdout
        .lines()
        .find_map(|l| l.split_once(" is saved in "))
        .map(|(_, dir)| root.path().join(dir.trim()))
        .unwrap_or_else(|| panic!("says where the backup is: {stdout}"));
    assert!(
        saved.starts_with(root.path().join(".workbook/backup")),
        "{saved:?}"
    );
    assert!(
        saved
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("02-osthread-")
    );
    assert_eq!(
        fs::read_to_string(saved.join("lib.rs")).unwrap(),
        "// my work\n"
    );
    assert_eq!(
        fs::read_to_string(saved.join("extra.rs")).unwrap(),
        "// mine too\n"
    );
}
