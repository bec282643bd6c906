//! `cargo workbook reset NN [--yes]`: puts an exercise's skeleton back.
//!
//! The skeleton is what git has at `HEAD` for `exercises/NN-slug/src/` (`git show
//! HEAD:path` for each file). Before anything is overwritten, the learner's whole `src/`
//! is copied to `.workbook/backup/NN-slug-<unix time>/`, and the command says where; files
//! the learner added to `src/` are removed from it (they are in the backup too). It asks
//! `y/N` first unless `--yes` is given. The exercise's recorded test result is forgotten
//! (it is a skeleton again); hint progress is kept.

use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::parts::Part;
use crate::state::{self, unix_now};
use crate::{Error, Result, io_error, rel};

/// Copies `part`'s `src/` to a new folder under `.workbook/backup/`; returns that folder.
pub fn backup(root: &Path, part: &Part) -> Result<PathBuf> {
    let base = root.join(".workbook/backup");
    let time = unix_now();
    let mut dest = base.join(format!("{}-{time}", part.key()));
    let mut n = 1;
    while dest.exists() {
        n += 1;
        dest = base.join(format!("{}-{time}-{n}", part.key()));
    }
    copy_dir(&part.exercise_dir(root).join("src"), &dest)?;
    Ok(dest)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(io_error("creating", to))?;
    for entry in fs::read_dir(from).map_err(io_error("reading", from))? {
        let entry = entry.map_err(io_error("reading", from))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target).map_err(io_error("copying", &entry.path()))?;
        }
    }
    Ok(())
}

fn git(root: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let output = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .map_err(|e| {
            Error::new(format!(
                "reset needs git to find the skeleton, and git could not be started: {e}"
            ))
        })?;
    if !output.status.success() {
        return Err(Error::new(format!(
            "`git {}` failed: {} (reset takes the skeleton from the repository's HEAD commit; \
             is {} a git clone?)",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim(),
            root.display()
        )));
    }
    Ok(output.stdout)
}

/// Writes the skeleton from git's `HEAD` over `part`'s `src/`, removing files git does not
/// have there. Returns the files written and the files removed (relative to the root).
pub fn restore(root: &Path, part: &Part) -> Result<(Vec<String>, Vec<String>)> {
    let src_rel = format!("{}/src", part.exercise_rel());
    let listing = git(
        root,
        &["ls-tree", "-r", "--name-only", "HEAD", "--", &src_rel],
    )?;
    let files: Vec<String> = String::from_utf8_lossy(&listing)
        .lines()
        .map(str::to_string)
        .collect();
    if files.is_empty() {
        return Err(Error::new(format!(
            "git's HEAD has no files under {src_rel}: there is no skeleton to restore"
        )));
    }
    let mut contents = Vec::new();
    for file in &files {
        // `HEAD:./path` is relative to `-C root`, like the names ls-tree printed.
        contents.push(git(root, &["show", &format!("HEAD:./{file}")])?);
    }
    let mut removed = Vec::new();
    remove_extra(root, &root.join(&src_rel), &files, &mut removed)?;
    for (file, content) in files.iter().zip(contents) {
        let path = root.join(file);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        }
        fs::write(&path, content).map_err(io_error("writing", &path))?;
    }
    Ok((files, removed))
}

fn remove_extra(root: &Path, dir: &Path, keep: &[String], removed: &mut Vec<String>) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry.map_err(io_error("reading", dir))?.path();
        if path.is_dir() {
            remove_extra(root, &path, keep, removed)?;
            // Only empty folders go; a folder git has files in stays.
            let _ = fs::remove_dir(&path);
        } else {
            let name = rel(root, &path);
            if !keep.contains(&name) {
                fs::remove_file(&path).map_err(io_error("removing", &path))?;
                removed.push(name);
            }
        }
    }
    Ok(())
}

/// Asks `question [y/N]` on the terminal; anything but y/yes (or no input) is no.
fn confirm(question: &str) -> bool {
    print!("{question} [y/N] ");
    let _ = io::stdout().flush();
    let mut answer = String::new();
    if io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// The `reset` command.
pub fn run(root: &Path, part: &Part, yes: bool) -> Result<()> {
    let src = format!("{}/src", part.exercise_rel());
    let question = format!(
        "Put the skeleton of exercise {} back into {src}? Your files there are copied to \
         .workbook/backup/ first.",
        part.label()
    );
    if !yes && !confirm(&question) {
        println!(
            "nothing changed (say y, or run `cargo workbook reset {} --yes`)",
            part.nn()
        );
        return Ok(());
    }
    let saved = backup(root, part)?;
    println!("your {src} is saved in {}", rel(root, &saved));
    let (written, removed) = restore(root, part)?;
    for file in &removed {
        println!("removed {file} (it is in the backup)");
    }
    state::update(root, |s| s.results.remove(&part.key()))?;
    println!(
        "restored the skeleton ({} files from git HEAD): exercise {} starts over; \
         `cargo workbook watch {}` checks it",
        written.len(),
        part.label(),
        part.nn()
    );
    Ok(())
}
