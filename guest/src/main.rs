//! Kernel entry point. The real kernel only exists for `x86_64-unknown-none`;
//! a host build of this binary just says so.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(missing_docs)]

#[cfg(target_os = "none")]
mod entry {
    use guest::arch::x86_64::stacks::{BOOT_STACK, STACK_SIZE};
    use guest::kprintln;
    use shared::status::GuestStatus;

    /// The BSP starts here in 64-bit mode (set up by the VMM): switch to
    /// CPU 0's kernel stack and enter Rust.
    #[unsafe(naked)]
    #[unsafe(no_mangle)]
    #[unsafe(link_section = ".text._start")]
    extern "C" fn _start() -> ! {
        core::arch::naked_asm!(
            "lea rsp, [rip + {stacks} + {size}]",
            "xor ebp, ebp",
            "call {main}",
            "ud2",
            stacks = sym BOOT_STACK,
            size = const STACK_SIZE,
            main = sym rust_start,
        )
    }

    extern "C" fn rust_start() -> ! {
        let boot = guest::kernel::boot();
        let status = guest::scenarios::run(&boot);
        guest::report::exit(status)
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        kprintln!("panic: {}", info);
        guest::report::exit(GuestStatus::Crashed)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("guest: this is the smpcall guest kernel; the vmm builds it for x86_64-unknown-none");
    std::process::exit(2);
}
