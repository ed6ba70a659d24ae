//! Compiles the C BPF programs with clang; the crate embeds the object and aya loads it.
use std::{env, path::PathBuf, process::Command};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let src = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("bpf/weir.bpf.c");
    let out = PathBuf::from(env::var("OUT_DIR")?).join("weir.bpf.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    let status = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror", "-I/usr/include/x86_64-linux-gnu", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .map_err(|e| format!("cannot run {clang}: {e} (make setup installs clang and libbpf-dev)"))?;
    if !status.success() {
        return Err(format!("clang failed on {}", src.display()).into());
    }
    Ok(())
}
