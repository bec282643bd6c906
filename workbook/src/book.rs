//! `cargo workbook book [--open]`: builds the book with mdBook as a library, offline.
//!
//! `book.toml` sits at the root (`src = "book/src"`, `build-dir = "target/book"`), so the
//! HTML lands under `target/` and is never committed. The mdBook crate `mdbook-driver`
//! (feature `search`, or the book has no search box) is compiled into this command, so a
//! learner needs no separately installed `mdbook`. mdBook's own warnings (an unclosed HTML
//! tag, a footnote never used) are printed on stderr by a small logger, [`WarnLogger`].
//!
//! `--open` tries, in order, `$BROWSER`, `xdg-open` and `open`; if none works it says so
//! and prints the `file://` URL. Failing to open a browser never fails the command: the
//! book is built, which is what matters.
//!
//! The figures the pages quote come from `book/figures.toml` through the preprocessor of
//! [`crate::figures`], registered here; an unknown key stops the build naming key and page.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use mdbook_driver::MDBook;

use crate::{Error, Result};

/// Builds the book of the workbook at `root`; returns the path of its `index.html`.
pub fn build(root: &Path) -> Result<PathBuf> {
    let toml = root.join("book.toml");
    if !toml.is_file() {
        return Err(Error::new(format!(
            "there is no book.toml in {}: the book's configuration (src = \"book/src\", \
             build-dir = \"target/book\") belongs at the root of the workbook",
            root.display()
        )));
    }
    install_logger();
    let mut book = MDBook::load(root)
        .map_err(|e| Error::new(format!("mdBook could not load the book: {e:#}")))?;
    // After mdBook's own {{#include}}: the tags of book/figures.toml, in-process.
    book.with_preprocessor(crate::figures::Preprocessor);
    book.build()
        .map_err(|e| Error::new(format!("mdBook could not build the book: {e:#}")))?;
    let index = book.build_dir_for("html").join("index.html");
    if !index.is_file() {
        return Err(Error::new(format!(
            "mdBook finished but wrote no {}: is the html renderer turned off in book.toml?",
            index.display()
        )));
    }
    Ok(index)
}

/// Where the built HTML is (from book.toml's `build-dir`; `target/book` by convention),
/// whether or not it has been built yet.
pub fn html_dir(root: &Path) -> PathBuf {
    let build_dir = mdbook_driver::config::Config::from_disk(root.join("book.toml"))
        .map(|c| c.build.build_dir)
        .unwrap_or_else(|_| PathBuf::from("target/book"));
    let dir = root.join(build_dir);
    // With more than one renderer, mdBook puts the HTML one level down.
    if !dir.join("index.html").is_file() && dir.join("html/index.html").is_file() {
        return dir.join("html");
    }
    dir
}

/// `file://` URL of a local path (spaces and other unsafe bytes percent-encoded).
pub fn file_url(path: &Path) -> String {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut url = String::from("file://");
    for byte in path.to_string_lossy().bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                url.push(byte as char)
            }
            _ => url.push_str(&format!("%{byte:02X}")),
        }
    }
    url
}

/// Tries to open `target` (a URL or a path) in a browser; says which program did.
///
/// A program that is still running after a few seconds (a terminal browser such as lynx)
/// counts as having opened it.
pub fn open_in_browser(target: &str) -> std::result::Result<String, String> {
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(browsers) = std::env::var("BROWSER") {
        // $BROWSER may list several, separated by ':'.
        candidates.extend(
            browsers
                .split(':')
                .filter(|b| !b.trim().is_empty())
                .map(|b| b.trim().to_string()),
        );
    }
    candidates.push("xdg-open".into());
    candidates.push("open".into());
    let mut tried = Vec::new();
    for program in candidates {
        let spawned = Command::new(&program)
            .arg(target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = spawned else {
            tried.push(format!("{program} (not found)"));
            continue;
        };
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(program),
                Ok(Some(status)) => {
                    tried.push(format!("{program} ({status})"));
                    break;
                }
                Ok(None) if started.elapsed() > Duration::from_secs(3) => return Ok(program),
                Ok(None) => thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    tried.push(format!("{program} ({e})"));
                    break;
                }
            }
        }
    }
    Err(tried.join(", "))
}

/// The `book` command: build, print where, open if asked.
pub fn run(root: &Path, open: bool) -> Result<()> {
    let started = Instant::now();
    eprintln!("building the book from book/src ...");
    let index = build(root)?;
    let url = file_url(&index);
    println!(
        "book built in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        index.display()
    );
    println!("open it at {url}");
    if open {
        match open_in_browser(&url) {
            Ok(program) => println!("opened with {program}"),
            Err(tried) => println!(
                "could not open a browser (tried {tried}): open {url} yourself, \
                 or run `cargo workbook serve` and browse http://127.0.0.1:3000"
            ),
        }
    }
    Ok(())
}

/// Prints mdBook's warnings and errors (it logs through `tracing`) on stderr as
/// `mdbook warning: ...`; quieter levels are dropped.
#[derive(Debug)]
pub struct WarnLogger;

/// Installs [`WarnLogger`] once per process (later calls, or another logger, win nothing).
pub fn install_logger() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing::subscriber::set_global_default(WarnLogger);
    });
}

impl tracing::Subscriber for WarnLogger {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() <= tracing::Level::WARN
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::WARN)
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = Message(String::new());
        event.record(&mut text);
        let level = if *event.metadata().level() == tracing::Level::ERROR {
            "error"
        } else {
            "warning"
        };
        eprintln!("mdbook {level}: {}", text.0.trim());
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Collects an event's message and fields into one line.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_escaped() {
        assert_eq!(
            file_url(Path::new("/home/a b/target/book/index.html")),
            "file:///home/a%20b/target/book/index.html"
        );
    }
}
