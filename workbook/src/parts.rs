//! Where things are: the workbook's root folder, its parts (exercise + solution + chapter)
//! and the book's table of contents.
//!
//! A part is found by listing `exercises/`: every folder named `NN-slug` with a
//! `Cargo.toml` is one, so a new chapter needs no change here. From `NN-slug` follow every
//! other name: package `ex-NN-slug`, `solutions/NN-slug` (package `sol-NN-slug`),
//! `book/src/chNN-slug.md`, `exercises/NN-slug/hints.md`.
//!
//! The root is the folder above this crate (`CARGO_MANIFEST_DIR/..`, fixed at compile
//! time), or `$GMP_WORKBOOK_ROOT` when set (the tests point it at a temporary copy).

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, Result, io_error};

/// The environment variable that overrides the workbook's root folder.
pub const ROOT_ENV: &str = "GMP_WORKBOOK_ROOT";

/// The workbook's root folder: `$GMP_WORKBOOK_ROOT`, or the folder above this crate.
///
/// Fails with a message naming the folder if it has no `Cargo.toml` or no `exercises/`.
pub fn root() -> Result<PathBuf> {
    let (dir, from) = match std::env::var_os(ROOT_ENV) {
        Some(dir) if !dir.is_empty() => (PathBuf::from(dir), format!("${ROOT_ENV}")),
        _ => {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            let dir = manifest.parent().unwrap_or(manifest).to_path_buf();
            (dir, "the folder above the workbook crate".to_string())
        }
    };
    if !dir.join("Cargo.toml").is_file() || !dir.join("exercises").is_dir() {
        return Err(Error::new(format!(
            "{} ({from}) is not the workbook: it has no Cargo.toml or no exercises/ folder. \
             Run `cargo workbook` inside the repository, or set {ROOT_ENV} to its root",
            dir.display()
        )));
    }
    Ok(dir)
}

/// One part of the workbook: an exercise, its solution, its chapter and its hints.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Part {
    /// The chapter number (`1` for `01-procinfo`).
    pub number: u32,
    /// The name after the number (`procinfo`).
    pub slug: String,
}

impl Part {
    /// A part from its folder name `NN-slug`, or `None` if the name has another shape.
    pub fn from_folder_name(name: &str) -> Option<Part> {
        let (nn, slug) = name.split_once('-')?;
        let valid_slug = !slug.is_empty()
            && slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if nn.len() != 2 || !nn.chars().all(|c| c.is_ascii_digit()) || !valid_slug {
            return None;
        }
        Some(Part {
            number: nn.parse().ok()?,
            slug: slug.to_string(),
        })
    }

    /// The two-digit number (`"01"`).
    pub fn nn(&self) -> String {
        format!("{:02}", self.number)
    }

    /// `NN-slug`: the folder name of the exercise and the solution.
    pub fn key(&self) -> String {
        format!("{:02}-{}", self.number, self.slug)
    }

    /// `NN slug`, the way messages name a part (`01 procinfo`).
    pub fn label(&self) -> String {
        format!("{:02} {}", self.number, self.slug)
    }

    /// The exercise's package (`ex-01-procinfo`).
    pub fn exercise_package(&self) -> String {
        format!("ex-{}", self.key())
    }

    /// The solution's package (`sol-01-procinfo`).
    pub fn solution_package(&self) -> String {
        format!("sol-{}", self.key())
    }

    /// `exercises/NN-slug`, relative to the root.
    pub fn exercise_rel(&self) -> String {
        format!("exercises/{}", self.key())
    }

    /// `solutions/NN-slug`, relative to the root.
    pub fn solution_rel(&self) -> String {
        format!("solutions/{}", self.key())
    }

    /// The exercise's folder.
    pub fn exercise_dir(&self, root: &Path) -> PathBuf {
        root.join(self.exercise_rel())
    }

    /// The solution's folder.
    pub fn solution_dir(&self, root: &Path) -> PathBuf {
        root.join(self.solution_rel())
    }

    /// The chapter's name without extension (`ch01-procinfo`).
    pub fn chapter_stem(&self) -> String {
        format!("ch{}", self.key())
    }

    /// The chapter's markdown file name (`ch01-procinfo.md`).
    pub fn chapter_file_name(&self) -> String {
        format!("{}.md", self.chapter_stem())
    }

    /// The chapter's page in the built book (`ch01-procinfo.html`).
    pub fn chapter_html(&self) -> String {
        format!("{}.html", self.chapter_stem())
    }

    /// `book/src/chNN-slug.md`, relative to the root.
    pub fn chapter_rel(&self) -> String {
        format!("book/src/{}", self.chapter_file_name())
    }

    /// The chapter as a reader opens it: its page in the built book
    /// (`target/book/ch01-procinfo.html`, where `cargo workbook book` writes it).
    pub fn chapter_page_rel(&self) -> String {
        format!("target/book/{}", self.chapter_html())
    }

    /// The chapter's markdown file.
    pub fn chapter_file(&self, root: &Path) -> PathBuf {
        root.join(self.chapter_rel())
    }

    /// `exercises/NN-slug/hints.md`, relative to the root.
    pub fn hints_rel(&self) -> String {
        format!("{}/hints.md", self.exercise_rel())
    }

    /// The exercise's hints file.
    pub fn hints_file(&self, root: &Path) -> PathBuf {
        root.join(self.hints_rel())
    }
}

/// Every part, in chapter order, found by listing `root/exercises`.
pub fn discover(root: &Path) -> Result<Vec<Part>> {
    let dir = root.join("exercises");
    let entries = fs::read_dir(&dir).map_err(io_error("listing", &dir))?;
    let mut parts = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("listing", &dir))?;
        let name = entry.file_name();
        let Some(part) = name.to_str().and_then(Part::from_folder_name) else {
            continue;
        };
        if entry.path().join("Cargo.toml").is_file() {
            parts.push(part);
        }
    }
    parts.sort();
    if parts.is_empty() {
        return Err(Error::new(format!(
            "{} has no exercises (folders named NN-slug with a Cargo.toml)",
            dir.display()
        )));
    }
    Ok(parts)
}

/// The parts for humans: `01 procinfo, 02 osthread, 03 parker`.
pub fn list(parts: &[Part]) -> String {
    parts.iter().map(Part::label).collect::<Vec<_>>().join(", ")
}

/// The part a learner means by `wanted`: `1`, `01`, `procinfo`, `01-procinfo`,
/// `ex-01-procinfo` or `ch01`.
///
/// Anything else is an error that lists the valid ones.
pub fn find<'a>(parts: &'a [Part], wanted: &str) -> Result<&'a Part> {
    let trimmed = wanted.trim();
    let matches = |candidate: &str| -> Option<&'a Part> {
        if candidate.is_empty() {
            None
        } else if candidate.chars().all(|c| c.is_ascii_digit()) {
            let n = candidate.parse::<u32>().ok()?;
            parts.iter().find(|p| p.number == n)
        } else {
            parts
                .iter()
                .find(|p| p.slug == candidate || p.key() == candidate)
        }
    };
    let found = matches(trimmed).or_else(|| {
        ["ex-", "sol-", "ch"]
            .iter()
            .find_map(|prefix| trimmed.strip_prefix(prefix).and_then(matches))
    });
    found.ok_or_else(|| {
        Error::new(format!(
            "no exercise {wanted}: the exercises are {} (give the number, e.g. `{}`, or the name)",
            list(parts),
            parts.first().map(Part::nn).unwrap_or_default()
        ))
    })
}

/// One line of `book/src/SUMMARY.md` that links a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryEntry {
    /// The title in brackets.
    pub title: String,
    /// The link target, relative to `book/src`; `None` for a draft (`- [Title]()`).
    pub file: Option<String>,
    /// The line number in SUMMARY.md, from 1.
    pub line: usize,
}

/// `book/src/SUMMARY.md`, relative to the root.
pub const SUMMARY_REL: &str = "book/src/SUMMARY.md";

/// The entries of `book/src/SUMMARY.md`; an error if it cannot be read.
pub fn summary(root: &Path) -> Result<Vec<SummaryEntry>> {
    let path = root.join(SUMMARY_REL);
    let text = fs::read_to_string(&path).map_err(io_error("reading", &path))?;
    Ok(parse_summary(&text))
}

/// The page links of a SUMMARY.md text: `[Title](file.md)` entries, drafts with no file.
pub fn parse_summary(text: &str) -> Vec<SummaryEntry> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let Some(open) = line.find('[') else {
            continue;
        };
        let Some(close) = line[open..].find("](").map(|i| open + i) else {
            continue;
        };
        let Some(end) = line[close + 2..].find(')').map(|i| close + 2 + i) else {
            continue;
        };
        let target = line[close + 2..end].trim();
        let target = target.strip_prefix("./").unwrap_or(target);
        entries.push(SummaryEntry {
            title: line[open + 1..close].to_string(),
            file: (!target.is_empty()).then(|| target.to_string()),
            line: index + 1,
        });
    }
    entries
}

/// The title the SUMMARY gives a part's chapter, if it lists the chapter's file.
pub fn chapter_title(entries: &[SummaryEntry], part: &Part) -> Option<String> {
    let file = part.chapter_file_name();
    entries
        .iter()
        .find(|e| e.file.as_deref() == Some(file.as_str()))
        .map(|e| e.title.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> Vec<Part> {
        ["01-procinfo", "02-osthread", "03-parker"]
            .iter()
            .map(|n| Part::from_folder_name(n).unwrap())
            .collect()
    }

    #[test]
    fn names_follow_from_the_folder() {
        let p = Part::from_folder_name("05-stack-switch").unwrap();
        assert_eq!(p.number, 5);
        assert_eq!(p.exercise_package(), "ex-05-stack-switch");
        assert_eq!(p.solution_package(), "sol-05-stack-switch");
        assert_eq!(p.chapter_rel(), "book/src/ch05-stack-switch.md");
        assert_eq!(p.chapter_html(), "ch05-stack-switch.html");
        assert_eq!(p.hints_rel(), "exercises/05-stack-switch/hints.md");
        for bad in [
            "5-stack", "ab-stack", "05-", "05_stack", "05-Stack", "target",
        ] {
            assert_eq!(Part::from_folder_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn finds_a_part_by_number_or_name() {
        let parts = parts();
        for wanted in [
            "2",
            "02",
            "osthread",
            "02-osthread",
            "ex-02-osthread",
            "ch02",
        ] {
            assert_eq!(find(&parts, wanted).unwrap().slug, "osthread", "{wanted}");
        }
        let chans = [Part::from_folder_name("07-chan").unwrap()];
        assert_eq!(
            find(&chans, "chan").unwrap().number,
            7,
            "a slug starting with ch"
        );
    }

    #[test]
    fn an_unknown_part_lists_the_valid_ones() {
        let err = find(&parts(), "42").unwrap_err();
        assert!(
            err.message().starts_with(
                "no exercise 42: the exercises are 01 procinfo, 02 osthread, 03 parker"
            ),
            "{err}"
        );
        assert!(find(&parts(), "stacks").is_err());
        assert!(find(&parts(), "").is_err());
    }

    #[test]
    fn parses_summary_entries_and_drafts() {
        let text = "# Summary\n\n[The workbook](ch00-workbook.md)\n\n# Part I\n\n\
                    - [Processes](./ch01-procinfo.md)\n  - [Sub](ch01-procinfo/more.md)\n\
                    - [Stacks]()\n";
        let entries = parse_summary(text);
        let files: Vec<_> = entries.iter().map(|e| e.file.as_deref()).collect();
        assert_eq!(
            files,
            [
                Some("ch00-workbook.md"),
                Some("ch01-procinfo.md"),
                Some("ch01-procinfo/more.md"),
                None
            ]
        );
        assert_eq!(entries[3].title, "Stacks");
        assert_eq!(entries[3].line, 9);
        let part = Part::from_folder_name("01-procinfo").unwrap();
        assert_eq!(chapter_title(&entries, &part).as_deref(), Some("Processes"));
    }
}
