//! Tokenizer throughput: MB/s of English text encoded on one core, for the byte-level BPE vocab of
//! SmolLM2 and the SentencePiece vocab of Gemma-3 (each skipped when its model file is absent).
//! Bytes per second = text length / time per `encode` call (criterion's Throughput::Bytes).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use host::tokenizer::{Tokenizer, TokenizerOptions};

/// An original English paragraph (about 1.3 kB), repeated to `n` bytes.
fn english(n: usize) -> String {
    const PARA: &str = "The harbour was quiet when the fishing boats came back in the late afternoon. \
Most of the crew had been awake since four o'clock, and they moved slowly along the pier, carrying crates of \
mackerel and cod to the market hall. An old man sat on a bench near the lighthouse, reading yesterday's \
newspaper and complaining to nobody in particular about the price of bread, which had gone up again by 12 \
percent. Children ran between the stacks of nets, shouting, while their parents argued about whether the \
weather would hold until Sunday. \"It won't,\" said the harbour master, who had seen forty winters on this \
coast and trusted his knees more than the forecast. She was right, of course: by nine o'clock the wind had \
turned, the rain was coming sideways off the sea, and everyone who'd planned a walk along the cliffs \
decided that a warm kitchen and a second cup of tea were the better choice. Later that week, the council \
published a report (37 pages, with tables and maps) describing how the town could protect its sea wall \
for the next fifty years. Few people read it; fewer still agreed with it. Yet the engineers' arguments \
were careful and, in the end, persuasive: without repairs, the old wall would fail within a decade.\n\n";
    let mut s = String::with_capacity(n + PARA.len());
    while s.len() < n {
        s.push_str(PARA);
    }
    s
}

fn load(path: &str) -> Option<Tokenizer> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if !path.exists() {
        eprintln!("skipped: {} is absent", path.display());
        return None;
    }
    let data = host::tokenizer::dev_gguf::data_from_path(&path).ok()?;
    Tokenizer::from_data(data, &TokenizerOptions::default()).ok()
}

fn bench(c: &mut Criterion) {
    let models: Vec<(&str, Tokenizer)> = [
        ("smollm2_bpe", "models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        ("gemma3_spm", "models/gemma-3-270m-q4_k_m.gguf"),
    ]
    .into_iter()
    .filter_map(|(name, path)| load(path).map(|t| (name, t)))
    .collect();
    // one paragraph per call: every word is new to the call's word cache (the cold, prompt-sized case);
    // 1 MiB per call: the paragraph repeats, so most words come from the cache (the long-document case)
    let para = english(1);
    let doc = english(1 << 20);
    for (group, text, samples) in [("encode_english_paragraph", &para, 50), ("encode_english_1MiB", &doc, 10)] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.sample_size(samples);
        for (name, tok) in &models {
            g.bench_function(*name, |b| b.iter(|| tok.encode(std::hint::black_box(text), true, true).unwrap()));
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
