//! The OpenAI wire format: request bodies (with llama.cpp's extensions `top_k`, `min_p`, `repeat_penalty`,
//! `repeat_last_n`, `ignore_eos`), their checks, and the response and stream-chunk bodies.
//!
//! Unknown fields are ignored, as the OpenAI API does for clients newer than the server. Wrong types and out of
//! range values are 400 errors naming the field.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::sampler::SamplingParams;
use crate::server::engine::{FinishReason, TokenLogprob};
use crate::tokenizer::{ChatMessage, Tokenizer};

/// A 4xx/5xx answer: HTTP status, OpenAI error `type`, `code` and message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError { status: 400, kind: "invalid_request_error", code: "invalid_request", message: message.into() }
    }

    /// The body: `{"error": {"message", "type", "code", "param"}}`.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "code": self.code, "param": null}})
    }
}

/// `stop`: one string or a list.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `prompt`: a string, a list of one string, or token ids.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

/// Message `content`: a string, or a list of parts of which the `text` ones are joined.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug, Clone)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// `logprobs`: a bool for chat, a count for completions.
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(untagged)]
pub enum Logprobs {
    Flag(bool),
    Count(u32),
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// The body of `/v1/chat/completions` and `/v1/completions` (each uses its own of `messages` / `prompt`).
#[derive(Deserialize, Debug, Clone, Default)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub prompt: Option<Prompt>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Option<Stop>,
    pub seed: Option<u64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub logprobs: Option<Logprobs>,
    pub top_logprobs: Option<u32>,
    pub n: Option<u32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    // llama.cpp's extensions
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i64>,
    pub ignore_eos: Option<bool>,
}

/// Most alternatives `top_logprobs` may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;

impl CompletionRequest {
    /// Sampling parameters: llama-server's defaults (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05) where
    /// the request says nothing; a random seed unless `seed` is given.
    pub fn sampling(&self, n_vocab: usize) -> Result<SamplingParams, ApiError> {
        let d = SamplingParams::default();
        let mut logit_bias = Vec::new();
        for (k, &v) in self.logit_bias.iter().flatten() {
            let id: u32 =
                k.parse().map_err(|_| ApiError::bad_request(format!("logit_bias: key '{k}' is not a token id")))?;
            if !(-100.0..=100.0).contains(&v) {
                return Err(ApiError::bad_request(format!("logit_bias: {v} for token {id} is outside -100..=100")));
            }
            logit_bias.push((id, v));
        }
        logit_bias.sort_by_key(|&(id, _)| id);
        let top_k = match self.top_k {
            Some(k) if k < 0 => 0,
            Some(k) => k as usize,
            None => d.top_k,
        };
        let repeat_last_n = match self.repeat_last_n {
            Some(-1) => n_vocab.max(1 << 16), // llama.cpp: -1 = the whole context
            Some(n) if n < 0 => return Err(ApiError::bad_request(format!("repeat_last_n {n} must be >= -1"))),
            Some(n) => n as usize,
            None => d.repeat_last_n,
        };
        let p = SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k,
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            typical_p: 1.0,
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            repeat_last_n,
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            logit_bias,
            seed: self.seed.unwrap_or(d.seed),
        };
        if !(0.0..=2.0).contains(&p.temperature) {
            return Err(ApiError::bad_request(format!("temperature {} is outside 0..=2", p.temperature)));
        }
        for (name, v) in [("presence_penalty", p.presence_penalty), ("frequency_penalty", p.frequency_penalty)] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(ApiError::bad_request(format!("{name} {v} is outside -2..=2")));
            }
        }
        p.validate(n_vocab).map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(p)
    }

    /// `n`: only 1 is served.
    pub fn check_n(&self) -> Result<(), ApiError> {
        match self.n {
            None | Some(1) => Ok(()),
            Some(n) => {
                Err(ApiError::bad_request(format!("n = {n} is not supported: this server returns one choice (n = 1)")))
            }
        }
    }

    /// The requested token limit: `max_completion_tokens`, else `max_tokens`; None (or -1) = as many as fit.
    pub fn max_tokens(&self) -> Result<Option<usize>, ApiError> {
        match self.max_completion_tokens.or(self.max_tokens) {
            None | Some(-1) => Ok(None),
            Some(n) if n < 1 => {
                Err(ApiError::bad_request(format!("max_tokens {n} must be at least 1 (or -1: no limit)")))
            }
            Some(n) => Ok(Some(n as usize)),
        }
    }

    pub fn stops(&self) -> Result<Vec<String>, ApiError> {
        let v = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if v.len() > 16 {
            return Err(ApiError::bad_request(format!("stop: {} strings, at most 16", v.len())));
        }
        Ok(v.into_iter().filter(|s| !s.is_empty()).collect())
    }

    /// How many alternatives per token (None: no logprobs). Chat: `logprobs: true` + `top_logprobs`;
    /// completions: `logprobs: N`.
    pub fn logprobs(&self, chat: bool) -> Result<Option<usize>, ApiError> {
        let n = match (self.logprobs, chat) {
            (None | Some(Logprobs::Flag(false)), _) => return Ok(None),
            (Some(Logprobs::Flag(true)), true) => self.top_logprobs.unwrap_or(0),
            (Some(Logprobs::Count(n)), false) => n,
            (Some(Logprobs::Flag(true)), false) => 1,
            (Some(Logprobs::Count(_)), true) => {
                return Err(ApiError::bad_request("logprobs must be a boolean for chat completions (use top_logprobs)"))
            }
        };
        if n > MAX_TOP_LOGPROBS {
            return Err(ApiError::bad_request(format!("top_logprobs {n} is more than {MAX_TOP_LOGPROBS}")));
        }
        Ok(Some(n as usize))
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
    }

    /// The chat messages as the template takes them.
    pub fn chat_messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        let msgs = self.messages.as_ref().ok_or_else(|| ApiError::bad_request("'messages' is required"))?;
        if msgs.is_empty() {
            return Err(ApiError::bad_request("'messages' is empty"));
        }
        msgs.iter()
            .map(|m| {
                let content = match &m.content {
                    None => String::new(),
                    Some(Content::Text(s)) => s.clone(),
                    Some(Content::Parts(p)) => {
                        if let Some(bad) = p.iter().find(|p| p.kind != "text") {
                            return Err(ApiError::bad_request(format!(
                                "message content part of type '{}' is not supported (text only)",
                                bad.kind
                            )));
                        }
                        p.iter().filter_map(|p| p.text.as_deref()).collect::<Vec<_>>().join("")
                    }
                };
                Ok(ChatMessage::new(m.role.clone(), content))
            })
            .collect()
    }
}

/// Prompt token ids of a chat: the template rendered (`template` overrides the model's), special tokens parsed,
/// BOS added as the model asks unless the template wrote one.
pub fn chat_prompt(tok: &Tokenizer, template: Option<&str>, msgs: &[ChatMessage]) -> Result<Vec<u32>, ApiError> {
    let text = match template {
        Some(t) => tok.apply_template(t, msgs, true),
        None => tok.apply_chat_template(msgs, true),
    }
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut ids = tok.encode(&text, true, true).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(bos) = tok.bos() {
        if ids.len() >= 2 && ids[0] == bos && ids[1] == bos {
            ids.remove(0);
        }
    }
    Ok(ids)
}

/// Prompt token ids of a completion: text tokenized as `host run` does (BOS as the model asks, special tokens
/// parsed), or the ids as given.
pub fn completion_prompt(tok: &Tokenizer, p: Option<&Prompt>) -> Result<Vec<u32>, ApiError> {
    match p {
        None => Err(ApiError::bad_request("'prompt' is required")),
        Some(Prompt::Text(s)) => tok.encode(s, true, true).map_err(|e| ApiError::bad_request(e.to_string())),
        Some(Prompt::Texts(v)) if v.len() == 1 => {
            tok.encode(&v[0], true, true).map_err(|e| ApiError::bad_request(e.to_string()))
        }
        Some(Prompt::Texts(v)) => {
            Err(ApiError::bad_request(format!("'prompt' holds {} strings: one prompt per request is served", v.len())))
        }
        Some(Prompt::Tokens(ids)) => {
            let n = tok.vocab_size();
            match ids.iter().find(|&&t| t as usize >= n) {
                Some(bad) => Err(ApiError::bad_request(format!("prompt token {bad} is out of the vocabulary of {n}"))),
                None => Ok(ids.clone()),
            }
        }
    }
}

pub fn finish_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

pub fn usage(prompt: usize, cached: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// A token's text for logprobs (lossy UTF-8) and its bytes.
fn token_text(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let b = tok.token_bytes(id).to_vec();
    (String::from_utf8_lossy(&b).into_owned(), b)
}

/// Chat logprobs entries (`choices[].logprobs.content[]`).
pub fn chat_logprobs(tok: &Tokenizer, lps: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = lps
        .iter()
        .map(|lp| {
            let (t, b) = token_text(tok, lp.token);
            let top: Vec<Value> = lp
                .top
                .iter()
                .map(|&(id, l)| {
                    let (t, b) = token_text(tok, id);
                    json!({"token": t, "logprob": l, "bytes": b})
                })
                .collect();
            json!({"token": t, "logprob": lp.logprob, "bytes": b, "top_logprobs": top})
        })
        .collect();
    json!({ "content": content })
}

/// Completions logprobs (`choices[].logprobs`: tokens, token_logprobs, top_logprobs, text_offset), offsets
/// counted from `offset0` characters.
pub fn completion_logprobs(tok: &Tokenizer, lps: &[TokenLogprob], offset0: usize) -> Value {
    let mut offset = offset0;
    let (mut tokens, mut token_lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    for lp in lps {
        let (t, _) = token_text(tok, lp.token);
        offsets.push(offset);
        offset += t.chars().count();
        tokens.push(t);
        token_lps.push(lp.logprob);
        let m: serde_json::Map<String, Value> =
            lp.top.iter().map(|&(id, l)| (token_text(tok, id).0, json!(l))).collect();
        tops.push(Value::Object(m));
    }
    json!({"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> CompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn max_tokens_prefers_max_completion_tokens_and_minus_one_is_no_limit() {
        assert_eq!(req(json!({})).max_tokens().unwrap(), None);
        assert_eq!(req(json!({"max_tokens": -1})).max_tokens().unwrap(), None);
        assert_eq!(req(json!({"max_tokens": 7})).max_tokens().unwrap(), Some(7));
        assert_eq!(req(json!({"max_tokens": 7, "max_completion_tokens": 3})).max_tokens().unwrap(), Some(3));
        assert_eq!(req(json!({"max_tokens": 0})).max_tokens().unwrap_err().status, 400);
    }

    #[test]
    fn sampling_takes_llama_server_defaults_and_the_request_fields() {
        let d = SamplingParams::default();
        let p = req(json!({"seed": 5})).sampling(100).unwrap();
        assert_eq!((p.temperature, p.top_k, p.top_p, p.min_p, p.seed), (d.temperature, d.top_k, d.top_p, d.min_p, 5));
        let p = req(json!({"temperature": 0, "top_k": 3, "min_p": 0.2, "repeat_penalty": 1.1, "presence_penalty": 0.5,
                           "logit_bias": {"7": -100, "2": 3.5}}))
        .sampling(100)
        .unwrap();
        assert_eq!((p.temperature, p.top_k, p.min_p, p.repeat_penalty, p.presence_penalty), (0.0, 3, 0.2, 1.1, 0.5));
        assert_eq!(p.logit_bias, vec![(2, 3.5), (7, -100.0)]);
        for bad in [
            json!({"logit_bias": {"x": 1}}),
            json!({"logit_bias": {"100": 1}}),
            json!({"top_p": 1.5}),
            json!({"temperature": 3}),
            json!({"frequency_penalty": -3}),
            json!({"repeat_penalty": 0}),
        ] {
            assert_eq!(req(bad.clone()).sampling(100).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn logprobs_n_and_stop_forms() {
        assert_eq!(req(json!({"logprobs": true, "top_logprobs": 4})).logprobs(true).unwrap(), Some(4));
        assert_eq!(req(json!({"logprobs": false, "top_logprobs": 4})).logprobs(true).unwrap(), None);
        assert_eq!(req(json!({"logprobs": 3})).logprobs(false).unwrap(), Some(3));
        assert!(req(json!({"logprobs": 3})).logprobs(true).is_err());
        assert!(req(json!({"logprobs": true, "top_logprobs": 21})).logprobs(true).is_err());
        assert!(req(json!({"n": 1})).check_n().is_ok());
        assert!(req(json!({"n": 3})).check_n().unwrap_err().message.contains("n = 3"));
        assert_eq!(req(json!({"stop": "a"})).stops().unwrap(), ["a"]);
        assert_eq!(req(json!({"stop": ["a", "", "b"]})).stops().unwrap(), ["a", "b"]);
        assert!(req(json!({"stream_options": {"include_usage": true}})).include_usage());
    }

    #[test]
    fn message_content_as_text_or_text_parts() {
        let r = req(
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                             {"type": "text", "text": "b"}]},
                                        {"role": "assistant", "content": null}]}),
        );
        let m = r.chat_messages().unwrap();
        assert_eq!((m[0].content.as_str(), m[1].content.as_str()), ("ab", ""));
        let r = req(json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}));
        assert!(r.chat_messages().unwrap_err().message.contains("image_url"));
        assert!(req(json!({"messages": []})).chat_messages().is_err());
    }
}
