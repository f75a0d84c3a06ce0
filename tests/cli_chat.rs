//! `host chat` as a user runs it: the real binary on a pseudo-terminal (its controlling terminal, so that a
//! Ctrl-C byte written to the terminal sends SIGINT, as a key press does). Checked: two turns answer and the
//! second evaluates only the tokens the cache does not hold; /reset; Ctrl-C stops a reply and the session takes
//! another message; Ctrl-C at the prompt quits; /exit and Ctrl-D exit 0; a conversation that no longer fits the
//! context is reported. Also: the progress bars are drawn on a terminal only. The mechanics run on a tiny
//! random-weight model with a template file; the answers on SmolLM2 (skipped with a printed reason when
//! models/ lacks it).

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TempFile;
use host::gguf::{GgmlType, GgufFile};
use host::kv_cache::CacheType;
use host::model::{CpuForward, Model};
use host::sampler::{Sampler, SamplingParams};
use host::synth::{write_model, Preset, SynthSpec, Vocab};
use host::tokenizer::{ChatMessage, Tokenizer};
use host::generate::{self, GenOptions};

const SMOLLM2: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
/// How long any one expected output may take (2 shared cores, a debug of the first turn included).
const WAIT: Duration = Duration::from_secs(120);

/// A file under the temp dir, removed on drop.
/// The `tiny` preset with the byte-level vocabulary (no chat template of its own) and a ChatML-like template file.
fn tiny_model(name: &str) -> (TempFile, TempFile) {
    let m = TempFile::new(&format!("{name}.gguf"));
    write_model(&m.0, &SynthSpec::preset(Preset::Tiny, GgmlType::Q8_0, 3), &Vocab::byte_level()).unwrap();
    let t = TempFile::new(&format!("{name}.jinja"));
    std::fs::write(
        &t.0,
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}\
         {% if add_generation_prompt %}<|assistant|>{% endif %}",
    )
    .unwrap();
    (m, t)
}

/// False, after printing why, where this system has no pseudo-terminals to give (a container without /dev/ptmx).
fn ptys_or_skip(test: &str) -> bool {
    match nix::pty::openpty(None, None) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping {test}: cannot open a pseudo-terminal ({e})");
            false
        }
    }
}

/// A child process on a pseudo-terminal, its output collected by a thread.
struct Pty {
    child: Child,
    master: File,
    out: Arc<Mutex<Vec<u8>>>,
    /// Where the next `expect` starts looking.
    seen: usize,
}

impl Pty {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Pty {
        let ws = nix::pty::Winsize { ws_row: 24, ws_col: 100, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_host"));
        cmd.args(args).env("TERM", "xterm").envs(env.iter().copied());
        cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave));
        // a new session whose controlling terminal is the pty: the line discipline turns ^C into SIGINT for it
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn host");
        drop(cmd); // our copies of the slave side: reads of the master end (EIO) when the child's close
        let master = File::from(pty.master);
        let mut reader = master.try_clone().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty { child, master, out, seen: 0 }
    }

    /// Everything so far, line ends as the program wrote them ("\r\n" -> "\n").
    fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).replace("\r\n", "\n")
    }

    /// Waits for `pat` after the last match; returns the text between the two.
    fn expect(&mut self, pat: &str) -> String {
        let t0 = Instant::now();
        loop {
            let t = self.transcript();
            if let Some(at) = t.get(self.seen..).and_then(|rest| rest.find(pat)) {
                let before = t[self.seen..self.seen + at].to_string();
                self.seen += at + pat.len();
                return before;
            }
            if t0.elapsed() > WAIT {
                let _ = self.child.kill();
                panic!("no {pat:?} after {WAIT:?}; transcript:\n{t}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for output to grow by `n` bytes past the last match.
    fn expect_bytes(&mut self, n: usize) {
        let t0 = Instant::now();
        while self.transcript().len() < self.seen + n {
            if t0.elapsed() > WAIT {
                let _ = self.child.kill();
                panic!("no output; transcript:\n{}", self.transcript());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    fn wait(&mut self) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if t0.elapsed() > WAIT {
                let _ = self.child.kill();
                panic!("host did not exit; transcript:\n{}", self.transcript());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stats line after a reply, "[C tokens cached, N new (...); G generated ...]": (C, N, the line), and the text
/// before it (the reply, its line end dropped).
fn stats_after(p: &mut Pty) -> (usize, usize, String, String) {
    let before = p.expect(" tokens cached, ");
    let (reply, cached) = before.rsplit_once('[').unwrap_or_else(|| panic!("no '[' before the stats: {before}"));
    let rest = p.expect("]\n");
    let new = rest.split_once(" new").unwrap_or_else(|| panic!("not a stats line: {rest}")).0;
    let reply = reply.strip_suffix('\n').unwrap_or(reply).to_string();
    (cached.parse().unwrap(), new.parse().unwrap(), format!("[{cached} tokens cached, {rest}]"), reply)
}

fn stats(p: &mut Pty) -> (usize, usize, String) {
    let (c, n, line, _) = stats_after(p);
    (c, n, line)
}

#[test]
fn chat_ctrl_c_stops_a_reply_and_the_session_goes_on() {
    if !ptys_or_skip("chat_ctrl_c_stops_a_reply_and_the_session_goes_on") {
        return;
    }
    let (m, t) = tiny_model("ctrl-c");
    // a reply that would run until the context (4096) is full: ~15 s on 2 cores
    let mut p = Pty::spawn(
        &["chat", m.path(), "--chat-template", t.path(), "--temp", "0", "-n", "-1", "--ignore-eos", "--device", "cpu"],
        &[],
    );
    p.expect("> ");
    p.send("tell me a long story\n");
    p.expect("tell me a long story\n"); // the terminal's echo
    p.expect_bytes(40);
    let t0 = Instant::now();
    p.send("\x03");
    let (cached, new, line) = stats(&mut p);
    assert!(t0.elapsed() < Duration::from_secs(5), "the reply went on for {:?}", t0.elapsed());
    assert!(line.contains("stopped: interrupted"), "{line}");
    let n_prompt = "<|user|>tell me a long story\n<|assistant|>".len();
    assert_eq!((cached, new), (0, n_prompt));
    let generated: usize = line.split("; ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(generated < 3000, "{line}");

    // the session goes on: the next turn starts from the cache of the interrupted one (random bytes of the
    // reply that are not UTF-8 print as U+FFFD, whose tokens differ: evaluation resumes from the first of them)
    p.expect("> ");
    p.send("go on\n");
    p.expect("go on\n");
    p.expect_bytes(40);
    p.send("\x03");
    let (cached2, _, line) = stats(&mut p);
    assert!(line.contains("stopped: interrupted"), "{line}");
    assert!(cached2 >= n_prompt, "{line}");
    p.expect("> ");
    p.send("/exit\n");
    assert_eq!(p.wait().code(), Some(0), "{}", p.transcript());
}

#[test]
fn chat_ctrl_c_at_the_prompt_quits_and_ctrl_d_exits_0() {
    if !ptys_or_skip("chat_ctrl_c_at_the_prompt_quits_and_ctrl_d_exits_0") {
        return;
    }
    let (m, t) = tiny_model("prompt-keys");
    let args = ["chat", m.path(), "--chat-template", t.path(), "--device", "cpu"];
    let mut p = Pty::spawn(&args, &[]);
    p.expect("> ");
    p.send("\x03");
    assert_eq!(p.wait().code(), Some(130), "{}", p.transcript());

    let mut p = Pty::spawn(&args, &[]);
    p.expect("> ");
    p.send("\x04"); // Ctrl-D at the start of a line: end of input
    assert_eq!(p.wait().code(), Some(0), "{}", p.transcript());
}

#[test]
fn chat_says_when_the_conversation_no_longer_fits() {
    if !ptys_or_skip("chat_says_when_the_conversation_no_longer_fits") {
        return;
    }
    let (m, t) = tiny_model("ctx");
    let mut p = Pty::spawn(
        &[
            "chat", m.path(), "--chat-template", t.path(), "--temp", "0", "-n", "-1", "--ignore-eos", "--ctx-size",
            "64", "--device", "cpu", "--verbose-prompt",
        ],
        &[],
    );
    p.expect("> ");
    p.send("hello\n");
    let (_, new, line) = stats(&mut p);
    let n_prompt = "<|user|>hello\n<|assistant|>".len();
    assert_eq!(new, n_prompt);
    assert!(line.contains("context full (64 tokens): /reset"), "{line}");
    p.expect("> ");
    p.send("and now?\n");
    let msg = p.expect("> ");
    assert!(msg.contains("no longer fits the context of 64 tokens: /reset"), "{msg}");
    p.send("/reset\n");
    p.expect("[conversation cleared]");
    p.expect("> ");
    p.send("hi\n");
    let prompt = "<|user|>hi\n<|assistant|>";
    p.expect(&format!("prompt: '{prompt}'\nnumber of tokens in prompt = {}\n", prompt.len()));
    let (cached, new, _) = stats(&mut p);
    assert_eq!((cached, new), (0, prompt.len()));
    p.expect("> ");
    p.send("/exit\n");
    assert_eq!(p.wait().code(), Some(0), "{}", p.transcript());
}

/// The reply `host chat` should give: the same generation through the library.
fn reply(model: &Model, tok: &Tokenizer, ids: &[u32], n: usize) -> generate::Generation {
    let mut fwd = CpuForward::new(model, 4096, CacheType::F16).unwrap();
    let mut sampler = Sampler::new(SamplingParams { temperature: 0.0, ..SamplingParams::default() });
    let opts = GenOptions { n_predict: Some(n), ..GenOptions::default() };
    let stop = std::sync::atomic::AtomicBool::new(false);
    generate::generate(&mut fwd, tok, &mut sampler, ids, &opts, &mut Vec::new(), &stop).unwrap()
}

#[test]
fn chat_two_turns_reuse_the_cache_on_smollm2() {
    if !Path::new(SMOLLM2).is_file() {
        eprintln!("skipping chat_two_turns_reuse_the_cache_on_smollm2: {SMOLLM2} is absent");
        return;
    }
    if !ptys_or_skip("chat_two_turns_reuse_the_cache_on_smollm2") {
        return;
    }
    let file = GgufFile::open(SMOLLM2).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let model = Model::load(&file).unwrap();
    let ids_of = |msgs: &[ChatMessage]| {
        generate::encode_prompt(&tok, &generate::render_chat(&tok, None, msgs).unwrap(), true).unwrap()
    };
    let (q1, q2, q3) = ("What is the capital of France? Answer in one sentence.", "And of Italy?", "Name three colors.");

    let mut p = Pty::spawn(&["chat", SMOLLM2, "--temp", "0", "-n", "24", "--device", "cpu"], &[]);
    p.expect("> ");
    p.send(&format!("{q1}\n"));
    p.expect(&format!("{q1}\n"));
    let mut msgs = vec![ChatMessage::new("user", q1)];
    let ids1 = ids_of(&msgs);
    let g1 = reply(&model, &tok, &ids1, 24);
    let (cached, new, _, shown) = stats_after(&mut p);
    assert!(g1.text.contains("Paris"), "{}", g1.text);
    assert_eq!(shown.trim_end(), g1.text.trim_end());
    assert_eq!((cached, new), (0, ids1.len()));

    // turn 2: the history re-rendered; the cache holds turn 1's prompt and the reply's evaluated tokens
    p.expect("> ");
    p.send(&format!("{q2}\n"));
    p.expect(&format!("{q2}\n"));
    msgs.push(ChatMessage::new("assistant", g1.text.clone()));
    msgs.push(ChatMessage::new("user", q2));
    let ids2 = ids_of(&msgs);
    let in_cache: Vec<u32> = ids1.iter().chain(&g1.tokens).copied().take(g1.n_past).collect();
    let want_cached = in_cache.iter().zip(&ids2).take_while(|(a, b)| a == b).count();
    assert!(want_cached > ids1.len(), "the reply's tokens are reused");
    let (cached, new, line, shown) = stats_after(&mut p);
    assert!(shown.contains("Rome"), "{shown}");
    // the same reply as the whole history evaluated from scratch
    assert_eq!(shown.trim_end(), reply(&model, &tok, &ids2, 24).text.trim_end());
    assert_eq!((cached, new), (want_cached, ids2.len() - want_cached), "{line}");
    assert!(new < 20, "only the new turn is evaluated: {line}");

    // /reset: nothing cached, the next turn is a conversation of one message
    p.expect("> ");
    p.send("/reset\n");
    p.expect("[conversation cleared]");
    p.expect("> ");
    p.send(&format!("{q3}\n"));
    let (cached, new, _) = stats(&mut p);
    assert_eq!((cached, new), (0, ids_of(&[ChatMessage::new("user", q3)]).len()));
    p.expect("> ");
    p.send("/exit\n");
    assert_eq!(p.wait().code(), Some(0), "{}", p.transcript());
}

#[test]
fn progress_bars_are_drawn_on_a_terminal_only() {
    if !ptys_or_skip("progress_bars_are_drawn_on_a_terminal_only") {
        return;
    }
    let out = TempFile::new("synth.gguf");
    let args = ["synth", out.path(), "--preset", "tiny", "--type", "Q4_0"];
    // shown at once instead of after half a second, so that a tiny model shows them
    let env = [("HOST_PROGRESS_DELAY_MS", "0")];
    let mut p = Pty::spawn(&args, &env);
    assert_eq!(p.wait().code(), Some(0));
    p.expect("writing weights [");

    let mut p = Pty::spawn(&["run", out.path(), "-p", "hi", "-n", "1", "--device", "cpu"], &env);
    assert_eq!(p.wait().code(), Some(0), "{}", p.transcript());
    p.expect("reading weights [");

    // the same commands with stderr a pipe: no bar
    for args in [&args[..], &["run", out.path(), "-p", "hi", "-n", "1", "--device", "cpu"]] {
        let o = Command::new(env!("CARGO_BIN_EXE_host")).args(args).envs(env).env("TERM", "xterm").output().unwrap();
        assert!(o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains(" weights ["), "{err}");
    }
}
