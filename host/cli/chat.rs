//! `host chat MODEL`: a conversation in the terminal. Each turn renders the whole history with the chat template
//! and evaluates only the tokens that the KV cache does not already hold: the rendered history is tokenized and
//! compared with the tokens in the cache, which are kept up to the first difference (a template may render an
//! earlier turn differently once later turns exist, and a reply's text may tokenize differently from the tokens
//! that were sampled), and everything from there on is evaluated.
//!
//! Commands at the `> ` prompt: `/reset` clears the history and the cache, `/exit` (or end of input, Ctrl-D)
//! quits; a line ending in `\` continues on the next. Ctrl-C during a reply stops it and keeps the conversation;
//! Ctrl-C at the prompt quits. After each reply a line on stderr gives the cached and new prompt tokens, the
//! reply's length and speed, and why it stopped when that was not the end of the turn.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

use crate::backend::Device;
use crate::cli::run::{self, GenArgs, LoadArgs, TemplateArgs};
use crate::generate::{self, StopReason};
use crate::gguf::GgufFile;
use crate::model::Model;
use crate::sampler::Sampler;
use crate::tokenizer::{ChatMessage, Tokenizer};
use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// Path to a .gguf model file.
    pub model: PathBuf,
    #[command(flatten)]
    pub template: TemplateArgs,
    #[command(flatten)]
    pub gen: GenArgs,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// What Ctrl-C does: stop the reply, or quit at the prompt.
const AT_PROMPT: u8 = 0;
const REPLYING: u8 = 1;
static MODE: AtomicU8 = AtomicU8::new(AT_PROMPT);
/// Set by Ctrl-C during a reply: generation stops after the current token.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn install_ctrl_c() {
    // An error here only means a handler is already installed.
    let _ = ctrlc::set_handler(|| {
        if MODE.load(Ordering::SeqCst) == AT_PROMPT || INTERRUPTED.swap(true, Ordering::SeqCst) {
            // at the prompt, or a second Ctrl-C before the reply stopped
            eprintln!();
            std::process::exit(130);
        }
    });
}

/// One line of input, lines ending in `\` joined with the next; None at end of input.
fn read_message(input: &mut dyn BufRead) -> Result<Option<String>> {
    let mut msg = String::new();
    loop {
        let mut line = String::new();
        let n = input.read_line(&mut line).map_err(|e| Error::io("<stdin>", e))?;
        if n == 0 {
            return Ok(if msg.is_empty() { None } else { Some(msg) });
        }
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        match line.strip_suffix('\\') {
            Some(part) => {
                msg.push_str(part);
                msg.push('\n');
                print_flush("... ");
            }
            None => {
                msg.push_str(line);
                return Ok(Some(msg));
            }
        }
    }
}

fn print_flush(s: &str) {
    let mut out = std::io::stdout().lock();
    // a closed terminal shows up as end of input next
    let _ = out.write_all(s.as_bytes()).and_then(|_| out.flush());
}

/// Length of the common prefix of two token lists.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The conversation: its messages, and the tokens whose keys and values the cache holds at positions 0...
struct Conversation {
    system: Option<String>,
    messages: Vec<ChatMessage>,
    cached: Vec<u32>,
}

impl Conversation {
    fn new(system: Option<String>) -> Conversation {
        let mut c = Conversation { system, messages: Vec::new(), cached: Vec::new() };
        c.clear();
        c
    }

    fn clear(&mut self) {
        self.messages.clear();
        self.messages.extend(self.system.iter().map(|s| ChatMessage::new("system", s.as_str())));
        self.cached.clear();
    }
}

pub fn run(a: ChatArgs) -> Result<()> {
    let template = run::read_template(a.template.chat_template.as_deref())?;
    run::set_threads(a.load.threads)?;
    let device = Device::select(a.load.device)?;
    let file = GgufFile::open(&a.model)?;
    let tok = Tokenizer::from_gguf(&file)?;
    let model = Model::load(&file)?;
    run::describe_model(&a.model, &model);
    let params = a.gen.sampling(model.n_vocab())?;
    let opts = a.gen.options();
    let mut conv = Conversation::new(a.template.system.clone());
    // a model without a template (and no --chat-template) fails here, before the weights are read
    let mut probe = conv.messages.clone();
    probe.push(ChatMessage::new("user", "hello"));
    generate::render_chat(&tok, template.as_deref(), &probe)?;
    let mut fwd = run::open_forward(&model, &a.load, device)?;
    let ctx = fwd.ctx_size();

    install_ctrl_c();
    eprintln!(
        "chat: /reset clears the conversation, /exit or Ctrl-D quits, Ctrl-C stops a reply; a line ending in \\ \
         continues on the next"
    );
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    loop {
        MODE.store(AT_PROMPT, Ordering::SeqCst);
        print_flush("> ");
        let Some(line) = read_message(&mut input)? else {
            print_flush("\n");
            break;
        };
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                conv.clear();
                fwd.reset();
                eprintln!("[conversation cleared]");
                continue;
            }
            _ => {}
        }
        conv.messages.push(ChatMessage::new("user", line));
        let rendered = match generate::render_chat(&tok, template.as_deref(), &conv.messages) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                conv.messages.pop();
                continue;
            }
        };
        let ids = generate::encode_prompt(&tok, &rendered, true)?;
        if ids.len() >= ctx {
            eprintln!(
                "[the conversation is {} tokens with this message and no longer fits the context of {ctx} tokens: \
                 /reset starts a new one (or restart with a larger --ctx-size)]",
                ids.len()
            );
            conv.messages.pop();
            continue;
        }
        // keep the cached tokens up to the first difference; the last prompt token is always evaluated
        let n_cached = common_prefix(&conv.cached, &ids).min(ids.len() - 1);
        if a.template.verbose_prompt {
            run::print_prompt(&tok, &rendered, &ids, n_cached);
        }

        let mut sampler = Sampler::new(params.clone());
        INTERRUPTED.store(false, Ordering::SeqCst);
        MODE.store(REPLYING, Ordering::SeqCst);
        let t0 = Instant::now();
        let g = {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            generate::generate_cached(fwd.as_mut(), &tok, &mut sampler, &ids, n_cached, &opts, &mut out, &INTERRUPTED)
        };
        MODE.store(AT_PROMPT, Ordering::SeqCst);
        let g = match g {
            Ok(g) => g,
            Err(e) => {
                // the cache may hold part of this turn: start the next one from scratch
                conv.cached.clear();
                conv.messages.pop();
                return Err(e);
            }
        };
        let secs = t0.elapsed().as_secs_f64();
        conv.cached = ids.iter().chain(&g.tokens).copied().take(g.n_past).collect();
        if !g.text.ends_with('\n') {
            print_flush("\n");
        }
        conv.messages.push(ChatMessage::new("assistant", g.text.clone()));
        let t = &g.timings;
        let rate = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
        let why = match g.reason {
            StopReason::EndOfGeneration => String::new(),
            StopReason::ContextFull => {
                format!("; context full ({ctx} tokens): /reset starts a new conversation")
            }
            r => format!("; stopped: {}", r.describe()),
        };
        eprintln!(
            "[{n_cached} tokens cached, {} new ({:.1} t/s); {} generated ({:.1} t/s) in {secs:.1} s{why}]",
            t.prompt_tokens,
            rate(t.prompt_tokens, t.prompt_ms),
            g.tokens.len(),
            rate(t.decode_runs, t.decode_ms),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continued_lines_join_and_end_of_input_ends() {
        let mut input: &[u8] = b"one\\\ntwo\r\nthree\nlast\\\n";
        assert_eq!(read_message(&mut input).unwrap().as_deref(), Some("one\ntwo"));
        assert_eq!(read_message(&mut input).unwrap().as_deref(), Some("three"));
        // input that ends inside a continued message gives what was read
        assert_eq!(read_message(&mut input).unwrap().as_deref(), Some("last\n"));
        assert_eq!(read_message(&mut input).unwrap(), None);
    }

    #[test]
    fn common_prefix_stops_at_the_first_difference() {
        assert_eq!(common_prefix(&[1, 2, 3, 4], &[1, 2, 5, 4]), 2);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
    }
}
