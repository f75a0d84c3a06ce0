//! CPU kernels, the fallback backend and the GPU's oracle: mat-vec of one token against a 4096 x 4096 weight of
//! every type (exact f32 products, and llama.cpp's 8-bit activations where the type has them), a 64-token
//! mat-mul, RMSNorm and attention over a 1024-position f16 cache. Criterion prints GB/s (weight bytes read) for
//! the mat-vecs and elements/s for the rest; `RAYON_NUM_THREADS` limits the cores.
//!
//! Run: `cargo bench --bench cpu_kernels` (`-- matvec_q8` for one group).

#[path = "../tests/support/quant_data.rs"]
mod quant_data;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use half::f16;
use host::backend::cpu;
use host::gguf::GgmlType;
use host::quant;
use quant_data::{random_weights, Rng, TYPES};

const N: usize = 4096;

fn quick<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<M>) {
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
}

fn matvec(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let x = rng.vec(N, -1.0, 1.0);
    let mut y = vec![0.0f32; N];
    let mut exact = c.benchmark_group("matvec_4096x4096");
    quick(&mut exact);
    for ty in TYPES.into_iter().filter(|&t| quant::is_supported(t)) {
        let w = random_weights(ty, N, N, &mut rng);
        exact.throughput(Throughput::Bytes(w.len() as u64));
        exact.bench_function(ty.name(), |b| b.iter(|| quant::matvec(ty, &w, N, N, &x, &mut y)));
    }
    exact.finish();

    let mut q8 = c.benchmark_group("matvec_q8_4096x4096");
    quick(&mut q8);
    use GgmlType::*;
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K] {
        let w = random_weights(ty, N, N, &mut rng);
        q8.throughput(Throughput::Bytes(w.len() as u64));
        q8.bench_function(ty.name(), |b| b.iter(|| quant::matvec_q8(ty, &w, N, N, &x, &mut y)));
    }
    q8.finish();
}

fn matmul(c: &mut Criterion) {
    let (n_rows, n_tok) = (1024, 64);
    let mut rng = Rng::new(2);
    let x = rng.vec(n_tok * N, -1.0, 1.0);
    let mut y = vec![0.0f32; n_tok * n_rows];
    let mut g = c.benchmark_group("matmul_1024x4096_64tok");
    quick(&mut g);
    g.throughput(Throughput::Elements((2 * n_rows * N * n_tok) as u64)); // flops
    for ty in [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q8_0] {
        let w = random_weights(ty, n_rows, N, &mut rng);
        g.bench_function(format!("{} exact", ty.name()), |b| b.iter(|| quant::matmul(ty, &w, n_rows, N, &x, &mut y)));
        g.bench_function(format!("{} q8", ty.name()), |b| b.iter(|| quant::matmul_q8(ty, &w, n_rows, N, &x, &mut y)));
    }
    g.finish();
}

fn norm_and_attention(c: &mut Criterion) {
    let mut rng = Rng::new(3);
    let mut g = c.benchmark_group("ops");
    quick(&mut g);
    let (rows, dim) = (64, N);
    let x = rng.vec(rows * dim, -2.0, 2.0);
    let w = rng.vec(dim, 0.5, 1.5);
    let mut out = vec![0.0f32; rows * dim];
    g.throughput(Throughput::Elements((rows * dim) as u64));
    g.bench_function("rmsnorm_64x4096", |b| b.iter(|| cpu::rmsnorm(&mut out, &x, &w, dim, 1e-5)));

    // one decode token of a SmolLM2-shaped layer: 9 heads over 3 KV heads of 64, 1024 cached positions
    let (n_heads, n_kv, hd, ctx) = (9, 3, 64, 1024);
    let q = rng.vec(n_heads * hd, -1.0, 1.0);
    let k: Vec<f16> = rng.vec(ctx * n_kv * hd, -1.0, 1.0).into_iter().map(f16::from_f32).collect();
    let v: Vec<f16> = rng.vec(ctx * n_kv * hd, -1.0, 1.0).into_iter().map(f16::from_f32).collect();
    let mut att = vec![0.0f32; n_heads * hd];
    g.throughput(Throughput::Elements((ctx * n_heads) as u64)); // query-key pairs
    g.bench_function("attention_decode_ctx1024", |b| {
        let p = cpu::AttnParams {
            n_tok: 1,
            pos0: ctx - 1,
            n_heads,
            n_kv_heads: n_kv,
            head_dim: hd,
            head_dim_v: hd,
            scale: 0.125,
            window: None,
            round_like_cache: true,
        };
        b.iter(|| cpu::attention(&mut att, &q, &k, &v, &p))
    });
    g.finish();
}

criterion_group!(benches, matvec, matmul, norm_and_attention);
criterion_main!(benches);
