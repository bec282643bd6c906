//! The book's figures, for the class bench: `book/figures.toml`, compiled in, looked up by key,
//! so the bench's "seed" and "reference" columns print what the book prints and cannot drift.
//!
//! Only what the file's own format needs is read: `[fig.KEY]` headers and each one's
//! `value = "..."` and `unit = "..."` lines (no `toml` crate, to keep the quick bench's
//! build short). `cargo workbook verify` parses the whole file with the real `toml` crate,
//! so a malformed file is caught there. Call [`fig`] with a string literal key: the test
//! below finds every such call in the class bench's sources and checks that the key exists.

/// The data file the book renders its figures from.
const FIGURES_TOML: &str = include_str!("../../book/figures.toml");

/// One figure as the book has it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figure {
    /// Its key, e.g. `go.handoff`.
    pub key: &'static str,
    /// The number as printed: `125–150`, `~10`, `2,661`.
    pub value: &'static str,
    /// `ns`, `KiB`, …; empty for a count or a ratio.
    pub unit: &'static str,
}

/// The figure `key`. A key the file lacks is a bug the test below catches, so this panics
/// naming the key and the file.
pub fn fig(key: &str) -> Figure {
    find(key).unwrap_or_else(|| {
        panic!("book/figures.toml has no [fig.{key}]: add it there or fix the key in the bench")
    })
}

/// The figure `key`, if the file has it.
pub fn find(key: &str) -> Option<Figure> {
    // The lines of [fig.KEY]'s table: from its header to the next header.
    let mut lines = FIGURES_TOML.lines().map(str::trim);
    let header = format!("[fig.{key}]");
    let found = lines.find(|l| *l == header)?;
    let table: Vec<&'static str> = lines.take_while(|l| !l.starts_with('[')).collect();
    let field = |name: &str| {
        table.iter().find_map(|l| {
            let rest = l.strip_prefix(name)?.trim_start().strip_prefix('=')?;
            let rest = rest.trim_start().strip_prefix('"')?;
            rest.split('"').next()
        })
    };
    Some(Figure {
        key: &found["[fig.".len()..found.len() - 1],
        value: field("value")?,
        unit: field("unit").unwrap_or(""),
    })
}

impl Figure {
    /// Value and unit as the book prints them, with a plain space: `125–150 ns`.
    pub fn text(&self) -> String {
        if self.unit.is_empty() {
            self.value.to_string()
        } else {
            format!("{} {}", self.value, self.unit)
        }
    }

    /// The value's lowest and highest number in `unit`: `24–26` µs is (24, 26), `~10` is
    /// (10, 10), `2,661` is (2661, 2661). Panics, naming the key, when the value is no number
    /// or its unit does not convert to `unit` (the bench's tests build every row, so either
    /// is a red test).
    pub fn range_in(&self, unit: &str) -> (f64, f64) {
        let number = |s: &str| s.trim().replace(',', "").parse::<f64>().ok();
        let plain = self.value.trim().trim_start_matches('~');
        let (lo, hi) = match plain.split_once(['–', '-']) {
            Some((lo, hi)) => (number(lo), number(hi)),
            None => (number(plain), number(plain)),
        };
        let (Some(lo), Some(hi)) = (lo, hi) else {
            panic!(
                "[fig.{}] value {:?} is not a number or a range like 24–26",
                self.key, self.value
            );
        };
        let factor = match (scale(self.unit), scale(unit)) {
            (Some((from_dim, from)), Some((to_dim, to))) if from_dim == to_dim => from / to,
            _ => panic!(
                "[fig.{}] is in {:?}, which does not convert to {unit:?}",
                self.key, self.unit
            ),
        };
        (lo * factor, hi * factor)
    }

    /// One number for the figure in `unit`, for a ratio: the midpoint of a range (`24–26`
    /// gives 25), else the value itself.
    pub fn mid_in(&self, unit: &str) -> f64 {
        let (lo, hi) = self.range_in(unit);
        (lo + hi) / 2.0
    }
}

/// A unit's dimension and size in that dimension's base unit (ns, bytes, one).
fn scale(unit: &str) -> Option<(&'static str, f64)> {
    const K: f64 = 1024.0;
    Some(match unit {
        "" => ("count", 1.0),
        "ns" => ("time", 1.0),
        "µs" => ("time", 1e3),
        "ms" => ("time", 1e6),
        "s" => ("time", 1e9),
        "B" | "bytes" => ("size", 1.0),
        "KiB" => ("size", K),
        "MiB" => ("size", K * K),
        "GiB" => ("size", K * K * K),
        "TiB" => ("size", K * K * K * K),
        "KB" => ("size", 1e3),
        "MB" => ("size", 1e6),
        "GB" => ("size", 1e9),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class bench's sources, where every `fig("...")` call names a key.
    const BENCH_SOURCES: [(&str, &str); 4] = [
        ("main.rs", include_str!("bin/class-bench/main.rs")),
        ("gs.rs", include_str!("bin/class-bench/gs.rs")),
        ("mine.rs", include_str!("bin/class-bench/mine.rs")),
        ("programs.rs", include_str!("bin/class-bench/programs.rs")),
    ];

    /// The keys of every `fig("KEY")` call in `source`, or the first call whose argument is
    /// not a string literal (its key could not be checked).
    fn called_keys(source: &str) -> Result<Vec<&str>, &str> {
        let mut keys = Vec::new();
        for (at, _) in source.match_indices("fig(") {
            let before = source[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // another name ending in `fig`, e.g. `config(`
            }
            let rest = &source[at + "fig(".len()..];
            let line = rest.lines().next().unwrap_or("");
            match rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                Some(key) => keys.push(key),
                None => return Err(line),
            }
        }
        Ok(keys)
    }

    #[test]
    fn every_key_the_class_bench_quotes_is_in_the_book() {
        let mut found = 0;
        for (file, source) in BENCH_SOURCES {
            let keys = called_keys(source).unwrap_or_else(|call| {
                panic!(
                    "class-bench/{file} calls fig({call}: write the key as a string literal, \
                     so this test can check it"
                )
            });
            for key in keys {
                found += 1;
                let f = find(key).unwrap_or_else(|| {
                    panic!(
                        "class-bench/{file} quotes fig(\"{key}\"), but book/figures.toml has \
                         no [fig.{key}]: rename the call or add the figure"
                    )
                });
                assert_eq!(f.key, key, "class-bench/{file}: the key read back differs");
                assert!(!f.value.is_empty(), "[fig.{key}] has an empty value");
            }
        }
        assert!(
            found >= 20,
            "only {found} fig(\"…\") calls found in the class bench: has the call's name changed?"
        );
    }

    #[test]
    fn a_call_without_a_literal_key_is_named() {
        let source = "let a = fig(\"go.handoff\"); let c = config(x); let b = fig(key);";
        assert_eq!(called_keys(source), Err("key);"));
        assert_eq!(
            called_keys("fig(\"a.b\") + fig(\"c\")"),
            Ok(vec!["a.b", "c"])
        );
    }

    #[test]
    fn figures_read_as_the_book_prints_them() {
        let f = fig("go.handoff");
        assert_eq!((f.value, f.unit), ("125–150", "ns"), "{f:?}");
        assert_eq!(f.text(), "125–150 ns");
        // The next table's fields are not this one's.
        assert_eq!(fig("ref.process_spawn").text(), "~700 µs");
        assert_eq!(find("no.such.figure"), None);
        // A header's prefix is not the header.
        assert_eq!(find("go.hand"), None);
    }

    #[test]
    fn ranges_give_their_ends_and_midpoint_in_the_unit_asked() {
        let f = Figure {
            key: "t",
            value: "24–26",
            unit: "µs",
        };
        assert_eq!(f.range_in("µs"), (24.0, 26.0));
        assert_eq!(f.mid_in("µs"), 25.0);
        assert_eq!(f.mid_in("ns"), 25_000.0);
        let f = Figure {
            key: "t",
            value: "~2,661",
            unit: "B",
        };
        assert_eq!(f.range_in("B"), (2661.0, 2661.0));
        let gib = Figure {
            key: "t",
            value: "1.5",
            unit: "GiB",
        };
        assert_eq!(gib.mid_in("MiB"), 1536.0);
    }

    #[test]
    #[should_panic(expected = "[fig.t] is in \"µs\", which does not convert to \"KiB\"")]
    fn a_time_is_not_a_size() {
        let f = Figure {
            key: "t",
            value: "3",
            unit: "µs",
        };
        f.mid_in("KiB");
    }

    #[test]
    #[should_panic(expected = "[fig.t] value \"2, 4 and 8\" is not a number")]
    fn a_list_is_not_a_number() {
        let f = Figure {
            key: "t",
            value: "2, 4 and 8",
            unit: "KiB",
        };
        f.mid_in("KiB");
    }
}
