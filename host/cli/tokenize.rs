//! `host tokenize` (not yet implemented).

use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    /// Path to a .gguf model file.
    pub model: std::path::PathBuf,
}

pub fn run(_args: TokenizeArgs) -> Result<()> {
    Err(Error::Usage("host tokenize is not implemented yet".into()))
}
