//! `host inspect` (not yet implemented).

use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Path to a .gguf model file.
    pub model: std::path::PathBuf,
}

pub fn run(_args: InspectArgs) -> Result<()> {
    Err(Error::Usage("host inspect is not implemented yet".into()))
}
