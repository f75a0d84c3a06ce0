//! `host run` (not yet implemented).

use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Path to a .gguf model file.
    pub model: std::path::PathBuf,
}

pub fn run(_args: RunArgs) -> Result<()> {
    Err(Error::Usage("host run is not implemented yet".into()))
}
