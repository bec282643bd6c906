//! `locked::count` on this package's own class bench: one link of the spawn chain, counted
//! with callgrind (skipped, saying so, where valgrind or objdump is missing).

use std::path::Path;

use gmp_benches::locked::count;
use gmp_benches::valgrind_on_path;

#[test]
fn a_link_of_the_spawn_chain_runs_part_06s_locked_instructions() {
    if valgrind_on_path().is_none() {
        eprintln!("skipped: {}", gmp_benches::NO_VALGRIND);
        return;
    }
    let class_bench = Path::new(env!("CARGO_BIN_EXE_class-bench"));
    let args = |n: u64| {
        ["--peer", "gmp", "chain", "1", &n.to_string(), "1"]
            .map(String::from)
            .to_vec()
    };
    let counted = match count(class_bench, args, &[], (2_000, 4_000)) {
        Ok(counted) => counted,
        Err(e) if e.0 == gmp_benches::locked::NO_OBJDUMP => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert!(
        counted.instructions_per_op > counted.locked_per_op && counted.locked_per_op >= 2.0,
        "a link runs at least part 06's two compare-exchanges, among many more instructions: \
         {counted:?}"
    );
    assert!(
        counted
            .sites
            .iter()
            .all(|s| s.instruction.starts_with("lock ") || s.instruction.starts_with("xchg")),
        "every site counted must be a locked instruction: {:#?}",
        counted.sites
    );
    // In a release build part 06's compare-exchanges are inlined into its functions (in a
    // debug build they are std's atomic helpers, shared by every caller).
    if !cfg!(debug_assertions) {
        for step in ["GState::run", "GState::exit"] {
            let once = counted.sites.iter().any(|s| {
                s.function.contains(step)
                    && s.instruction.starts_with("lock cmpxchg")
                    && s.per_op >= 0.9
            });
            assert!(
                once,
                "{step}'s compare-exchange should run on every link: {:#?}",
                counted.sites
            );
        }
    }
}
