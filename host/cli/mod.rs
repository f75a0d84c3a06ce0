//! Command-line interface: one file per subcommand, each with its `Args` struct and a `run` function.

use clap::{Parser, Subcommand, ValueEnum};

use crate::Result;

pub mod bench;
pub mod chat;
pub mod devices;
pub mod inspect;
pub mod run;
pub mod serve;
pub mod synth;
pub mod tokenize;

#[derive(Parser, Debug)]
#[command(name = "host", version, about = "GGUF LLM inference on NVIDIA GPUs (CUDA) or the CPU")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate text from a prompt.
    Run(run::RunArgs),
    /// Chat with a model in the terminal (its chat template, the KV cache kept between turns).
    Chat(chat::ChatArgs),
    /// Print a GGUF file's architecture, config, tokenizer and tensor table.
    Inspect(inspect::InspectArgs),
    /// Print the token ids of a prompt.
    Tokenize(tokenize::TokenizeArgs),
    /// List CUDA devices, or say why there are none.
    Devices,
    /// Measure prompt processing and generation speed (like llama-bench).
    Bench(bench::BenchArgs),
    /// Write a random-weight model of a preset shape (for benchmarks).
    Synth(synth::SynthArgs),
    /// Serve the model over HTTP with the OpenAI API (chat and text completions), a chat page and metrics.
    Serve(serve::ServeArgs),
}

/// Where computation runs (`--device`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceArg {
    /// CUDA when a device and the kernels are present, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Devices => devices::run(),
        Command::Bench(a) => bench::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Serve(a) => serve::run(a),
    }
}
