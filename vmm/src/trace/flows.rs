//! Flows: each `csd_queue_cpu` linked to the `csd_function_entry` that ran
//! its csd, matched by (target CPU, csd address) in time order: the first
//! entry on the target for that csd after the queue ends the flow. A csd
//! queued but never run (the run ended, or its entry was overwritten) and
//! an entry without a queue (a call run locally) get no flow.

use std::collections::{HashMap, VecDeque};

use shared::trace::TraceEventId;

use super::GuestEvent;

/// Queued csds waiting for their entry, at most (per key and in all): a
/// hostile guest queues without end.
const MAX_PENDING: usize = 1 << 16;

/// For each event of `events` (in time order), the flow id it starts or
/// ends; a flow's two ends have the same id, every id is used by exactly
/// one queue and one entry. Ids count from 1.
pub fn match_flows(events: &[GuestEvent]) -> Vec<Option<u64>> {
    let mut ids = vec![None; events.len()];
    // (target CPU, csd) -> indices of the queue events not yet run.
    let mut pending: HashMap<(u32, u64), VecDeque<usize>> = HashMap::new();
    let mut pending_count = 0usize;
    let mut next = 1u64;
    for (i, e) in events.iter().enumerate() {
        match e.id {
            TraceEventId::CsdQueueCpu if pending_count < MAX_PENDING => {
                let key = (e.entry.arg32, e.entry.args[2]);
                pending.entry(key).or_default().push_back(i);
                pending_count += 1;
            }
            TraceEventId::CsdFunctionEntry => {
                let key = (e.cpu(), e.entry.args[1]);
                if let Some(q) = pending.get_mut(&key)
                    && let Some(start) = q.pop_front()
                {
                    pending_count -= 1;
                    if q.is_empty() {
                        pending.remove(&key);
                    }
                    ids[start] = Some(next);
                    ids[i] = Some(next);
                    next += 1;
                }
            }
            _ => {}
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use shared::trace::Entry;

    use super::*;

    fn ev(ns: u64, cpu: u16, id: TraceEventId, arg32: u32, args: [u64; 5]) -> GuestEvent {
        GuestEvent {
            ns,
            id,
            entry: Entry {
                cpu,
                arg32,
                args,
                ..Default::default()
            },
        }
    }

    #[test]
    fn links_each_queue_to_the_entry_that_ran_it() {
        use TraceEventId::{CsdFunctionEntry as Run, CsdQueueCpu as Queue};
        let events = [
            ev(1, 0, Queue, 2, [0, 0xf, 0xa0, 0, 0]), // csd a0 to CPU 2
            ev(2, 0, Queue, 3, [0, 0xf, 0xa0, 0, 0]), // csd a0 to CPU 3
            ev(3, 3, Run, 0, [0xf, 0xa0, 0, 0, 0]),
            ev(4, 1, Run, 0, [0xf, 0xa0, 0, 0, 0]), // local: no queue
            ev(5, 2, Run, 0, [0xf, 0xa0, 0, 0, 0]),
            ev(6, 0, Queue, 2, [0, 0xf, 0xa0, 0, 0]), // never ran
            ev(7, 2, Run, 0, [0xf, 0xb0, 0, 0, 0]),   // another csd
        ];
        let ids = match_flows(&events);
        assert_eq!(ids, [Some(2), Some(1), Some(1), None, Some(2), None, None]);
    }

    #[test]
    fn a_flood_of_queues_stays_bounded() {
        let events: Vec<_> = (0..(MAX_PENDING as u64 + 10))
            .map(|i| ev(i, 0, TraceEventId::CsdQueueCpu, 1, [0, 0, i, 0, 0]))
            .collect();
        assert!(match_flows(&events).iter().all(Option::is_none));
    }
}
