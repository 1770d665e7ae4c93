//! Facts about the host a report must state: CPU model, which KVM module
//! runs the guest, and whether it is nested or software-assisted (then
//! guest timings say little about bare-metal KVM).

use shared::bootinfo::FEATURE_EMULATED_HOST;

/// The host as far as a report needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// The vendor KVM module loaded (kvm_intel, kvm_amd, kvm_pvm, ...).
    pub kvm_module: String,
    /// The host itself runs under a hypervisor.
    pub nested: bool,
    /// Guest code is emulated or software-assisted rather than run by
    /// hardware virtualization.
    pub emulated: bool,
}

/// Bytes of /proc/cpuinfo read: the first CPU's block (model name, flags)
/// is a few KiB; the file grows with the host's CPU count.
const CPUINFO_MAX: u64 = 64 * 1024;

/// The start of /proc/cpuinfo, at most [`CPUINFO_MAX`] bytes.
fn cpuinfo_head() -> String {
    use std::io::Read;
    let mut bytes = Vec::new();
    if let Ok(f) = std::fs::File::open("/proc/cpuinfo") {
        let _ = f.take(CPUINFO_MAX).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads the host facts (best effort; unknowns are said as such).
pub fn info() -> HostInfo {
    let cpuinfo = cpuinfo_head();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.split_whitespace().collect())
        .unwrap_or_default();
    let kvm_module = ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .find(|m| std::path::Path::new("/sys/module").join(m).exists())
        .unwrap_or("unknown")
        .to_string();
    let nested = flags.contains(&"hypervisor");
    let hw_virt = flags.contains(&"vmx") || flags.contains(&"svm");
    HostInfo {
        cpu_model,
        emulated: kvm_module == "kvm_pvm" || (nested && !hw_virt),
        kvm_module,
        nested,
    }
}

/// The boot-info feature bit for this host.
pub fn emulated_feature_bit() -> u32 {
    if info().emulated {
        FEATURE_EMULATED_HOST
    } else {
        0
    }
}
