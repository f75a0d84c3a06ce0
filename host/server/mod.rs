//! `host serve`: an OpenAI-compatible HTTP server.
//!
//! ```text
//! client --HTTP--> http (axum: routes, auth, limits, wire format) --Job--> engine (worker thread, N sequences)
//!        <--JSON / SSE-- http <--Event (tokens, done, failed)----------------- engine
//! ```
//! `engine` is the interface and the GPU's single-sequence slots, `batched` the CPU's continuous batching over
//! the many-sequence forward; `api` holds the request and response bodies; `chat.html` is the chat page served
//! at `/`.

pub mod api;
mod batched;
pub mod engine;
pub mod http;
