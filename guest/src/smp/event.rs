//! What the smp core reports to the host through [`super::Arch::report`].

/// A warning or a csd-lock stall report: the wire record itself
/// ([`shared::record::Body`]), so the architecture sends it as it is.
/// The core reports only [`Event::Warn`], [`Event::CsdStall`] and
/// [`Event::CsdUnstuck`], always about the reporting CPU (the CPU the
/// WARN fired on, the waiter of a stall): the record's sender. Function
/// addresses and `info` words are plain numbers, never references, so an
/// event can be kept after the call it describes is gone.
pub type Event = shared::record::Body<&'static str>;
