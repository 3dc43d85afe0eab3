//! Lays out the `dingbot` binary's code so that what a running dingbot executes sits
//! together.
//!
//! The kernel maps a program's code into memory 64 KiB at a time around each page it first
//! runs (fault-around), so the code of a process counts in its resident memory by the
//! blocks it touches, not by the functions it runs. In the default layout the 2,100-odd
//! functions a serving dingbot runs (2.9 MB of its 10 MB of code) are spread over most of
//! the binary: 7.3–7.7 MiB of code was resident at the `/info` benchmark's peak, against
//! 2 MiB for the bare handler; laid out by the list, 3.8–4.0 MiB (peak RSS 22.2–23.4 →
//! 18.6–19.9 MiB, and 2–3 % less CPU per `/info`). `bench/text-order.txt` lists those
//! functions, hottest first, as measured by `bench/text-order.sh` (callgrind under the
//! benchmark's load); the linker places them first and in that order
//! (`--symbol-ordering-file`, an LLD option; LLD is Rust's default linker on x86_64
//! Linux). Measured in `bench/README.md` › Memory under load; nothing but the layout
//! changes.
//!
//! Symbol names carry a hash of the compiler version, `Cargo.lock`, the profile and the
//! target, so the list fits one build configuration: the plain `cargo build --release` of
//! the toolchain named in its header. Otherwise its names are not found and the code keeps
//! the default layout (cargo warns when the toolchain or `Cargo.lock` differs from the
//! list's); a function missing from the list is laid out as before. The option is only
//! passed when a test link with it succeeds (GNU ld and gold do not know it), and never
//! with `TEXT_ORDER=0` in the build's environment (for A/B runs, or a linker chosen by
//! means this script cannot see, such as `cargo rustc -- -C link-arg=-fuse-ld=bfd`).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const ORDER_FILE: &str = "bench/text-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=TEXT_ORDER");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    if let Ok(target) = std::env::var("TARGET") {
        let var = target.to_uppercase().replace('-', "_");
        println!("cargo:rerun-if-env-changed=CARGO_TARGET_{var}_LINKER");
    }
    // cargo-fuzz builds dingbot as a library with sanitizer flags a test link cannot take.
    if std::env::var("TEXT_ORDER").is_ok_and(|v| v == "0")
        || std::env::var_os("CARGO_CFG_FUZZING").is_some()
    {
        return;
    }
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let order = manifest.join(ORDER_FILE);
    if !is_linux_elf() {
        return;
    }
    let Ok(text) = std::fs::read_to_string(&order) else {
        return;
    };
    warn_if_stale(&text, &manifest);
    let args = [
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        "-Wl,--no-warn-symbol-ordering".to_owned(),
    ];
    // A test link without the option first: if that fails too, the test says nothing about
    // the option (flags that need the crate's own inputs), and the default layout stays.
    if !links_with(&[]) {
        return;
    }
    if links_with(&args) {
        for arg in args {
            println!("cargo:rustc-link-arg-bin=dingbot={arg}");
        }
    } else {
        println!(
            "cargo:warning=the linker does not take --symbol-ordering-file (an LLD option); \
             dingbot's code keeps the default layout (more resident memory, see build.rs)"
        );
    }
}

/// Warns when the list was made by another toolchain or for another `Cargo.lock`: its
/// symbol names then mostly differ from this build's.
fn warn_if_stale(text: &str, manifest: &Path) {
    let header = |key: &str| {
        text.lines()
            .take_while(|line| line.starts_with('#'))
            .find_map(|line| line.strip_prefix(key))
            .map(|v| v.trim().to_owned())
    };
    let stale = |what: &str, made: &str, this: &str| {
        println!(
            "cargo:warning={ORDER_FILE} was made with {what} {made}, this build has {this}: its \
             symbol names differ, so dingbot's code keeps the default layout (more resident \
             memory); run bench/text-order.sh"
        );
    };
    if let Some(made) = header("# toolchain: ")
        && let Some(this) = rustc_version()
        && made != this
    {
        stale("toolchain", &made, &this);
    }
    if let Some(made) = header("# Cargo.lock sha256: ")
        && let Ok(lock) = std::fs::read(manifest.join("Cargo.lock"))
    {
        let this: String = Sha256::digest(&lock)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if made != this {
            stale("Cargo.lock sha256", &made, &this);
        }
    }
}

/// `rustc -V` of the compiler building this crate.
fn rustc_version() -> Option<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).arg("-V").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn is_linux_elf() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_OBJECT_FORMAT") != "mach-o"
}

/// Whether the linker cargo will use accepts `args`: a one-line program is linked with
/// them, with the same rustc, target, linker and flags as the crate.
fn links_with(args: &[String]) -> bool {
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return false;
    };
    let source = out.join("order_probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut probe = Command::new(rustc);
    probe
        .arg(&source)
        .arg("-o")
        .arg(out.join("order_probe"))
        .arg("--crate-type=bin");
    if let Ok(target) = std::env::var("TARGET") {
        probe.arg("--target").arg(target);
    }
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        probe.arg(format!("-Clinker={}", Path::new(&linker).display()));
    }
    if let Ok(flags) = std::env::var("CARGO_ENCODED_RUSTFLAGS") {
        probe.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    }
    for arg in args {
        probe.arg(format!("-Clink-arg={arg}"));
    }
    probe
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
