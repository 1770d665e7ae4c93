//! The x2APIC interrupt command register as the VMM sees it when it traps
//! the guest's ICR writes (`--fault drop-ipi`): the MSR number and a
//! decoder of the 64-bit value (Intel SDM Vol. 3A §11.12.10).

/// MSR number of the x2APIC ICR.
pub const X2APIC_ICR_MSR: u32 = 0x830;

/// Delivery mode "fixed" (bits 10:8 = 0).
pub const DELIVERY_FIXED: u8 = 0;

/// Who an ICR write is for (bits 19:18 and 11, destination in 63:32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcrDest {
    /// One APIC by x2APIC id.
    Physical(u32),
    /// Logical: cluster (bits 31:16) and a 16-bit member bitmap.
    Logical(u32),
    /// The sender only.
    SelfOnly,
    /// Everyone, the sender included.
    All,
    /// Everyone but the sender.
    AllButSelf,
}

/// A decoded ICR value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icr {
    /// Vector (bits 7:0).
    pub vector: u8,
    /// Delivery mode (bits 10:8).
    pub delivery_mode: u8,
    /// Level: assert (bit 14).
    pub assert: bool,
    /// Trigger mode: level (bit 15).
    pub level_triggered: bool,
    /// Destination.
    pub dest: IcrDest,
}

impl Icr {
    /// Decodes a value written to [`X2APIC_ICR_MSR`]. Every value decodes
    /// (reserved bits are ignored).
    pub const fn decode(v: u64) -> Icr {
        let dest_field = (v >> 32) as u32;
        let dest = match (v >> 18) & 3 {
            1 => IcrDest::SelfOnly,
            2 => IcrDest::All,
            3 => IcrDest::AllButSelf,
            _ if v & (1 << 11) != 0 => IcrDest::Logical(dest_field),
            _ => IcrDest::Physical(dest_field),
        };
        Icr {
            vector: v as u8,
            delivery_mode: ((v >> 8) & 7) as u8,
            assert: v & (1 << 14) != 0,
            level_triggered: v & (1 << 15) != 0,
            dest,
        }
    }

    /// Whether the x2APIC id `apic` is a destination when `sender` writes
    /// this ICR (logical ids are x2APIC's: cluster `id >> 4`, member bit
    /// `id & 15`).
    pub const fn targets(&self, apic: u32, sender: u32) -> bool {
        match self.dest {
            IcrDest::Physical(id) => id == apic || id == u32::MAX,
            IcrDest::Logical(ldr) => {
                (ldr >> 16) == (apic >> 4) && (ldr & 0xffff) & (1 << (apic & 15)) != 0
            }
            IcrDest::SelfOnly => apic == sender,
            IcrDest::All => true,
            IcrDest::AllButSelf => apic != sender,
        }
    }

    /// The MSI data word that delivers this interrupt (vector, delivery
    /// mode, level and trigger bits in their MSI positions).
    pub const fn msi_data(&self) -> u32 {
        self.vector as u32
            | (self.delivery_mode as u32) << 8
            | (self.assert as u32) << 14
            | (self.level_triggered as u32) << 15
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_guest_sends() {
        // Fixed 0xfb to APIC id 6, level assert (the guest's unicast).
        let icr = Icr::decode(0x0000_0006_0000_40fb);
        assert_eq!(icr.dest, IcrDest::Physical(6));
        assert_eq!((icr.vector, icr.delivery_mode, icr.assert), (0xfb, 0, true));
        assert!(icr.targets(6, 0) && !icr.targets(5, 0));
        assert_eq!(icr.msi_data(), 0x40fb);
        // INIT and SIPI keep their delivery modes.
        assert_eq!(Icr::decode(0x0000_0003_0000_4500).delivery_mode, 5);
        assert_eq!(Icr::decode(0x0000_0003_0000_4608).msi_data(), 0x4608);
        // Shorthands.
        let all_but = Icr::decode(0xc_40fc);
        assert!(all_but.targets(1, 0) && !all_but.targets(0, 0));
        assert!(Icr::decode(0x4_40fc).targets(2, 2));
        assert!(Icr::decode(0x8_40fc).targets(2, 3));
        // Logical cluster 1, members 0 and 2: APIC ids 16 and 18.
        let l = Icr::decode((0x0001_0005u64 << 32) | 0x48fc);
        assert!(l.targets(16, 0) && l.targets(18, 0) && !l.targets(17, 0) && !l.targets(2, 0));
    }
}
