//! `host devices`: list CUDA devices or say plainly why there are none.

use crate::Result;

pub fn run() -> Result<()> {
    match crate::backend::cuda::list_devices() {
        Ok(devs) => {
            for d in devs {
                println!(
                    "cuda:{}  {}  {:.1} GiB  compute capability {}.{}",
                    d.ordinal,
                    d.name,
                    d.total_mem as f64 / (1u64 << 30) as f64,
                    d.cc_major,
                    d.cc_minor
                );
            }
            Ok(())
        }
        Err(e) => {
            println!("no CUDA devices: {e}");
            Ok(())
        }
    }
}
