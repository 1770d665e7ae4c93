//! Where a target CPU's guest instructions go in one round trip: the
//! parts of the paths that `single-wait` and `raw-ping` exercise, counted
//! in the disassembly of the guest this VMM embeds
//! (`objdump -d --no-show-raw-insn -C guest.elf`, the non-traced build), and
//! printed next to the exact count KVM measured (`insn_emulation`), so that
//! a breakdown that no longer matches the code shows up as a difference.
//!
//! A round trip of a halted target starts where its `hlt` returns after the
//! interrupt and ends at its next `hlt`; a polling target's, where its spin
//! sees the call and ends where it sees the next one: its count has one
//! look of the spin, and what the target measured beyond the count is its
//! spinning while the sender was busy (or preempted: on a loaded host that
//! dominates the mean). A count here changes
//! with the code it describes: whoever changes that code recounts it.

use shared::bench::{Case, IdleMode};

/// One part of a round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// What runs.
    pub what: &'static str,
    /// Guest instructions it executes per round trip.
    pub insn: u32,
}

/// The parts of one case's target path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breakdown {
    /// The case (`single-wait` stands for every single-wait case whose
    /// target is in `idle`).
    pub case: Case,
    /// The target's idle mode.
    pub idle: IdleMode,
    /// The parts, in the order they run.
    pub parts: &'static [Part],
}

impl Breakdown {
    /// The parts' sum.
    pub fn total(&self) -> u32 {
        self.parts.iter().map(|p| p.insn).sum()
    }
}

const fn part(what: &'static str, insn: u32) -> Part {
    Part { what, insn }
}

/// The interrupt entry: the stub saves and restores the nine caller-saved
/// registers, calls the handler through its slot, `iretq`.
const ENTRY: Part = part("entry stub: 9 saves, call, 9 restores, iretq", 20);
/// The x2APIC EOI: `mov ecx`, two zeroing `xor`s, `wrmsr`.
const EOI: Part = part("EOI (x2APIC wrmsr and its operands)", 4);
/// The halting idle loop from a `hlt` that an interrupt ended to the next
/// `hlt`, when the interrupt requested no recheck.
const IDLE_HALT: Part = part("idle loop: cli, recheck test, sti; hlt", 5);

/// The parts of `run_lone_sync` that both single-wait targets run,
/// halting (from the IPI handler) or polling (from the idle loop's drain).
const QUEUE_TAKE: Part = part("queue take: zero, xchg, empty test", 4);
const LONE_SYNC_TEST: Part = part("lone-SYNC test: next, flags, one branch", 5);
const ONLINE_TEST: Part = part("online test", 3);
const CSD_READ: Part = part("csd func and info", 2);
const LONE_SYNC_COUNT: Part = part("counter lone_syncs_run (lock inc)", 1);
const RUNNING_WORD: Part = part("running word: set, clear", 2);
const UNLOCK: Part = part("unlock (release store)", 1);

/// Every breakdown the report knows.
pub const BREAKDOWNS: &[Breakdown] = &[
    Breakdown {
        case: Case::SingleWait,
        idle: IdleMode::Halt,
        parts: &[
            ENTRY,
            part("handler frame: push/pop rbx, ret", 3),
            EOI,
            part("per-CPU block: gs:[0], and, shl, lea", 4),
            QUEUE_TAKE,
            LONE_SYNC_TEST,
            ONLINE_TEST,
            CSD_READ,
            LONE_SYNC_COUNT,
            RUNNING_WORD,
            part("call the function, its ret (nop)", 2),
            UNLOCK,
            IDLE_HALT,
        ],
    },
    Breakdown {
        case: Case::SingleWait,
        idle: IdleMode::Poll,
        parts: &[
            part(
                "spin: the look that sees the call (pause, cmp, jne); \
                 every earlier look adds 3, every 4th 2 more",
                3,
            ),
            part("leave the spin: cli, test, branch", 3),
            QUEUE_TAKE,
            LONE_SYNC_TEST,
            ONLINE_TEST,
            CSD_READ,
            LONE_SYNC_COUNT,
            RUNNING_WORD,
            part("keep the csd across the call, call, its ret (nop)", 3),
            UNLOCK,
            part("recheck test (gs), branch", 3),
            part("next batch: spin count, sti", 2),
        ],
    },
    Breakdown {
        case: Case::RawPing,
        idle: IdleMode::Halt,
        parts: &[
            ENTRY,
            EOI,
            part("handler: count the ping (the pong), ret", 2),
            IDLE_HALT,
        ],
    },
];

/// The breakdown of `case` with its target in `idle`, if there is one.
pub fn of(case: Case, idle: IdleMode) -> Option<&'static Breakdown> {
    let case = match case {
        Case::SingleWaitIdleHalt | Case::SingleWaitIdlePoll => Case::SingleWait,
        c => c,
    };
    BREAKDOWNS.iter().find(|b| b.case == case && b.idle == idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_wait_in_either_idle_case_finds_the_same_breakdown() {
        let b = of(Case::SingleWaitIdleHalt, IdleMode::Halt).unwrap();
        assert_eq!(b, of(Case::SingleWait, IdleMode::Halt).unwrap());
        assert!(of(Case::SingleAsync, IdleMode::Halt).is_none());
    }

    #[test]
    fn one_breakdown_per_case_and_idle_mode_and_no_empty_part() {
        // (`total` is the parts' sum by construction: nothing to test.)
        for (i, b) in BREAKDOWNS.iter().enumerate() {
            assert!(b.parts.iter().all(|p| p.insn > 0), "{:?}", b.case);
            assert!(
                BREAKDOWNS[..i]
                    .iter()
                    .all(|o| (o.case, o.idle) != (b.case, b.idle)),
                "{:?} {:?} twice",
                b.case,
                b.idle
            );
        }
    }
}
