//! GPU 8-bit-activation mat-vec (`Cuda::matvec_q8`, dp4a) per type on a 4096 x 11008 and an 11008 x 4096 weight
//! (rows x cols, GGUF layout): time and achieved bandwidth (weight bytes / time), next to the exact f32-activation
//! `Cuda::matvec` on the same data, and the time of `quantize_act` for the input vector.
//!
//! Launches rotate among enough copies of the weight (>= 400 MB in all, 8x the H100's 50 MB L2) that the cache
//! does not serve the reads; each figure is the median over 7 repetitions of 60 back-to-back launches on one
//! stream, timed with device events (so it includes the launch gaps between kernels, about 1 us).
//!
//! Usage: gpu_q8 [TYPE,TYPE,..] [--no-f32] [--no-variants] [--no-probe]   (types as ggml names, default all supported)

#[path = "../tests/support/quant_data.rs"]
mod quant_data;

use host::backend::cuda::{availability, Cuda};
use host::backend::cuda_q8::{act_row_bytes, layout::MQ_VARIANTS, supports_q8};
use host::gguf::GgmlType;
use quant_data::{random_weights, Rng, TYPES};

const SHAPES: [(usize, usize); 2] = [(4096, 11008), (11008, 4096)];
const ROTATE_BYTES: usize = 400 << 20;
const ITERS: usize = 60;
const REPS: usize = 7;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Median of `REPS` timings of `ITERS` calls of `launch(i)`, in microseconds per call.
fn time_us(cuda: &Cuda, mut launch: impl FnMut(usize) -> host::Result<()>) -> Res<f64> {
    for i in 0..16 {
        launch(i)?; // warm-up: module JIT, first touch of every copy
    }
    cuda.synchronize()?;
    let mut t = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        let start = cuda.timed_event()?;
        for i in 0..ITERS {
            launch(i)?;
        }
        let end = cuda.timed_event()?;
        t.push(start.elapsed_ms(&end)? as f64 * 1e3 / ITERS as f64);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[REPS / 2])
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let filter: Vec<GgmlType> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .flat_map(|a| a.split(','))
        .filter_map(GgmlType::from_name)
        .collect();
    let types: Vec<GgmlType> =
        TYPES.into_iter().filter(|&t| supports_q8(t) && (filter.is_empty() || filter.contains(&t))).collect();
    if let Err(why) = availability() {
        println!("SKIP gpu_q8: {why}");
        return Ok(());
    }
    let cuda = Cuda::new(0)?;
    println!("device: {}", cuda.ctx.name()?);

    let mut rng = Rng::new(42);
    let mut rows = Vec::new();
    let mut variants = Vec::new();
    let mut quant_us = Vec::new();
    let mut probe = Vec::new();
    for &ty in &types {
        for (n_rows, n_cols) in SHAPES {
            let w = random_weights(ty, n_rows, n_cols, &mut rng);
            let bytes = w.len();
            let copies = ROTATE_BYTES.div_ceil(bytes).clamp(2, 64);
            let mut ws = vec![cuda.upload(&w)?];
            drop(w);
            for _ in 1..copies {
                let mut c = cuda.zeros::<u8>(bytes)?;
                cuda.stream.memcpy_dtod(&ws[0], &mut c)?;
                ws.push(c);
            }
            let x = cuda.upload(&rng.vec_f32(n_cols))?;
            let mut xq = cuda.zeros::<u8>(act_row_bytes(n_cols))?;
            let mut y = cuda.zeros::<f32>(n_rows)?;
            if quant_us.iter().all(|&(c, _)| c != n_cols) {
                quant_us.push((n_cols, time_us(&cuda, |_| cuda.quantize_act(&x, 1, n_cols, &mut xq))?));
            }
            cuda.quantize_act(&x, 1, n_cols, &mut xq)?;

            if !flag("--no-probe") && probe.iter().all(|p: &(usize, f64, f64)| p.0 != bytes) {
                let mut out = cuda.zeros::<u32>(132 * 16)?;
                let a = time_us(&cuda, |i| cuda.stream_probe(&ws[i % copies], 132 * 4, &mut out))?;
                let b = time_us(&cuda, |i| cuda.stream_probe(&ws[i % copies], 132 * 16, &mut out))?;
                probe.push((bytes, a, b));
            }
            let q8_us = time_us(&cuda, |i| cuda.matvec_q8(ty, &ws[i % copies], n_rows, n_cols, &xq, &mut y))?;
            let f32_us = if flag("--no-f32") {
                None
            } else {
                Some(time_us(&cuda, |i| cuda.matvec(ty, &ws[i % copies], n_rows, n_cols, &x, &mut y))?)
            };
            if !flag("--no-variants") {
                for &(name, _, g) in MQ_VARIANTS.iter().filter(|v| v.1 == ty.id()) {
                    let us = time_us(&cuda, |i| {
                        cuda.matvec_q8_with(name, g, ty, &ws[i % copies], n_rows, n_cols, &xq, &mut y)
                    })?;
                    let regs = cuda.func(name)?.num_regs()?;
                    variants.push((name, (n_rows, n_cols), bytes as f64 / us / 1e3, us, regs));
                }
            }
            eprintln!("{:5} {n_rows}x{n_cols}: {q8_us:.1} us", ty.name());
            rows.push((ty, (n_rows, n_cols), bytes, q8_us, f32_us));
        }
    }

    if !variants.is_empty() {
        println!("\nmatvec_q8 geometry variants (q8_layout.rs MQ_VARIANTS):");
        println!("| kernel | regs | rows x cols | us | GB/s |");
        println!("|---|---:|---|---:|---:|");
        for (name, (r, c), gbs, us, regs) in &variants {
            println!("| {name} | {regs} | {r}x{c} | {us:.1} | {gbs:.0} |");
        }
    }
    println!("\nstream_probe (pure 16-byte-load read of the same rotating buffers, 4 loads in flight per thread):");
    for (bytes, a, b) in &probe {
        let gbs = |us: f64| *bytes as f64 / us / 1e3;
        println!(
            "  {:.1} MB: 528 blocks {a:.1} us {:.0} GB/s, 2112 blocks {b:.1} us {:.0} GB/s",
            *bytes as f64 / 1e6,
            gbs(*a),
            gbs(*b)
        );
    }
    println!(
        "\nquantize_act (one vector): {}",
        quant_us.iter().map(|(n, us)| format!("n={n}: {us:.2} us")).collect::<Vec<_>>().join(", ")
    );
    println!("\nmat-vec, weight bytes / time over rotating copies (>= 400 MB):");
    println!("| type | rows x cols | weight MB | matvec_q8 us | matvec_q8 GB/s | f32-act matvec GB/s |");
    println!("|---|---|---:|---:|---:|---:|");
    for (ty, (r, c), bytes, us, f32_us) in rows {
        let f = f32_us.map_or("-".into(), |t| format!("{:.0}", bytes as f64 / t / 1e3));
        println!(
            "| {} | {r}x{c} | {:.1} | {us:.1} | {:.0} | {f} |",
            ty.name(),
            bytes as f64 / 1e6,
            bytes as f64 / us / 1e3
        );
    }
    Ok(())
}
