//! Checks a guest ELF before linux-loader copies it.
//!
//! linux-loader checks the magic, byte order and header sizes, but not the
//! machine, the type, or whether segments fit in the file and in guest
//! memory; a kernel given with `--kernel` is user input, so all of that is
//! checked here first, with a reason a person can act on.

use shared::layout::{KERNEL, MAX_MEM};

const EHDR_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;

/// What the VMM needs to know about a checked kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelImage {
    /// Entry point (guest-physical; the guest is identity-mapped).
    pub entry: u64,
    /// One past the last byte any PT_LOAD segment occupies in memory.
    pub end: u64,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Checks `bytes` as an x86-64 static ELF executable linked at or above
/// [`KERNEL`], returning its entry and extent, or why it cannot be run.
pub fn check(bytes: &[u8]) -> Result<KernelImage, String> {
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file (no ELF magic)".into());
    }
    if bytes.len() < EHDR_LEN {
        return Err(format!("truncated ELF header ({} bytes)", bytes.len()));
    }
    match bytes[4] {
        2 => {}
        1 => return Err("32-bit ELF; an x86-64 (ELF64) kernel is needed".into()),
        c => return Err(format!("bad ELF class {c}")),
    }
    if bytes[5] != 1 {
        return Err("big-endian ELF; an x86-64 kernel is little-endian".into());
    }
    let short = || "truncated ELF header".to_string();
    let e_type = u16_at(bytes, 16).ok_or_else(short)?;
    let e_machine = u16_at(bytes, 18).ok_or_else(short)?;
    let e_entry = u64_at(bytes, 24).ok_or_else(short)?;
    let e_phoff = u64_at(bytes, 32).ok_or_else(short)?;
    let e_phentsize = u16_at(bytes, 54).ok_or_else(short)?;
    let e_phnum = u16_at(bytes, 56).ok_or_else(short)?;
    if e_machine != EM_X86_64 {
        return Err(format!(
            "wrong architecture: e_machine {e_machine}, expected {EM_X86_64} (x86-64)"
        ));
    }
    match e_type {
        ET_EXEC => {}
        ET_DYN => {
            return Err(
                "position-independent ELF (ET_DYN); link with -C relocation-model=static".into(),
            );
        }
        t => return Err(format!("not an executable (e_type {t})")),
    }
    if usize::from(e_phentsize) != PHDR_LEN {
        return Err(format!(
            "program header size {e_phentsize}, expected {PHDR_LEN}"
        ));
    }
    let ph_end = usize::try_from(e_phoff)
        .ok()
        .and_then(|o| o.checked_add(usize::from(e_phnum) * PHDR_LEN))
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| "truncated: program headers run past the end of the file".to_string())?;
    let phoff = ph_end - usize::from(e_phnum) * PHDR_LEN;

    let mut end = 0u64;
    let mut entry_ok = false;
    let mut loads = 0;
    for i in 0..usize::from(e_phnum) {
        let ph = &bytes[phoff + i * PHDR_LEN..phoff + (i + 1) * PHDR_LEN];
        if u32_at(ph, 0) != Some(PT_LOAD) {
            continue;
        }
        loads += 1;
        let flags = u32_at(ph, 4).unwrap_or(0);
        let offset = u64_at(ph, 8).unwrap_or(u64::MAX);
        let paddr = u64_at(ph, 24).unwrap_or(u64::MAX);
        let filesz = u64_at(ph, 32).unwrap_or(u64::MAX);
        let memsz = u64_at(ph, 40).unwrap_or(u64::MAX);
        let file_end = offset.checked_add(filesz);
        if file_end.is_none_or(|e| e > bytes.len() as u64) {
            return Err(format!(
                "truncated: segment {i} needs file bytes {offset:#x}+{filesz:#x} but the file has {:#x}",
                bytes.len()
            ));
        }
        if filesz > memsz {
            return Err(format!("segment {i}: file size larger than memory size"));
        }
        if paddr < KERNEL.0 {
            return Err(format!(
                "segment {i} loads at {paddr:#x}, below {:#x} where the VMM's boot structures live",
                KERNEL.0
            ));
        }
        let seg_end = paddr
            .checked_add(memsz)
            .ok_or_else(|| format!("segment {i}: address overflow"))?;
        if seg_end > MAX_MEM {
            return Err(format!(
                "segment {i} ends at {seg_end:#x}, beyond the {} MiB of guest memory this VMM supports",
                MAX_MEM >> 20
            ));
        }
        end = end.max(seg_end);
        if flags & PF_X != 0 && (paddr..seg_end).contains(&e_entry) {
            entry_ok = true;
        }
    }
    if loads == 0 {
        return Err("no loadable segments".into());
    }
    if !entry_ok {
        return Err(format!(
            "entry point {e_entry:#x} is not in an executable segment"
        ));
    }
    Ok(KernelImage {
        entry: e_entry,
        end,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid image: one RX segment at 1 MiB holding `hlt`.
    pub(crate) fn tiny_elf() -> Vec<u8> {
        let mut b = vec![0u8; 0x1000 + 1];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24..32].copy_from_slice(&KERNEL.0.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[52..54].copy_from_slice(&64u16.to_le_bytes());
        b[54..56].copy_from_slice(&(PHDR_LEN as u16).to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = &mut b[64..64 + PHDR_LEN];
        ph[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        ph[4..8].copy_from_slice(&5u32.to_le_bytes());
        ph[8..16].copy_from_slice(&0x1000u64.to_le_bytes());
        ph[16..24].copy_from_slice(&KERNEL.0.to_le_bytes());
        ph[24..32].copy_from_slice(&KERNEL.0.to_le_bytes());
        ph[32..40].copy_from_slice(&1u64.to_le_bytes());
        ph[40..48].copy_from_slice(&1u64.to_le_bytes());
        b[0x1000] = 0xf4;
        b
    }

    #[test]
    fn accepts_minimal_image() {
        assert_eq!(
            check(&tiny_elf()),
            Ok(KernelImage {
                entry: KERNEL.0,
                end: KERNEL.0 + 1
            })
        );
    }

    #[test]
    fn rejects_malformed_images() {
        let good = tiny_elf();
        let mut cases: Vec<(Vec<u8>, &str)> = vec![
            (b"hello".to_vec(), "ELF magic"),
            (good[..40].to_vec(), "truncated ELF header"),
            (good[..100].to_vec(), "program headers"),
            (good[..0x1000].to_vec(), "truncated: segment 0"),
        ];
        let mut m = good.clone();
        m[4] = 1;
        cases.push((m, "32-bit"));
        let mut m = good.clone();
        m[18] = 183; // aarch64
        cases.push((m, "wrong architecture"));
        let mut m = good.clone();
        m[16] = ET_DYN as u8;
        cases.push((m, "position-independent"));
        let mut m = good.clone();
        m[24..32].copy_from_slice(&0x5000u64.to_le_bytes());
        cases.push((m, "entry point"));
        let mut m = good.clone();
        m[64 + 24..64 + 32].copy_from_slice(&0x8000u64.to_le_bytes());
        cases.push((m, "below"));
        let mut m = good.clone();
        m[64..68].copy_from_slice(&0u32.to_le_bytes());
        cases.push((m, "no loadable"));
        let mut m = good.clone();
        m[64 + 40..64 + 48].copy_from_slice(&u64::MAX.to_le_bytes());
        cases.push((m, "overflow"));
        // Ends just below u64::MAX: no overflow here, but the VMM's memory
        // sizing added headroom to it and overflowed (a panic) before.
        let mut m = good;
        m[64 + 40..64 + 48].copy_from_slice(&(u64::MAX - KERNEL.0).to_le_bytes());
        cases.push((m, "beyond"));
        for (bytes, want) in cases {
            let err = check(&bytes).unwrap_err();
            assert!(err.contains(want), "{err:?} does not mention {want:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let good = tiny_elf();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = good[..128].to_vec();
            b[(seed % 128) as usize] = (seed >> 32) as u8;
            let _ = check(&b);
        }
    }
}
