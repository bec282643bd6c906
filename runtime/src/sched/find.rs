//! Where an M finds its next G: [`find_runnable`] (Go: `findRunnable` in `proc.go`). Stage 1
//! looks only in the global queue; chapter 8 adds runnext, the local queue, the global queue
//! every 61st tick, stealing and spinning, in Go's order.
//!
//! Not here: the other side of the idle protocol, `enqueue` (`mod.rs`, "Idle M without
//! lost wake-up"); what an M does with the G (`m.rs`).

use std::sync::Arc;

use super::Shared;
use super::m::MState;
use crate::g::G;
use crate::lock;

/// The next G to run, sleeping until there is one; `None` at shutdown. Go: `findRunnable`
/// (stage 1 has only the global queue to look in).
pub(super) fn find_runnable(shared: &Shared, index: usize) -> Option<Arc<G>> {
    let me = &shared.ms[index];
    loop {
        {
            let mut s = lock(&shared.sched);
            if let Some(g) = s.runq.pop_front() {
                return Some(g);
            }
            if s.shutdown {
                return None;
            }
            s.idle.push(index); // step 1 of "Idle M without lost wake-up"
        }
        me.set_state(index, MState::Idle);
        me.idle.park();
        me.set_state(index, MState::Scheduling);
    }
}
