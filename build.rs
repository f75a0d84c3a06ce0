//! Builds the Rust GPU kernels of `gpu-kernels/` to PTX with rustc's nvptx64 backend and hands the module to
//! the host as `$OUT_DIR/kernels.ptx` (with `cfg(has_gpu_kernels)`). Without a nightly toolchain carrying
//! `rust-src`, prints one warning and leaves the PTX empty: the host then builds CPU-only.
//!
//! Env: `HOST_KERNELS_TOOLCHAIN` (default `nightly`) picks the toolchain; `HOST_REQUIRE_GPU_KERNELS=1` turns a
//! missing toolchain or a failed kernel build into a build error.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Variables cargo sets for build scripts that would leak into the inner nightly build.
const LEAKY_ENV: &[&str] = &[
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTUP_TOOLCHAIN",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_MAKEFLAGS",
    "CARGO",
    "RUSTDOC",
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_gpu_kernels)");
    println!("cargo::rerun-if-changed=gpu-kernels/src");
    println!("cargo::rerun-if-changed=gpu-kernels/Cargo.toml");
    println!("cargo::rerun-if-env-changed=HOST_KERNELS_TOOLCHAIN");
    println!("cargo::rerun-if-env-changed=HOST_REQUIRE_GPU_KERNELS");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let ptx_out = out_dir.join("kernels.ptx");
    let require = std::env::var("HOST_REQUIRE_GPU_KERNELS").is_ok_and(|v| v == "1");
    let toolchain = std::env::var("HOST_KERNELS_TOOLCHAIN").unwrap_or_else(|_| "nightly".into());

    match build_kernels(&toolchain, &out_dir) {
        Ok(ptx) => {
            let text = apply_launch_bounds(&std::fs::read_to_string(&ptx).expect("read the kernels' PTX"));
            let unsafe_kernels = kernels_without_pdl_wait(&text);
            assert!(
                unsafe_kernels.is_empty(),
                "every kernel must begin with common::pdl_enter() (launches use programmatic dependent launch, so a \
                 kernel that does not wait could read its inputs before the previous kernel wrote them): {unsafe_kernels:?}"
            );
            std::fs::write(&ptx_out, without_pdl(&text)).expect("write PTX into OUT_DIR");
            std::fs::write(out_dir.join("kernels_sm90.ptx"), for_sm90(&text)).expect("write PTX into OUT_DIR");
            println!("cargo::rustc-cfg=has_gpu_kernels");
        }
        Err(why) => {
            if require {
                panic!("HOST_REQUIRE_GPU_KERNELS=1 but the GPU kernels could not be built: {why}");
            }
            println!("cargo::warning=building without GPU kernels (CPU only): {why}");
            std::fs::write(&ptx_out, "").expect("write empty PTX");
            std::fs::write(out_dir.join("kernels_sm90.ptx"), "").expect("write empty PTX");
        }
    }
}

/// Compile `gpu-kernels` for nvptx64 and return the path of its `.s` (PTX) file.
fn build_kernels(toolchain: &str, out_dir: &Path) -> Result<PathBuf, String> {
    let sysroot = rustup_cmd(toolchain, "rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustup ({e}); install rustup and the `{toolchain}` toolchain"))?;
    if !sysroot.status.success() {
        return Err(format!(
            "toolchain `{toolchain}` is not installed (rustup toolchain install {toolchain} --component rust-src)"
        ));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Err(format!(
            "toolchain `{toolchain}` lacks the rust-src component (rustup component add rust-src --toolchain {toolchain})"
        ));
    }

    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let target_dir = out_dir.join("kernels");
    let mut cmd = rustup_cmd(toolchain, "cargo");
    cmd.args(["build", "--release", "--target", "nvptx64-nvidia-cuda", "-Zbuild-std=core", "--manifest-path"])
        .arg(manifest_dir.join("gpu-kernels/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "--emit=asm -C target-cpu=sm_80");
    let out = cmd.output().map_err(|e| format!("cannot run cargo for the kernels: {e}"))?;
    if !out.status.success() {
        return Err(format!("the kernel crate failed to compile:\n{}", String::from_utf8_lossy(&out.stderr)));
    }

    // The PTX is the `.s` file of the kernel crate; pick the newest if stale ones linger.
    let deps = target_dir.join("nvptx64-nvidia-cuda/release/deps");
    let newest = std::fs::read_dir(&deps)
        .map_err(|e| format!("cannot list {}: {e}", deps.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "s")
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("gpu_kernels-"))
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    newest.ok_or_else(|| format!("no gpu_kernels-*.s under {}", deps.display()))
}

/// rustc has no `__launch_bounds__`: a kernel asks for one with an asm comment `// @launch_bounds THREADS BLOCKS`
/// in its body, and this moves it into the entry's header as `.maxntid THREADS, 1, 1` and `.minnctapersm BLOCKS`
/// (so that ptxas budgets registers for BLOCKS resident blocks of THREADS threads).
fn apply_launch_bounds(ptx: &str) -> String {
    let lines: Vec<&str> = ptx.lines().collect();
    let mut out = String::with_capacity(ptx.len() + 1024);
    for (i, line) in lines.iter().enumerate() {
        if line.trim() == "{" && i > 0 && lines[..i].iter().rev().take_while(|l| !l.contains('{')).any(|l| l.contains(".entry ")) {
            // the body of an entry starts here: look for its marker before the next entry
            let marker = lines[i..]
                .iter()
                .take_while(|l| !l.contains(".entry "))
                .find_map(|l| l.trim().strip_prefix("// @launch_bounds "));
            if let Some(m) = marker {
                let v: Vec<&str> = m.split_whitespace().collect();
                if let [threads, blocks] = v[..] {
                    out.push_str(&format!(".maxntid {threads}, 1, 1\n.minnctapersm {blocks}\n"));
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The kernels use programmatic dependent launch (`griddepcontrol`, PTX 7.8, sm_90) through `pdl_enter`; the
/// module for older GPUs (sm_80) drops those instructions, where they would mean nothing anyway.
fn without_pdl(ptx: &str) -> String {
    let mut out = String::with_capacity(ptx.len());
    for line in ptx.lines().filter(|l| !l.trim_start().starts_with("griddepcontrol.")) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Entry points whose body has no `griddepcontrol.wait`.
fn kernels_without_pdl_wait(ptx: &str) -> Vec<String> {
    ptx.split(".entry ")
        .skip(1)
        .filter(|body| !body.contains("griddepcontrol.wait"))
        .map(|body| body.split('(').next().unwrap_or("").trim().to_string())
        .collect()
}

/// The module for Hopper and later: the same PTX, declared as PTX 7.8 for sm_90 so that `griddepcontrol` is legal.
fn for_sm90(ptx: &str) -> String {
    let mut out = String::with_capacity(ptx.len());
    for line in ptx.lines() {
        match line.trim() {
            l if l.starts_with(".version ") => out.push_str(".version 7.8"),
            l if l.starts_with(".target ") => out.push_str(".target sm_90"),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// `rustup run TOOLCHAIN TOOL` with the outer build's variables removed.
fn rustup_cmd(toolchain: &str, tool: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", toolchain, tool]);
    for k in LEAKY_ENV {
        cmd.env_remove(k);
    }
    cmd
}
