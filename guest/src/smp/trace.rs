//! Trace points (Linux's `ipi`, `csd` and `cpuhp` tracepoints), the
//! events and arguments of `shared::trace`.
//!
//! With the `trace` feature a trace point is a call of [`super::Arch::trace`];
//! without it, [`trace_point!`] expands to nothing and its arguments are
//! not even evaluated: the untraced build has no trace code at all (every
//! guest instruction counts on this project's hosts).

/// `trace_point!(smp, Event, arg32, a0, a1, ...)`: records
/// `shared::trace::TraceEventId::Event` with `arg32` and up to five
/// 64-bit arguments (the rest 0) through `smp.arch`.
#[cfg(feature = "trace")]
macro_rules! trace_point {
    ($smp:expr, $id:ident, $arg32:expr $(, $a:expr)* $(,)?) => {
        $smp.arch.trace(
            shared::trace::TraceEventId::$id,
            $arg32,
            $crate::smp::trace::args(&[$($a as u64),*]),
        )
    };
}

/// Without the `trace` feature: nothing.
#[cfg(not(feature = "trace"))]
#[allow(unused_macros)] // unused under loom
macro_rules! trace_point {
    ($($t:tt)*) => {};
}

/// `callsite!(smp)`: the `callsite` argument of a trace event (see
/// [`super::Arch::code_address`]). Only inside [`trace_point!`], so
/// unused without the `trace` feature.
#[allow(unused_macros)]
macro_rules! callsite {
    ($smp:expr) => {
        $smp.arch.code_address()
    };
}

/// The five arguments of an event from the first ones.
#[cfg(feature = "trace")]
#[inline(always)]
pub(crate) fn args(given: &[u64]) -> [u64; 5] {
    let mut a = [0u64; 5];
    for (d, s) in a.iter_mut().zip(given) {
        *d = *s;
    }
    a
}
