//! `host serve` driven by a client nobody here wrote: the `async-openai` crate. Chat and text completions,
//! streamed and not; streamed text equals the non-streamed text at temperature 0; stop strings; max_tokens;
//! usage; logprobs; API errors surface as the client's ApiError. On the tiny synthetic model, and on SmolLM2
//! when models/ has it.

#[path = "support/server.rs"]
mod server;

use std::path::Path;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    ChatCompletionStreamOptions, CreateChatCompletionRequest, FinishReason, Prompt, StopConfiguration,
};
use async_openai::types::completions::CreateCompletionRequest;
use async_openai::Client;
use futures_util::StreamExt;
use server::*;

fn client(s: &Server, key: &str) -> Client<OpenAIConfig> {
    Client::with_config(OpenAIConfig::new().with_api_base(format!("http://{}/v1", s.addr)).with_api_key(key))
}

fn chat_request(model: &str, user: &str, max_tokens: u32) -> CreateChatCompletionRequest {
    CreateChatCompletionRequest {
        model: model.into(),
        messages: vec![
            ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage::from(
                "You are a helpful assistant.",
            )),
            ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage::from(user)),
        ],
        temperature: Some(0.0),
        max_completion_tokens: Some(max_tokens),
        ..Default::default()
    }
}

/// Streamed chat: the concatenated deltas, the finish reason and the usage chunk's numbers.
async fn chat_streamed(
    c: &Client<OpenAIConfig>,
    mut req: CreateChatCompletionRequest,
) -> (String, Option<FinishReason>, (u32, u32, u32)) {
    req.stream = Some(true);
    req.stream_options = Some(ChatCompletionStreamOptions { include_usage: Some(true), ..Default::default() });
    let mut stream = c.chat().create_stream(req).await.expect("create_stream");
    let (mut text, mut finish, mut usage) = (String::new(), None, None);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("stream chunk");
        for ch in &chunk.choices {
            if let Some(t) = &ch.delta.content {
                text += t;
            }
            if ch.finish_reason.is_some() {
                finish = ch.finish_reason;
            }
        }
        if let Some(u) = chunk.usage {
            assert!(chunk.choices.is_empty(), "the usage chunk has choices: []");
            usage = Some((u.prompt_tokens, u.completion_tokens, u.total_tokens));
        }
    }
    (text, finish, usage.expect("no usage chunk with include_usage"))
}

async fn check_model(model: &Path, extra: &[&str], name: &str) {
    let key = "sk-local";
    let mut args = vec!["--api-key", key, "--ctx-size", "512"];
    args.extend_from_slice(extra);
    let s = Server::start(model, &args);
    let c = client(&s, key);

    // chat, not streamed then streamed: same text, consistent usage
    let req = chat_request(name, "What is the capital of France?", 24);
    let r = c.chat().create(req.clone()).await.expect("chat");
    let text = r.choices[0].message.content.clone().unwrap_or_default();
    let u = r.usage.clone().expect("usage");
    assert_eq!(u.prompt_tokens + u.completion_tokens, u.total_tokens);
    assert!(u.completion_tokens >= 1 && u.completion_tokens <= 24);
    let (stext, finish, (sp, sc, st)) = chat_streamed(&c, req.clone()).await;
    assert_eq!(stext, text, "streamed and non-streamed chat differ at temperature 0");
    assert_eq!((sp, sc, st), (u.prompt_tokens, u.completion_tokens, u.total_tokens));
    assert_eq!(finish, r.choices[0].finish_reason);

    // max_tokens: exactly that many when the answer is longer
    let mut req5 = chat_request(name, "Write a long story about a dragon.", 5);
    req5.max_completion_tokens = None;
    #[allow(deprecated)] // the older field, which clients still send
    {
        req5.max_tokens = Some(5);
    }
    let r5 = c.chat().create(req5).await.expect("chat max_tokens");
    if r5.choices[0].finish_reason == Some(FinishReason::Length) {
        assert_eq!(r5.usage.unwrap().completion_tokens, 5);
    } else {
        assert!(r5.usage.unwrap().completion_tokens < 5);
    }

    // stop strings: cut before the first stop string, finish_reason stop, streamed the same
    let full = c.chat().create(chat_request(name, "Count from one to twenty.", 40)).await.expect("chat");
    let full_text = full.choices[0].message.content.clone().unwrap_or_default();
    let chars: Vec<char> = full_text.chars().collect();
    if chars.len() >= 6 {
        let stop: String = chars[3..5].iter().collect();
        let want = &full_text[..full_text.find(&stop).unwrap()];
        let mut sreq = chat_request(name, "Count from one to twenty.", 40);
        sreq.stop = Some(StopConfiguration::StringArray(vec![stop.clone(), "NEVER-SEEN".into()]));
        let r = c.chat().create(sreq.clone()).await.expect("chat stop");
        assert_eq!(r.choices[0].message.content.as_deref().unwrap_or(""), want, "stop {stop:?} in {full_text:?}");
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
        let (stext, sfinish, _) = chat_streamed(&c, sreq).await;
        assert_eq!(stext, want);
        assert_eq!(sfinish, Some(FinishReason::Stop));
    }

    // logprobs: the chosen (greedy) token is the most likely one
    let mut lreq = chat_request(name, "Hello!", 4);
    lreq.logprobs = Some(true);
    lreq.top_logprobs = Some(3);
    let r = c.chat().create(lreq).await.expect("chat logprobs");
    let lp = r.choices[0].logprobs.as_ref().and_then(|l| l.content.as_ref()).expect("logprobs.content");
    assert_eq!(lp.len() as u32, r.usage.unwrap().completion_tokens);
    for t in lp {
        assert_eq!(t.top_logprobs.len(), 3);
        assert!(t.logprob <= 0.0 && (t.logprob - t.top_logprobs[0].logprob).abs() < 1e-6);
    }

    // text completions, not streamed then streamed
    let creq = CreateCompletionRequest {
        model: name.into(),
        prompt: Prompt::String("The capital of France is".into()),
        max_tokens: Some(16),
        temperature: Some(0.0),
        ..Default::default()
    };
    let r = c.completions().create(creq.clone()).await.expect("completion");
    let ctext = r.choices[0].text.clone();
    let u = r.usage.unwrap();
    assert_eq!(u.prompt_tokens + u.completion_tokens, u.total_tokens);
    let mut stream = c.completions().create_stream(creq).await.expect("completion stream");
    let mut stext = String::new();
    while let Some(chunk) = stream.next().await {
        for ch in chunk.expect("chunk").choices {
            stext += &ch.text;
        }
    }
    assert_eq!(stext, ctext);

    // errors reach the client as OpenAI API errors
    let bad =
        Client::with_config(OpenAIConfig::new().with_api_base(format!("http://{}/v1", s.addr)).with_api_key("wrong"));
    match bad.chat().create(chat_request(name, "hi", 2)).await {
        Err(OpenAIError::ApiError(e)) => {
            assert_eq!(e.status_code.as_u16(), 401);
            assert!(e.api_error.message.contains("invalid API key"), "{e:?}");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    let mut two = chat_request(name, "hi", 2);
    two.n = Some(2);
    match c.chat().create(two).await {
        Err(OpenAIError::ApiError(e)) => {
            assert_eq!(e.status_code.as_u16(), 400);
            assert!(e.api_error.message.contains("n = 2"), "{e:?}");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_on_tiny_model() {
    let (model, tmpl) = tiny_model();
    check_model(&model, &["--chat-template", tmpl.to_str().unwrap()], "tiny").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_on_smollm2() {
    let Some(model) = smollm2_or_skip("openai_client_on_smollm2") else { return };
    check_model(&model, &[], "SmolLM2-135M-Instruct.Q4_1").await;
    // a real answer, not noise
    let s = Server::start(&model, &["--ctx-size", "512"]);
    let c = Client::with_config(OpenAIConfig::new().with_api_base(format!("http://{}/v1", s.addr)));
    let r = c.chat().create(chat_request("any", "What is the capital of France?", 24)).await.unwrap();
    let text = r.choices[0].message.content.clone().unwrap();
    assert!(text.contains("Paris"), "{text}");
}
