//! The learner's rows: a class bench built with `mine-NN` measures only the rows that run
//! the learner's parts and writes them to a file (`--mine-out`); the solution's build reads
//! that file (`--mine-rows`) and puts each of those rows right below the solution's twin,
//! marked "your part NN", with the ratio yours / solution.
//!
//! The file is plain text, one fact a line, its fields separated by tabs (shown as `→`):
//!
//! ```text
//! row→handoff.parker.same_core.us→3.52→3.52→3
//! failed→hand-off: panicked: not yet implemented
//! ```
//!
//! (`row`, key, value or `-`, the figure as printed, the learner's parts in the row.)

use std::fmt::Write as _;
use std::path::Path;

use gmp_benches::parts::{self, MINE};
use gmp_benches::report::{Bar, Report, Row};

/// What a learner's run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Mine {
    /// The learner's rows: `mine` holds the parts each ran on.
    pub rows: Vec<Row>,
    /// Sections that failed or panicked, and builds that failed, as sentences.
    pub failures: Vec<String>,
    /// Solution figures timed in the learner's run in turn with theirs: (row key, value).
    /// Where there is one, the ratio uses it instead of the other run's figure.
    pub same_run: Vec<(String, f64)>,
}

impl Mine {
    /// The rows of `report` that run one of this build's learner parts, for `--mine-out`.
    pub fn from_report(report: &Report, mut failures: Vec<String>) -> Mine {
        let mut rows = Vec::new();
        for r in &report.rows {
            let Some(uses) = parts::row_parts(&r.key).map(|p| p.parts) else {
                continue;
            };
            let mine: Vec<u8> = uses.iter().copied().filter(|p| MINE.contains(p)).collect();
            if mine.is_empty() {
                continue;
            }
            let mut row = Row { mine, ..r.clone() };
            if row.value.is_none() {
                // The measurement's own error is in the run's output; name the row here.
                failures.push(format!(
                    "\"{}\" failed on your part {}; the output of the run on your parts \
                     says why, and `cargo test -p` on the part finds the bug",
                    r.measure,
                    parts::list(&row.mine)
                ));
                row.this = "failed".to_string();
            }
            rows.push(row);
        }
        Mine {
            rows,
            failures,
            same_run: Vec::new(),
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        let mut out = String::new();
        for r in &self.rows {
            let value = r
                .value
                .filter(|v| v.is_finite())
                .map_or("-".to_string(), |v| v.to_string());
            let mine: Vec<String> = r.mine.iter().map(u8::to_string).collect();
            let _ = writeln!(
                out,
                "row\t{}\t{value}\t{}\t{}",
                clean(&r.key),
                clean(&r.this),
                mine.join(",")
            );
        }
        for f in &self.failures {
            let _ = writeln!(out, "failed\t{}", clean(f));
        }
        for (key, v) in &self.same_run {
            let _ = writeln!(out, "solution\t{}\t{v}", clean(key));
        }
        out
    }

    /// Parses the file's text; a line of another shape is an error naming it.
    pub fn parse(text: &str) -> Result<Mine, String> {
        let mut mine = Mine::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                ["failed", why] => mine.failures.push(why.to_string()),
                ["solution", key, v] => mine.same_run.push((
                    key.to_string(),
                    v.parse().map_err(|_| format!("bad value in {line:?}"))?,
                )),
                ["row", key, value, this, parts] => {
                    let value = match *value {
                        "-" => None,
                        v => Some(v.parse().map_err(|_| format!("bad value in {line:?}"))?),
                    };
                    let parts = parts
                        .split(',')
                        .map(|p| p.parse::<u8>())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| format!("bad part list in {line:?}"))?;
                    let mut row = Row::new(key, "", *this, value, "", "");
                    row.mine = parts;
                    mine.rows.push(row);
                }
                _ => return Err(format!("unexpected line {line:?}")),
            }
        }
        Ok(mine)
    }

    /// Reads a `--mine-out` file.
    pub fn read(path: &Path) -> Result<Mine, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Mine::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The learner's figure for `key`, if measured.
    pub fn value(&self, key: &str) -> Option<(f64, &[u8])> {
        let r = self.rows.iter().find(|r| r.key == key)?;
        Some((r.value?, &r.mine))
    }

    /// A chart bar for the learner's twin of `key`, beside the solution's bar.
    pub fn bar(&self, key: &str, label: &str, color: &'static str) -> Option<Bar> {
        let (value, mine) = self.value(key)?;
        Some(Bar {
            label: format!("{label} (yours)"),
            value,
            reference: None,
            color,
        })
        .filter(|_| !mine.is_empty())
    }

    /// Puts each learner's row below its solution twin, with the ratio; adds the notes.
    pub fn merge_into(&self, report: &mut Report) {
        for mine in &self.rows {
            let at = report.rows.iter().position(|r| r.key == mine.key);
            let solution = at.map(|i| report.rows[i].clone());
            let same_run = self.same_run.iter().find(|(k, _)| *k == mine.key);
            // A ratio only for a single measured quantity: a row like the switch counts
            // ("1.00+0.00 / 0.57+0.43") has no one number to divide.
            let baseline = same_run
                .map(|(_, v)| *v)
                .or(solution.as_ref().and_then(|s| s.value))
                .filter(|s| *s > 0.0 && is_one_quantity(&mine.key));
            let ratio = baseline
                .zip(mine.value)
                .filter(|(_, m)| m.is_finite())
                .map(|(s, m)| (m / s, s));
            let against = if same_run.is_some() {
                "in the same run"
            } else {
                "in the row above"
            };
            let measure = solution.as_ref().map_or(mine.key.as_str(), |s| &s.measure);
            let plural = if mine.mine.len() > 1 { "s" } else { "" };
            let mut row = Row::new(
                &format!("{}.mine", mine.key),
                format!("{measure} — your part{plural} {}", parts::list(&mine.mine)),
                match ratio {
                    Some((r, s)) => format!(
                        "{} ({r:.2}× the solution's {} {against})",
                        mine.this,
                        trim_figure(s)
                    ),
                    None => mine.this.clone(),
                },
                mine.value,
                // The book's figures, as on the solution's row, so yours meets them too.
                solution.as_ref().map_or("", |s| &s.seed),
                solution.as_ref().map_or("", |s| &s.reference),
            );
            row.mine = mine.mine.clone();
            match at {
                Some(i) => report.rows.insert(i + 1, row),
                None => report.rows.push(row),
            }
        }
        if !self.rows.is_empty() {
            let mut all: Vec<u8> = self.rows.iter().flat_map(|r| r.mine.clone()).collect();
            all.sort_unstable();
            all.dedup();
            report.notes.push(format!(
                "Rows marked \"your part NN\" ran on your code in exercises/ (parts {}), in a \
                 class bench built with those mine-NN features and run just before this one; \
                 the figure in brackets is yours / the solution's row above it, or, \
                 \"in the same run\", yours / the solution's part timed in turn with yours \
                 (the Parker rows). Otherwise the two runs are seconds apart, not \
                 interleaved: on a busy machine a ratio far from 1.0× may be the load, so \
                 run the bench again before trusting it. Ratios in the second table use the \
                 solution's rows.",
                parts::list(&all)
            ));
        }
        for f in &self.failures {
            report.notes.push(format!(
                "Your parts' run: {f}. The solution's rows above are complete."
            ));
        }
    }
}

/// One note listing every row family that cannot run a learner's part, and why.
pub(crate) fn not_yours_note(report: &Report) -> Option<String> {
    let mut why: Vec<&str> = Vec::new();
    for r in &report.rows {
        if let Some(p) = parts::row_parts(&r.key)
            && p.parts.is_empty()
            && !why.contains(&p.why_not)
        {
            why.push(p.why_not);
        }
    }
    (!why.is_empty()).then(|| {
        format!(
            "Rows that run none of your parts (they stay the same whichever parts you finished): \
             {}.",
            why.join("; ")
        )
    })
}

/// Rows whose key ends in a unit hold one measured quantity, which a ratio can compare.
fn is_one_quantity(key: &str) -> bool {
    let unit = key.rsplit('.').next().unwrap_or("");
    ["ns", "us", "ms", "kib", "mib", "rss_kib"].contains(&unit) || unit.ends_with("_kib")
}

/// A baseline printed like the rows print theirs: three significant figures, no more.
fn trim_figure(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut r = Report::default();
        r.rows.push(Row::new(
            "handoff.parker.same_core.us",
            "hand-off, parker, one core (µs)",
            "2.00",
            Some(2.0),
            "1–10",
            "3.3",
        ));
        r.rows.push(Row::new(
            "handoff.condvar.same_core.us",
            "hand-off, condvar, one core (µs)",
            "4.00",
            Some(4.0),
            "1–10",
            "3.3",
        ));
        r
    }

    #[test]
    fn only_single_quantities_get_a_ratio() {
        assert!(is_one_quantity("handoff.parker.same_core.us"));
        assert!(is_one_quantity("g.parked.slab_1m.rss_kib"));
        assert!(!is_one_quantity("handoff.parker.switches_per_handoff"));
        assert_eq!(trim_figure(2.5), "2.50");
        assert_eq!(trim_figure(685.4), "685");
    }

    #[test]
    fn the_file_round_trips_and_rows_land_below_their_twin_with_the_ratio() {
        let mut mine_row = Row::new("handoff.parker.same_core.us", "", "3.00", Some(3.0), "", "");
        mine_row.mine = vec![3];
        let mine = Mine {
            rows: vec![mine_row],
            failures: vec!["switch: panicked: boom".to_string()],
            same_run: vec![("handoff.parker.same_core.us".to_string(), 2.5)],
        };
        let parsed = Mine::parse(&mine.render()).unwrap();
        assert_eq!(parsed, mine);
        let mut r = report();
        parsed.merge_into(&mut r);
        let keys: Vec<&str> = r.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "handoff.parker.same_core.us",
                "handoff.parker.same_core.us.mine",
                "handoff.condvar.same_core.us"
            ]
        );
        let row = &r.rows[1];
        assert_eq!(
            row.measure,
            "hand-off, parker, one core (µs) — your part 03"
        );
        // The solution timed in the same run (2.5) wins over the other run's row (2.0).
        assert_eq!(row.this, "3.00 (1.20× the solution's 2.50 in the same run)");
        assert_eq!(row.mine, [3]);
        assert!(
            r.notes.iter().any(|n| n.contains("switch: panicked: boom")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        let e = Mine::parse("row\tkey\tnot-a-number\t1\t3\n").unwrap_err();
        assert!(e.contains("not-a-number"), "{e}");
    }

    #[test]
    fn rows_without_parts_say_why() {
        let note = not_yours_note(&report()).unwrap();
        assert!(note.contains("Condvar"), "{note}");
    }
}
