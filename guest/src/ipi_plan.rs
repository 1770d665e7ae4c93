//! How a multi-CPU IPI is split into x2APIC writes or KVM hypercalls:
//! pure arithmetic on APIC ids, kept apart from the arch code that issues
//! the writes so that the host tests can check it.
//!
//! - Cluster mode (Intel SDM Vol. 3A §11.12.10.2): an x2APIC's logical id
//!   is read-only and derived from its APIC id: cluster `id >> 4` in bits
//!   31:16, bit `id & 15` below. One logical-destination write reaches any
//!   subset of one cluster, so a mask costs one write per cluster.
//! - KVM's `KVM_HC_SEND_IPI` takes a 128-bit bitmap of APIC ids starting at
//!   a base id, so a mask costs one hypercall per 128-id window. The window
//!   logic is Linux's `__send_ipi_mask` (arch/x86/kernel/kvm.c) with the
//!   fix for ids below the base that do not fit (c15e0ae42c8e).

/// Ids one `KVM_HC_SEND_IPI` bitmap covers (`KVM_IPI_CLUSTER_SIZE`).
pub const PV_WINDOW: u32 = 128;

/// The x2APIC logical id (LDR) of the APIC with id `apic_id`.
#[inline]
pub const fn logical_id(apic_id: u32) -> u32 {
    ((apic_id >> 4) << 16) | (1 << (apic_id & 0xf))
}

/// The x2APIC cluster of `apic_id`.
#[inline]
pub const fn cluster(apic_id: u32) -> u32 {
    apic_id >> 4
}

/// Calls `send(ldr)` once per run of consecutive `apic_ids` that share a
/// cluster, with the logical destination covering exactly those APICs: one
/// write per cluster when the ids come in ascending order (as a mask's
/// CPUs do when APIC ids grow with CPU numbers, as the VMM assigns them),
/// and never an APIC twice for distinct ids. Costs one step per id, with
/// no per-CPU table. Ids must be below 2^20 (a 16-bit cluster number).
#[inline]
pub fn for_each_cluster(apic_ids: impl Iterator<Item = u32>, mut send: impl FnMut(u32)) {
    let mut run: Option<(u32, u32)> = None;
    for id in apic_ids {
        run = match run {
            Some((c, ldr)) if c == cluster(id) => Some((c, ldr | logical_id(id))),
            done => {
                if let Some((_, ldr)) = done {
                    send(ldr);
                }
                Some((cluster(id), logical_id(id)))
            }
        };
    }
    if let Some((_, ldr)) = run {
        send(ldr);
    }
}

/// Splits a sequence of APIC ids into `KVM_HC_SEND_IPI` windows: calls
/// `send(base, bitmap)` where bit *i* of `bitmap` is APIC id `base + i`.
#[inline]
pub fn for_each_pv_window(ids: impl Iterator<Item = u32>, mut send: impl FnMut(u32, u128)) {
    let (mut min, mut max, mut bitmap) = (0u32, 0u32, 0u128);
    for id in ids {
        if bitmap == 0 {
            min = id;
            max = id;
        } else if id < min && max - id < PV_WINDOW {
            bitmap <<= min - id;
            min = id;
        } else if id > min && id < min.saturating_add(PV_WINDOW) {
            max = max.max(id);
        } else if id != min {
            send(min, bitmap);
            min = id;
            max = id;
            bitmap = 0;
        }
        bitmap |= 1 << (id - min);
    }
    if bitmap != 0 {
        send(min, bitmap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_ids_follow_the_sdm() {
        assert_eq!(logical_id(0), 0x0000_0001);
        assert_eq!(logical_id(15), 0x0000_8000);
        assert_eq!(logical_id(16), 0x0001_0001);
        assert_eq!(logical_id(0x35), 0x0003_0020);
    }

    /// The LDR writes for the CPUs of `cpus` (ascending), CPU *c* having
    /// APIC id `ids[c]`.
    fn clusters_of(cpus: &[usize], ids: &[u32]) -> Vec<u32> {
        let mut out = Vec::new();
        for_each_cluster(cpus.iter().map(|&c| ids[c]), |ldr| out.push(ldr));
        out
    }

    /// CPU numbers of the bits of `mask`.
    fn cpus_of(mask: u64) -> Vec<usize> {
        (0..64).filter(|c| mask >> c & 1 != 0).collect()
    }

    #[test]
    fn one_write_per_cluster() {
        // 8 CPUs with APIC id stride 4: ids 0,4,...,28 in clusters 0 and 1.
        let ids: Vec<u32> = (0..8).map(|c| c * 4).collect();
        assert_eq!(
            clusters_of(&cpus_of(0b1111_1110), &ids),
            [0x0000_1110, 0x0001_1111]
        );
        assert_eq!(clusters_of(&cpus_of(0b0001_0000), &ids), [0x0001_0001]);
        assert!(clusters_of(&[], &ids).is_empty());
        // Dense ids: all of 0..8 is one cluster, one write.
        let dense: Vec<u32> = (0..8).collect();
        assert_eq!(clusters_of(&cpus_of(0xfe), &dense), [0x0000_00fe]);
    }

    #[test]
    fn ids_past_255_and_2047_take_one_write_per_cluster() {
        // 1024 CPUs with stride 3: ids up to 3069, clusters up to 191.
        let ids: Vec<u32> = (0..1024).map(|c| c * 3).collect();
        let all: Vec<usize> = (0..1024).collect();
        let writes = clusters_of(&all, &ids);
        let clusters: std::collections::BTreeSet<u32> = ids.iter().map(|&a| cluster(a)).collect();
        assert_eq!(writes.len(), clusters.len());
        // The last cluster, 191 (ids 3056..=3071), holds 3057 to 3069.
        let last = [3057, 3060, 3063, 3066, 3069].map(|a: u32| 1 << (a & 15));
        assert_eq!(writes.last(), Some(&(191 << 16 | last.iter().sum::<u32>())));
        // CPU 85 (id 255) and 86 (id 258): clusters 15 and 16.
        assert_eq!(clusters_of(&[85, 86], &ids), [0x000f_8000, 0x0010_0004]);
        // CPU 683 (id 2049) alone.
        assert_eq!(clusters_of(&[683], &ids), [0x0080_0002]);
    }

    #[test]
    fn every_cpu_is_covered_exactly_once() {
        let ids: Vec<u32> = (0..1024).map(|c| c * 3 + 1).collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let cpus: Vec<usize> = (0..1024)
                .filter(|_| shared::xorshift64(&mut seed).is_multiple_of(3))
                .collect();
            let mut hit = std::vec![false; 1024];
            for ldr in clusters_of(&cpus, &ids) {
                for (c, &a) in ids.iter().enumerate() {
                    if ldr >> 16 == cluster(a) && ldr & 0xffff & (1 << (a & 15)) != 0 {
                        assert!(!hit[c], "CPU {c} twice");
                        hit[c] = true;
                    }
                }
            }
            let want: Vec<bool> = (0..1024).map(|c| cpus.contains(&c)).collect();
            assert_eq!(hit, want);
        }
    }

    fn windows(ids: &[u32]) -> Vec<(u32, u128)> {
        let mut out = Vec::new();
        for_each_pv_window(ids.iter().copied(), |b, m| out.push((b, m)));
        out
    }

    fn members(w: &[(u32, u128)]) -> Vec<u32> {
        let mut v: Vec<u32> = w
            .iter()
            .flat_map(|&(b, m)| {
                (0..128)
                    .filter(move |i| m & (1 << i) != 0)
                    .map(move |i| b + i)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn pv_windows_like_linux() {
        assert_eq!(windows(&[1, 2, 3]), [(1, 0b111)]);
        assert_eq!(windows(&[5, 2]), [(2, 0b1001)]);
        // The c15e0ae42c8e case: 0 does not fit below a window spanning
        // 1..=128, so it starts a new one instead of corrupting the bitmap.
        assert_eq!(windows(&[1, 128, 0]), [(1, 1 | 1 << 127), (0, 1)]);
        assert_eq!(windows(&[0, 200, 300]), [(0, 1), (200, 1 | 1 << 100)]);
        assert!(windows(&[]).is_empty());
        assert_eq!(windows(&[7, 7]), [(7, 1)]);
    }

    #[test]
    fn pv_windows_cover_every_id_once() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..500 {
            let mut ids = Vec::new();
            for _ in 0..(seed % 40) {
                shared::xorshift64(&mut seed);
                let id = (seed % 1024) as u32;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            let w = windows(&ids);
            let mut want = ids.clone();
            want.sort();
            assert_eq!(members(&w), want, "{ids:?}");
            seed = seed.wrapping_add(1);
        }
    }
}
