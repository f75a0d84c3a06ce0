//! GPU 8-bit-activation mat-vec (`Cuda::matvec_q8`, dp4a) per type on a 4096 x 11008 and an 11008 x 4096 weight
//! (rows x cols, GGUF layout): time and achieved bandwidth (weight bytes / time), next to the exact f32-activation
//! `Cuda::matvec` on the same data, and the time of `quantize_act` for the input vector.
//!
//! Launches rotate among enough copies of the weight (>= 400 MB in all, 8x the H100's 50 MB L2) that the cache
//! does not serve the reads; each figure is the median over 7 repetitions of 60 back-to-back launches on one
//! stream, timed with device events (so it includes the launch gaps between kernels, about 1 us).
//!
//! Usage: gpu_q8 [TYPE,TYPE,..] [--no-f32] [--no-variants] [--no-probe] [--no-cols] [--cols-only]
//! (types as ggml names, default all supported).
//!
//! Multi-column mat-vec (`Cuda::matvec_q8_cols`, the decode of n sequences at once; `--cols-only` runs just this
//! part): Q4_0 and Q4_K (or the named types) on 4096x4096, 4096x11008 and 11008x4096, n = 1, 2, 4, 8 activation
//! rows: time, effective weight bandwidth (weight bytes / time: what one read of the weight costs), and the same
//! n rows as n launches of the single-column kernel and as the int8 tensor-core mat-mul (`matmul_q8`, which
//! batches of 2..8 rows took before), plus the multi-column geometry variants of `MQ_VARIANTS`.
//!
//! Notes (H100 80GB HBM3, driver 580, 2026-11-23). `stream_probe`, a pure 16-byte-load read of the same rotating
//! buffers, takes 11.1-11.7 us for 25.4 MB (2.18-2.27 TB/s): about 2.6 us per launch beyond 3 TB/s of streaming
//! (launch, DRAM ramp-up, tail), so 1.9 TB/s on these shapes is ~85% of what any kernel reaches in this loop.
//! - v1 (warp per 2 rows, 4 blocks of 4 warps, 4 stages, activations loaded in the step that uses them): Q4_0
//!   1.82 / 1.62 TB/s (4096x11008 / 11008x4096), Q4_K 1.74 / 1.77; ncu on Q4_0: 55% of stalls waiting on L1TEX
//!   (the activation loads, 67% L1 hits), 1.3 waves on 11008x4096.
//! - v2 activations loaded a step ahead: Q4_0 1.87 / 1.84 (default), best geometry 1.86 / 1.95 (2 stages).
//! - v3 split-K groups of 2 warps, 8 warps per block, 2 stages, 64 registers: Q4_0 1.95 / 2.09, Q4_K 1.84 / 1.96,
//!   Q4_1 2.12 / 2.24, Q5_0 1.98 / 2.12, Q5_1 2.15 / 2.28, Q8_0 2.22 / 2.46, Q6_K 1.94 / 1.96 (4 warps), Q5_K
//!   1.88 / 1.86 (v1 geometry). 3 stages or 72-80 registers (fewer resident warps) were 5-20% slower for every
//!   type; Q4_K with 64-element items (one scale decode per 64 weights) was not faster. ncu on Q4_K 4096x11008:
//!   14.1 us, DRAM 54% of peak on average, achieved occupancy 48%, top stall the wait for the weight copies.

#[path = "../tests/support/quant_data.rs"]
mod quant_data;

use host::backend::cuda::{availability, Cuda};
use host::backend::cuda_mmq::supports_mmq;
use host::backend::cuda_q8::{act_row_bytes, layout::MQ_VARIANTS, supports_q8, MvOpts};
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
    if !flag("--no-cols") {
        let named: Vec<GgmlType> = if filter.is_empty() { vec![GgmlType::Q4_0, GgmlType::Q4_K] } else { types.clone() };
        cols_section(&cuda, &mut rng, &named)?;
    }
    if flag("--cols-only") {
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut variants = Vec::new();
    let mut quant_us = Vec::new();
    let mut probe = Vec::new();
    for &ty in &types {
        for (n_rows, n_cols) in SHAPES {
            let (ws, bytes) = rotating_copies(&cuda, ty, n_rows, n_cols, &mut rng)?;
            let copies = ws.len();
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
                for &(name, _, g) in MQ_VARIANTS.iter().filter(|v| v.1 == ty.id() && v.2.cols == 1) {
                    let opts = MvOpts { kernel: Some((name, g)), ..MvOpts::ONE };
                    let us = time_us(&cuda, |i| cuda.matvec_q8_opt(ty, &ws[i % copies], n_rows, n_cols, &xq, &mut y, opts))?;
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
        "\nquantize_act (one vector), us per call: {}",
        quant_us.iter().map(|(n, us)| format!("n={n} {us:.2}")).collect::<Vec<_>>().join(", ")
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

/// Copies of a random (n_rows, n_cols) weight of type `ty`: enough copies (>= ROTATE_BYTES in all)
/// that launches cycling through them read the weight from DRAM, not L2.
fn rotating_copies(cuda: &Cuda, ty: GgmlType, n_rows: usize, n_cols: usize, rng: &mut Rng)
                   -> Res<(Vec<cudarc::driver::CudaSlice<u8>>, usize)> {
    let w = random_weights(ty, n_rows, n_cols, rng);
    let bytes = w.len();
    let copies = ROTATE_BYTES.div_ceil(bytes).clamp(2, 64);
    let mut ws = vec![cuda.upload(&w)?];
    for _ in 1..copies {
        let mut c = cuda.zeros::<u8>(bytes)?;
        cuda.stream.memcpy_dtod(&ws[0], &mut c)?;
        ws.push(c);
    }
    Ok((ws, bytes))
}

/// The multi-column mat-vec table (see the module doc).
fn cols_section(cuda: &Cuda, rng: &mut Rng, types: &[GgmlType]) -> Res<()> {
    const N: [usize; 4] = [1, 2, 4, 8];
    let mut out = Vec::new();
    for &ty in types.iter().filter(|&&t| supports_q8(t)) {
        for (n_rows, n_cols) in [(4096, 4096), (4096, 11008), (11008, 4096)] {
            let (ws, bytes) = rotating_copies(cuda, ty, n_rows, n_cols, rng)?;
            let copies = ws.len();
            let rb = act_row_bytes(n_cols);
            let x = cuda.upload(&rng.vec_f32(8 * n_cols))?;
            let mut xq = cuda.zeros::<u8>(8 * rb)?;
            cuda.quantize_act(&x, 8, n_cols, &mut xq)?;
            let mut y = cuda.zeros::<f32>(8 * n_rows)?;
            let one = time_us(cuda, |i| cuda.matvec_q8(ty, &ws[i % copies], n_rows, n_cols, &xq, &mut y))?;
            for n in N {
                let us = time_us(cuda, |i| cuda.matvec_q8_cols(ty, &ws[i % copies], n_rows, n_cols, &xq, n, &mut y))?;
                let mmq = if n > 1 && supports_mmq(ty) {
                    Some(time_us(cuda, |i| cuda.matmul_q8(ty, &ws[i % copies], n_rows, n_cols, &xq, n, &mut y))?)
                } else {
                    None
                };
                out.push((ty.name().to_string(), (n_rows, n_cols), bytes, n, us, one, mmq));
                eprintln!("{:5} {n_rows}x{n_cols} n={n}: {us:.1} us", ty.name());
            }
            for &(name, _, g) in MQ_VARIANTS.iter().filter(|v| v.1 == ty.id() && v.2.cols > 1) {
                let (n, opts) = (g.cols as usize, MvOpts { n: g.cols as usize, kernel: Some((name, g)), ..MvOpts::ONE });
                let us = time_us(cuda, |i| cuda.matvec_q8_opt(ty, &ws[i % copies], n_rows, n_cols, &xq, &mut y, opts))?;
                let regs = cuda.func(name)?.num_regs()?;
                out.push((format!("{} {name} ({regs} regs)", ty.name()), (n_rows, n_cols), bytes, n, us, one, None));
            }
        }
    }
    println!("\nmulti-column mat-vec (matvec_q8_cols), n activation rows per weight read; TB/s = weight bytes / time:");
    println!("| type | rows x cols | n | us | weight TB/s | n x matvec_q8 us | speed-up | matmul_q8 (mmq) us |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (ty, (r, c), bytes, n, us, one, mmq) in out {
        let tbs = bytes as f64 / us / 1e6;
        let m = mmq.map_or("-".into(), |t| format!("{t:.1}"));
        println!("| {ty} | {r}x{c} | {n} | {us:.1} | {tbs:.2} | {:.1} | {:.2}x | {m} |", n as f64 * one, n as f64 * one / us);
    }
    Ok(())
}
