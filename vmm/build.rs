//! Builds the guest kernel for `x86_64-unknown-none` and embeds it, twice:
//! without trace points (`GUEST_ELF`) and with the guest's `trace` feature
//! (`GUEST_TRACED_ELF`, booted when tracing is on).
//!
//! A nested cargo with its own target directory (sharing the outer one
//! deadlocks on cargo's lock). The guest is always built with `--release`:
//! debug guest code is unusably slow under nested KVM. Both builds share
//! that target directory (the dependencies are built once; the guest
//! crate's two feature sets get different artifacts in `deps/`), one
//! after the other; each final binary is copied out of `release/guest`
//! before the next build overwrites it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "x86_64-unknown-none";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for watched in ["guest", "shared", ".cargo", "Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=SMPCALL_GUEST_ELF");
    println!("cargo:rerun-if-env-changed=SMPCALL_GUEST_TRACED_ELF");

    // Escape hatch: embed a prebuilt guest (and a prebuilt traced one, or
    // the same again: tracing then records nothing).
    if let Some(prebuilt) = env::var_os("SMPCALL_GUEST_ELF") {
        let traced = env::var_os("SMPCALL_GUEST_TRACED_ELF").unwrap_or(prebuilt.clone());
        println!(
            "cargo:rustc-env=GUEST_ELF={}",
            Path::new(&prebuilt).display()
        );
        println!(
            "cargo:rustc-env=GUEST_TRACED_ELF={}",
            Path::new(&traced).display()
        );
        return;
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    ensure_target();

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("guest-target");
    for (features, name, var) in [
        (None, "guest.elf", "GUEST_ELF"),
        (Some("trace"), "guest-traced.elf", "GUEST_TRACED_ELF"),
    ] {
        build_guest(&cargo, &root, &target_dir, features);
        let built = target_dir.join(GUEST_TARGET).join("release").join("guest");
        let copy = out_dir.join(name);
        std::fs::copy(&built, &copy).unwrap_or_else(|e| {
            fail(&format!(
                "could not copy {} to {}: {e}",
                built.display(),
                copy.display()
            ))
        });
        println!("cargo:rustc-env={var}={}", copy.display());
    }
}

/// One nested build of the guest binary with `features`.
fn build_guest(cargo: &std::ffi::OsStr, root: &Path, target_dir: &Path, features: Option<&str>) {
    let mut cmd = Command::new(cargo);
    cmd.arg("build");
    if let Some(f) = features {
        cmd.args(["--features", f]);
    }
    let status = cmd
        .current_dir(root)
        .args([
            "-p",
            "guest",
            "--bin",
            "guest",
            "--release",
            "--target",
            GUEST_TARGET,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        // The host build's flags must not leak into the guest build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("CARGO_LLVM_COV")
        .env_remove("LLVM_PROFILE_FILE")
        .env_remove("RUSTC_WRAPPER")
        .status()
        .unwrap_or_else(|e| fail(&format!("could not run cargo to build the guest: {e}")));
    if !status.success() {
        fail("building the guest for x86_64-unknown-none failed (see the errors above)");
    }
}

/// Installs the bare-metal target with rustup when it is missing, or stops
/// the build with one line that says how.
fn ensure_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let installed = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", GUEST_TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|dir| dir.join("libcore.rlib").exists() || has_core(&dir));
    if installed {
        return;
    }
    println!("cargo:warning=installing the {GUEST_TARGET} target with rustup");
    let ok = Command::new("rustup")
        .args(["target", "add", GUEST_TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        fail(&format!(
            "the {GUEST_TARGET} target is missing; install it with: rustup target add {GUEST_TARGET}"
        ));
    }
}

fn has_core(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
    })
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}
