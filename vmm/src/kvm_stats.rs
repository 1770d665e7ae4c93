//! KVM's own per-vCPU statistics through the binary stats interface
//! (`KVM_GET_STATS_FD`, Documentation/virt/kvm/api.rst §4.133).
//!
//! The fd holds a header, an id string, one descriptor per statistic (flags,
//! exponent, size, offset, bucket size, name) and a data block of u64s. The
//! layout is read once per vCPU; a snapshot is then one `pread` of the data
//! block, which works from any thread, so the vCPU thread that handles a
//! benchmark marker can read every vCPU's counters synchronously.
//!
//! Only cumulative single-value counters are used. Which ones exist depends
//! on the kernel and the vendor module; this host (6.18, kvm_pvm) has
//! `exits`, `insn_emulation`, `irq_injections`, `hypercalls`, `halt_exits`,
//! `halt_wakeup`, `io_exits`, `irq_exits`, ... (see [`WANTED`]).

use std::fs::File;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use kvm_bindings::{
    KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_TYPE_MASK, kvm_stats_desc, kvm_stats_header,
};
use vmm_sys_util::ioctl::ioctl;

mod nr {
    use kvm_bindings::KVMIO;
    // kvm-ioctls has no wrapper for it (include/uapi/linux/kvm.h: 0xce).
    vmm_sys_util::ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);
}
use nr::KVM_GET_STATS_FD;

/// The counters a benchmark report wants, in report order; the ones this
/// host's KVM lacks are left out.
pub const WANTED: &[&str] = &[
    "exits",
    "insn_emulation",
    "irq_injections",
    "hypercalls",
    "halt_exits",
    "halt_wakeup",
    "halt_successful_poll",
    "io_exits",
    "mmio_exits",
    "irq_exits",
    "irq_window_exits",
    "request_irq_exits",
    "signal_exits",
    "nmi_injections",
    "insn_emulation_fail",
    "directed_yield_attempted",
];

/// Header size (`struct kvm_stats_header`).
const HEADER_LEN: usize = size_of::<kvm_stats_header>();
/// Fixed part of a descriptor (`struct kvm_stats_desc` without its name).
const DESC_FIXED_LEN: usize = offset_of!(kvm_stats_desc, name);
/// Largest descriptor block accepted (the kernel's is a few KiB).
const MAX_LAYOUT: usize = 1 << 20;

/// Why statistics could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// `KVM_GET_STATS_FD` failed (kernels before 5.14 lack it).
    #[error("KVM_GET_STATS_FD failed: {0}")]
    Open(std::io::Error),
    /// Reading the fd failed.
    #[error("reading KVM statistics: {0}")]
    Read(std::io::Error),
    /// The binary layout makes no sense.
    #[error("malformed KVM statistics layout: {0}")]
    Layout(&'static str),
}

/// One statistic's place in the data block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Its name.
    pub name: String,
    /// `KVM_STATS_TYPE_*`.
    pub kind: u32,
    /// Offset in the data block, in bytes.
    pub offset: usize,
    /// Number of u64 values.
    pub size: usize,
}

/// The parsed header and descriptors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The fd's id string (`kvm-PID/vcpu-N`).
    pub id: String,
    /// Every statistic.
    pub descs: Vec<Desc>,
    /// Where the data block starts in the fd.
    pub data_offset: u64,
    /// Bytes of data block covering every descriptor.
    pub data_len: usize,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, StatsError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(StatsError::Layout("truncated"))
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl Layout {
    /// Parses the beginning of a stats fd (header, id, descriptors):
    /// `buf` must hold at least everything before the data block.
    pub fn parse(buf: &[u8]) -> Result<Layout, StatsError> {
        let name_size = u32_at(buf, offset_of!(kvm_stats_header, name_size))? as usize;
        let num_desc = u32_at(buf, offset_of!(kvm_stats_header, num_desc))? as usize;
        let id_offset = u32_at(buf, offset_of!(kvm_stats_header, id_offset))? as usize;
        let desc_offset = u32_at(buf, offset_of!(kvm_stats_header, desc_offset))? as usize;
        let data_offset = u32_at(buf, offset_of!(kvm_stats_header, data_offset))?;
        if name_size == 0 || name_size > 4096 || num_desc > 65_536 {
            return Err(StatsError::Layout("implausible name size or count"));
        }
        let id = buf
            .get(id_offset..id_offset + name_size)
            .map(cstr)
            .ok_or(StatsError::Layout("id outside the header block"))?;
        let desc_len = DESC_FIXED_LEN + name_size;
        let mut descs = Vec::with_capacity(num_desc);
        let mut data_len = 0usize;
        for i in 0..num_desc {
            let at = desc_offset + i * desc_len;
            let d = buf
                .get(at..at + desc_len)
                .ok_or(StatsError::Layout("descriptor outside the header block"))?;
            let flags = u32_at(d, offset_of!(kvm_stats_desc, flags))?;
            let at_size = offset_of!(kvm_stats_desc, size);
            let size = usize::from(u16::from_le_bytes([d[at_size], d[at_size + 1]]));
            let offset = u32_at(d, offset_of!(kvm_stats_desc, offset))? as usize;
            let end = offset
                .checked_add(size * 8)
                .ok_or(StatsError::Layout("descriptor overflows"))?;
            if end > MAX_LAYOUT {
                return Err(StatsError::Layout("descriptor beyond any sane data block"));
            }
            data_len = data_len.max(end);
            descs.push(Desc {
                name: cstr(&d[DESC_FIXED_LEN..]),
                kind: flags & KVM_STATS_TYPE_MASK,
                offset,
                size,
            });
        }
        Ok(Layout {
            id,
            descs,
            data_offset: u64::from(data_offset),
            data_len,
        })
    }

    /// Byte offset of the cumulative single-value counter `name`.
    pub fn counter(&self, name: &str) -> Option<usize> {
        self.descs
            .iter()
            .find(|d| d.name == name && d.size == 1 && d.kind == KVM_STATS_TYPE_CUMULATIVE)
            .map(|d| d.offset)
    }
}

/// One vCPU's statistics fd.
#[derive(Debug)]
pub struct VcpuStats {
    file: File,
    layout: Layout,
}

impl VcpuStats {
    /// Opens the statistics of a vCPU (any fd KVM_GET_STATS_FD accepts).
    pub fn open(vcpu: &impl AsRawFd) -> Result<VcpuStats, StatsError> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd
        // or -1; `vcpu` is a live KVM fd for the duration of the call.
        let fd = unsafe { ioctl(vcpu, KVM_GET_STATS_FD()) };
        if fd < 0 {
            return Err(StatsError::Open(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by
        // nobody else; the File takes ownership and closes it.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, 0)
            .map_err(StatsError::Read)?;
        let data_offset = u32_at(&header, offset_of!(kvm_stats_header, data_offset))? as usize;
        if !(HEADER_LEN..=MAX_LAYOUT).contains(&data_offset) {
            return Err(StatsError::Layout("data block offset"));
        }
        let mut prefix = vec![0u8; data_offset];
        file.read_exact_at(&mut prefix, 0)
            .map_err(StatsError::Read)?;
        let layout = Layout::parse(&prefix)?;
        Ok(VcpuStats { file, layout })
    }

    /// The layout read at open.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Reads the counters at `offsets` (byte offsets from
    /// [`Layout::counter`]) with one `pread` of the data block.
    pub fn read(&self, offsets: &[usize]) -> Result<Vec<u64>, StatsError> {
        let mut data = vec![0u8; self.layout.data_len];
        self.file
            .read_exact_at(&mut data, self.layout.data_offset)
            .map_err(StatsError::Read)?;
        Ok(offsets.iter().map(|&o| value_at(&data, o)).collect())
    }
}

/// The u64 at byte offset `o` of a data block (0 if out of range).
fn value_at(data: &[u8], o: usize) -> u64 {
    data.get(o..o + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stats file image as the kernel lays it out.
    fn synthetic(names: &[(&str, u32, u16)]) -> (Vec<u8>, Vec<u8>) {
        let name_size = 48usize;
        let id_offset = HEADER_LEN;
        let desc_offset = id_offset + name_size;
        let data_offset = desc_offset + names.len() * (DESC_FIXED_LEN + name_size);
        let mut b = Vec::new();
        for v in [
            0u32,
            name_size as u32,
            names.len() as u32,
            id_offset as u32,
            desc_offset as u32,
            data_offset as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let mut id = b"kvm-1/vcpu-0".to_vec();
        id.resize(name_size, 0);
        b.extend_from_slice(&id);
        let mut offset = 0u32;
        let mut data = Vec::new();
        for (i, (name, kind, size)) in names.iter().enumerate() {
            b.extend_from_slice(&kind.to_le_bytes());
            b.extend_from_slice(&0i16.to_le_bytes());
            b.extend_from_slice(&size.to_le_bytes());
            b.extend_from_slice(&offset.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            let mut n = name.as_bytes().to_vec();
            n.resize(name_size, 0);
            b.extend_from_slice(&n);
            for k in 0..*size {
                data.extend_from_slice(&(100 * i as u64 + u64::from(k)).to_le_bytes());
            }
            offset += u32::from(*size) * 8;
        }
        assert_eq!(b.len(), data_offset);
        (b, data)
    }

    #[test]
    fn parses_a_synthetic_layout() {
        let (prefix, data) = synthetic(&[
            ("halt_wait_hist", 4, 32),
            ("exits", 0, 1),
            ("blocking", 1, 1),
            ("insn_emulation", 0, 1),
        ]);
        let l = Layout::parse(&prefix).unwrap();
        assert_eq!(l.id, "kvm-1/vcpu-0");
        assert_eq!(l.descs.len(), 4);
        assert_eq!(l.data_offset as usize, prefix.len());
        assert_eq!(l.data_len, data.len());
        // Histograms and instant values are not counters.
        assert_eq!(l.counter("halt_wait_hist"), None);
        assert_eq!(l.counter("blocking"), None);
        let exits = l.counter("exits").unwrap();
        assert_eq!(exits, 256);
        assert_eq!(value_at(&data, exits), 100);
        assert_eq!(value_at(&data, l.counter("insn_emulation").unwrap()), 300);
        // The WANTED counters this layout has, as the collector picks them.
        let (names, offsets): (Vec<_>, Vec<_>) = WANTED
            .iter()
            .filter_map(|&n| l.counter(n).map(|o| (n, o)))
            .unzip();
        assert_eq!(names, ["exits", "insn_emulation"]);
        assert_eq!(offsets, [256, 272]);
        assert_eq!(value_at(&data, 10_000), 0);
    }

    #[test]
    fn malformed_layouts_are_errors() {
        let (prefix, _) = synthetic(&[("exits", 0, 1)]);
        for cut in [0, 10, HEADER_LEN, prefix.len() - 1] {
            assert!(Layout::parse(&prefix[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = prefix.clone();
        bad[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert!(Layout::parse(&bad).is_err());
        let mut bad = prefix.clone();
        // A descriptor whose data lies absurdly far out.
        let d = HEADER_LEN + 48;
        bad[d + 8..d + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Layout::parse(&bad).is_err());
    }
}
