//! The trace in Perfetto's native protobuf format (`--trace PATH`), for
//! ui.perfetto.dev and trace_processor. The few messages needed are
//! derived with `prost` here, their field numbers from Perfetto's protos
//! (`protos/perfetto/trace/trace.proto`, `trace_packet.proto`,
//! `track_event/{track_event,track_descriptor,counter_descriptor,
//! debug_annotation}.proto`); `oneof` members are plain optional fields
//! (same encoding), enums are their `int32`, and repeated scalars are
//! unpacked as in those proto2 files.
//!
//! Tracks: one per vCPU (slices for the interrupt handlers, each callback,
//! irq_work runs, csd-lock waits and hotplug steps; instants for the
//! rest), a VMM track (hotplug requests, injected stalls, stall reports,
//! crashes, the watchdog) and a counter track per vCPU (VM exits per
//! sample, from KVM's statistics). Flows link each `csd_queue_cpu` to the
//! `csd_function_entry` that ran its csd. All packets are on one sequence
//! with plain (not interned) names; timestamps are `CLOCK_BOOTTIME` ns,
//! the default trace clock.

use std::collections::HashMap;

use prost::Message;
use shared::trace::{CpuhpStep, TraceEventId};

use super::fields::{Value, fields};
use super::flows::match_flows;
use super::{ExitSample, GuestEvent, VmmEvent};
use crate::symbols::Symbols;

/// `Trace` (trace.proto).
#[derive(Clone, PartialEq, Message)]
pub struct Trace {
    /// `packet = 1`.
    #[prost(message, repeated, tag = "1")]
    pub packet: Vec<TracePacket>,
}

/// `TracePacket` (trace_packet.proto), the members used.
#[derive(Clone, PartialEq, Message)]
pub struct TracePacket {
    /// `timestamp = 8`.
    #[prost(uint64, optional, tag = "8")]
    pub timestamp: Option<u64>,
    /// `track_event = 11` (oneof data).
    #[prost(message, optional, tag = "11")]
    pub track_event: Option<TrackEvent>,
    /// `trusted_packet_sequence_id = 10`.
    #[prost(uint32, optional, tag = "10")]
    pub trusted_packet_sequence_id: Option<u32>,
    /// `sequence_flags = 13`.
    #[prost(uint32, optional, tag = "13")]
    pub sequence_flags: Option<u32>,
    /// `track_descriptor = 60` (oneof data).
    #[prost(message, optional, tag = "60")]
    pub track_descriptor: Option<TrackDescriptor>,
    /// `first_packet_on_sequence = 87`.
    #[prost(bool, optional, tag = "87")]
    pub first_packet_on_sequence: Option<bool>,
}

/// `TrackDescriptor` (track_descriptor.proto).
#[derive(Clone, PartialEq, Message)]
pub struct TrackDescriptor {
    /// `uuid = 1`.
    #[prost(uint64, optional, tag = "1")]
    pub uuid: Option<u64>,
    /// `name = 2` (oneof static_or_dynamic_name).
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    /// `parent_uuid = 5`.
    #[prost(uint64, optional, tag = "5")]
    pub parent_uuid: Option<u64>,
    /// `counter = 8`.
    #[prost(message, optional, tag = "8")]
    pub counter: Option<CounterDescriptor>,
}

/// `CounterDescriptor` (counter_descriptor.proto).
#[derive(Clone, PartialEq, Message)]
pub struct CounterDescriptor {
    /// `unit = 3` (`UNIT_COUNT` = 2).
    #[prost(int32, optional, tag = "3")]
    pub unit: Option<i32>,
}

/// `TrackEvent` (track_event.proto), the members used.
#[derive(Clone, PartialEq, Message)]
pub struct TrackEvent {
    /// `debug_annotations = 4`.
    #[prost(message, repeated, tag = "4")]
    pub debug_annotations: Vec<DebugAnnotation>,
    /// `type = 9`.
    #[prost(int32, optional, tag = "9")]
    pub r#type: Option<i32>,
    /// `track_uuid = 11`.
    #[prost(uint64, optional, tag = "11")]
    pub track_uuid: Option<u64>,
    /// `categories = 22`.
    #[prost(string, repeated, tag = "22")]
    pub categories: Vec<String>,
    /// `name = 23` (oneof name_field).
    #[prost(string, optional, tag = "23")]
    pub name: Option<String>,
    /// `counter_value = 30` (oneof counter_value_field).
    #[prost(int64, optional, tag = "30")]
    pub counter_value: Option<i64>,
    /// `flow_ids = 47`.
    #[prost(fixed64, repeated, packed = "false", tag = "47")]
    pub flow_ids: Vec<u64>,
    /// `terminating_flow_ids = 48`.
    #[prost(fixed64, repeated, packed = "false", tag = "48")]
    pub terminating_flow_ids: Vec<u64>,
}

/// `DebugAnnotation` (debug_annotation.proto), the members used.
#[derive(Clone, PartialEq, Message)]
pub struct DebugAnnotation {
    /// `uint_value = 3`.
    #[prost(uint64, optional, tag = "3")]
    pub uint_value: Option<u64>,
    /// `string_value = 6`.
    #[prost(string, optional, tag = "6")]
    pub string_value: Option<String>,
    /// `pointer_value = 7`.
    #[prost(uint64, optional, tag = "7")]
    pub pointer_value: Option<u64>,
    /// `name = 10`.
    #[prost(string, optional, tag = "10")]
    pub name: Option<String>,
}

/// `TrackEvent.Type`.
pub mod event_type {
    /// `TYPE_SLICE_BEGIN`.
    pub const SLICE_BEGIN: i32 = 1;
    /// `TYPE_SLICE_END`.
    pub const SLICE_END: i32 = 2;
    /// `TYPE_INSTANT`.
    pub const INSTANT: i32 = 3;
    /// `TYPE_COUNTER`.
    pub const COUNTER: i32 = 4;
}

/// `TracePacket.SequenceFlags`.
const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;
const SEQ_NEEDS_INCREMENTAL_STATE: u32 = 2;
/// `CounterDescriptor.Unit.UNIT_COUNT`.
const UNIT_COUNT: i32 = 2;
/// The one packet sequence of this writer.
pub const SEQUENCE_ID: u32 = 0x736d_7063;

/// The VMM track's uuid.
pub const VMM_TRACK: u64 = 1;
/// The uuid of vCPU `cpu`'s track.
pub fn vcpu_track(cpu: u32) -> u64 {
    0x1_0000_0000 + u64::from(cpu)
}
/// The uuid of vCPU `cpu`'s VM-exit counter track.
pub fn exits_track(cpu: u32) -> u64 {
    0x2_0000_0000 + u64::from(cpu)
}

/// What a guest event is on its track: a slice's begin (with its name and
/// the slice kind an end must match), an end (of that kind), or an instant.
enum Shape {
    Begin(String, TraceEventId),
    End(TraceEventId),
    Instant,
}

fn shape(e: &GuestEvent, syms: &Symbols) -> Shape {
    use TraceEventId as E;
    match e.id {
        E::CallFunctionEntry => Shape::Begin("call_function".into(), E::CallFunctionEntry),
        E::CallFunctionExit => Shape::End(E::CallFunctionEntry),
        E::CallFunctionSingleEntry => {
            Shape::Begin("call_function_single".into(), E::CallFunctionSingleEntry)
        }
        E::CallFunctionSingleExit => Shape::End(E::CallFunctionSingleEntry),
        // The callback's own name, as the slice's.
        E::CsdFunctionEntry => {
            Shape::Begin(syms.at(e.entry.args[0]).to_string(), E::CsdFunctionEntry)
        }
        E::CsdFunctionExit => Shape::End(E::CsdFunctionEntry),
        E::IrqWorkRunEntry => Shape::Begin("irq_work_run".into(), E::IrqWorkRunEntry),
        E::IrqWorkRunExit => Shape::End(E::IrqWorkRunEntry),
        E::CsdLockWaitStart => Shape::Begin("csd_lock_wait".into(), E::CsdLockWaitStart),
        E::CsdLockWaitEnd => Shape::End(E::CsdLockWaitStart),
        E::CpuhpEnter => {
            let step = CpuhpStep::try_from(e.entry.args[0]).map_or("?", |s| s.name());
            Shape::Begin(format!("cpuhp {step}"), E::CpuhpEnter)
        }
        E::CpuhpExit => Shape::End(E::CpuhpEnter),
        _ => Shape::Instant,
    }
}

fn annotation(name: &str) -> DebugAnnotation {
    DebugAnnotation {
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// The fields of a guest event as debug annotations: a code address as
/// its symbol (`func`) and its value (`func_addr`).
fn annotations(e: &GuestEvent, syms: &Symbols) -> Vec<DebugAnnotation> {
    let mut out = vec![DebugAnnotation {
        string_value: Some(e.id.name().to_string()),
        ..annotation("event")
    }];
    for (k, v) in fields(e.id, &e.entry) {
        match v {
            Value::Code(a) => {
                out.push(DebugAnnotation {
                    string_value: Some(syms.at(a).to_string()),
                    ..annotation(k)
                });
                out.push(DebugAnnotation {
                    pointer_value: Some(a),
                    ..annotation(&format!("{k}_addr"))
                });
            }
            Value::Hex(a) => out.push(DebugAnnotation {
                pointer_value: Some(a),
                ..annotation(k)
            }),
            Value::Uint(n) => out.push(DebugAnnotation {
                uint_value: Some(n),
                ..annotation(k)
            }),
            Value::Str(s) => out.push(DebugAnnotation {
                string_value: Some(s.to_string()),
                ..annotation(k)
            }),
        }
    }
    out
}

fn event_packet(ns: u64, ev: TrackEvent) -> TracePacket {
    TracePacket {
        timestamp: Some(ns),
        track_event: Some(ev),
        trusted_packet_sequence_id: Some(SEQUENCE_ID),
        sequence_flags: Some(SEQ_NEEDS_INCREMENTAL_STATE),
        ..Default::default()
    }
}

fn descriptor(desc: TrackDescriptor) -> TracePacket {
    TracePacket {
        track_descriptor: Some(desc),
        trusted_packet_sequence_id: Some(SEQUENCE_ID),
        ..Default::default()
    }
}

fn end(track: u64) -> TrackEvent {
    TrackEvent {
        r#type: Some(event_type::SLICE_END),
        track_uuid: Some(track),
        ..Default::default()
    }
}

/// The guest events' packets (in `guest`'s time order). A slice end
/// without its begin (overwritten in the ring) is left out; an end closes
/// the slices opened inside it that never ended.
fn guest_packets(guest: &[GuestEvent], syms: &Symbols) -> Vec<TracePacket> {
    let flows = match_flows(guest);
    let mut open: HashMap<u32, Vec<TraceEventId>> = HashMap::new();
    let mut out = Vec::with_capacity(guest.len());
    for (e, flow) in guest.iter().zip(flows) {
        let track = vcpu_track(e.cpu());
        let stack = open.entry(e.cpu()).or_default();
        let mut ev = TrackEvent {
            track_uuid: Some(track),
            categories: vec![category(e.id).to_string()],
            debug_annotations: annotations(e, syms),
            ..Default::default()
        };
        match shape(e, syms) {
            Shape::Begin(name, kind) => {
                stack.push(kind);
                ev.r#type = Some(event_type::SLICE_BEGIN);
                ev.name = Some(name);
            }
            Shape::End(kind) => {
                let Some(depth) = stack.iter().rposition(|k| *k == kind) else {
                    continue;
                };
                for _ in depth + 1..stack.len() {
                    out.push(event_packet(e.ns, end(track)));
                }
                stack.truncate(depth);
                ev = TrackEvent {
                    debug_annotations: ev.debug_annotations,
                    ..end(track)
                };
            }
            Shape::Instant => {
                ev.r#type = Some(event_type::INSTANT);
                ev.name = Some(e.id.name().to_string());
            }
        }
        if let Some(id) = flow {
            if e.id == TraceEventId::CsdQueueCpu {
                ev.flow_ids.push(id);
            } else {
                ev.terminating_flow_ids.push(id);
            }
        }
        out.push(event_packet(e.ns, ev));
    }
    out
}

fn category(id: TraceEventId) -> &'static str {
    use TraceEventId as E;
    match id {
        E::IpiSendCpu | E::IpiSendCpumask => "ipi",
        E::CallFunctionEntry
        | E::CallFunctionExit
        | E::CallFunctionSingleEntry
        | E::CallFunctionSingleExit => "irq_vectors",
        E::CpuhpEnter | E::CpuhpExit => "cpuhp",
        E::IrqWorkRunEntry | E::IrqWorkRunExit => "irq_work",
        _ => "csd",
    }
}

fn vmm_packet(e: &VmmEvent) -> Vec<TracePacket> {
    let ev = TrackEvent {
        track_uuid: Some(VMM_TRACK),
        categories: vec!["vmm".into()],
        name: Some(e.kind.name().to_string()),
        debug_annotations: vec![DebugAnnotation {
            string_value: Some(e.detail.clone()),
            ..annotation("detail")
        }],
        ..Default::default()
    };
    match e.dur_ns {
        Some(d) => vec![
            event_packet(
                e.ns,
                TrackEvent {
                    r#type: Some(event_type::SLICE_BEGIN),
                    ..ev
                },
            ),
            event_packet(e.ns.saturating_add(d), end(VMM_TRACK)),
        ],
        None => vec![event_packet(
            e.ns,
            TrackEvent {
                r#type: Some(event_type::INSTANT),
                ..ev
            },
        )],
    }
}

/// VM exits per sample of each vCPU (the count since the previous sample).
fn counter_packets(samples: &[ExitSample], cpus: u32) -> Vec<TracePacket> {
    let mut last: Vec<Option<u64>> = vec![None; cpus as usize];
    let mut out = Vec::new();
    for s in samples {
        for (cpu, (now, prev)) in s.exits.iter().zip(last.iter_mut()).enumerate() {
            let Some(now) = *now else { continue };
            if let Some(p) = *prev {
                out.push(event_packet(
                    s.ns,
                    TrackEvent {
                        r#type: Some(event_type::COUNTER),
                        track_uuid: Some(exits_track(cpu as u32)),
                        counter_value: Some(
                            i64::try_from(now.saturating_sub(p)).unwrap_or(i64::MAX),
                        ),
                        ..Default::default()
                    },
                ));
            }
            *prev = Some(now);
        }
    }
    out
}

/// The whole trace of a run of `cpus` vCPUs: guest events (time order),
/// VMM events (time order), VM-exit samples.
pub fn encode(
    cpus: u32,
    guest: &[GuestEvent],
    vmm: &[VmmEvent],
    samples: &[ExitSample],
    syms: &Symbols,
) -> Vec<u8> {
    let mut packets = vec![TracePacket {
        first_packet_on_sequence: Some(true),
        sequence_flags: Some(SEQ_INCREMENTAL_STATE_CLEARED),
        ..descriptor(TrackDescriptor {
            uuid: Some(VMM_TRACK),
            name: Some("VMM".into()),
            ..Default::default()
        })
    }];
    for cpu in 0..cpus {
        packets.push(descriptor(TrackDescriptor {
            uuid: Some(vcpu_track(cpu)),
            name: Some(format!("vCPU {cpu}")),
            ..Default::default()
        }));
        packets.push(descriptor(TrackDescriptor {
            uuid: Some(exits_track(cpu)),
            name: Some(format!("vCPU {cpu} VM exits")),
            counter: Some(CounterDescriptor {
                unit: Some(UNIT_COUNT),
            }),
            ..Default::default()
        }));
    }
    let mut events = guest_packets(guest, syms);
    events.extend(vmm.iter().flat_map(vmm_packet));
    events.extend(counter_packets(samples, cpus));
    // Stable: each track keeps its own order.
    events.sort_by_key(|p| p.timestamp.unwrap_or(0));
    packets.extend(events);
    Trace { packet: packets }.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use shared::trace::Entry;

    use super::*;

    fn ev(ns: u64, cpu: u16, id: TraceEventId, args: [u64; 5]) -> GuestEvent {
        GuestEvent {
            ns,
            id,
            entry: Entry {
                cpu,
                arg32: 1,
                args,
                ..Default::default()
            },
        }
    }

    #[test]
    fn slices_flows_and_tracks_round_trip() {
        use TraceEventId as E;
        let syms = Symbols::from_list(&[(0x2000, 8, "demo::say")]);
        let guest = [
            ev(5, 0, E::CsdFunctionExit, [0x2000, 0x40, 0, 0, 0]), // begin lost
            ev(10, 0, E::CsdQueueCpu, [0x1000, 0x2000, 0x40, 0, 0]),
            ev(20, 1, E::CallFunctionSingleEntry, [0; 5]),
            ev(21, 1, E::CsdFunctionEntry, [0x2000, 0x40, 0, 0, 0]),
            ev(22, 1, E::CsdFunctionExit, [0x2000, 0x40, 0, 0, 0]),
            ev(23, 1, E::CallFunctionSingleExit, [0; 5]),
        ];
        let bytes = encode(2, &guest, &[], &[], &syms);
        let t = Trace::decode(bytes.as_slice()).unwrap();
        // 1 VMM + 2x2 descriptors, 5 events (the lone end dropped).
        assert_eq!(t.packet.len(), 5 + 5);
        assert_eq!(t.packet[0].first_packet_on_sequence, Some(true));
        let evs: Vec<&TrackEvent> = t
            .packet
            .iter()
            .filter_map(|p| p.track_event.as_ref())
            .collect();
        assert_eq!(evs[0].flow_ids, [1]);
        assert_eq!(evs[2].name.as_deref(), Some("demo::say"));
        assert_eq!(evs[2].terminating_flow_ids, [1]);
        assert_eq!(evs[1].r#type, Some(event_type::SLICE_BEGIN));
        assert_eq!(evs[4].r#type, Some(event_type::SLICE_END));
        assert!(
            t.packet
                .iter()
                .all(|p| p.trusted_packet_sequence_id == Some(SEQUENCE_ID))
        );
    }

    #[test]
    fn exit_counters_are_deltas_per_sample() {
        let s = |ns, a, b| ExitSample {
            ns,
            exits: vec![Some(a), b],
        };
        let p = counter_packets(&[s(1, 10, None), s(2, 15, Some(3)), s(3, 30, Some(4))], 2);
        let v: Vec<_> = p
            .iter()
            .filter_map(|p| p.track_event.as_ref())
            .map(|e| (e.track_uuid.unwrap(), e.counter_value.unwrap()))
            .collect();
        assert_eq!(
            v,
            [
                (exits_track(0), 5),
                (exits_track(0), 15),
                (exits_track(1), 1)
            ]
        );
    }
}
