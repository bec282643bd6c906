//! `verify`'s lab check: every lab program the book shows compiles against what its page adds.
//!
//! A listing claims to compile when the first line of its fenced block is [`MARKER`]
//! (`// ~/gmp-lab/src/main.rs`): it is a whole `main.rs` for the reader's lab crate
//! (chapter 0). It may use the lab's base, the `cargo add` lines of the page that creates
//! the lab (`cargo new ... ~/gmp-lab`), and the `cargo add` lines of its own page; both are
//! read from the page's code blocks that mention `~/gmp-lab`. A part is checked as its
//! solution (`$REPO/exercises/NN-slug` as `solutions/NN-slug`, the same lib name) and
//! `--features` are ignored: the lab must compile whatever state the reader's part is in.
//!
//! How, without rebuilding the world: one `cargo build --lib --message-format json -p ...`
//! in the workspace names the artifact of every crate the labs use (it is fresh after
//! verify's `cargo test -p sol-NN-slug`, which builds the same units); then each listing is
//! written to `<target>/verify-labs/<page>.rs` and checked by `rustc --emit=metadata
//! -D warnings` with an `--extern` for exactly its page's crates. A generated cargo package
//! would rebuild `gmp` and every solution: cargo hashes a path dependency by its path
//! relative to the workspace root, which differs outside this workspace. Errors are
//! reported at the page's own line.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::parts;
use crate::testrun::Cargo;
use crate::verify::Problem;

/// The first line of a listing that claims to compile as the lab's `src/main.rs`.
pub const MARKER: &str = "// ~/gmp-lab/src/main.rs";

/// The lab's folder as the book writes it; a code block that mentions it sets up the lab.
pub const LAB_DIR: &str = "~/gmp-lab";

/// The edition `cargo new` gives the reader's lab.
pub const LAB_EDITION: &str = "2024";

/// Where the generated sources go, under the target dir.
pub const OUT_DIR: &str = "verify-labs";

fn problem(subject: &str, message: impl Into<String>) -> Problem {
    Problem {
        subject: subject.to_string(),
        message: message.into(),
    }
}

/// One fenced code block of a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The info string after the opening fence (`rust,ignore`, `sh`).
    pub info: String,
    /// The page's line number (from 1) of the block's first content line.
    pub first_line: usize,
    /// The block's content, without the fences.
    pub lines: Vec<String>,
}

impl Block {
    /// Whether this block is a lab program that claims to compile.
    pub fn is_listing(&self) -> bool {
        self.lines.first().is_some_and(|l| l.trim() == MARKER)
    }
}

/// The fenced code blocks of a markdown page (fences of three or more backticks).
pub fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, Block)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let ticks = trimmed.len() - trimmed.trim_start_matches('`').len();
        match &mut open {
            // A backtick fence's info string has no backtick (```` ``` ```` is inline code).
            None if ticks >= 3 && !trimmed[ticks..].contains('`') => {
                let block = Block {
                    info: trimmed[ticks..].trim().to_string(),
                    first_line: i + 2,
                    lines: Vec::new(),
                };
                open = Some((ticks, block));
            }
            None => {}
            Some((fence, _)) if ticks >= *fence && trimmed[ticks..].trim().is_empty() => {
                blocks.extend(open.take().map(|(_, b)| b));
            }
            Some((_, block)) => block.lines.push(line.to_string()),
        }
    }
    blocks
}

/// A crate a page tells the reader to add to the lab.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LabDep {
    /// `cargo add --path "$REPO/<rel>"`: a crate of this repository, `rel` as written.
    Path(String),
    /// `cargo add <name>`: a crate from crates.io.
    Registry(String),
}

/// The crates one `cargo add` line adds (after `cargo add`, shell quotes and a `#` comment
/// removed), or what verify cannot read in it.
pub fn parse_cargo_add(line: &str) -> Result<Vec<LabDep>, String> {
    let line = line.split(" #").next().unwrap_or(line);
    let mut words = line
        .split_whitespace()
        .map(|w| w.trim_matches(|c| c == '"' || c == '\''));
    if words.next() != Some("cargo") || words.next() != Some("add") {
        return Err("it is not a `cargo add` line".into());
    }
    let mut deps = Vec::new();
    while let Some(word) = words.next() {
        match word {
            "--path" => {
                let Some(path) = words.next() else {
                    return Err("`--path` has no folder after it".into());
                };
                let rel = ["$REPO/", "${REPO}/"]
                    .iter()
                    .find_map(|prefix| path.strip_prefix(prefix))
                    .ok_or_else(|| {
                        format!(
                            "`--path {path}` is not inside the repository: write it as \
                             \"$REPO/<folder>\" (REPO is the repository's root, chapter 0)"
                        )
                    })?;
                deps.push(LabDep::Path(rel.trim_end_matches('/').to_string()));
            }
            // The feature picks the reader's part inside gmp; verify checks against the
            // solutions, which gmp uses without it.
            "--features" | "-F" => {
                words.next();
            }
            w if w.starts_with("--features=") => {}
            w if w.starts_with('-') => {
                return Err(format!(
                    "verify does not know the option `{w}`: it reads `cargo add <crate>`, \
                     `cargo add --path \"$REPO/<folder>\"` and `--features`"
                ));
            }
            name => deps.push(LabDep::Registry(
                name.split('@').next().unwrap_or(name).to_string(),
            )),
        }
    }
    if deps.is_empty() {
        return Err("it adds no crate".into());
    }
    Ok(deps)
}

/// What one page says about the lab.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// `book/src/chNN-slug.md`.
    pub rel: String,
    /// Whether the page creates the lab (`cargo new ... ~/gmp-lab`).
    pub creates_lab: bool,
    /// The crates its lab commands add, with the page line of each `cargo add`.
    pub adds: Vec<(usize, LabDep)>,
    /// The listings that claim to compile.
    pub listings: Vec<Block>,
    /// `cargo add` lines verify cannot read, and misplaced markers.
    pub problems: Vec<Problem>,
}

/// Reads a page's lab commands and lab listings.
pub fn read_page(rel: &str, markdown: &str) -> Page {
    let mut page = Page {
        rel: rel.to_string(),
        ..Page::default()
    };
    for block in blocks(markdown) {
        if block.is_listing() {
            if !block.info.starts_with("rust") {
                page.problems.push(problem(
                    rel,
                    format!(
                        "line {}: the block starting with `{MARKER}` is marked ```{}: a lab \
                         program is marked ```rust,ignore (or remove the marker if it is not one)",
                        block.first_line, block.info
                    ),
                ));
            }
            page.listings.push(block);
            continue;
        }
        if !block.lines.iter().any(|l| l.contains(LAB_DIR)) {
            continue;
        }
        for (i, line) in block.lines.iter().enumerate() {
            let line = line.trim();
            if line.starts_with("cargo new") && line.contains(LAB_DIR) {
                page.creates_lab = true;
            }
            if !line.starts_with("cargo add") {
                continue;
            }
            let at = block.first_line + i;
            match parse_cargo_add(line) {
                Ok(deps) => page.adds.extend(deps.into_iter().map(|d| (at, d))),
                Err(why) => page.problems.push(problem(
                    rel,
                    format!("line {at}: verify cannot read `{line}`: {why}"),
                )),
            }
        }
    }
    page
}

/// `[package] name` and the library's name (`[lib] name`, else the package's with `_`).
pub fn manifest_names(manifest: &str) -> Option<(String, String)> {
    let mut section = "";
    let (mut package, mut lib) = (None, None);
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let Some(value) = line
            .strip_prefix("name")
            .map(str::trim_start)
            .and_then(|rest| rest.strip_prefix('='))
        else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        match section {
            "[package]" => package = Some(value),
            "[lib]" => lib = Some(value),
            _ => {}
        }
    }
    let package = package?;
    let lib = lib.unwrap_or_else(|| package.replace('-', "_"));
    Some((package, lib))
}

/// A crate a listing is compiled with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Extern {
    /// The name the code uses (`parker`, `gmp`, `libc`).
    name: String,
    /// The workspace package verify builds it from (`sol-03-parker`), or `None` for a
    /// crates.io crate found among their dependencies.
    package: Option<String>,
    /// The folder the page names (`exercises/03-parker`), for messages.
    shown: String,
}

/// The extern for one added crate, or why there is none.
fn resolve(root: &Path, dep: &LabDep) -> Result<Extern, String> {
    let rel = match dep {
        LabDep::Registry(name) => {
            return Ok(Extern {
                name: name.replace('-', "_"),
                package: None,
                shown: name.clone(),
            });
        }
        LabDep::Path(rel) => rel,
    };
    if !root.join(rel).join("Cargo.toml").is_file() {
        return Err(format!(
            "the page has the reader add \"$REPO/{rel}\", which has no Cargo.toml: fix the path"
        ));
    }
    // The reader adds their exercise; the book's program must work on the solution too.
    let checked = match rel.strip_prefix("exercises/") {
        Some(key) => format!("solutions/{key}"),
        None => rel.clone(),
    };
    let manifest = fs::read_to_string(root.join(&checked).join("Cargo.toml")).map_err(|e| {
        format!("\"$REPO/{rel}\" is checked as {checked}, whose Cargo.toml cannot be read: {e}")
    })?;
    let (package, lib) = manifest_names(&manifest)
        .ok_or_else(|| format!("{checked}/Cargo.toml has no `[package] name`"))?;
    Ok(Extern {
        name: lib,
        package: Some(package),
        shown: rel.clone(),
    })
}

/// An artifact of the workspace build: a library and the file to pass to `--extern`.
#[derive(Clone, Debug)]
struct Artifact {
    crate_name: String,
    file: PathBuf,
    from_registry: bool,
    manifest_dir: PathBuf,
}

/// Builds the packages' libraries with cargo and returns every library artifact of the
/// build (theirs and their dependencies'), or the first error.
fn build(
    root: &Path,
    packages: &BTreeSet<String>,
    target_dir: Option<&Path>,
) -> Result<Vec<Artifact>, String> {
    let mut cmd = Cargo::new(root).with_target_dir(target_dir).command();
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["--lib", "--message-format", "json", "--color", "never"])
        .env("CARGO_TERM_PROGRESS_WHEN", "never")
        .stdin(Stdio::null());
    for package in packages {
        cmd.args(["-p", package]);
    }
    let command = format!(
        "cargo build --lib -p {}",
        packages.iter().cloned().collect::<Vec<_>>().join(" -p ")
    );
    let output = cmd
        .output()
        .map_err(|e| format!("could not start `{command}`: {e} (is cargo on PATH?)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut artifacts = Vec::new();
    let mut first_error = None;
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match message["reason"].as_str() {
            Some("compiler-artifact") => {
                let is_lib = message["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "lib" || k == "rlib"));
                let files = message["filenames"].as_array().into_iter().flatten();
                let file = files
                    .filter_map(|f| f.as_str())
                    .min_by_key(|f| !f.ends_with(".rmeta"));
                let (Some(name), Some(file), true) =
                    (message["target"]["name"].as_str(), file, is_lib)
                else {
                    continue;
                };
                let manifest = PathBuf::from(message["manifest_path"].as_str().unwrap_or(""));
                artifacts.push(Artifact {
                    crate_name: name.replace('-', "_"),
                    file: PathBuf::from(file),
                    from_registry: message["package_id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("registry+")),
                    manifest_dir: manifest.parent().unwrap_or(&manifest).to_path_buf(),
                });
            }
            Some("compiler-message")
                if first_error.is_none() && message["message"]["level"] == "error" =>
            {
                first_error = message["message"]["rendered"]
                    .as_str()
                    .map(|r| r.lines().take(3).collect::<Vec<_>>().join(" / "));
            }
            _ => {}
        }
    }
    if output.status.success() {
        return Ok(artifacts);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let why = first_error
        .or_else(|| {
            stderr
                .lines()
                .find(|l| l.starts_with("error"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| stderr.trim().to_string());
    Err(format!(
        "`{command}` failed, so no lab listing could be checked: {why}"
    ))
}

/// The rustc that cargo uses: `$RUSTC`, else `rustc` (rustup picks the same toolchain).
fn rustc() -> OsString {
    std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"))
}

/// Checks one listing with rustc; the problems name the page's lines.
fn check_listing(
    root: &Path,
    page: &Page,
    index: usize,
    listing: &Block,
    externs: &[(Extern, PathBuf)],
    known_libs: &BTreeMap<String, String>,
    out_dir: &Path,
) -> Vec<Problem> {
    let stem = Path::new(&page.rel)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("lab")
        .to_string();
    let file_name = if index == 0 {
        format!("{stem}.rs")
    } else {
        format!("{stem}-{}.rs", index + 1)
    };
    let mut source = listing.lines.join("\n");
    source.push('\n');
    let file = out_dir.join(&file_name);
    if let Err(e) = fs::write(&file, source) {
        return vec![problem(
            &page.rel,
            format!("could not write {}: {e}", file.display()),
        )];
    }
    let mut cmd = std::process::Command::new(rustc());
    cmd.current_dir(out_dir)
        .args([
            "--edition",
            LAB_EDITION,
            "--crate-type",
            "bin",
            "--emit=metadata",
        ])
        .args(["--error-format=short", "--color", "never", "-D", "warnings"])
        .arg("--crate-name")
        .arg(format!(
            "lab_{}",
            file_name.trim_end_matches(".rs").replace('-', "_")
        ))
        .arg("--out-dir")
        .arg(out_dir);
    let mut search: BTreeSet<&Path> = BTreeSet::new();
    for (ext, path) in externs {
        let mut arg = OsString::from(format!("{}=", ext.name));
        arg.push(path);
        cmd.arg("--extern").arg(arg);
        search.extend(path.parent());
    }
    for dir in search {
        let mut arg = OsString::from("dependency=");
        arg.push(dir);
        cmd.arg("-L").arg(arg);
    }
    cmd.arg(&file_name).stdin(Stdio::null());
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) => {
            return vec![problem(
                &page.rel,
                format!("could not start rustc to check the lab listing: {e} (is rustc on PATH?)"),
            )];
        }
    };
    if output.status.success() {
        return Vec::new();
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let marker_line = listing.first_line;
    let mut errors = Vec::new();
    let mut missing: BTreeSet<String> = BTreeSet::new();
    for line in stderr.lines() {
        if line.starts_with("error: aborting") {
            continue;
        }
        let shown = match line.strip_prefix(&format!("{file_name}:")) {
            Some(rest) => {
                let (number, rest) = rest.split_once(':').unwrap_or(("", rest));
                match number.parse::<usize>() {
                    Ok(n) => format!("{}:{}:{rest}", page.rel, marker_line + n - 1),
                    Err(_) => line.to_string(),
                }
            }
            None => line.to_string(),
        };
        for pattern in ["unlinked crate `", "unresolved import `"] {
            if let Some(after) = line.split(pattern).nth(1) {
                let name = after.split(['`', ':']).next().unwrap_or("");
                if known_libs.contains_key(name) && !externs.iter().any(|(e, _)| e.name == name) {
                    missing.insert(name.to_string());
                }
            }
        }
        if line.contains("incompatible version of rustc") {
            errors.push(format!(
                "{shown} (verify ran `{}`, not the rustc cargo used: set RUSTC to cargo's)",
                rustc().to_string_lossy()
            ));
        } else {
            errors.push(shown);
        }
    }
    let crates: Vec<String> = externs
        .iter()
        .map(|(e, _)| match &e.package {
            Some(p) if e.shown.starts_with("exercises/") => format!("{} (as {p})", e.name),
            _ => e.name.clone(),
        })
        .collect();
    let mut problems = vec![problem(
        &page.rel,
        format!(
            "the lab program at line {marker_line} does not compile, warnings denied, with the \
             crates the book has the reader add ({}; checked by rustc as {}/{OUT_DIR}/{file_name}):\n          {}",
            crates.join(", "),
            out_dir
                .parent()
                .map(|t| crate::rel(root, t))
                .unwrap_or_default(),
            errors.join("\n          ")
        ),
    )];
    for name in missing {
        let folder = &known_libs[&name];
        problems.push(problem(
            &page.rel,
            format!(
                "the lab program at line {marker_line} uses `{name}` ({folder}), which this page \
                 never adds to the lab: a lab program may use the lab's base (chapter 0) and the \
                 parts its own page adds, so it runs as soon as this chapter's tests pass. Add \
                 `cargo add --path \"$REPO/{folder}\"` to the page's lab commands, or write \
                 the program without `{name}`"
            ),
        ));
    }
    problems
}

/// Every lab listing compiles (all pages, or only `only_page`, e.g. `book/src/ch03-parker.md`).
///
/// `target_dir`: `None` builds where the caller does (`$CARGO_TARGET_DIR` or `target/`).
pub fn check(root: &Path, only_page: Option<&str>, target_dir: Option<&Path>) -> Vec<Problem> {
    let book = root.join("book/src");
    let mut names: Vec<String> = fs::read_dir(&book)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.ends_with(".md"))
        .collect();
    names.sort();
    let pages: Vec<Page> = names
        .iter()
        .filter_map(|n| {
            let rel = format!("book/src/{n}");
            fs::read_to_string(book.join(n))
                .ok()
                .map(|text| read_page(&rel, &text))
        })
        .collect();
    let mut problems: Vec<Problem> = Vec::new();
    let base: Vec<&Page> = pages.iter().filter(|p| p.creates_lab).collect();
    let selected: Vec<&Page> = pages
        .iter()
        .filter(|p| only_page.is_none_or(|only| p.rel == only))
        .collect();
    for page in &selected {
        problems.extend(page.problems.iter().cloned());
    }
    let to_check: Vec<&Page> = selected
        .iter()
        .copied()
        .filter(|p| !p.listings.is_empty())
        .collect();
    if to_check.is_empty() {
        return problems;
    }
    if base.is_empty() {
        problems.push(problem(
            "book/src/",
            format!(
                "pages have listings marked `{MARKER}`, but no page creates the lab: chapter 0 \
                 should show `cargo new --vcs none {LAB_DIR}` and its `cargo add` lines"
            ),
        ));
        return problems;
    }
    // Each page's crates: the base's, then its own, resolved to workspace packages.
    let mut wanted: Vec<(&Page, Vec<Extern>)> = Vec::new();
    for page in &to_check {
        let mut externs: BTreeSet<Extern> = BTreeSet::new();
        let adds = base
            .iter()
            .flat_map(|b| b.adds.iter().map(move |a| (b.rel.as_str(), a)))
            .chain(page.adds.iter().map(|a| (page.rel.as_str(), a)));
        for (rel, (line, dep)) in adds {
            match resolve(root, dep) {
                Ok(ext) => {
                    externs.insert(ext);
                }
                Err(why) => problems.push(problem(rel, format!("line {line}: {why}"))),
            }
        }
        wanted.push((page, externs.into_iter().collect()));
    }
    let packages: BTreeSet<String> = wanted
        .iter()
        .flat_map(|(_, externs)| externs.iter().filter_map(|e| e.package.clone()))
        .collect();
    let artifacts = match build(root, &packages, target_dir) {
        Ok(artifacts) => artifacts,
        Err(why) => {
            problems.push(problem("book/src/", why));
            return problems;
        }
    };
    let Some(target) = artifacts
        .first()
        .and_then(|a| a.file.ancestors().nth(3))
        .map(Path::to_path_buf)
    else {
        problems.push(problem(
            "book/src/",
            "cargo built the lab's crates but named no library artifact",
        ));
        return problems;
    };
    let out_dir = target.join(OUT_DIR);
    if let Err(e) = fs::create_dir_all(&out_dir) {
        problems.push(problem(
            "book/src/",
            format!("could not create {}: {e}", out_dir.display()),
        ));
        return problems;
    }
    // Lib name -> folder of every part, to explain a listing that uses a part it does not add.
    let mut known_libs: BTreeMap<String, String> = BTreeMap::new();
    for part in parts::discover(root).unwrap_or_default() {
        let manifest = fs::read_to_string(part.exercise_dir(root).join("Cargo.toml"));
        if let Some((_, lib)) = manifest.ok().as_deref().and_then(manifest_names) {
            known_libs.insert(lib, part.exercise_rel());
        }
    }
    for (page, externs) in wanted {
        let mut files = Vec::new();
        for ext in externs {
            let found = artifacts.iter().find(|a| match &ext.package {
                Some(package) => {
                    a.crate_name == ext.name
                        && fs::read_to_string(a.manifest_dir.join("Cargo.toml"))
                            .ok()
                            .and_then(|m| manifest_names(&m))
                            .is_some_and(|(p, _)| &p == package)
                }
                None => a.from_registry && a.crate_name == ext.name,
            });
            match found {
                Some(a) => files.push((ext, a.file.clone())),
                None => problems.push(problem(
                    &page.rel,
                    format!(
                        "the lab adds `{}`, which is not a dependency of any crate the workspace \
                         builds for the labs ({}): verify can only check a lab against crates \
                         the workspace already uses; add it to a part's or gmp's dependencies, \
                         or drop it from the page",
                        ext.shown,
                        packages.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )),
            }
        }
        for (i, listing) in page.listings.iter().enumerate() {
            problems.extend(check_listing(
                root,
                page,
                i,
                listing,
                &files,
                &known_libs,
                &out_dir,
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# Chapter 3\n\
\n\
```sh\n\
cd ~/gmp-lab\n\
cargo add --path \"$REPO/exercises/03-parker\"   # your part\n\
cargo add corosensei@0.3\n\
```\n\
\n\
```rust,ignore\n\
// ~/gmp-lab/src/main.rs\n\
use parker::Parker;\n\
fn main() {}\n\
```\n\
\n\
````md\n\
```sh\n\
cargo add --path \"$REPO/exercises/09-nothing\"\n\
```\n\
````\n\
\n\
```rust,ignore\n\
use parker::Parker; // a fragment: no marker, not checked\n\
```\n";

    #[test]
    fn a_page_yields_its_lab_adds_and_marked_listings() {
        let page = read_page("book/src/ch03-parker.md", PAGE);
        assert!(page.problems.is_empty(), "{:?}", page.problems);
        assert!(!page.creates_lab);
        assert_eq!(
            page.adds,
            [
                (5, LabDep::Path("exercises/03-parker".into())),
                (6, LabDep::Registry("corosensei".into()))
            ]
        );
        assert_eq!(page.listings.len(), 1, "{:?}", page.listings);
        assert_eq!(page.listings[0].first_line, 10);
        assert_eq!(page.listings[0].lines[1], "use parker::Parker;");
    }

    #[test]
    fn inline_code_with_backticks_opens_no_block() {
        let found = blocks("```` ``` ```` is inline code\n```sh\ncargo add libc\n```\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].info.as_str(), found[0].first_line), ("sh", 3));
        assert_eq!(found[0].lines, ["cargo add libc"]);
    }

    #[test]
    fn the_page_that_creates_the_lab_is_its_base() {
        let page = read_page(
            "book/src/ch00.md",
            "```sh\nREPO=$(pwd)\ncargo new --vcs none ~/gmp-lab\ncd ~/gmp-lab\ncargo add libc\n\
             cargo add --path \"$REPO/runtime\"    # gmp\n```\n",
        );
        assert!(page.creates_lab);
        assert_eq!(
            page.adds,
            [
                (5, LabDep::Registry("libc".into())),
                (6, LabDep::Path("runtime".into()))
            ]
        );
    }

    #[test]
    fn unreadable_cargo_add_lines_and_misplaced_markers_are_named() {
        assert_eq!(
            parse_cargo_add("cargo add --path \"$REPO/runtime\" --features mine-06"),
            Ok(vec![LabDep::Path("runtime".into())])
        );
        let outside = parse_cargo_add("cargo add --path ../gmp").unwrap_err();
        assert!(outside.contains("\"$REPO/<folder>\""), "{outside}");
        let option = parse_cargo_add("cargo add --git https://x serde").unwrap_err();
        assert!(option.contains("`--git`"), "{option}");
        let page = read_page(
            "book/src/ch09.md",
            "```sh\ncd ~/gmp-lab\ncargo add --rename x y\n```\n\n```text\n// ~/gmp-lab/src/main.rs\n```\n",
        );
        let messages: Vec<String> = page.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(messages.len(), 2, "{messages:#?}");
        assert!(
            messages[0].contains("line 3: verify cannot read"),
            "{}",
            messages[0]
        );
        assert!(messages[1].contains("line 7") && messages[1].contains("```rust,ignore"));
    }

    #[test]
    fn manifest_names_read_the_lib_name() {
        let sol = "[package]\nname = \"sol-03-parker\"\n\n[lib]\nname = \"parker\"\n\n\
                   [[test]]\nname = \"parker\"\n";
        assert_eq!(
            manifest_names(sol),
            Some(("sol-03-parker".into(), "parker".into()))
        );
        assert_eq!(
            manifest_names("[package]\nname = \"gmp-benches\"\n"),
            Some(("gmp-benches".into(), "gmp_benches".into()))
        );
        assert_eq!(manifest_names("[workspace]\n"), None);
    }
}
