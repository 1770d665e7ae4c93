//! `--pin`: each vCPU thread on its own host CPU (round robin over the
//! CPUs this process may run on).

/// The host CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `i` is below CPU_SETSIZE, the set's capacity.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect()
}

/// The host CPU for vCPU `cpu` given the allowed CPUs (round robin).
pub fn host_cpu_for(cpu: u32, allowed: &[usize]) -> Option<usize> {
    if allowed.is_empty() {
        None
    } else {
        allowed.get(cpu as usize % allowed.len()).copied()
    }
}

/// Pins the calling thread to `host_cpu`.
pub fn pin_current_thread(host_cpu: usize) -> std::io::Result<()> {
    if host_cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `host_cpu` is below CPU_SETSIZE (checked above).
    unsafe { libc::CPU_SET(host_cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the
    // calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin() {
        assert_eq!(host_cpu_for(0, &[2, 3]), Some(2));
        assert_eq!(host_cpu_for(3, &[2, 3]), Some(3));
        assert_eq!(host_cpu_for(3, &[]), None);
    }

    #[test]
    fn pins_this_thread() {
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty());
        std::thread::spawn(move || {
            pin_current_thread(allowed[0]).unwrap();
            assert_eq!(allowed_cpus(), [allowed[0]]);
        })
        .join()
        .unwrap();
        assert!(pin_current_thread(1 << 20).is_err());
    }
}
