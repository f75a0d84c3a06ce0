//! Dev aid: compare our teacher-forced logits with llama.cpp's (scripts/llama-cpp-greedy/tf output + dump).
//! usage: logits_diff MODEL TF_STDOUT TF_DUMP [exact]   (KV=q8_0: a q8_0 cache, as tf with KV=q8_0)
//! Not built by default: `mkdir -p examples && cp scripts/llama-cpp-greedy/logits_diff.rs examples/ &&
//! cargo build --release --example logits_diff`.
use host::gguf::GgufFile;
use host::kv_cache::CacheType;
use host::model::{CpuForward, Forward, Model};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let file = GgufFile::open(&a[1]).unwrap();
    let model = Model::load(&file).unwrap();
    let text = std::fs::read_to_string(&a[2]).unwrap();
    let mut prompt = Vec::new();
    let mut comp = Vec::new();
    for l in text.lines() {
        if let Some(r) = l.strip_prefix("prompt ids") {
            prompt = r.split_whitespace().map(|s| s.parse::<u32>().unwrap()).collect();
        } else if l.contains(" want ") {
            let w: Vec<&str> = l.split_whitespace().collect();
            comp.push(w[2].parse::<u32>().unwrap());
        }
    }
    let dump = std::fs::read(&a[3]).unwrap();
    let theirs: Vec<f32> = dump.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let nv = model.n_vocab();
    let ct = if std::env::var("KV").as_deref() == Ok("q8_0") { CacheType::Q8_0 } else { CacheType::F16 };
    let mut fwd = CpuForward::new(&model, 4096, ct).unwrap();
    if a.len() > 4 {
        fwd.set_llama_rounding(false);
    }
    let mut logits = fwd.forward(&prompt, 0).unwrap().to_vec();
    let mut worst = 0.0f32;
    let argmax = |v: &[f32]| v.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0;
    for (pos, (i, &t)) in (prompt.len()..).zip(comp.iter().enumerate()) {
        let th = &theirs[i * nv..(i + 1) * nv];
        let d = logits.iter().zip(th).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let rms = (logits.iter().zip(th).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / nv as f64).sqrt();
        let (ao, at) = (argmax(&logits), argmax(th));
        println!("{i:3} maxdiff {d:.3e} rms {rms:.3e} argmax ours {ao} theirs {at}{}", if ao != at { "  <-- DIFF" } else { "" });
        worst = worst.max(d);
        logits = fwd.forward(&[t], pos).unwrap().to_vec();
    }
    println!("worst {worst:.3e}");
}
