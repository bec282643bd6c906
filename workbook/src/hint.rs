//! `cargo workbook hint NN [--again | --reset]`: progressive hints, one at a time.
//!
//! Hints live in `exercises/NN-slug/hints.md` as sections `## Hint 1`, `## Hint 2`, …
//! (a title may follow: `## Hint 2: split at the colon`); text before the first one is an
//! introduction and is not shown. The first hint nudges, the last all but gives the answer.
//! How many a learner has seen is kept in the state file ([`crate::state`]), so each call
//! shows the next one; `--again` repeats the last, `--reset` starts over.

use std::fs;
use std::path::Path;

use crate::cli::HintAction;
use crate::parts::Part;
use crate::state::State;
use crate::{Error, Result};

/// One hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The number in its heading.
    pub number: usize,
    /// The heading's text after `Hint N` (`split at the colon`), maybe empty.
    pub title: String,
    /// The markdown below the heading, trimmed.
    pub body: String,
}

/// The hints of a hints.md text, in file order.
pub fn parse(text: &str) -> Vec<Hint> {
    let mut hints: Vec<Hint> = Vec::new();
    // Whether lines belong to the last hint: false before the first and after another
    // level-2 section (`## Further reading`) ends it.
    let mut collecting = false;
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence && let Some(heading) = line.strip_prefix("## ") {
            collecting = match parse_heading(heading) {
                Some(hint) => {
                    hints.push(hint);
                    true
                }
                None => false,
            };
            continue;
        }
        if collecting && let Some(last) = hints.last_mut() {
            last.body.push_str(line);
            last.body.push('\n');
        }
    }
    for hint in &mut hints {
        hint.body = hint.body.trim().to_string();
    }
    hints
}

/// `Hint 3`, `Hint 3: title`, `Hint 3 — title` or `Hint 3 {#id}` -> the hint's heading.
fn parse_heading(heading: &str) -> Option<Hint> {
    let rest = heading.trim().strip_prefix("Hint ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let number = digits.parse().ok()?;
    let mut title = rest[digits.len()..].trim();
    if let Some(i) = title.find("{#") {
        title = title[..i].trim();
    }
    let title = title.trim_start_matches([':', '.', '-', '—', '–']).trim();
    Some(Hint {
        number,
        title: title.to_string(),
        body: String::new(),
    })
}

/// The hints of a part, read from its hints.md; an error naming the file if it is missing.
pub fn load(root: &Path, part: &Part) -> Result<Vec<Hint>> {
    let path = part.hints_file(root);
    let text = fs::read_to_string(&path).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            "is missing".to_string()
        } else {
            format!("cannot be read ({e})")
        };
        Error::new(format!(
            "exercise {} has no hints yet: {} {why}. Its chapter, {}, walks through each step",
            part.label(),
            part.hints_rel(),
            part.chapter_page_rel()
        ))
    })?;
    let hints = parse(&text);
    if hints.is_empty() {
        return Err(Error::new(format!(
            "{} has no `## Hint 1` section: the hints are level-2 headings `## Hint 1`, `## Hint 2`, ...",
            part.hints_rel()
        )));
    }
    Ok(hints)
}

/// Does `action` for `part`, updating `state`, and returns the text to print.
///
/// Running out of hints is not an error: the text says so and where the solution is.
pub fn hint(root: &Path, part: &Part, action: HintAction, state: &mut State) -> Result<String> {
    let key = part.key();
    let nn = part.nn();
    if action == HintAction::Reset {
        state.hints.remove(&key);
        return Ok(format!(
            "hints for exercise {} start over: `cargo workbook hint {nn}` shows hint 1",
            part.label()
        ));
    }
    let hints = load(root, part)?;
    let total = hints.len();
    let shown = state.hints_shown(&key).min(total);
    let index = match action {
        HintAction::Again if shown == 0 => {
            return Ok(format!(
                "no hint for exercise {} shown yet: `cargo workbook hint {nn}` shows the first",
                part.label()
            ));
        }
        HintAction::Again => shown - 1,
        _ if shown == total => {
            return Ok(format!(
                "no more hints: you have seen all {total} hints for exercise {}.\n\
                 `cargo workbook hint {nn} --again` shows hint {total} again, \
                 `cargo workbook hint {nn} --reset` starts over.\n\
                 The complete part is in {}/src/ (compare, don't copy: the tests are what count).",
                part.label(),
                part.solution_rel()
            ));
        }
        _ => shown,
    };
    state.hints.insert(key, index + 1);
    let hint = &hints[index];
    let mut out = format!("Hint {} of {total}", index + 1);
    if !hint.title.is_empty() {
        out.push_str(&format!(": {}", hint.title));
    }
    out.push_str(&format!(" (exercise {})\n\n{}\n", part.label(), hint.body));
    if index + 1 < total {
        out.push_str(&format!(
            "\nStill stuck? `cargo workbook hint {nn}` shows hint {} of {total}.\n",
            index + 2
        ));
    } else {
        out.push_str("\nThat was the last hint.\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_titles_and_stops_at_other_sections() {
        let text = "# Hints for exercise 01\n\nRead the chapter first.\n\n\
                    ## Hint 1\n\nLook at `split_once`.\n\n\
                    ## Hint 2: numbers {#h2}\n\n```text\n## Hint 9 inside a fence\n```\n\n\
                    ## Hint 3 — almost the answer\nUse `parse::<u64>()`.\n\n\
                    ## Further reading\n\nproc(5)\n";
        let hints = parse(text);
        assert_eq!(hints.len(), 3);
        assert_eq!(hints[0].body, "Look at `split_once`.");
        assert_eq!(hints[1].title, "numbers");
        assert_eq!(hints[1].body, "```text\n## Hint 9 inside a fence\n```");
        assert_eq!(hints[2].title, "almost the answer");
        assert_eq!(hints[2].body, "Use `parse::<u64>()`.");
    }
}
