//! What the guest runs after boot: chosen on the host (`vmm --run`),
//! carried in [`crate::bootinfo::BootInfo::scenario`], matched by the
//! guest. This is the one list of scenarios.

wire_enum! {
    /// A scenario. The number is the boot information's `scenario` word.
    pub enum Scenario: u32 {
        /// A tour of the smp call API.
        Demo = 1 => "demo",
        /// Every semantic of the smp core as a named case, each reported as
        /// a `Test` record.
        Selftest = 2 => "selftest",
        /// Serve the host's hotplug and control requests until it says
        /// `exit` (or `wait_ms=` passes).
        Wait = 3 => "wait",
        /// CPU hotplug and boot-parameter cases, each a `Test` record.
        Hotplug = 4 => "hotplug",
        /// The IPI and smp-call benchmark.
        Bench = 5 => "bench",
        /// scftorture: random cross-calls from every CPU.
        Torture = 6 => "torture",
        /// Abuses the host/guest protocol on purpose, then exits with a
        /// meaningless status.
        Hostile = 7 => "hostile",
    }
}

impl Scenario {
    /// Whether the scenario reports test cases (`Test` records): the
    /// self-tests, the hotplug cases, the torture's verdict.
    pub const fn has_cases(self) -> bool {
        matches!(
            self,
            Scenario::Selftest | Scenario::Hotplug | Scenario::Torture
        )
    }

    /// Every name, in declaration order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::ALL.iter().map(|s| s.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_numbers_round_trip() {
        for &s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
            assert_eq!(Scenario::try_from(s as u32), Ok(s));
        }
        assert_eq!(Scenario::from_name("bogus"), None);
        assert_eq!(Scenario::try_from(0), Err(0));
        assert_eq!(Scenario::names().count(), Scenario::ALL.len());
    }
}
