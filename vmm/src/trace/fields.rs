//! The fields of each guest event (Linux's tracepoint fields, from the
//! entry as `shared::trace::TraceEventId` lists them), for the text form,
//! the flight recorder and Perfetto's debug annotations.

use shared::trace::{CpuhpStep, Entry, TraceEventId};

use crate::symbols::Symbols;

/// A field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// A guest code address (printed by its symbol).
    Code(u64),
    /// A guest data address or a mask (printed in hex).
    Hex(u64),
    /// A number.
    Uint(u64),
    /// A name.
    Str(&'static str),
}

/// One field: its name and value.
pub type Field = (&'static str, Value);

fn step(v: u64) -> Value {
    CpuhpStep::try_from(v).map_or(Value::Uint(v), |s| Value::Str(s.name()))
}

/// The fields of `e` (event `id`), in Linux's order.
pub fn fields(id: TraceEventId, e: &Entry) -> Vec<Field> {
    use TraceEventId as E;
    use Value::{Code, Hex, Uint};
    let a = e.args;
    let cpu = Uint(u64::from(e.arg32));
    match id {
        E::CsdQueueCpu => vec![
            ("cpu", cpu),
            ("callsite", Code(a[0])),
            ("func", Code(a[1])),
            ("csd", Hex(a[2])),
        ],
        E::IpiSendCpu => vec![
            ("cpu", cpu),
            ("callsite", Code(a[0])),
            ("callback", Code(a[1])),
        ],
        E::IpiSendCpumask => vec![
            ("cpus", cpu),
            ("cpumask", Hex(a[2])),
            ("cpumask1", Hex(a[3])),
            ("cpumask2", Hex(a[4])),
            ("callsite", Code(a[0])),
            ("callback", Code(a[1])),
        ],
        E::CallFunctionEntry
        | E::CallFunctionExit
        | E::CallFunctionSingleEntry
        | E::CallFunctionSingleExit => vec![("vector", Hex(u64::from(e.arg32)))],
        E::CsdFunctionEntry | E::CsdFunctionExit => {
            vec![("func", Code(a[0])), ("csd", Hex(a[1]))]
        }
        E::IrqWorkRunEntry => vec![],
        E::IrqWorkRunExit => vec![("works", Uint(u64::from(e.arg32)))],
        E::CsdLockWaitStart | E::CsdLockWaitEnd => {
            vec![("cpu", cpu), ("csd", Hex(a[0])), ("func", Code(a[1]))]
        }
        E::CpuhpEnter => vec![("cpu", cpu), ("step", step(a[0]))],
        E::CpuhpExit => vec![("cpu", cpu), ("step", step(a[0])), ("ret", Uint(a[1]))],
        E::CsdStallReport | E::CsdStallResend | E::CsdStallUnstuck => vec![
            ("cpu", cpu),
            ("func", Code(a[0])),
            ("waited_ns", Uint(a[1])),
            ("csd", Hex(a[2])),
        ],
    }
}

/// `key=value ...` for the fields of `e`, code addresses symbolized.
pub fn words(id: TraceEventId, e: &Entry, syms: &Symbols) -> String {
    let mut s = String::new();
    for (i, (k, v)) in fields(id, e).into_iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(k);
        s.push('=');
        s.push_str(&value_text(v, syms));
    }
    s
}

/// A value as text.
pub fn value_text(v: Value, syms: &Symbols) -> String {
    match v {
        Value::Code(a) => syms.at(a).to_string(),
        Value::Hex(a) => format!("{a:#x}"),
        Value::Uint(n) => n.to_string(),
        Value::Str(s) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_fields_in_linux_order_and_symbolized() {
        let syms = Symbols::from_list(&[(0x1000, 0x100, "demo::run"), (0x2000, 8, "demo::say")]);
        let e = Entry {
            arg32: 3,
            args: [0x1010, 0x2000, 0xabc0, 0, 0],
            ..Default::default()
        };
        assert_eq!(
            words(TraceEventId::CsdQueueCpu, &e, &syms),
            "cpu=3 callsite=demo::run+0x10 func=demo::say csd=0xabc0"
        );
        let hp = Entry {
            arg32: 2,
            args: [3, 1, 0, 0, 0],
            ..Default::default()
        };
        assert_eq!(
            words(TraceEventId::CpuhpExit, &hp, &syms),
            "cpu=2 step=smpcfd:dying ret=1"
        );
    }
}
