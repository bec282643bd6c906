//! One source for every figure the book quotes: `book/figures.toml`, rendered into the pages.
//!
//! What lives here: [`Figures`] (the data file: figures with their source, the book's parts
//! and chapters), [`render_page`] (replaces the tags in one page), [`Preprocessor`] (runs
//! [`render_page`] on every page inside mdBook, in-process), and the checks `verify` runs on
//! the markdown: [`check_pages`] (unknown keys, and figures quoted as literals instead of
//! tags) and [`check_chapters`] (the chapter list agrees with SUMMARY.md and the disk).
//!
//! The tags:
//!
//! - `{{fig KEY}}` becomes the figure's value and unit as plain text, e.g. `123–134 ns`
//!   (plain, so a tag works in tables, headings and image descriptions alike);
//! - `{{chapters-map}}` and `{{instructor-table}}`, alone on a line, become the
//!   introduction's chapter map and chapter 0's instructor table (elsewhere on a line they
//!   stay as they are, so running text can name them without an escape); likewise
//!   `{{figures-table}}`, every figure with its source, for the appendix of figures;
//! - `\{{fig KEY}}` is written out as `{{fig KEY}}`, for pages that explain the tags.
//!
//! mdBook's own directives start with `{{#`, so neither can take the other's tags.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// Where the data file lives, relative to the workbook's root.
pub const FIGURES_REL: &str = "book/figures.toml";

/// The tag that starts a figure: `{{fig KEY}}`.
const FIG_OPEN: &str = "{{fig ";
/// The block tag for the introduction's chapter map.
pub const CHAPTERS_MAP: &str = "{{chapters-map}}";
/// The block tag for chapter 0's instructor table.
pub const INSTRUCTOR_TABLE: &str = "{{instructor-table}}";
/// The block tag for the appendix that lists every figure with its source.
pub const FIGURES_TABLE: &str = "{{figures-table}}";

/// One quoted figure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figure {
    /// Its key, e.g. `go.handoff` (the table `[fig.go.handoff]` in the data file).
    pub key: String,
    /// The number as printed, e.g. `123–134`, `~10`, `2,661`.
    pub value: String,
    /// The unit, e.g. `ns`, `KiB`; empty for a plain count.
    pub unit: String,
    /// Where it comes from: a seed article, the reference machine and date, a Go version.
    pub source: String,
    /// What it is, in a few words.
    pub what: String,
}

impl Figure {
    /// Value and unit as plain text (`123–134 ns`), with a no-break space between them.
    pub fn text(&self) -> String {
        if self.unit.is_empty() {
            self.value.clone()
        } else {
            format!("{}\u{a0}{}", self.value, self.unit)
        }
    }
}

/// A part of the book (`# Part I: What the kernel gives you` in SUMMARY.md).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BookPart {
    /// Roman numeral, `I` to `V`.
    pub numeral: String,
    /// Its title.
    pub title: String,
}

/// Whether a chapter's page is written or still a draft entry in SUMMARY.md.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The page exists and is linked.
    Written,
    /// Listed as `- [Title]()` in SUMMARY.md.
    Draft,
}

/// One chapter, for the chapter map and the instructor table.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Chapter {
    /// 0 to 16.
    pub number: u32,
    /// The title, as in SUMMARY.md.
    pub title: String,
    /// The page's file stem (`ch03-parker`).
    pub slug: String,
    /// The numeral of its book part; empty for chapter 0.
    #[serde(default)]
    pub part: String,
    /// The exercise's part (`parker`); empty when the chapter has none.
    #[serde(default)]
    pub lib: String,
    /// Written or draft.
    pub status: Status,
    /// What the reader writes.
    pub you_write: String,
    /// What the reader measures.
    pub measures: String,
    /// Minutes in class (exercise plus discussion, for a written chapter).
    pub minutes: u32,
    /// Minutes of reading before class (written chapters).
    pub reading: Option<u32>,
    /// Minutes of exercise in class, 0 for none (written chapters).
    pub exercise: Option<u32>,
    /// Minutes of bench and discussion in class (written chapters).
    pub discussion: Option<u32>,
    /// What the discussion time is spent on, when it is not the bench (chapter 0).
    #[serde(default)]
    pub discussion_note: String,
}

impl Chapter {
    /// The page, `ch03-parker.md`.
    pub fn file_name(&self) -> String {
        format!("{}.md", self.slug)
    }
}

/// A literal that may stay in prose, and why (parameters are better tagged: keep this short).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Allowed {
    /// The literal as written, e.g. `64 KiB`.
    pub literal: String,
    /// The page it is allowed on (`ch05-stack.md`); every page when empty.
    #[serde(default)]
    pub page: String,
    /// Why it is not a quoted figure.
    pub why: String,
}

/// The data file, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Every figure, by key.
    pub figures: BTreeMap<String, Figure>,
    /// The book's parts, in order.
    pub parts: Vec<BookPart>,
    /// Every chapter, in order.
    pub chapters: Vec<Chapter>,
    /// Literals that may stay in prose.
    pub allow: Vec<Allowed>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    fig: toml::Table,
    #[serde(default)]
    parts: Vec<BookPart>,
    #[serde(default)]
    chapters: Vec<Chapter>,
    #[serde(default)]
    allow: Vec<Allowed>,
}

impl Figures {
    /// Reads `book/figures.toml` under `root`; `Ok(None)` when there is none.
    pub fn load(root: &Path) -> Result<Option<Figures>> {
        let path = root.join(FIGURES_REL);
        if !path.is_file() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path).map_err(crate::io_error("reading", &path))?;
        Figures::parse(&text).map(Some)
    }

    /// Parses the text of a data file.
    pub fn parse(text: &str) -> Result<Figures> {
        let shape: FileShape = toml::from_str(text)
            .map_err(|e| Error::new(format!("{FIGURES_REL} is not valid: {e}")))?;
        let mut figures = BTreeMap::new();
        collect(&shape.fig, "", &mut figures)?;
        // Each chapter's class time, for the "about N minutes" of its page.
        for ch in &shape.chapters {
            let key = format!("chapter.{}.minutes", ch.number);
            figures.insert(
                key.clone(),
                Figure {
                    key,
                    value: ch.minutes.to_string(),
                    unit: "minutes".into(),
                    source: format!("{FIGURES_REL}, [[chapters]]"),
                    what: format!("class time of chapter {}", ch.number),
                },
            );
        }
        let data = Figures {
            figures,
            parts: shape.parts,
            chapters: shape.chapters,
            allow: shape.allow,
        };
        data.check_chapter_data()?;
        Ok(data)
    }

    /// The chapter list is in order, its parts exist, and a written chapter's class time
    /// is its exercise plus its discussion.
    fn check_chapter_data(&self) -> Result<()> {
        for (i, ch) in self.chapters.iter().enumerate() {
            let here = format!("{FIGURES_REL}: chapter {} (\"{}\")", ch.number, ch.title);
            if ch.number as usize != i {
                return Err(Error::new(format!(
                    "{here} is entry {i} of [[chapters]]: list the chapters in order, 0 first"
                )));
            }
            if !ch.part.is_empty() && !self.parts.iter().any(|p| p.numeral == ch.part) {
                return Err(Error::new(format!(
                    "{here} names part \"{}\", which no [[parts]] entry has",
                    ch.part
                )));
            }
            if ch.status == Status::Written {
                let (Some(_), Some(exercise), Some(discussion)) =
                    (ch.reading, ch.exercise, ch.discussion)
                else {
                    return Err(Error::new(format!(
                        "{here} is written but lacks reading, exercise or discussion minutes \
                         (the instructor table needs all three)"
                    )));
                };
                if exercise + discussion != ch.minutes {
                    return Err(Error::new(format!(
                        "{here}: exercise {exercise} + discussion {discussion} minutes is not \
                         its class time of {} minutes: make them add up",
                        ch.minutes
                    )));
                }
            }
        }
        Ok(())
    }

    /// The figure of `key`.
    pub fn get(&self, key: &str) -> Option<&Figure> {
        self.figures.get(key)
    }

    /// Keys whose value and unit are `literal` (spaces and a leading `~` ignored).
    pub fn keys_with_text(&self, literal: &str) -> Vec<&str> {
        let wanted = normalize(literal);
        self.figures
            .values()
            .filter(|f| normalize(&f.text()) == wanted)
            .map(|f| f.key.as_str())
            .collect()
    }

    /// The figures a wrong `literal` on `line` most likely means: those with its unit whose
    /// key and description share the most words with the line (at most three).
    pub fn nearest(&self, literal: &str, line: &str) -> Vec<&Figure> {
        let literal = normalize(literal);
        let unit: String = literal
            .chars()
            .rev()
            .take_while(|c| c.is_alphabetic())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let words = |text: &str| -> Vec<String> {
            text.split(|c: char| !c.is_alphanumeric() && c != '-')
                .filter(|w| w.chars().count() >= 4)
                .map(str::to_lowercase)
                .collect()
        };
        let line_words = words(line);
        let mut scored: Vec<(usize, &Figure)> = self
            .figures
            .values()
            .filter(|f| normalize(&f.unit) == unit)
            .map(|f| {
                let own = words(&format!("{} {}", f.key.replace(['.', '_'], " "), f.what));
                let score = own.iter().filter(|w| line_words.contains(w)).count();
                (score, f)
            })
            .filter(|(score, _)| *score > 0)
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
        scored.into_iter().take(3).map(|(_, f)| f).collect()
    }

    /// Whether `literal` may stay on `page` (a file name such as `ch05-stack.md`).
    pub fn allows(&self, literal: &str, page: &str) -> bool {
        let wanted = normalize(literal);
        self.allow
            .iter()
            .any(|a| normalize(&a.literal) == wanted && (a.page.is_empty() || a.page == page))
    }

    /// The introduction's chapter map, as a markdown table.
    pub fn chapters_map(&self) -> String {
        let mut out = String::from(
            "| ch | title | part | you write | you measure | class time |\n\
             |---:|-------|------|-----------|-------------|-----------:|\n",
        );
        let mut part = String::new();
        for ch in &self.chapters {
            if ch.part != part && !ch.part.is_empty() {
                part = ch.part.clone();
                if let Some(p) = self.parts.iter().find(|p| p.numeral == part) {
                    let _ = writeln!(out, "| **{}** | **{}** | | | | |", p.numeral, p.title);
                }
            }
            let title = match ch.status {
                Status::Written => format!("[{}]({})", ch.title, ch.file_name()),
                Status::Draft => format!("{} *(coming)*", ch.title),
            };
            let lib = if ch.lib.is_empty() {
                "–".to_string()
            } else {
                format!("`{}`", ch.lib)
            };
            let _ = writeln!(
                out,
                "| {} | {title} | {lib} | {} | {} | {} min |",
                ch.number, ch.you_write, ch.measures, ch.minutes
            );
        }
        out
    }

    /// Chapter 0's instructor table: the written chapters' minutes.
    pub fn instructor_table(&self) -> String {
        let mut out = String::from(
            "| chapter | reading, before class | exercise | bench and discussion | in class |\n\
             |---------|----------------------:|---------:|---------------------:|---------:|\n",
        );
        for ch in self.chapters.iter().filter(|c| c.status == Status::Written) {
            let minutes = |m: Option<u32>| match m {
                Some(0) | None => "–".to_string(),
                Some(m) => format!("{m} min"),
            };
            let mut discussion = minutes(ch.discussion);
            if !ch.discussion_note.is_empty() {
                discussion.push_str(&format!(" ({})", ch.discussion_note));
            }
            let _ = writeln!(
                out,
                "| {}. [{}]({}) | {} | {} | {discussion} | {} min |",
                ch.number,
                ch.title,
                ch.file_name(),
                minutes(ch.reading),
                minutes(ch.exercise),
                ch.minutes
            );
        }
        out
    }
}

impl Figures {
    /// Every figure of the data file (not the generated chapter minutes) as a markdown
    /// table: key, value, what it is, source.
    pub fn figures_table(&self) -> String {
        let cell = |text: &str| text.replace('|', "\\|");
        let mut out =
            String::from("| key | value | what | source |\n|-----|------:|------|--------|\n");
        for fig in self.figures.values() {
            if fig.key.starts_with("chapter.") {
                continue;
            }
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                fig.key,
                cell(&fig.text()),
                cell(&fig.what),
                cell(&fig.source)
            );
        }
        out
    }
}

/// Walks `[fig.*]`: a table with a `value` is a figure, any other table a group of them.
fn collect(table: &toml::Table, prefix: &str, out: &mut BTreeMap<String, Figure>) -> Result<()> {
    for (name, item) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let Some(inner) = item.as_table() else {
            return Err(Error::new(format!(
                "{FIGURES_REL}: fig.{key} is a {}, not a table: a figure is a table with \
                 value, unit, source and what (e.g. [fig.go.handoff] value = \"123–134\" ...)",
                item.type_str()
            )));
        };
        if !inner.contains_key("value") {
            collect(inner, &key, out)?;
            continue;
        }
        if !valid_key(&key) {
            return Err(Error::new(format!(
                "{FIGURES_REL}: the key fig.{key} has characters a tag cannot name: use \
                 letters, digits, `_` and `-` between the dots"
            )));
        }
        let field = |name: &str, required: bool| -> Result<String> {
            match inner.get(name) {
                Some(toml::Value::String(s)) => Ok(s.clone()),
                None if !required => Ok(String::new()),
                None => Err(Error::new(format!(
                    "{FIGURES_REL}: [fig.{key}] has no `{name}`: every figure needs value, \
                     unit, source and what"
                ))),
                Some(other) => Err(Error::new(format!(
                    "{FIGURES_REL}: [fig.{key}] {name} is a {}: write it as a string, \
                     e.g. {name} = \"...\"",
                    other.type_str()
                ))),
            }
        };
        for name in inner.keys() {
            if !["value", "unit", "source", "what"].contains(&name.as_str()) {
                return Err(Error::new(format!(
                    "{FIGURES_REL}: [fig.{key}] has an unknown field `{name}` (a figure has \
                     value, unit, source and what)"
                )));
            }
        }
        let figure = Figure {
            key: key.clone(),
            value: field("value", true)?,
            unit: field("unit", false)?,
            source: field("source", true)?,
            what: field("what", true)?,
        };
        if figure.source.trim().is_empty() {
            return Err(Error::new(format!(
                "{FIGURES_REL}: [fig.{key}] has an empty source: say where the figure comes \
                 from (seed article, reference machine and date, Go version)"
            )));
        }
        out.insert(key, figure);
    }
    Ok(())
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// A literal for comparison: no spaces of any kind, `~`/`≈`/`about` prefixes dropped,
/// `us`/`μs` read as `µs`, `-` read as `–`.
fn normalize(text: &str) -> String {
    let squeezed: String = text
        .replace("&nbsp;", "")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let squeezed = squeezed.trim_start_matches(['~', '≈']).replace('-', "–");
    let squeezed = squeezed.replace('μ', "µ");
    match squeezed.strip_suffix("us") {
        Some(number) => format!("{number}µs"),
        None => squeezed,
    }
}

/// A line of a page split into prose and code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Text outside code.
    Prose,
    /// A fenced code block's line, or an inline code span.
    Code,
}

/// Tracks fenced code blocks across the lines of a page.
#[derive(Default)]
struct Fences {
    open: Option<(char, usize)>,
}

impl Fences {
    /// Whether `line` is code (inside or opening/closing a fence); updates the state.
    fn is_code(&mut self, line: &str) -> bool {
        let trimmed = line.trim_start();
        let fence = |c: char| trimmed.chars().take_while(|&x| x == c).count();
        match self.open {
            Some((c, n)) => {
                if fence(c) >= n && trimmed.trim_start_matches(c).trim().is_empty() {
                    self.open = None;
                }
                true
            }
            None => {
                for c in ['`', '~'] {
                    let n = fence(c);
                    if n >= 3 {
                        self.open = Some((c, n));
                        return true;
                    }
                }
                false
            }
        }
    }
}

/// Splits one line outside fences into prose and inline code spans (byte ranges).
fn inline_segments(line: &str) -> Vec<(Segment, std::ops::Range<usize>)> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|&&b| b == b'`').count();
        // The span closes at the next run of exactly as many backticks.
        let mut j = i + run;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let r = bytes[j..].iter().take_while(|&&b| b == b'`').count();
                if r == run {
                    close = Some(j);
                    break;
                }
                j += r;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                if start < i {
                    out.push((Segment::Prose, start..i));
                }
                out.push((Segment::Code, i..j + run));
                i = j + run;
                start = i;
            }
            None => i += run,
        }
    }
    if start < line.len() {
        out.push((Segment::Prose, start..line.len()));
    }
    out
}

/// The lines of a page (numbered from 1), each split into prose and code.
pub fn segments(page: &str) -> Vec<(usize, Vec<(Segment, &str)>)> {
    let mut fences = Fences::default();
    let mut lines = Vec::new();
    for (i, line) in page.lines().enumerate() {
        let parts = if fences.is_code(line) {
            vec![(Segment::Code, line)]
        } else {
            inline_segments(line)
                .into_iter()
                .map(|(s, r)| (s, &line[r]))
                .collect()
        };
        lines.push((i + 1, parts));
    }
    lines
}

/// A tag found in a piece of text.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tag {
    /// `{{fig KEY}}`: the key, possibly malformed.
    Fig(String),
    /// `\{{fig KEY}}`: written out without the backslash.
    Escaped(String),
}

/// Finds `{{fig KEY}}` tags in `text`: (byte range, tag), in order.
fn find_tags(text: &str) -> Vec<(std::ops::Range<usize>, Tag)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(FIG_OPEN) {
        let start = from + at;
        let Some(len) = text[start..].find("}}") else {
            out.push((start..text.len(), Tag::Fig(text[start + 6..].to_string())));
            break;
        };
        let end = start + len + 2;
        let key = text[start + FIG_OPEN.len()..end - 2].trim().to_string();
        if start > 0 && text.as_bytes()[start - 1] == b'\\' {
            out.push((start - 1..end, Tag::Escaped(text[start..end].to_string())));
        } else {
            out.push((start..end, Tag::Fig(key)));
        }
        from = end;
    }
    out
}

/// The file name of a page path, for messages and the allowlist.
fn page_name(page: &Path) -> String {
    page.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| page.display().to_string())
}

/// The message for a tag whose key the data file lacks.
fn unknown_key(figures: Option<&Figures>, page: &str, line: usize, key: &str) -> String {
    let Some(figures) = figures else {
        return format!(
            "{page} line {line}: {{{{fig {key}}}}} names a figure, but there is no \
             {FIGURES_REL}: create it with a [fig.{key}] table (value, unit, source, what)"
        );
    };
    if !valid_key(key) {
        return format!(
            "{page} line {line}: `{{{{fig {key}}}}}` is not a figure tag: write \
             {{{{fig KEY}}}} with a key of {FIGURES_REL}, e.g. {{{{fig go.handoff}}}}"
        );
    }
    let group = key.split('.').next().unwrap_or(key);
    let near: Vec<&str> = figures
        .figures
        .keys()
        .filter(|k| k.split('.').next() == Some(group))
        .map(String::as_str)
        .take(12)
        .collect();
    let hint = if near.is_empty() {
        String::new()
    } else {
        format!(" (keys under `{group}.`: {})", near.join(", "))
    };
    format!(
        "{page} line {line}: unknown figure key `{key}` in {{{{fig {key}}}}}: add \
         [fig.{key}] to {FIGURES_REL} or use one of its keys{hint}"
    )
}

/// Replaces the tags of one page. `Err` lists every unknown key with its page and line.
pub fn render_page(text: &str, page: &Path, figures: Option<&Figures>) -> Result<String> {
    let name = page.display().to_string();
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (line_no, parts) in segments(text) {
        let whole: String = parts.iter().map(|(_, t)| *t).collect();
        let block = whole.trim();
        if [CHAPTERS_MAP, INSTRUCTOR_TABLE, FIGURES_TABLE].contains(&block) {
            match figures {
                Some(f) if block == CHAPTERS_MAP => out.push_str(&f.chapters_map()),
                Some(f) if block == INSTRUCTOR_TABLE => out.push_str(&f.instructor_table()),
                Some(f) => out.push_str(&f.figures_table()),
                None => errors.push(format!(
                    "{name} line {line_no}: {block} is made from the chapter list in \
                     {FIGURES_REL}, which does not exist"
                )),
            }
            continue;
        }
        for (segment, piece) in parts {
            let mut last = 0;
            for (range, tag) in find_tags(piece) {
                out.push_str(&piece[last..range.start]);
                last = range.end;
                match tag {
                    Tag::Escaped(tag) => out.push_str(&tag),
                    Tag::Fig(key) => match figures.and_then(|f| f.get(&key)) {
                        // A no-break space would not copy well out of code.
                        Some(fig) if segment == Segment::Code => {
                            out.push_str(&fig.text().replace('\u{a0}', " "))
                        }
                        Some(fig) => out.push_str(&fig.text()),
                        None => errors.push(unknown_key(figures, &name, line_no, &key)),
                    },
                }
            }
            out.push_str(&piece[last..]);
        }
        out.push('\n');
    }
    if !text.ends_with('\n') {
        out.pop();
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(Error::new(errors.join("\n")))
    }
}

/// The mdBook preprocessor that renders the tags of every page, run in-process by
/// `cargo workbook book` and `serve`. An unknown key stops the build, naming key and page.
#[derive(Debug, Default)]
pub struct Preprocessor;

impl mdbook_preprocessor::Preprocessor for Preprocessor {
    fn name(&self) -> &str {
        "workbook-figures"
    }

    fn run(
        &self,
        ctx: &mdbook_preprocessor::PreprocessorContext,
        mut book: mdbook_preprocessor::book::Book,
    ) -> mdbook_preprocessor::errors::Result<mdbook_preprocessor::book::Book> {
        let figures = Figures::load(&ctx.root).map_err(anyhow_error)?;
        let src = ctx.config.book.src.clone();
        let mut errors = Vec::new();
        book.for_each_chapter_mut(|chapter| {
            let page = chapter
                .source_path
                .as_ref()
                .map(|p| src.join(p))
                .unwrap_or_else(|| PathBuf::from(&chapter.name));
            match render_page(&chapter.content, &page, figures.as_ref()) {
                Ok(text) => chapter.content = text,
                Err(e) => errors.push(e.to_string()),
            }
        });
        if errors.is_empty() {
            Ok(book)
        } else {
            Err(anyhow_error(Error::new(errors.join("\n"))))
        }
    }
}

fn anyhow_error(e: Error) -> mdbook_preprocessor::errors::Error {
    mdbook_preprocessor::errors::Error::msg(e.to_string())
}

/// One problem found in a page: where, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageProblem {
    /// The page, relative to the root (`book/src/ch03-parker.md`).
    pub page: String,
    /// Its line, from 1.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A literal figure in prose: a number (or range) with a time or size unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Literal {
    /// As written, e.g. `123–134 ns`.
    pub text: String,
}

const UNITS: &[&str] = &[
    "ns", "µs", "μs", "us", "ms", "s", "B", "KB", "kB", "KiB", "MB", "MiB", "GB", "GiB", "TB",
    "TiB",
];

/// The literal figures in a piece of prose.
pub fn literals(prose: &str) -> Vec<Literal> {
    let chars: Vec<(usize, char)> = prose.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let (_, c) = chars[i];
        let before = if i == 0 { None } else { Some(chars[i - 1].1) };
        if !c.is_ascii_digit() || before.is_some_and(|b| is_word(b) || b == '.' || b == ',') {
            i += 1;
            continue;
        }
        // A leading ~ or ≈ belongs to the literal.
        let mut start = i;
        if i > 0 && matches!(chars[i - 1].1, '~' | '≈') {
            start = i - 1;
        }
        // The number, and a range's second number.
        let number = |mut j: usize| {
            while j < chars.len()
                && (chars[j].1.is_ascii_digit()
                    || (matches!(chars[j].1, '.' | ',')
                        && chars.get(j + 1).is_some_and(|n| n.1.is_ascii_digit())))
            {
                j += 1;
            }
            j
        };
        let mut j = number(i);
        if let Some(&(_, dash)) = chars.get(j)
            && matches!(dash, '–' | '-')
            && chars.get(j + 1).is_some_and(|n| n.1.is_ascii_digit())
        {
            j = number(j + 1);
        }
        let number_end = j;
        // An optional space (plain, no-break, narrow no-break, or &nbsp;) before the unit.
        let rest_at = |j: usize| chars.get(j).map_or(prose.len(), |c| c.0);
        let mut k = j;
        if chars
            .get(k)
            .is_some_and(|c| matches!(c.1, ' ' | '\u{a0}' | '\u{202f}'))
        {
            k += 1;
        } else if prose[rest_at(k)..].starts_with("&nbsp;") {
            k += 6;
        }
        let spaced = k > j;
        let rest = &prose[rest_at(k)..];
        // A bare `s` needs its space: `5 s` is a figure, `the 1990s` is not.
        let unit = UNITS
            .iter()
            .filter(|u| {
                rest.starts_with(**u)
                    && !rest[u.len()..].chars().next().is_some_and(is_word)
                    && (spaced || **u != "s")
            })
            .max_by_key(|u| u.len());
        match unit {
            Some(unit) => {
                let from = chars[start].0;
                let to = rest_at(k) + unit.len();
                out.push(Literal {
                    text: prose[from..to].to_string(),
                });
                i = k + unit.chars().count();
            }
            None => i = number_end.max(i + 1),
        }
    }
    out
}

/// Every `.md` file under `dir`, sorted.
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            markdown_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

/// Checks every page of `book/src` against the data file: (a) every tag names a key, (b)
/// prose quotes no figure as a literal (a number with a time or size unit), except the
/// data file's short allowlist. With (b), two pages can only show a quantity through the
/// same key, so they cannot disagree.
pub fn check_pages(root: &Path) -> Vec<PageProblem> {
    let figures = match Figures::load(root) {
        Ok(f) => f,
        Err(e) => {
            return vec![PageProblem {
                page: FIGURES_REL.into(),
                line: 0,
                message: e.to_string(),
            }];
        }
    };
    let mut pages = Vec::new();
    markdown_files(&root.join("book/src"), &mut pages);
    let mut problems = Vec::new();
    for path in pages {
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let page = crate::rel(root, &path);
        let name = page_name(&path);
        for (line, parts) in segments(&text) {
            let whole: String = parts.iter().map(|(_, t)| *t).collect();
            for (segment, piece) in parts {
                let mut prose = String::new();
                let mut last = 0;
                for (range, tag) in find_tags(piece) {
                    prose.push_str(&piece[last..range.start]);
                    prose.push(' ');
                    last = range.end;
                    if let Tag::Fig(key) = tag
                        && figures.as_ref().and_then(|f| f.get(&key)).is_none()
                    {
                        problems.push(PageProblem {
                            page: page.clone(),
                            line,
                            message: unknown_key(figures.as_ref(), &page, line, &key),
                        });
                    }
                }
                prose.push_str(&piece[last..]);
                if segment == Segment::Code {
                    continue;
                }
                for literal in literals(&prose) {
                    if figures
                        .as_ref()
                        .is_some_and(|f| f.allows(&literal.text, &name))
                    {
                        continue;
                    }
                    let keys = figures
                        .as_ref()
                        .map(|f| f.keys_with_text(&literal.text))
                        .unwrap_or_default();
                    let near = figures
                        .as_ref()
                        .map(|f| f.nearest(&literal.text, &whole))
                        .unwrap_or_default();
                    let fix = match keys.as_slice() {
                        [] if !near.is_empty() => format!(
                            "no figure in {FIGURES_REL} has this value. If it is the \
                             quantity of {}, write that tag: a second value for one quantity \
                             is how pages come to disagree. If it is a new figure, add \
                             [fig.KEY] with value, unit, source and what, and write {{{{fig KEY}}}}",
                            near.iter()
                                .map(|f| format!(
                                    "{{{{fig {}}}}} ({}: {})",
                                    f.key,
                                    f.text(),
                                    f.what
                                ))
                                .collect::<Vec<_>>()
                                .join(" or ")
                        ),
                        [] => format!(
                            "no figure in {FIGURES_REL} has this value: if it is a figure \
                             the book already quotes, use that key (a second value for one \
                             quantity is a disagreement between pages); if it is new, add \
                             [fig.KEY] with value, unit, source and what, and write {{{{fig KEY}}}}"
                        ),
                        [key] => format!("write {{{{fig {key}}}}} instead"),
                        keys => format!(
                            "write the tag of the quantity you mean: {}",
                            keys.iter()
                                .map(|k| format!("{{{{fig {k}}}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    problems.push(PageProblem {
                        page: page.clone(),
                        line,
                        message: format!(
                            "{page} line {line}: the figure `{}` is written as a literal, so \
                             nothing keeps it equal to its source or to other pages: {fix}",
                            literal.text.replace('\u{a0}', " ")
                        ),
                    });
                }
            }
        }
    }
    problems
}

/// Checks the chapter list against SUMMARY.md: every written chapter's page exists and is
/// listed, a draft is a draft entry, and the titles agree. Nothing to check without a
/// data file, or with one that does not parse ([`check_pages`] says why).
pub fn check_chapters(root: &Path) -> Vec<PageProblem> {
    // A data file that does not parse is reported once, by check_pages.
    let Ok(Some(figures)) = Figures::load(root) else {
        return Vec::new();
    };
    let entries = match crate::parts::summary(root) {
        Ok(e) => e,
        Err(e) => {
            return vec![PageProblem {
                page: crate::parts::SUMMARY_REL.into(),
                line: 0,
                message: e.to_string(),
            }];
        }
    };
    let mut problems = Vec::new();
    let mut problem = |message: String| {
        problems.push(PageProblem {
            page: FIGURES_REL.into(),
            line: 0,
            message,
        })
    };
    for ch in &figures.chapters {
        let file = ch.file_name();
        let listed = entries
            .iter()
            .find(|e| e.file.as_deref() == Some(file.as_str()));
        let draft = entries
            .iter()
            .find(|e| e.file.is_none() && e.title == ch.title);
        match (ch.status, listed, draft) {
            (Status::Written, Some(entry), _) if entry.title != ch.title && ch.number > 0 => {
                problem(format!(
                    "chapter {} is \"{}\" here but \"{}\" in SUMMARY.md: make the titles agree",
                    ch.number, ch.title, entry.title
                ))
            }
            (Status::Written, Some(_), _) => {}
            (Status::Written, None, _) => problem(format!(
                "chapter {} (\"{}\") is marked written, but SUMMARY.md does not link {file}: \
                 link it there, or mark it status = \"draft\"",
                ch.number, ch.title
            )),
            (Status::Draft, Some(_), _) => problem(format!(
                "chapter {} (\"{}\") is marked draft, but SUMMARY.md links {file}: mark it \
                 status = \"written\" and give it reading, exercise and discussion minutes",
                ch.number, ch.title
            )),
            (Status::Draft, None, None) => problem(format!(
                "chapter {} (\"{}\") is a draft, but SUMMARY.md has no draft entry \
                 `- [{}]()`: make the titles agree",
                ch.number, ch.title, ch.title
            )),
            (Status::Draft, None, Some(_)) => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = r#"
[fig.go.handoff]
value = "123–134"
unit = "ns"
source = "Go 1.23, reference machine"
what = "Go hand-off"

[fig.seed.thread_create]
value = "~10"
unit = "µs"
source = "seed R"
what = "thread create"

[[allow]]
literal = "4 KiB"
page = "ch05-stack.md"
why = "the page size"
"#;

    #[test]
    fn tags_render_in_prose_and_code() {
        let figures = Figures::parse(DATA).unwrap();
        let page = "Go: {{fig go.handoff}}; `{{fig go.handoff}}`\n```\n{{fig seed.thread_create}}\n```\n\\{{fig x}}\n";
        let out = render_page(page, Path::new("p.md"), Some(&figures)).unwrap();
        assert!(
            out.starts_with("Go: 123–134\u{a0}ns; `123–134 ns`\n"),
            "{out}"
        );
        assert!(out.contains("\n~10 µs\n"), "{out}");
        assert!(out.ends_with("{{fig x}}\n"), "{out}");
    }

    #[test]
    fn an_unknown_key_names_key_page_and_line() {
        let figures = Figures::parse(DATA).unwrap();
        let err = render_page(
            "a\nb {{fig go.handof}}\n",
            Path::new("ch03.md"),
            Some(&figures),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("ch03.md line 2") && msg.contains("`go.handof`"),
            "{msg}"
        );
        assert!(msg.contains("go.handoff"), "near keys listed: {msg}");
    }

    #[test]
    fn literals_are_found_in_prose_only_with_units() {
        let found: Vec<String> = literals(
            "start ~10 µs, 123–134 ns and 2,661 B; 8\u{a0}MiB; x86 64 bits; 1990s; 5 s; \
             100k Gs; 1.5 KiB-aligned; 3 sockets",
        )
        .into_iter()
        .map(|l| l.text)
        .collect();
        assert_eq!(
            found,
            [
                "~10 µs",
                "123–134 ns",
                "2,661 B",
                "8\u{a0}MiB",
                "5 s",
                "1.5 KiB"
            ]
        );
    }

    #[test]
    fn literals_match_keys_and_the_allowlist() {
        let figures = Figures::parse(DATA).unwrap();
        assert_eq!(figures.keys_with_text("123-134 ns"), ["go.handoff"]);
        assert_eq!(figures.keys_with_text("10 us"), ["seed.thread_create"]);
        assert!(figures.allows("4\u{a0}KiB", "ch05-stack.md"));
        assert!(!figures.allows("4 KiB", "ch02-osthread.md"));
    }

    #[test]
    fn a_wrong_value_points_at_the_figure_of_the_same_quantity() {
        let figures = Figures::parse(DATA).unwrap();
        let near = figures.nearest("209 ns", "| Go hand-off over a channel | 209 ns |");
        let keys: Vec<&str> = near.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["go.handoff"]);
        assert!(
            figures.nearest("209 ms", "Go hand-off").is_empty(),
            "units differ"
        );
    }

    #[test]
    fn code_spans_and_fences_are_not_prose() {
        let lines = segments("a `b` c\n```sh\nx\n```\nd ``e ` f`` g\n");
        let prose: Vec<String> = lines
            .iter()
            .flat_map(|(_, p)| p.iter())
            .filter(|(s, _)| *s == Segment::Prose)
            .map(|(_, t)| t.to_string())
            .collect();
        assert_eq!(prose, ["a ", " c", "d ", " g"]);
    }

    #[test]
    fn class_time_must_add_up() {
        let data = r#"
[[parts]]
numeral = "I"
title = "One"

[[chapters]]
number = 0
title = "Zero"
slug = "ch00-zero"
status = "written"
you_write = "x"
measures = "y"
minutes = 60
reading = 10
exercise = 30
discussion = 20
"#;
        let err = Figures::parse(data).unwrap_err();
        assert!(err.message().contains("is not its class time"), "{err}");
        let ok = Figures::parse(&data.replace("discussion = 20", "discussion = 30")).unwrap();
        let figures = Figures::parse(&format!(
            "{}\n{DATA}",
            data.replace("discussion = 20", "discussion = 30")
        ))
        .unwrap();
        let listing = figures.figures_table();
        assert!(
            listing.contains(
                "| `go.handoff` | 123–134\u{a0}ns | Go hand-off | Go 1.23, reference machine |"
            ) && !listing.contains("chapter.0.minutes"),
            "{listing}"
        );
        let table = ok.instructor_table();
        assert!(
            table.contains("| 0. [Zero](ch00-zero.md) | 10 min | 30 min | 30 min | 60 min |"),
            "{table}"
        );
    }
}
