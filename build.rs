//! Lays out the `dingbot` binary's code so that what a running dingbot executes sits
//! together.
//!
//! The kernel maps a program's code into memory 64 KiB at a time around each page it first
//! runs (fault-around), so the code of a process counts in its resident memory by the
//! blocks it touches, not by the functions it runs. In the default layout the 2,114
//! functions a serving dingbot runs (2.9 MB of its 10 MB of code) are spread over most of
//! the binary: 7.6 MiB of code was resident at the `/info` benchmark's peak, against 2 MiB
//! for the bare handler; laid out by the list, 3.8 MiB (peak RSS 22.4 → 18.6 MiB, and 2 %
//! less CPU per `/info`). `bench/text-order.txt` lists those functions, hottest first, as
//! measured by `bench/text-order.sh` (callgrind under the benchmark's load); the linker
//! places them first and in that order (`--symbol-ordering-file`, supported by LLD, Rust's
//! default linker on x86_64 Linux, and by mold). Measured in `bench/README.md` › Memory
//! under load; nothing but the layout changes.
//!
//! A function missing from the list (renamed, new, or built by another compiler version)
//! is laid out as before; names in the list the binary lacks are ignored. The option is
//! only passed when a test link with it succeeds (GNU ld does not know it), and never with
//! `DINGBOT_TEXT_ORDER=0`.

use std::path::{Path, PathBuf};
use std::process::Command;

const ORDER_FILE: &str = "bench/text-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=DINGBOT_TEXT_ORDER");
    if std::env::var("DINGBOT_TEXT_ORDER").is_ok_and(|v| v == "0") {
        return;
    }
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let order = manifest.join(ORDER_FILE);
    if !order.is_file() || !is_linux_elf() {
        return;
    }
    if let Some(made_with) = std::fs::read_to_string(&order)
        .ok()
        .and_then(|text| toolchain_line(&text))
        && let Some(this) = rustc_version()
        && made_with != this
    {
        println!(
            "cargo:warning={ORDER_FILE} was made with {made_with}, this is {this}: symbol names \
             differ, so dingbot's code keeps the default layout (more resident memory); \
             run bench/text-order.sh"
        );
    }
    let args = [
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        "-Wl,--no-warn-symbol-ordering".to_owned(),
    ];
    if links_with(&args) {
        for arg in args {
            println!("cargo:rustc-link-arg-bin=dingbot={arg}");
        }
    } else {
        println!(
            "cargo:warning=the linker does not take --symbol-ordering-file; dingbot's code keeps \
             the default layout (more resident memory, see build.rs)"
        );
    }
}

/// The `# toolchain: rustc …` line `bench/text-order.sh` writes.
fn toolchain_line(text: &str) -> Option<String> {
    text.lines()
        .take_while(|line| line.starts_with('#'))
        .find_map(|line| line.strip_prefix("# toolchain: "))
        .map(|v| v.trim().to_owned())
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
