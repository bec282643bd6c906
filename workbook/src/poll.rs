//! Noticing saved files by polling their modification times (used by `watch` and `serve`).
//!
//! Polling a few dozen files every few hundred milliseconds costs nothing measurable and
//! needs no platform file-watching API. An editor's save often writes several times
//! (a temporary file, a rename, a second write), so [`Watcher::wait`] returns only once
//! the files have been quiet for the debounce time.
//!
//! Skipped: hidden files and folders (`.lib.rs.swp`), backups (`lib.rs~`, `#lib.rs#`),
//! and `target/` folders.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// The modification time and size of every watched file at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<PathBuf, (SystemTime, u64)>);

impl Snapshot {
    /// Scans `roots` (files or folders, recursively); missing ones are skipped.
    pub fn take(roots: &[PathBuf]) -> Snapshot {
        let mut files = BTreeMap::new();
        for root in roots {
            scan(root, &mut files);
        }
        Snapshot(files)
    }

    /// Files added, removed or modified since `older`.
    pub fn changed_since(&self, older: &Snapshot) -> Vec<PathBuf> {
        let mut changed: Vec<PathBuf> = self
            .0
            .iter()
            .filter(|(path, meta)| older.0.get(*path) != Some(meta))
            .map(|(path, _)| path.clone())
            .collect();
        changed.extend(
            older
                .0
                .keys()
                .filter(|path| !self.0.contains_key(*path))
                .cloned(),
        );
        changed.sort();
        changed
    }

    /// The latest modification time of any file, if there is one.
    pub fn newest(&self) -> Option<SystemTime> {
        self.0.values().map(|(modified, _)| *modified).max()
    }

    /// How many files are watched.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no file is watched.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn skipped(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~') || name.starts_with('#') || name == "target"
}

fn scan(path: &Path, files: &mut BTreeMap<PathBuf, (SystemTime, u64)>) {
    let Ok(meta) = fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let Ok(entries) = fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.file_name().to_str().is_some_and(skipped) {
                scan(&entry.path(), files);
            }
        }
    } else if let Ok(modified) = meta.modified() {
        files.insert(path.to_path_buf(), (modified, meta.len()));
    }
}

/// Waits for changes under a set of paths, polling and debouncing.
#[derive(Debug)]
pub struct Watcher {
    roots: Vec<PathBuf>,
    last: Snapshot,
    poll: Duration,
    debounce: Duration,
}

impl Watcher {
    /// Watches `roots`, polling every `poll`, returning after `debounce` of quiet.
    /// What is there now is the baseline: only later changes count.
    pub fn new(roots: Vec<PathBuf>, poll: Duration, debounce: Duration) -> Watcher {
        let last = Snapshot::take(&roots);
        Watcher {
            roots,
            last,
            poll,
            debounce,
        }
    }

    /// Blocks until something changes (compared with the previous return, so a save made
    /// while the caller was busy is seen at once); calls `first_seen` with the changed files
    /// as soon as it sees them, then waits for quiet and returns every file that changed.
    pub fn wait(&mut self, mut first_seen: impl FnMut(&[PathBuf])) -> Vec<PathBuf> {
        let mut current = loop {
            let now = Snapshot::take(&self.roots);
            let changed = now.changed_since(&self.last);
            if !changed.is_empty() {
                first_seen(&changed);
                break now;
            }
            thread::sleep(self.poll);
        };
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < self.debounce {
            thread::sleep(self.poll.min(self.debounce));
            let now = Snapshot::take(&self.roots);
            if now != current {
                current = now;
                quiet_since = Instant::now();
            }
        }
        let changed = current.changed_since(&self.last);
        self.last = current;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_added_changed_and_removed_files_but_not_editor_droppings() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("lib.rs"), "a").unwrap();
        fs::write(src.join("gone.rs"), "a").unwrap();
        let before = Snapshot::take(std::slice::from_ref(&src));
        assert_eq!(before.len(), 2);
        fs::write(src.join("lib.rs"), "ab").unwrap();
        fs::write(src.join("new.rs"), "a").unwrap();
        fs::remove_file(src.join("gone.rs")).unwrap();
        fs::write(src.join(".lib.rs.swp"), "x").unwrap();
        fs::write(src.join("lib.rs~"), "x").unwrap();
        let after = Snapshot::take(std::slice::from_ref(&src));
        assert_eq!(
            after.changed_since(&before),
            [src.join("gone.rs"), src.join("lib.rs"), src.join("new.rs")]
        );
    }

    #[test]
    fn wait_reports_a_save_after_the_debounce() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lib.rs");
        fs::write(&file, "a").unwrap();
        let root = vec![dir.path().to_path_buf()];
        let changed = testkit::watchdog("waiting for a save", testkit::DEFAULT_LIMIT, move || {
            let mut watcher =
                Watcher::new(root, Duration::from_millis(10), Duration::from_millis(50));
            let writer = thread::spawn(move || {
                thread::sleep(Duration::from_millis(30));
                fs::write(&file, "abc").unwrap();
            });
            let mut seen = 0;
            let changed = watcher.wait(|_| seen += 1);
            writer.join().unwrap();
            assert_eq!(seen, 1, "first_seen is called once per wait");
            changed
        });
        assert_eq!(changed, [dir.path().join("lib.rs")]);
    }
}
