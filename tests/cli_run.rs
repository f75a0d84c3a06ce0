//! `host run` and `host tokenize` as a user runs them (the real binary): text that starts with '-' is a prompt,
//! not an option; the default token limit; a run that fills the context says so and succeeds; `--chat-template`
//! and `--verbose-prompt`; the README's quick start gives a short, sensible answer. Most tests use a tiny
//! random-weight model written here (byte-level vocabulary: one token per byte); the SmolLM2 ones skip with a
//! printed reason when models/ lacks it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::TempFile;
use host::generate;
use host::gguf::{GgmlType, GgufFile};
use host::synth::{write_model, Preset, SynthSpec, Vocab};
use host::tokenizer::{ChatMessage, Tokenizer};

const SMOLLM2: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// A file under the temp dir, removed on drop.
/// The `tiny` preset (2 layers, dim 256) with the built-in 257-token byte vocabulary: about 1 MB.
fn tiny_model(name: &str) -> TempFile {
    let f = TempFile::new(name);
    write_model(&f.0, &SynthSpec::preset(Preset::Tiny, GgmlType::Q8_0, 7), &Vocab::byte_level()).unwrap();
    f
}

fn host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host")).args(args).output().expect("run the host binary")
}

fn ok(o: &Output) -> (String, String) {
    let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(o.status.success(), "host failed ({}):\n{err}", o.status);
    (out, err)
}

fn tokenizer(path: &Path) -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
}

/// The number N of the line "stopped: <reason> after N tokens".
fn stopped(stderr: &str) -> (String, usize) {
    let line = stderr.lines().find(|l| l.starts_with("stopped: ")).unwrap_or_else(|| panic!("no stop line:\n{stderr}"));
    let (reason, n) = line["stopped: ".len()..].rsplit_once(" after ").unwrap();
    (reason.to_string(), n.trim_end_matches(" tokens").parse().unwrap())
}

fn smollm2_or_skip(test: &str) -> Option<&'static str> {
    if Path::new(SMOLLM2).is_file() {
        Some(SMOLLM2)
    } else {
        eprintln!("skipping {test}: {SMOLLM2} is absent (scripts/fetch-models.sh smollm2 fetches it)");
        None
    }
}

#[test]
fn text_that_starts_with_a_hyphen_is_a_prompt() {
    let m = tiny_model("hyphen.gguf");
    let path = m.0.to_str().unwrap();
    let tok = tokenizer(&m.0);

    let o = host(&["tokenize", path, "--prompt", "- item", "--ids"]);
    let (out, _) = ok(&o);
    let want: Vec<String> = tok.encode("- item", true, true).unwrap().iter().map(u32::to_string).collect();
    assert_eq!(want.len(), 6, "one token per byte");
    assert_eq!(out.trim(), format!("[{}]", want.join(", ")));
    // the short form too
    assert_eq!(ok(&host(&["tokenize", path, "-p", "-x", "--ids"])).0.trim(), format!("[{}, {}]", b'-', b'x'));

    let o = host(&["run", path, "--prompt", "-42", "-n", "3", "--temp", "0", "--device", "cpu", "--verbose-prompt"]);
    let (_, err) = ok(&o);
    assert!(err.contains("prompt: '-42'\nnumber of tokens in prompt = 3\n"), "{err}");
    assert_eq!(stopped(&err), ("token limit (-n)".to_string(), 3));

    // --system and --stop take text that starts with '-' as well
    let tmpl = TempFile::new("hyphen.jinja");
    std::fs::write(&tmpl.0, "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}").unwrap();
    let o = host(&[
        "run", path, "--chat-template", tmpl.0.to_str().unwrap(), "--system", "-be brief", "-p", "-hi", "--stop",
        "-", "-n", "2", "--temp", "0", "--device", "cpu", "--verbose-prompt",
    ]);
    let (_, err) = ok(&o);
    assert!(err.contains("prompt: '[system]-be brief[user]-hi'\n"), "{err}");
}

#[test]
fn run_stops_at_the_default_token_limit() {
    let help = ok(&host(&["run", "--help"])).0;
    let n_line = help.lines().skip_while(|l| !l.contains("--n-predict")).take(4).collect::<Vec<_>>().join(" ");
    assert!(n_line.contains("[default: 512]"), "{help}");

    let m = tiny_model("default-n.gguf");
    // random weights: without --ignore-eos the end-of-text token could end it early
    let o = host(&["run", m.0.to_str().unwrap(), "-p", "hello", "--ignore-eos", "--temp", "0", "--device", "cpu"]);
    let (out, err) = ok(&o);
    assert_eq!(stopped(&err), ("token limit (-n)".to_string(), 512));
    assert!(!out.is_empty());
}

#[test]
fn a_run_that_fills_the_context_says_so_and_succeeds() {
    let m = tiny_model("ctx-full.gguf");
    let tok = tokenizer(&m.0);
    let (ctx, prompt) = (40, "Once upon a time");
    let n_prompt = generate::prompt_tokens(&tok, prompt, None).unwrap().len();
    let o = host(&[
        "run", m.0.to_str().unwrap(), "-p", prompt, "-n", "-1", "--ignore-eos", "--ctx-size", &ctx.to_string(),
        "--temp", "0", "--device", "cpu",
    ]);
    let (_, err) = ok(&o);
    // every position holds a prompt token or an evaluated one; the last sampled token needs no position
    assert_eq!(stopped(&err), ("context full (raise --ctx-size)".to_string(), ctx - n_prompt + 1));

    // a prompt longer than the context is an error, not a panic
    let o = host(&["run", m.0.to_str().unwrap(), "-p", &"x".repeat(50), "--ctx-size", "40", "--device", "cpu"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("more than the context size of 40 tokens"));
}

#[test]
fn chat_template_file_and_verbose_prompt() {
    let m = tiny_model("template.gguf");
    let tok = tokenizer(&m.0);
    let tmpl = TempFile::new("chatml.jinja");
    let template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}\
                    {% if add_generation_prompt %}<|assistant|>{% endif %}";
    std::fs::write(&tmpl.0, template).unwrap();
    let o = host(&[
        "run", m.0.to_str().unwrap(), "--chat-template", tmpl.0.to_str().unwrap(), "--system", "Be brief.", "-p",
        "Hi there", "-n", "1", "--temp", "0", "--device", "cpu", "--verbose-prompt",
    ]);
    let (_, err) = ok(&o);
    let want = "<|system|>Be brief.\n<|user|>Hi there\n<|assistant|>";
    let n = generate::encode_prompt(&tok, want, true).unwrap().len();
    assert_eq!(n, want.len());
    assert!(err.contains(&format!("prompt: '{want}'\nnumber of tokens in prompt = {n}\n")), "{err}");
    // one line per token, control characters escaped
    assert!(err.contains(&format!("{:6} -> '\\n'\n", tok.encode("\n", false, false).unwrap()[0])), "{err}");

    // the model has no template of its own: --chat says so and names --chat-template
    let o = host(&["run", m.0.to_str().unwrap(), "--chat", "-p", "hi", "--device", "cpu"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--chat-template"));
    // --system without a chat template to put it in
    let o = host(&["run", m.0.to_str().unwrap(), "--system", "x", "-p", "hi", "--device", "cpu"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--system needs --chat"));
}

#[test]
fn chat_template_override_and_verbose_prompt_on_smollm2() {
    let Some(model) = smollm2_or_skip("chat_template_override_and_verbose_prompt_on_smollm2") else { return };
    let tok = tokenizer(Path::new(model));
    let o = host(&[
        "run", model, "--chat", "-p", "Hi", "-n", "1", "--temp", "0", "--device", "cpu", "--verbose-prompt",
    ]);
    let (_, err) = ok(&o);
    let rendered = generate::render_chat(&tok, None, &[ChatMessage::new("user", "Hi")]).unwrap();
    assert!(rendered.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"), "{rendered}");
    let n = generate::prompt_tokens(&tok, "Hi", Some(None)).unwrap().len();
    assert!(err.contains(&format!("prompt: '{rendered}'\nnumber of tokens in prompt = {n}\n")), "{err}");

    // a template file replaces the model's: its special tokens still parse as special tokens
    let tmpl = TempFile::new("smol.jinja");
    // (a template drops one trailing newline of its file, as Jinja does: the last one is written as a literal)
    std::fs::write(&tmpl.0, "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
                             {{ '<|im_start|>assistant\\n' }}\n").unwrap();
    let o = host(&[
        "run", model, "--chat-template", tmpl.0.to_str().unwrap(), "-p", "Hi", "-n", "1", "--temp", "0",
        "--device", "cpu", "--verbose-prompt",
    ]);
    let (_, err) = ok(&o);
    let text = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    let ids = generate::encode_prompt(&tok, text, true).unwrap();
    assert!(ids.len() < text.len() / 2, "special tokens are single tokens");
    assert!(err.contains(&format!("prompt: '{text}'\nnumber of tokens in prompt = {}\n", ids.len())), "{err}");
}

/// Words of a shell command line, double quotes grouping.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[test]
fn the_readme_quick_start_answers_briefly() {
    let Some(_) = smollm2_or_skip("the_readme_quick_start_answers_briefly") else { return };
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let line = readme.lines().find(|l| l.contains("cargo run --release -- run ")).expect("a quick-start line");
    let cmd = &line[line.find("cargo run --release -- ").unwrap() + "cargo run --release -- ".len()..];
    let args = shell_words(cmd);
    assert!(args.iter().any(|a| a == "--temp") && args.iter().any(|a| a == "--chat"), "{args:?}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, err) = ok(&host(&args));
    let (reason, n) = stopped(&err);
    assert_eq!(reason, "end-of-generation token", "{out}");
    assert!(n < 64, "{n} tokens: {out}");
    assert!(out.contains("Paris"), "{out}");
}
