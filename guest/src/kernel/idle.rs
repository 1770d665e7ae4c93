//! The idle loop: take interrupts, act on hotplug requests at the poll
//! point, run the CPU's idle task if it has one, and halt or poll.

use core::sync::atomic::{AtomicPtr, Ordering};

use shared::{CpuId, percpu_window};

use super::cpu_down::{self, wake};
use super::machine::{SMP, ipi};
use crate::arch::x86_64::cpu_table::CpuTable;
use crate::arch::x86_64::poll_idle::{self, PollWindow};
use crate::arch::x86_64::{cpu, percpu};
use crate::mem::Zeroable;

/// Work an idle CPU runs in task context (interrupts enabled) while it is
/// set: `run=torture` puts its invokers here, so that a CPU that went
/// down and came back resumes its work. A table of the per-CPU window
/// (the idle loop reads its slot at a constant address); only the CPUs
/// that exist have slots of their own.
static IDLE_TASK: CpuTable<IdleTask> = CpuTable::new(percpu_window::IDLE_TASKS);

/// One CPU's idle task: the address of a `fn()`, or null for none.
#[repr(transparent)]
struct IdleTask(AtomicPtr<()>);

// SAFETY: a null pointer: no task.
unsafe impl Zeroable for IdleTask {}

impl IdleTask {
    fn set(&self, task: Option<fn()>) {
        let p = task.map_or(core::ptr::null_mut(), |f| f as *mut ());
        // Release: pairs with the Acquire load in `get` on the idle CPU:
        // what the setter prepared for the task is visible when it runs.
        self.0.store(p, Ordering::Release);
    }

    fn get(&self) -> Option<fn()> {
        // Acquire: pairs with the Release store in `set`.
        let p = self.0.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: `set` stores nothing but null or the address of a
        // `fn()`, which is what this turns back into.
        Some(unsafe { core::mem::transmute::<*mut (), fn()>(p) })
    }
}

/// Sets (or clears) the task `cpu` runs whenever it is idle, and wakes it
/// (nothing for a CPU that does not exist).
pub fn set_idle_task(cpu: CpuId, task: Option<fn()>) {
    let Some(slot) = IDLE_TASK.backed(cpu) else {
        return;
    };
    slot.set(task);
    if SMP.cpu_online(cpu) {
        wake(cpu);
    }
}

/// What an idle CPU does: take interrupts, act on hotplug requests, and
/// run its idle task if it has one.
///
/// With `idle=poll` it spins with interrupts on instead of halting, on its
/// call queue, and announces that it polls: a sender then skips the IPI
/// (`arch::x86_64::poll_idle`), so after polling it drains its call queue
/// itself, still polling, and goes straight back to its spin unless a
/// hotplug request or an idle task is waiting (the next call may follow
/// at once). It stops polling (and drains once more) after each batch of
/// pauses that found no work, for the hotplug poll point (or at once when
/// a recheck is requested, see `percpu::request_idle_recheck`), and halts once
/// it polled a while without being woken (see `PollWindow`); after
/// the next interrupt it polls again.
pub fn idle() -> ! {
    let me = percpu::this_cpu();
    let ipi = ipi();
    ipi.note_booted(me);
    let mut window = PollWindow::new();
    loop {
        cpu::cli();
        // Before the look: a request made after it stays set.
        percpu::take_idle_recheck();
        cpu_down::poll(me);
        let task = IDLE_TASK.get(me).get();
        if let Some(task) = task {
            // The task calls `poll` itself, with interrupts off.
            cpu::sti();
            task();
            continue;
        }
        if ipi.idle_polls(me) && window.open() {
            poll_idle::polling_enter(me);
            let queue = SMP.call_queue_word(me);
            loop {
                let woken = window.poll_batch(queue);
                if woken {
                    SMP.run_call_queue_of(me);
                }
                window.batch_done(woken);
                // Whatever else this CPU waits for (a hotplug request, an
                // idle task, its idle mode) comes with a recheck request.
                if !woken || percpu::idle_recheck_requested() {
                    break;
                }
            }
            poll_idle::polling_exit(me);
            // What senders queued while they saw this CPU polling.
            SMP.run_call_queue_irqs_off();
            continue;
        }
        // The wake-up from this halt starts a new polling window.
        window.reset();
        // Atomically re-enable interrupts and halt: a wake-up that arrives
        // after `poll` looked is not lost. A CPU that polls when idle
        // goes back to polling after any interrupt; the others halt again
        // at once after the interrupts (calls) that leave nothing else to
        // look at: whoever changes what the loop waits for requests a
        // recheck first (`cpu_down::wake`, `IpiDelivery::set_poll_cpus`).
        if ipi.idle_polls(me) {
            cpu::sti_hlt();
        } else {
            percpu::halt_until_recheck();
        }
    }
}
