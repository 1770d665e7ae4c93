//! I/O ports of the host/guest protocol. Every `out` the guest makes to one
//! of these exits to the VMM, which treats the data as untrusted.

wire_enum! {
    /// A protocol port.
    pub enum Port: u16 {
        /// Console text: one 32-bit write of the guest-physical address of a
        /// [`CONSOLE_HEADER`]-byte little-endian length followed by that many
        /// bytes of text (at most [`CONSOLE_CHUNK_MAX`]).
        Console = 0xE9,
        /// The guest's exit status: one 32-bit write ([`crate::status::GuestStatus`]).
        Exit = 0xF4,
        /// Structured records ([`crate::record`]): one 32-bit write of the
        /// guest-physical address of an encoded record (its header gives its
        /// length).
        Record = 0x510,
        /// Benchmark marker ([`crate::bench::Marker`]): one 32-bit write of the
        /// marker value; the VMM snapshots every vCPU's KVM statistics before
        /// the writer runs on.
        BenchMarker = 0x511,
        /// Benchmark result: one 32-bit write of the guest-physical address of
        /// an encoded [`crate::bench::ResultHeader`].
        BenchResult = 0x512,
    }
}

/// Bytes of the length prefix of a console buffer.
pub const CONSOLE_HEADER: usize = 2;
/// Most text bytes in one console write.
pub const CONSOLE_CHUNK_MAX: usize = 1024;

/// Legacy PIC data ports; the guest masks every line so nothing arrives
/// through ExtINT.
pub const PIC1_DATA: u16 = 0x21;
/// Second PIC's data port.
pub const PIC2_DATA: u16 = 0xA1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_round_trip() {
        for p in [
            Port::Console,
            Port::Exit,
            Port::Record,
            Port::BenchMarker,
            Port::BenchResult,
        ] {
            assert_eq!(Port::try_from(p as u16), Ok(p));
        }
        assert_eq!(Port::try_from(0x80), Err(0x80));
    }
}
