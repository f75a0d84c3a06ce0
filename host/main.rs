//! The `host` command line: parse, dispatch to `cli`, print errors as one line and exit non-zero.

use clap::Parser;

fn main() {
    // .cargo/config.toml builds for AVX2 + FMA + F16C on x86-64: say so instead of dying on an illegal instruction
    #[cfg(target_arch = "x86_64")]
    for (feature, present) in [
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
        ("f16c", std::arch::is_x86_feature_detected!("f16c")),
    ] {
        if !present {
            eprintln!("error: this build of host needs a CPU with {feature} (x86-64 since 2013); rebuild without the \
                       target features of .cargo/config.toml for an older CPU");
            std::process::exit(1);
        }
    }
    let args = host::cli::Cli::parse();
    if let Err(e) = host::cli::run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
