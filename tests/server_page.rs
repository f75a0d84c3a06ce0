//! The chat page of `host serve` in headless Chromium, driven by scripts/chat-page-check.py (DevTools protocol
//! over a pipe): two messages typed and sent, each reply streamed into the page (seen growing), equal to the
//! API's answer for the same conversation, the statistics line with tokens/s, the conversation kept. Skips with
//! a reason when python3 or Chromium is absent. `CHAT_PAGE_SCREENSHOT=FILE` keeps the screenshot.

#[path = "support/server.rs"]
mod server;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use server::*;

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd).arg(arg).output().is_ok_and(|o| o.status.success())
}

#[test]
fn chat_page_streams_replies_in_headless_chromium() {
    if !have("python3", "--version") {
        eprintln!("skipping chat_page_streams_replies_in_headless_chromium: no python3");
        return;
    }
    let chromium = ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|c| have(c, "--version"));
    if chromium.is_none() && std::env::var_os("CHROMIUM").is_none() {
        eprintln!("skipping chat_page_streams_replies_in_headless_chromium: no chromium (apt-get install chromium)");
        return;
    }
    // SmolLM2 when present (a readable screenshot), else the tiny model slowed down so that streaming shows
    let key = "sk-page";
    let (s, extra_note) = match smollm2_or_skip("chat page on SmolLM2 (using the tiny model)") {
        Some(m) => (Server::start(&m, &["--api-key", key, "--ctx-size", "512"]), "SmolLM2"),
        None => {
            let (m, t) = tiny_model();
            (
                Server::start(&m, &["--api-key", key, "--chat-template", t.to_str().unwrap(), "--step-delay-ms", "15"]),
                "tiny",
            )
        }
    };
    let shot = std::env::temp_dir().join(format!("chat-page-{}.png", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/chat-page-check.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(format!("http://{}", s.addr))
        .args(["--message", "What is the capital of France?", "--message", "And of Germany?"])
        .args(["--api-key", key, "--max-tokens", "24", "--timeout", "90", "--screenshot"])
        .arg(&shot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{extra_note}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&stdout).unwrap();
    let turns = r["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2);
    // the page's conversation: user, assistant, user, assistant; each reply equal to the API's for the same turns
    let conv = r["conversation"].as_array().unwrap();
    assert_eq!(conv.len(), 4, "{r}");
    for (i, t) in turns.iter().enumerate() {
        assert_eq!(t["state"], "done", "{t}");
        assert!(t["partials"].as_u64().unwrap() >= 2, "turn {i} was not seen streaming: {t}");
        assert!(t["stats"].as_str().unwrap().contains("tokens/s"), "{t}");
        let api = request(
            &s.addr,
            "POST",
            "/v1/chat/completions",
            &[("Authorization", &format!("Bearer {key}"))],
            json!({"messages": conv[..2 * i + 1], "temperature": 0, "max_tokens": 24}).to_string().as_bytes(),
        );
        assert_eq!(api.status, 200);
        assert_eq!(t["reply"], api.json()["choices"][0]["message"]["content"], "turn {i}");
        assert_eq!(conv[2 * i + 1]["content"], t["reply"]);
    }
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    if let Some(keep) = std::env::var_os("CHAT_PAGE_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    let _ = std::fs::remove_file(&shot);
}
