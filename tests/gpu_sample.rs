//! The GPU sampling chain (`backend::cuda_sample::GpuSampler`) against its CPU twin (`sampler::Sampler`) on
//! seeded random logits: greedy ids, the set of tokens each chain can draw and their probabilities, empirical
//! frequencies of many seeded draws, the penalty history, seeds, CUDA-graph capture, and the time per sample.
//! Skips with a printed reason when no CUDA device (or no kernel build) is present.

mod common;

use common::{cuda_or_skip, Rng};
use host::backend::cuda::Cuda;
use host::backend::cuda_sample::{GpuSampler, SamplePath};
use host::sampler::{Sampler, SamplingParams};

/// Every step off, temperature 1: the plain softmax draw.
fn plain(seed: u64) -> SamplingParams {
    SamplingParams::plain(seed)
}

/// The CPU chain's distribution as a dense vector.
fn cpu_dense(cpu: &mut Sampler, logits: &[f32]) -> Vec<f64> {
    let mut dense = vec![0.0; logits.len()];
    for (id, p) in cpu.distribution(&mut logits.to_vec()) {
        dense[id as usize] += p;
    }
    dense
}

/// One GPU sample with its debug distribution: (id, dense probabilities).
fn gpu_dense(gpu: &Cuda, s: &mut GpuSampler, logits: &[f32]) -> (u32, Vec<f32>) {
    let x = gpu.upload(logits).unwrap();
    let mut out = gpu.zeros::<u32>(1).unwrap();
    let mut probs = gpu.zeros::<f32>(logits.len()).unwrap();
    s.sample_debug(gpu, &x, &mut out, &mut probs).unwrap();
    (gpu.download(&out).unwrap()[0], gpu.download(&probs).unwrap())
}

/// The GPU may draw exactly the tokens the CPU keeps (up to those the CPU gives < 1e-10, which fixed point
/// rounds to 0), with probabilities within 1e-4, and the drawn id is one of them. Returns the kept count.
fn assert_same_distribution(what: &str, id: u32, gpu: &[f32], cpu: &[f64]) -> usize {
    let mut kept = 0;
    let mut max_err = 0.0f64;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(g >= 0.0, "{what}: negative probability {g} at {i}");
        if c > 0.0 {
            kept += 1;
        }
        assert!(g == 0.0 || c > 0.0, "{what}: token {i} drawable on the GPU ({g}) but removed by the CPU chain");
        assert!(g > 0.0 || c < 1e-10, "{what}: token {i} kept by the CPU chain (p {c}) but removed on the GPU");
        max_err = max_err.max((g as f64 - c).abs());
    }
    let sum: f64 = gpu.iter().map(|&g| g as f64).sum();
    assert!((sum - 1.0).abs() < 1e-4, "{what}: GPU probabilities sum to {sum}");
    assert!(max_err < 1e-4, "{what}: probabilities differ by {max_err}");
    assert!(gpu[id as usize] > 0.0, "{what}: drew token {id}, which has probability 0");
    kept
}

#[test]
fn greedy_matches_cpu_argmax() {
    let Some(gpu) = cuda_or_skip("greedy_matches_cpu_argmax") else { return };
    let mut rng = Rng::new(11);
    let params = SamplingParams { temperature: 0.0, ..SamplingParams::default() };
    let mut checked = 0;
    for vocab in [1, 7, 1000, 1001, 4096, 4097, 49152, 262_144] {
        let mut g = GpuSampler::new(&gpu, &params, vocab).unwrap();
        assert_eq!(g.path(), SamplePath::TopK);
        let mut cpu = Sampler::new(params.clone());
        for row in 0..4 {
            let mut logits = rng.vec(vocab, -20.0, 20.0);
            if row == 1 {
                // coarse values: many ties, the lowest id must win
                logits.iter_mut().for_each(|l| *l = (*l / 4.0).floor());
            }
            if row == 2 && vocab > 10 {
                logits[3] = f32::NAN; // a NaN never wins
                logits[vocab - 1] = 25.0; // the max in the last (short) chunk
            }
            let want = cpu.sample(&mut logits.clone());
            let (got, probs) = gpu_dense(&gpu, &mut g, &logits);
            assert_eq!(got, want, "vocab {vocab} row {row}");
            assert_eq!(probs[got as usize], 1.0);
            checked += 1;
        }
    }
    println!("greedy: {checked} rows equal the CPU argmax");
}

/// (name, params) of the chain configurations compared below.
fn configs() -> Vec<(&'static str, SamplingParams)> {
    vec![
        ("temperature 1", plain(1)),
        ("temperature 0.5", SamplingParams { temperature: 0.5, ..plain(2) }),
        ("temperature 1.7", SamplingParams { temperature: 1.7, ..plain(3) }),
        ("top_k 2", SamplingParams { top_k: 2, ..plain(4) }),
        ("top_k 40", SamplingParams { top_k: 40, ..plain(5) }),
        ("top_k 1024", SamplingParams { top_k: 1024, temperature: 0.8, ..plain(6) }),
        ("top_p 0.5", SamplingParams { top_p: 0.5, ..plain(7) }),
        ("top_p 0.95", SamplingParams { top_p: 0.95, temperature: 0.7, ..plain(8) }),
        ("min_p 0.05", SamplingParams { min_p: 0.05, ..plain(9) }),
        ("min_p 0.3 + top_p 0.99", SamplingParams { min_p: 0.3, top_p: 0.99, ..plain(10) }),
        ("top_k 100 + top_p 0.8", SamplingParams { top_k: 100, top_p: 0.8, ..plain(11) }),
        ("top_k 50 + min_p 0.2", SamplingParams { top_k: 50, min_p: 0.2, temperature: 1.3, ..plain(12) }),
        ("top_k 200 + typical 0.7", SamplingParams { top_k: 200, typical_p: 0.7, ..plain(13) }),
        (
            "top_k 64 + typical 0.9 + top_p 0.9 + min_p 0.05",
            SamplingParams { top_k: 64, typical_p: 0.9, top_p: 0.9, min_p: 0.05, temperature: 0.9, ..plain(14) },
        ),
        ("top_k 30 + typical 0.5, greedy", SamplingParams { top_k: 30, typical_p: 0.5, temperature: 0.0, ..plain(15) }),
        ("defaults", SamplingParams { seed: 16, ..SamplingParams::default() }),
        (
            "logit bias",
            SamplingParams { logit_bias: vec![(5, 4.0), (6, f32::NEG_INFINITY), (7, -2.0)], top_p: 0.9, ..plain(17) },
        ),
        (
            "logit bias + top_k",
            SamplingParams { logit_bias: vec![(5, 4.0), (6, f32::NEG_INFINITY), (900, 30.0)], top_k: 10, ..plain(18) },
        ),
    ]
}

#[test]
fn kept_sets_and_probabilities_match_cpu() {
    let Some(gpu) = cuda_or_skip("kept_sets_and_probabilities_match_cpu") else { return };
    let mut rng = Rng::new(12);
    let mut cases = 0;
    for vocab in [1000, 4099, 49152, 262_144] {
        for (name, params) in configs() {
            let mut g = GpuSampler::new(&gpu, &params, vocab).unwrap();
            let mut cpu = Sampler::new(params.clone());
            // rows: logits uniform in [-6, 6) (flat: the top_p cut lies deep in the vocabulary); a peaked
            // model-like row (a few tokens far above a broad tail); on the small vocabularies a row of whole numbers
            // (thousands of ties, broken by the lowest id in top_k and top_p; fewer than SAMPLE_GATHER_CAP per
            // value, so the full-vocabulary top_p cut is still exact)
            let rows = if vocab <= 4099 { 3 } else { 2 };
            for row in 0..rows {
                let mut logits = rng.vec(vocab, -6.0, 6.0);
                if row == 1 {
                    for _ in 0..8 {
                        let i = (rng.next_u64() % vocab as u64) as usize;
                        logits[i] = rng.uniform(8.0, 14.0);
                    }
                }
                if row == 2 {
                    logits.iter_mut().for_each(|l| *l = l.floor());
                }
                let (id, got) = gpu_dense(&gpu, &mut g, &logits);
                let want = cpu_dense(&mut cpu, &logits);
                let what = format!("{name}, vocab {vocab}, row {row}");
                let kept = assert_same_distribution(&what, id, &got, &want);
                if vocab == 49152 {
                    println!("{what}: {kept} tokens kept, drew {id}");
                }
                cases += 1;
            }
        }
    }
    println!("{cases} cases: kept sets equal, probabilities within 1e-4");
}

#[test]
fn crowded_threshold_bin_is_kept_whole() {
    let Some(gpu) = cuda_or_skip("crowded_threshold_bin_is_kept_whole") else { return };
    // 262144 logits in [0, 0.25): about 8192 tokens per 1/128-wide bin, more than SAMPLE_GATHER_CAP, so the
    // full-vocabulary top_p keeps the whole bin that holds the CPU's cut (documented restriction)
    let mut rng = Rng::new(18);
    let vocab = 262_144;
    let logits = rng.vec(vocab, 0.0, 0.25);
    let params = SamplingParams { top_p: 0.5, ..plain(19) };
    let mut g = GpuSampler::new(&gpu, &params, vocab).unwrap();
    let (id, got) = gpu_dense(&gpu, &mut g, &logits);
    let want = cpu_dense(&mut Sampler::new(params), &logits);
    let cpu_min = (0..vocab).filter(|&i| want[i] > 0.0).map(|i| logits[i]).fold(f32::INFINITY, f32::min);
    let (mut extra, mut kept) = (0, 0);
    for i in 0..vocab {
        if want[i] > 0.0 {
            assert!(got[i] > 0.0, "token {i} kept by the CPU chain but not on the GPU");
        }
        if got[i] > 0.0 {
            kept += 1;
            if want[i] == 0.0 {
                extra += 1;
                assert!(
                    logits[i] > cpu_min - 1.0 / 128.0 - 1e-6,
                    "extra token {i} ({}) outside the cut's bin",
                    logits[i]
                );
            }
        }
    }
    // the kept tokens' probabilities follow the softmax of their logits
    let z: f64 = (0..vocab).filter(|&i| got[i] > 0.0).map(|i| (logits[i] as f64).exp()).sum();
    let err = (0..vocab)
        .filter(|&i| got[i] > 0.0)
        .map(|i| (got[i] as f64 - (logits[i] as f64).exp() / z).abs())
        .fold(0.0, f64::max);
    assert!(err < 1e-6, "kept probabilities differ from the renormalized softmax by {err}");
    assert!(got[id as usize] > 0.0);
    assert!(extra > 0 && extra < 2 * 8192, "{extra} extra tokens");
    println!("crowded bin: CPU keeps {}, GPU {kept} ({extra} more, all within 1/128 of the cut)", kept - extra);
}

#[test]
fn penalties_follow_the_history_like_cpu() {
    let Some(gpu) = cuda_or_skip("penalties_follow_the_history_like_cpu") else { return };
    let mut rng = Rng::new(13);
    for (vocab, top_k) in [(500, 0), (500, 20), (49152, 0), (49152, 40)] {
        let params = SamplingParams {
            top_k,
            repeat_penalty: 1.5,
            repeat_last_n: 8,
            frequency_penalty: 0.3,
            presence_penalty: 0.2,
            top_p: 0.95,
            ..plain(21)
        };
        let mut g = GpuSampler::new(&gpu, &params, vocab).unwrap();
        let mut cpu = Sampler::new(params.clone());
        // a prompt longer than the window, with repeats, so that counts > 1 and old tokens leave
        let prompt: Vec<u32> = (0..21).map(|i| if i % 3 == 0 { 4 } else { (rng.next_u64() % 12) as u32 }).collect();
        for &t in &prompt {
            cpu.accept(t);
        }
        g.accept_prompt(&gpu, &prompt[..5]).unwrap();
        g.accept_prompt(&gpu, &prompt[5..]).unwrap(); // two batches: the second evicts part of the first
        let state = g.state(&gpu).unwrap();
        assert_eq!((state.hist_len, state.step), (8, 0));
        // logits where the penalized tokens matter: ids 0..12 on top
        let mut logits = rng.vec(vocab, -4.0, 0.0);
        for (i, l) in logits.iter_mut().take(12).enumerate() {
            *l = if i % 2 == 0 { 3.0 } else { -0.5 };
        }
        for step in 0..12 {
            let (id, got) = gpu_dense(&gpu, &mut g, &logits);
            let want = cpu_dense(&mut cpu, &logits);
            assert_same_distribution(&format!("penalties vocab {vocab} top_k {top_k} step {step}"), id, &got, &want);
            cpu.accept(id); // the GPU appended it itself
        }
        let state = g.state(&gpu).unwrap();
        assert_eq!((state.hist_len, state.step), (8, 12));
    }
    println!("penalties: 4 configurations x 12 steps equal the CPU chain");
}

/// Frequencies of `n` GPU draws (written on the device into one buffer, downloaded once).
fn gpu_frequencies(gpu: &Cuda, params: &SamplingParams, logits: &[f32], n: usize) -> Vec<f64> {
    let mut g = GpuSampler::new(gpu, params, logits.len()).unwrap();
    let x = gpu.upload(logits).unwrap();
    let mut out = gpu.zeros::<u32>(n).unwrap();
    for i in 0..n {
        g.sample_at(gpu, &x, &mut out, i, None).unwrap();
    }
    let mut f = vec![0.0; logits.len()];
    for id in gpu.download(&out).unwrap() {
        f[id as usize] += 1.0 / n as f64;
    }
    f
}

#[test]
fn empirical_distribution_matches_cpu_probabilities() {
    let Some(gpu) = cuda_or_skip("empirical_distribution_matches_cpu_probabilities") else { return };
    const N: usize = 20_000;
    let mut rng = Rng::new(14);
    let small = rng.vec(24, -2.0, 2.0);
    // 3 chunks, mass on a few tokens spread over all of them (the draw must find the right chunk)
    let mut spread = rng.vec(10_000, -8.0, -2.0);
    for (i, l) in [(3usize, 2.0f32), (4095, 1.5), (4096, 1.0), (6000, 2.2), (9999, 0.5)] {
        spread[i] = l;
    }
    let cases: Vec<(&str, SamplingParams, &[f32])> = vec![
        ("plain", plain(31), &small),
        ("temperature 0.6 + top_k 6", SamplingParams { temperature: 0.6, top_k: 6, ..plain(32) }, &small),
        ("top_p 0.8 + min_p 0.1", SamplingParams { top_p: 0.8, min_p: 0.1, ..plain(33) }, &small),
        ("top_k 10 + typical 0.8", SamplingParams { top_k: 10, typical_p: 0.8, ..plain(34) }, &small),
        ("spread over chunks", SamplingParams { temperature: 1.2, ..plain(35) }, &spread),
        ("spread, top_p 0.9", SamplingParams { top_p: 0.9, ..plain(36) }, &spread),
    ];
    for (name, params, logits) in cases {
        let want = cpu_dense(&mut Sampler::new(params.clone()), logits);
        let got = gpu_frequencies(&gpu, &params, logits, N);
        let err = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
        let never = got.iter().zip(&want).filter(|(&g, &w)| g > 0.0 && w == 0.0).count();
        println!("{name}: {N} draws, max |freq - p| = {err:.4}");
        assert!(err < 0.01, "{name}: frequencies differ from the CPU probabilities by {err}");
        assert_eq!(never, 0, "{name}: drew tokens the CPU chain removes");
    }
}

#[test]
fn same_seed_reproduces_and_different_seeds_differ() {
    let Some(gpu) = cuda_or_skip("same_seed_reproduces_and_different_seeds_differ") else { return };
    let mut rng = Rng::new(15);
    let vocab = 49152;
    let logits = rng.vec(vocab, -3.0, 3.0);
    let x = gpu.upload(&logits).unwrap();
    for params in [
        SamplingParams { top_p: 0.95, ..plain(42) },
        SamplingParams { seed: 42, repeat_penalty: 1.3, ..SamplingParams::default() },
    ] {
        let run = |g: &mut GpuSampler| {
            let mut out = gpu.zeros::<u32>(100).unwrap();
            for i in 0..100 {
                g.sample_at(&gpu, &x, &mut out, i, None).unwrap();
            }
            gpu.download(&out).unwrap()
        };
        let mut a = GpuSampler::new(&gpu, &params, vocab).unwrap();
        let first = run(&mut a);
        assert_eq!(first, run(&mut GpuSampler::new(&gpu, &params, vocab).unwrap()), "same seed");
        let other = SamplingParams { seed: 43, ..params.clone() };
        let second = run(&mut GpuSampler::new(&gpu, &other, vocab).unwrap());
        assert!(first.iter().zip(&second).filter(|(a, b)| a != b).count() > 50, "seeds 42 and 43 agree too often");
        a.reset(&gpu).unwrap();
        assert_eq!(first, run(&mut a), "reset restarts the RNG and the history");
        let distinct = {
            let mut d = first.clone();
            d.sort_unstable();
            d.dedup();
            d.len()
        };
        assert!(distinct > 20, "only {distinct} distinct tokens in 100 draws of a flat distribution");
    }
}

#[test]
fn sampling_step_replays_in_a_cuda_graph() {
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    let Some(gpu) = cuda_or_skip("sampling_step_replays_in_a_cuda_graph") else { return };
    let mut rng = Rng::new(16);
    let vocab = 49152;
    let logits = gpu.upload(&rng.vec(vocab, -3.0, 3.0)).unwrap();
    for params in [
        SamplingParams { seed: 5, repeat_penalty: 1.2, ..SamplingParams::default() },
        SamplingParams { top_p: 0.9, frequency_penalty: 0.5, ..plain(6) },
    ] {
        // eager reference: 8 steps
        let mut eager = GpuSampler::new(&gpu, &params, vocab).unwrap();
        let mut out = gpu.zeros::<u32>(8).unwrap();
        for i in 0..8 {
            eager.sample_at(&gpu, &logits, &mut out, i, None).unwrap();
        }
        let want = gpu.download(&out).unwrap();
        // the same steps as one captured graph launched 8 times; the token goes to `next`
        let mut g = GpuSampler::new(&gpu, &params, vocab).unwrap();
        let (mut tok, mut next) = (gpu.zeros::<u32>(1).unwrap(), gpu.zeros::<u32>(1).unwrap());
        g.sample(&gpu, &logits, &mut tok, Some(&mut next)).unwrap(); // loads the kernels outside the capture
        g.reset(&gpu).unwrap();
        gpu.synchronize().unwrap();
        gpu.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).unwrap();
        g.sample(&gpu, &logits, &mut tok, Some(&mut next)).unwrap();
        let graph = gpu.stream.end_capture(CUgraphInstantiate_flags(0)).unwrap().expect("a captured graph");
        let mut got = Vec::new();
        for _ in 0..8 {
            graph.launch().unwrap();
            let (t, n) = (gpu.download(&tok).unwrap()[0], gpu.download(&next).unwrap()[0]);
            assert_eq!(t, n);
            got.push(t);
        }
        assert_eq!(got, want, "graph replays follow the eager steps (RNG counter and history on the device)");
        assert_eq!(g.state(&gpu).unwrap().step, 8);
    }
    println!("graph: 2 configurations x 8 replays equal the eager steps");
}

#[test]
fn unsupported_and_bad_calls_are_clear_errors() {
    let Some(gpu) = cuda_or_skip("unsupported_and_bad_calls_are_clear_errors") else { return };
    let e = GpuSampler::new(&gpu, &SamplingParams { top_k: 5000, ..plain(0) }, 49152).err().unwrap().to_string();
    assert!(e.contains("top_k 5000") && e.contains("CPU sampler"), "{e}");
    let e = GpuSampler::new(&gpu, &SamplingParams { typical_p: 0.5, ..plain(0) }, 49152).err().unwrap().to_string();
    assert!(e.contains("typical_p"), "{e}");
    assert!(GpuSampler::supports(&SamplingParams::default(), 262_144).is_ok());
    let mut g = GpuSampler::new(&gpu, &plain(0), 1000).unwrap();
    let short = gpu.zeros::<f32>(999).unwrap();
    let mut out = gpu.zeros::<u32>(1).unwrap();
    let e = g.sample(&gpu, &short, &mut out, None).unwrap_err().to_string();
    assert!(e.contains("999") && e.contains("1000"), "{e}");
    let mut g = GpuSampler::new(&gpu, &SamplingParams { repeat_penalty: 1.1, ..plain(0) }, 1000).unwrap();
    let e = g.accept_prompt(&gpu, &[1, 2, 1000]).unwrap_err().to_string();
    assert!(e.contains("token 1000"), "{e}");
}

#[test]
fn time_per_sample() {
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    let Some(gpu) = cuda_or_skip("time_per_sample") else { return };
    const ITERS: usize = 200;
    const PER_GRAPH: usize = 50;
    let mut rng = Rng::new(17);
    println!("time per sample: eager launches (host launch rate included) and replays of a CUDA graph of {PER_GRAPH} samples");
    for vocab in [49152, 262_144] {
        // model-like logits: a broad tail and a few strong tokens
        let mut logits = rng.vec(vocab, -10.0, 5.0);
        for _ in 0..20 {
            let i = (rng.next_u64() % vocab as u64) as usize;
            logits[i] = rng.uniform(10.0, 15.0);
        }
        let x = gpu.upload(&logits).unwrap();
        let configs = [
            ("greedy", SamplingParams { temperature: 0.0, ..plain(1) }),
            (
                "defaults (top_k 40, top_p 0.95, min_p 0.05, temp 0.8)",
                SamplingParams { seed: 1, ..SamplingParams::default() },
            ),
            (
                "defaults + repeat_penalty 1.1",
                SamplingParams { seed: 1, repeat_penalty: 1.1, ..SamplingParams::default() },
            ),
            ("top_k 1024 + typical 0.9", SamplingParams { top_k: 1024, typical_p: 0.9, ..plain(1) }),
            ("full vocab: top_p 0.95, min_p 0.05", SamplingParams { top_p: 0.95, min_p: 0.05, ..plain(1) }),
            ("full vocab: top_p 0.95 + penalties", SamplingParams { top_p: 0.95, repeat_penalty: 1.1, ..plain(1) }),
            ("full vocab: temperature only", plain(1)),
        ];
        for (name, params) in configs {
            let mut g = GpuSampler::new(&gpu, &params, vocab).unwrap();
            g.accept_prompt(&gpu, &[1, 2, 3, 4, 5]).unwrap();
            let mut out = gpu.zeros::<u32>(1).unwrap();
            for _ in 0..10 {
                g.sample(&gpu, &x, &mut out, None).unwrap();
            }
            let start = gpu.timed_event().unwrap();
            for _ in 0..ITERS {
                g.sample(&gpu, &x, &mut out, None).unwrap();
            }
            let end = gpu.timed_event().unwrap();
            end.synchronize().unwrap();
            let eager = start.elapsed_ms(&end).unwrap() as f64 * 1000.0 / ITERS as f64;
            gpu.synchronize().unwrap();
            gpu.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).unwrap();
            for _ in 0..PER_GRAPH {
                g.sample(&gpu, &x, &mut out, None).unwrap();
            }
            let graph = gpu.stream.end_capture(CUgraphInstantiate_flags(0)).unwrap().expect("a captured graph");
            graph.launch().unwrap();
            let start = gpu.timed_event().unwrap();
            for _ in 0..ITERS / PER_GRAPH {
                graph.launch().unwrap();
            }
            let end = gpu.timed_event().unwrap();
            end.synchronize().unwrap();
            let graphed = start.elapsed_ms(&end).unwrap() as f64 * 1000.0 / ITERS as f64;
            println!(
                "vocab {vocab:>6} {name:<55} {:?} path: eager {eager:6.1} us, graph {graphed:6.1} us/sample",
                g.path()
            );
        }
    }
}
