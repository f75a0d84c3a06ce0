//! `host tokenize MODEL --prompt TEXT [--ids] [--no-parse-special]`: the token ids of a prompt, printed as
//! `llama-tokenize` prints them: `--ids` gives one line `[1, 2, 3]`, otherwise one line per token,
//! `{id:6} -> '{piece}'`.

use std::io::Write as _;

use crate::gguf::GgufFile;
use crate::tokenizer::{Tokenizer, TokenizerOptions};
use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    /// Path to a .gguf model file.
    pub model: std::path::PathBuf,
    /// The text to tokenize (text that starts with '-' too).
    #[arg(short, long, conflicts_with = "file", allow_hyphen_values = true)]
    pub prompt: Option<String>,
    /// Read the text to tokenize from this file.
    #[arg(short, long)]
    pub file: Option<std::path::PathBuf>,
    /// Print only the ids, as one list: [1, 2, 3].
    #[arg(long)]
    pub ids: bool,
    /// Tokenize the text of special tokens (<|im_start|>, ...) as plain text.
    #[arg(long)]
    pub no_parse_special: bool,
    /// Do not add BOS even if the model asks for it (tokenizer.ggml.add_bos_token).
    #[arg(long)]
    pub no_bos: bool,
    /// Print the number of tokens at the end.
    #[arg(long)]
    pub show_count: bool,
    /// Use this pre-tokenizer instead of the file's tokenizer.ggml.pre (e.g. llama3, qwen2, gpt-2).
    #[arg(long, value_name = "NAME")]
    pub tokenizer_pre: Option<String>,
}

pub fn run(args: TokenizeArgs) -> Result<()> {
    let text = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?,
        (None, None) => return Err(Error::Usage("host tokenize needs --prompt TEXT or --file PATH".into())),
    };
    let f = GgufFile::open(&args.model)?;
    let tok = Tokenizer::from_gguf_with(&f, &TokenizerOptions { pre_override: args.tokenizer_pre.clone() })?;
    let ids = tok.encode(&text, !args.no_bos, !args.no_parse_special)?;

    let mut out = std::io::stdout().lock();
    let mut write = || -> std::io::Result<()> {
        if args.ids {
            let list: Vec<String> = ids.iter().map(u32::to_string).collect();
            writeln!(out, "[{}]", list.join(", "))?;
        } else {
            for &id in &ids {
                // the piece's raw bytes, as llama-tokenize prints them (special tokens shown)
                write!(out, "{id:6} -> '")?;
                out.write_all(tok.token_bytes(id))?;
                writeln!(out, "'")?;
            }
        }
        if args.show_count {
            writeln!(out, "Total number of tokens: {}", ids.len())?;
        }
        out.flush()
    };
    write().map_err(|e| Error::io("<stdout>", e))
}
