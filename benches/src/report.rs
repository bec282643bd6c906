//! The class bench report: one table, rendered for the terminal, Markdown, a self-contained
//! HTML page for a projector, SVG bar charts (the hand-offs, the user-space switches: asm switch, asm fiber, corosensei), and
//! JSON for tools.
//!
//! Everything here is formatting: the figures come from the measurements of the crate root,
//! gathered by the `class-bench` binary. No plotting crate: the SVG is written by hand.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::parts::osthread;

/// Column titles of the main table.
pub const HEADERS: [&str; 4] = [
    "measure",
    "this machine",
    "seed (the articles)",
    "reference machine (the book's figures)",
];

/// Column titles of the ratio table.
pub const RATIO_HEADERS: [&str; 4] = [
    "ratio (both sides from this run)",
    "this machine",
    "seed (the articles)",
    "reference machine (the book's figures)",
];

/// One line of a table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// A stable id for tools (`handoff.parker.cross_core.us`).
    pub key: String,
    /// What was measured, with its unit.
    pub measure: String,
    /// This machine's figure as printed ("24.3", "skipped", "failed").
    pub this: String,
    /// This machine's figure as a number, if there is one.
    pub value: Option<f64>,
    /// What the seed articles say.
    pub seed: String,
    /// What the reference machine measured (ANCHORS.md).
    pub reference: String,
    /// The learner's parts this row ran on (`cargo workbook bench` with `mine-NN`); empty
    /// for the solution's rows.
    pub mine: Vec<u8>,
}

impl Row {
    /// A row with a number printed as `this`.
    pub fn new(
        key: &str,
        measure: impl Into<String>,
        this: impl Into<String>,
        value: Option<f64>,
        seed: &str,
        reference: &str,
    ) -> Row {
        Row {
            key: key.to_string(),
            measure: measure.into(),
            this: this.into(),
            value,
            seed: seed.to_string(),
            reference: reference.to_string(),
            mine: Vec::new(),
        }
    }

    fn cells(&self) -> [&str; 4] {
        [&self.measure, &self.this, &self.seed, &self.reference]
    }
}

/// One bar of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// Label left of the bar ("parker, cross-core").
    pub label: String,
    /// This machine, in the chart's unit.
    pub value: f64,
    /// The reference machine's figure, same unit, drawn as a dashed mark.
    pub reference: Option<f64>,
    /// Fill colour (`#rrggbb`); the chart's legend says what it means.
    pub color: &'static str,
}

/// Bar colours.
pub const BLUE: &str = "#2c6fbb";
/// Bar colours.
pub const ORANGE: &str = "#e08a2c";
/// Bar colours.
pub const GREEN: &str = "#3a9a4a";
/// Bar colours.
pub const PURPLE: &str = "#7a4fb5";

/// One horizontal bar chart of the SVG.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// Title above the bars, with the unit ("One hand-off between two threads, µs …").
    pub title: String,
    /// The bars, top to bottom.
    pub bars: Vec<Bar>,
    /// Lines under the chart: what the colours and marks mean, a figure to compare with.
    pub legend: Vec<String>,
}

/// The whole report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// "quick" or "full".
    pub mode: String,
    /// Facts about the machine and the run: (name, value).
    pub facts: Vec<(String, String)>,
    /// The main table.
    pub rows: Vec<Row>,
    /// Ratios measured side by side in this run.
    pub ratios: Vec<Row>,
    /// Footnotes: where figures come from, what was skipped.
    pub notes: Vec<String>,
    /// The charts of the SVG, top to bottom (charts without bars are left out).
    pub charts: Vec<Chart>,
}

impl Report {
    /// The tables as aligned plain text, for the terminal.
    pub fn text(&self) -> String {
        let mut out = text_table(&HEADERS, &self.rows);
        if !self.ratios.is_empty() {
            out.push('\n');
            out.push_str(&text_table(&RATIO_HEADERS, &self.ratios));
        }
        for note in &self.notes {
            let _ = writeln!(out, "* {note}");
        }
        out
    }

    /// The report as Markdown: title, machine facts, both tables, notes.
    pub fn markdown(&self) -> String {
        let mut out = format!("# Class bench ({})\n\n", self.mode);
        for (name, value) in &self.facts {
            let _ = writeln!(out, "- **{name}**: {}", md_escape(value));
        }
        out.push('\n');
        out.push_str(&md_table(&HEADERS, &self.rows));
        if !self.ratios.is_empty() {
            out.push('\n');
            out.push_str(&md_table(&RATIO_HEADERS, &self.ratios));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {}", md_escape(note));
            }
        }
        if self.has_chart() {
            out.push_str("\n![hand-off and switch costs](report.svg)\n");
        }
        out
    }

    /// A self-contained HTML page (no external file), in a large font for a projector.
    pub fn html(&self) -> String {
        let mut out = String::from(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        );
        let _ = writeln!(
            out,
            "<title>Class bench ({})</title>",
            html_escape(&self.mode)
        );
        out.push_str(
            "<style>\n\
             body { font-family: system-ui, sans-serif; font-size: 26px; margin: 1.5em; \
             color: #111; background: #fff; }\n\
             h1 { font-size: 1.6em; margin: 0 0 0.4em; }\n\
             table { border-collapse: collapse; margin: 0.8em 0 1.2em; }\n\
             th, td { border: 1px solid #999; padding: 0.25em 0.6em; text-align: left; }\n\
             th { background: #e8eef7; }\n\
             tr.mine td { background: #fff3cd; }\n\
             td.num { text-align: right; font-weight: bold; font-variant-numeric: tabular-nums; }\n\
             ul.facts { font-size: 0.75em; color: #333; }\n\
             ul.notes { font-size: 0.7em; color: #333; }\n\
             svg { max-width: 100%; height: auto; }\n\
             </style>\n</head>\n<body>\n",
        );
        let _ = writeln!(out, "<h1>Class bench ({})</h1>", html_escape(&self.mode));
        out.push_str("<ul class=\"facts\">\n");
        for (name, value) in &self.facts {
            let _ = writeln!(
                out,
                "<li><b>{}</b>: {}</li>",
                html_escape(name),
                html_escape(value)
            );
        }
        out.push_str("</ul>\n");
        out.push_str(&html_table(&HEADERS, &self.rows));
        if self.has_chart() {
            out.push_str(&self.svg());
            out.push('\n');
        }
        if !self.ratios.is_empty() {
            out.push_str(&html_table(&RATIO_HEADERS, &self.ratios));
        }
        if !self.notes.is_empty() {
            out.push_str("<ul class=\"notes\">\n");
            for note in &self.notes {
                let _ = writeln!(out, "<li>{}</li>", html_escape(note));
            }
            out.push_str("</ul>\n");
        }
        out.push_str("</body>\n</html>\n");
        out
    }

    fn has_chart(&self) -> bool {
        self.charts.iter().any(|c| !c.bars.is_empty())
    }

    /// The charts as one SVG, stacked: horizontal bars, each with the reference machine's
    /// figure as a dashed mark on its line.
    pub fn svg(&self) -> String {
        let charts: Vec<&Chart> = self.charts.iter().filter(|c| !c.bars.is_empty()).collect();
        let height: f64 = charts
            .iter()
            .map(|c| chart_height(c))
            .sum::<f64>()
            .max(CHART_GAP);
        let width = CHART_WIDTH;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"18\">"
        );
        let _ = writeln!(
            out,
            "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>"
        );
        let mut y0 = 0.0;
        for chart in charts {
            draw_chart(&mut out, chart, y0);
            y0 += chart_height(chart);
        }
        out.push_str("</svg>\n");
        out
    }

    /// The report as JSON (facts, rows with numbers, ratios, notes) for other tools.
    pub fn json(&self) -> String {
        let rows = |rows: &[Row]| {
            rows.iter()
                .map(|r| {
                    format!(
                        "{{\"key\":{},\"measure\":{},\"this\":{},\"value\":{},\"seed\":{},\"reference\":{},\"mine\":[{}]}}",
                        json_str(&r.key),
                        json_str(&r.measure),
                        json_str(&r.this),
                        r.value
                            .filter(|v| v.is_finite())
                            .map_or("null".to_string(), |v| format!("{v}")),
                        json_str(&r.seed),
                        json_str(&r.reference),
                        r.mine
                            .iter()
                            .map(u8::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                })
                .collect::<Vec<_>>()
                .join(",\n    ")
        };
        let facts = self
            .facts
            .iter()
            .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
            .collect::<Vec<_>>()
            .join(",\n    ");
        let notes = self
            .notes
            .iter()
            .map(|n| json_str(n))
            .collect::<Vec<_>>()
            .join(",\n    ");
        format!(
            "{{\n  \"mode\": {},\n  \"facts\": {{\n    {facts}\n  }},\n  \"rows\": [\n    {}\n  ],\n  \
             \"ratios\": [\n    {}\n  ],\n  \"notes\": [\n    {notes}\n  ]\n}}\n",
            json_str(&self.mode),
            rows(&self.rows),
            rows(&self.ratios)
        )
    }

    /// Writes `report.md`, `report.html`, `report.svg` and `report.json` into `dir`
    /// (created if missing); returns their paths.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        fs::create_dir_all(dir)?;
        let files = [
            ("report.md", self.markdown()),
            ("report.html", self.html()),
            ("report.svg", self.svg()),
            ("report.json", self.json()),
        ];
        let mut paths = Vec::new();
        for (name, text) in files {
            let path = dir.join(name);
            fs::write(&path, text)?;
            paths.push(path);
        }
        Ok(paths)
    }
}

const LABEL_W: f64 = 330.0;
const BAR_W: f64 = 520.0;
const VALUE_W: f64 = 110.0;
const CHART_WIDTH: f64 = LABEL_W + BAR_W + VALUE_W;
const ROW_H: f64 = 44.0;
const TOP: f64 = 56.0;
/// Room under the bars for the grid labels, before the legend.
const AXIS_H: f64 = 34.0;
const LEGEND_LINE_H: f64 = 22.0;
/// Space after a chart's last line.
const CHART_GAP: f64 = 16.0;

fn chart_height(chart: &Chart) -> f64 {
    TOP + ROW_H * chart.bars.len() as f64
        + AXIS_H
        + LEGEND_LINE_H * chart.legend.len() as f64
        + CHART_GAP
}

/// Draws `chart` with its top at `y0`.
fn draw_chart(out: &mut String, chart: &Chart, y0: f64) {
    let bars_bottom = y0 + TOP + ROW_H * chart.bars.len() as f64;
    let max = chart
        .bars
        .iter()
        .flat_map(|b| [b.value, b.reference.unwrap_or(0.0)])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let step = nice_step(max);
    // 5% headroom, so a bar never ends right at the last grid line.
    let scale_max = if max > 0.0 {
        (max * 1.05 / step).ceil() * step
    } else {
        1.0
    };
    let x = |v: f64| LABEL_W + BAR_W * (v.max(0.0) / scale_max);

    let _ = writeln!(
        out,
        "<text x=\"10\" y=\"{:.1}\" font-size=\"22\" font-weight=\"bold\">{}</text>",
        y0 + 30.0,
        html_escape(&chart.title)
    );
    // Grid lines and their labels.
    let mut tick = 0.0;
    while tick <= scale_max + step / 2.0 {
        let tx = x(tick);
        let _ = writeln!(
            out,
            "<line x1=\"{tx:.1}\" y1=\"{:.1}\" x2=\"{tx:.1}\" y2=\"{bars_bottom:.1}\" \
             stroke=\"#dddddd\"/>",
            y0 + TOP
        );
        let _ = writeln!(
            out,
            "<text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555555\">{}</text>",
            bars_bottom + 22.0,
            tick_label(tick)
        );
        tick += step;
    }
    for (i, bar) in chart.bars.iter().enumerate() {
        let y = y0 + TOP + ROW_H * i as f64;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LABEL_W - 10.0,
            y + ROW_H * 0.62,
            html_escape(&bar.label)
        );
        let _ = writeln!(
            out,
            "<rect x=\"{LABEL_W}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
            y + 8.0,
            (x(bar.value) - LABEL_W).max(1.0),
            ROW_H - 16.0,
            bar.color
        );
        // The value goes right of the bar, or of the reference mark if that is further.
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x(bar.value.max(bar.reference.unwrap_or(0.0))) + 6.0,
            y + ROW_H * 0.62,
            trim_num(bar.value)
        );
        if let Some(r) = bar.reference {
            let rx = x(r);
            let _ = writeln!(
                out,
                "<line x1=\"{rx:.1}\" y1=\"{:.1}\" x2=\"{rx:.1}\" y2=\"{:.1}\" stroke=\"#111111\" \
                 stroke-width=\"2\" stroke-dasharray=\"5,3\"/>",
                y + 3.0,
                y + ROW_H - 3.0
            );
        }
    }
    for (i, line) in chart.legend.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{:.1}\" font-size=\"15\" fill=\"#555555\">{}</text>",
            bars_bottom + AXIS_H + LEGEND_LINE_H * (i as f64 + 0.6),
            html_escape(line)
        );
    }
}

fn text_table(headers: &[&str; 4], rows: &[Row]) -> String {
    let mut widths = headers.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.cells()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            if i > 0 {
                s.push_str(" | ");
            }
            if i == 1 {
                // Numbers right-aligned, so digits line up.
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(*headers);
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.cells()));
    }
    out
}

fn md_table(headers: &[&str; 4], rows: &[Row]) -> String {
    let mut out = format!("| {} |\n|---|--:|---|---|\n", headers.join(" | "));
    for row in rows {
        let cells = row.cells().map(md_escape);
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

fn html_table(headers: &[&str; 4], rows: &[Row]) -> String {
    let mut out = String::from("<table>\n<tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", html_escape(h));
    }
    out.push_str("</tr>\n");
    for row in rows {
        let [m, this, seed, reference] = row.cells().map(html_escape);
        // The learner's rows stand out on the projector.
        let class = if row.mine.is_empty() {
            ""
        } else {
            " class=\"mine\""
        };
        let _ = writeln!(
            out,
            "<tr{class}><td>{m}</td><td class=\"num\">{this}</td><td>{seed}</td><td>{reference}</td></tr>"
        );
    }
    out.push_str("</table>\n");
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Escapes text for HTML and SVG (both XML-ish).
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A grid step of 1, 2 or 5 × 10^k giving 4 to 10 lines up to `max`.
fn nice_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 5.0;
    let pow = 10f64.powf(raw.log10().floor());
    let m = raw / pow;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * pow
}

/// A grid label: as short as the number allows (`10`, `2.5`, `0.25`).
fn tick_label(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn trim_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Formats nanoseconds for a table cell: as [`fmt_us`], one more digit below 10.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 10.0 {
        fmt_us(ns)
    } else {
        format!("{ns:.2}")
    }
}

/// Formats microseconds for a table cell: 3 significant digits or so.
pub fn fmt_us(us: f64) -> String {
    if us >= 100.0 {
        format!("{us:.0}")
    } else if us >= 10.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.2}")
    }
}

// ---------------------------------------------------------------------------------------
// Facts about the machine.

/// CPU model, CPU count, memory, kernel, map limit and the date, for the report's header.
pub fn machine_facts() -> Vec<(String, String)> {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown (no model name in /proc/cpuinfo)".to_string());
    let online = fs::read_to_string("/proc/cpuinfo").map_or(0, |t| {
        t.lines().filter(|l| l.starts_with("processor")).count()
    });
    let allowed = osthread::allowed_cpus().map_or(0, |c| c.len());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or("unknown".to_string(), |kib| {
            format!("{:.1} GiB", kib / 1024.0 / 1024.0)
        });
    let read = |path: &str| {
        fs::read_to_string(path).map_or("unknown".to_string(), |s| s.trim().to_string())
    };
    vec![
        ("CPU".to_string(), cpu),
        (
            "cores".to_string(),
            format!("{online} online, {allowed} this process may use"),
        ),
        ("memory".to_string(), mem),
        (
            "kernel".to_string(),
            format!(
                "{} {}",
                read("/proc/sys/kernel/ostype"),
                read("/proc/sys/kernel/osrelease")
            ),
        ),
        (
            "vm.max_map_count".to_string(),
            read("/proc/sys/vm/max_map_count"),
        ),
        ("date".to_string(), utc_now()),
    ]
}

/// The current date and time in UTC, `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_from_unix(secs)
}

/// `YYYY-MM-DD HH:MM UTC` for seconds since 1970 (Howard Hinnant's civil-from-days).
pub fn utc_from_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            mode: "quick".to_string(),
            facts: vec![("CPU".to_string(), "Test <CPU>".to_string())],
            rows: vec![
                Row::new(
                    "handoff.parker.cross_core.us",
                    "hand-off, parker, cross-core (µs)",
                    "24.1",
                    Some(24.1),
                    "1–10",
                    "24–26",
                ),
                Row::new("x", "a | b", "skipped", None, "—", "—"),
            ],
            ratios: vec![Row::new(
                "r",
                "cross / same",
                "7.3×",
                Some(7.3),
                "—",
                "≈7–8×",
            )],
            notes: vec!["a \"note\"".to_string()],
            charts: vec![
                Chart {
                    title: "hand-off, µs".to_string(),
                    bars: vec![
                        Bar {
                            label: "parker, cross-core".to_string(),
                            value: 24.1,
                            reference: Some(25.0),
                            color: BLUE,
                        },
                        Bar {
                            label: "parker, same-core".to_string(),
                            value: 3.2,
                            reference: Some(3.3),
                            color: ORANGE,
                        },
                    ],
                    legend: vec!["blue & orange".to_string()],
                },
                Chart {
                    title: "switch, ns".to_string(),
                    bars: vec![
                        Bar {
                            label: "asm".to_string(),
                            value: 2.1,
                            reference: None,
                            color: GREEN,
                        },
                        Bar {
                            label: "asm fiber".to_string(),
                            value: 1.9,
                            reference: None,
                            color: PURPLE,
                        },
                        Bar {
                            label: "corosensei".to_string(),
                            value: 2.4,
                            reference: Some(2.5),
                            color: ORANGE,
                        },
                    ],
                    legend: vec![],
                },
                Chart {
                    title: "empty, left out".to_string(),
                    bars: vec![],
                    legend: vec!["never drawn".to_string()],
                },
            ],
        }
    }

    #[test]
    fn text_table_lines_up_columns() {
        let text = sample().text();
        let lines: Vec<&str> = text.lines().collect();
        let bar = |l: &str| l.chars().position(|c| c == '|');
        assert_eq!(bar(lines[0]), bar(lines[2]), "{text}");
        assert!(text.contains("24.1"));
    }

    #[test]
    fn markdown_escapes_pipes_and_html_escapes_markup() {
        let r = sample();
        assert!(r.markdown().contains("a \\| b"));
        let html = r.html();
        assert!(html.contains("Test &lt;CPU&gt;"));
        assert!(html.contains("<svg"));
        assert!(html.starts_with("<!DOCTYPE html>"));
    }

    #[test]
    fn svg_has_one_bar_per_row_and_one_mark_per_reference() {
        let svg = sample().svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("stroke-dasharray").count(), 3);
        // One background rect plus one rect per bar; the empty chart draws nothing.
        assert_eq!(svg.matches("<rect").count(), 6);
        assert!(svg.contains("blue &amp; orange"));
        assert!(!svg.contains("never drawn"));
        // The second chart starts below the first.
        let first = chart_height(&sample().charts[0]);
        assert!(svg.contains(&format!("y=\"{:.1}\" font-size=\"22\"", first + 30.0)));
    }

    #[test]
    fn json_escapes_quotes_and_writes_null_for_no_value() {
        let json = sample().json();
        assert!(json.contains("\"value\":null"));
        assert!(json.contains("a \\\"note\\\""));
    }

    /// The hand-written writer checked by a real JSON parser: serde_json is compiled for
    /// `cargo test` anyway (criterion), so this check costs the class bench nothing.
    #[test]
    fn json_is_read_back_by_serde_json_with_every_escape() {
        let mut report = sample();
        let tricky = "quote \" backslash \\ newline \n tab \t bell \u{7} µs";
        report.notes.push(tricky.to_string());
        report.rows[0].mine = vec![3, 6];
        let parsed: serde_json::Value = serde_json::from_str(&report.json())
            .unwrap_or_else(|e| panic!("report.json does not parse: {e}\n{}", report.json()));
        assert_eq!(parsed["mode"], "quick");
        assert_eq!(parsed["notes"].as_array().unwrap().last().unwrap(), tricky);
        assert_eq!(parsed["rows"][0]["value"], 24.1);
        assert_eq!(parsed["rows"][0]["mine"], serde_json::json!([3, 6]));
        assert!(parsed["rows"][1]["value"].is_null());
        assert_eq!(parsed["facts"]["CPU"], "Test <CPU>");
    }

    #[test]
    fn dates_from_unix_seconds() {
        assert_eq!(utc_from_unix(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_from_unix(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_from_unix(1_767_225_600 + 3_723), "2026-01-01 01:02 UTC");
    }

    #[test]
    fn grid_steps_are_round() {
        assert_eq!(nice_step(26.0), 10.0);
        assert_eq!(nice_step(9.0), 2.0);
        assert_eq!(nice_step(0.0), 1.0);
    }
}
