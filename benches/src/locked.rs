//! Locked instructions per operation, counted (chapter 8, "The price of a locked
//! instruction"): which `lock`-prefixed and `xchg` instructions a program runs, how often,
//! in which functions. The `locked-count` binary runs it on one link of the spawn chain,
//! on `gmp` and on Go.
//!
//! How: valgrind's callgrind counts every instruction's executions (`--dump-instr=yes
//! --compress-pos=no` writes them by address), `objdump -d` says which addresses hold a
//! locked instruction, and two runs of different sizes are subtracted, so start-up and
//! warm-up cancel and what is left, over the difference in size, is one operation.
//!
//! Not here: timing anything (a count is the same on a busy machine; its price is the
//! class bench's "one locked read-modify-write" row).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use crate::{
    BenchError, NO_VALGRIND, callgrind_output, on_path, parse_callgrind_total, valgrind_on_path,
};

/// `objdump` is missing: it comes with binutils.
pub const NO_OBJDUMP: &str =
    "objdump is not on PATH, so no locked instructions (`apt-get install binutils`)";

/// One locked instruction of the program and how often it ran per operation.
#[derive(Clone, Debug, PartialEq)]
pub struct LockedSite {
    /// The function callgrind names (a mangled-then-demangled Rust path, or Go's name).
    pub function: String,
    /// The instruction as `objdump` prints it, e.g. `lock cmpxchg %rdx,0x30(%rcx)`.
    pub instruction: String,
    /// Where it is in the program's code.
    pub address: u64,
    /// How many times it ran per operation.
    pub per_op: f64,
}

/// What one operation ran, from two runs of different sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct LockedCount {
    /// Every instruction the program ran, per operation.
    pub instructions_per_op: f64,
    /// The locked ones among them.
    pub locked_per_op: f64,
    /// Busiest first; sites that ran less than once per hundred operations are left out.
    pub sites: Vec<LockedSite>,
}

/// The locked instructions in `objdump -d --no-show-raw-insn` output, by address: every
/// `lock`-prefixed one and every `xchg` with memory (an `xchg` is locked without the
/// prefix), but not `xchg %ax,%ax`, a two-byte no-op compilers pad with.
pub fn locked_instructions(objdump: &str) -> HashMap<u64, String> {
    let mut found = HashMap::new();
    for line in objdump.lines() {
        let Some((address, instruction)) = line.trim_start().split_once(":\t") else {
            continue;
        };
        let Ok(address) = u64::from_str_radix(address, 16) else {
            continue;
        };
        let instruction = instruction.trim();
        let locked = instruction.starts_with("lock ")
            || (instruction.starts_with("xchg") && !instruction.contains("%ax,%ax"));
        if locked {
            found.insert(address, instruction.to_string());
        }
    }
    found
}

/// Executions of the instructions at `wanted` addresses in one callgrind output file
/// (written with `--dump-instr=yes --compress-pos=no`), by function and address, counting
/// only code of the object whose file name is `object` (the program, not its libraries).
pub fn executions(
    callgrind: &str,
    object: &str,
    wanted: &HashMap<u64, String>,
) -> HashMap<(String, u64), u64> {
    // Names are given once, as `(id) name`, and later as `(id)` alone.
    fn name(value: &str, names: &mut HashMap<String, String>) -> String {
        let value = value.trim();
        match value.split_once(") ") {
            Some((id, name)) => {
                names.insert(format!("{id})"), name.to_string());
                name.to_string()
            }
            None => names
                .get(value)
                .cloned()
                .unwrap_or_else(|| value.to_string()),
        }
    }
    let (mut objects, mut functions) = (HashMap::new(), HashMap::new());
    let (mut in_object, mut function) = (false, String::new());
    let mut ir_index = 0;
    let mut after_calls = false;
    let mut counts = HashMap::new();
    for line in callgrind.lines() {
        if let Some(events) = line.strip_prefix("events:") {
            ir_index = events
                .split_whitespace()
                .position(|e| e == "Ir")
                .unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("ob=") {
            in_object = Path::new(&name(v, &mut objects))
                .file_name()
                .is_some_and(|f| f == object);
        } else if let Some(v) = line.strip_prefix("fn=") {
            function = name(v, &mut functions);
        } else if let Some(v) = line.strip_prefix("cob=") {
            name(v, &mut objects);
        } else if let Some(v) = line.strip_prefix("cfn=") {
            name(v, &mut functions);
        } else if line.starts_with("calls=") {
            // The next cost line is the call's inclusive cost, not this address's own.
            after_calls = true;
        } else if let Some(rest) = line.strip_prefix("0x") {
            if std::mem::take(&mut after_calls) || !in_object {
                continue;
            }
            let mut fields = rest.split_whitespace();
            let Some(address) = fields.next().and_then(|a| u64::from_str_radix(a, 16).ok()) else {
                continue;
            };
            if !wanted.contains_key(&address) {
                continue;
            }
            // Then the source line, then the events in `events:` order.
            let ir = fields
                .nth(1 + ir_index)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            *counts.entry((function.clone(), address)).or_insert(0) += ir;
        }
    }
    counts
}

/// Counts what one operation of `program` runs: callgrind runs `program args(n)` for both
/// sizes, with `env` set; the difference over the difference in size is one operation.
pub fn count(
    program: &Path,
    args: impl Fn(u64) -> Vec<String>,
    env: &[(&str, &str)],
    sizes: (u64, u64),
) -> Result<LockedCount, BenchError> {
    let valgrind = valgrind_on_path().ok_or_else(|| BenchError(NO_VALGRIND.to_string()))?;
    let objdump = on_path("objdump").ok_or_else(|| BenchError(NO_OBJDUMP.to_string()))?;
    if sizes.1 <= sizes.0 {
        return Err(BenchError(format!(
            "the second size must be larger than the first, got {} and {}",
            sizes.0, sizes.1
        )));
    }
    let disassembly = Command::new(&objdump)
        .args(["-d", "--no-show-raw-insn"])
        .arg(program)
        .output()
        .map_err(|e| BenchError::new("running objdump", e))?;
    if !disassembly.status.success() {
        return Err(BenchError::new(
            &format!("objdump -d {}", program.display()),
            String::from_utf8_lossy(&disassembly.stderr).trim(),
        ));
    }
    let locked = locked_instructions(&String::from_utf8_lossy(&disassembly.stdout));
    let object = program
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut runs = Vec::new();
    for n in [sizes.0, sizes.1] {
        let text = callgrind_text(&valgrind, program, &args(n), env)?;
        let total = parse_callgrind_total(&text).ok_or_else(|| {
            BenchError(format!(
                "callgrind's output for size {n} has no instruction total"
            ))
        })?;
        runs.push((total, executions(&text, &object, &locked)));
    }
    let ops = (sizes.1 - sizes.0) as f64;
    let (small, large) = (&runs[0], &runs[1]);
    let mut sites: Vec<LockedSite> = large
        .1
        .iter()
        .map(|((function, address), &ran)| {
            let before = small
                .1
                .get(&(function.clone(), *address))
                .copied()
                .unwrap_or(0);
            LockedSite {
                function: function.clone(),
                instruction: locked[address].clone(),
                address: *address,
                per_op: ran.saturating_sub(before) as f64 / ops,
            }
        })
        .collect();
    let locked_per_op = sites.iter().map(|s| s.per_op).sum();
    sites.retain(|s| s.per_op >= 0.01);
    sites.sort_by(|a, b| {
        b.per_op
            .total_cmp(&a.per_op)
            .then(a.address.cmp(&b.address))
    });
    Ok(LockedCount {
        instructions_per_op: large.0.saturating_sub(small.0) as f64 / ops,
        locked_per_op,
        sites,
    })
}

/// Runs `program args` under callgrind with per-instruction counts; returns its output file.
fn callgrind_text(
    valgrind: &Path,
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
) -> Result<String, BenchError> {
    let command: Vec<&OsStr> = std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsStr::new))
        .collect();
    let options = ["--dump-instr=yes", "--compress-pos=no"];
    callgrind_output(valgrind, &options, &command, env).map(|(_, text)| text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJDUMP: &str = "\
0000000000001000 <f>:
    1000:\tmov    %rdi,%rax
    1003:\tlock cmpxchg %rdx,0x30(%rcx)
    1009:\txchg   %ax,%ax
    100b:\txchg   %ecx,0xf0(%r14)
    1012:\tlock xadd %rbp,0x270(%r14)
";

    #[test]
    fn locked_instructions_are_the_lock_prefixed_and_the_xchg_with_memory() {
        let found = locked_instructions(OBJDUMP);
        let mut addresses: Vec<u64> = found.keys().copied().collect();
        addresses.sort();
        assert_eq!(addresses, [0x1003, 0x100b, 0x1012], "{found:?}");
        assert_eq!(found[&0x1003], "lock cmpxchg %rdx,0x30(%rcx)");
    }

    /// Two functions in the program, one in a library; a call line whose cost line must
    /// not count as the caller's own; names given once and then by id.
    const CALLGRIND: &str = "\
version: 1
events: Ir
ob=(1) /usr/lib/libc.so.6
fn=(1) malloc
0x1003 10 500
ob=(2) /target/release/class-bench
fn=(2) gmp::sched::go
0x1000 12 7
0x1003 12 7
cfn=(3) gmp::task::new
calls=7 0x2000 40
0x100b 12 700
0x1012 13 2
fn=(3)
0x100b 41 5
fn=(2)
0x1003 14 3
summary: 1234
";

    #[test]
    fn executions_count_the_programs_own_locked_instructions_by_function() {
        let wanted = locked_instructions(OBJDUMP);
        let got = executions(CALLGRIND, "class-bench", &wanted);
        let mut got: Vec<((String, u64), u64)> = got.into_iter().collect();
        got.sort();
        assert_eq!(
            got,
            [
                (("gmp::sched::go".to_string(), 0x1003), 10),
                (("gmp::sched::go".to_string(), 0x1012), 2),
                (("gmp::task::new".to_string(), 0x100b), 5),
            ]
        );
    }
}
