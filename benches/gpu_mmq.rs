//! GPU int8 tensor-core mat-mul (`Cuda::matmul_q8`, kernels `mmq_*`) per type on the 7B model's prefill shapes
//! (rows x cols, GGUF layout) at n_tok = 512: time per call and effective TOP/s (2 rows cols n_tok / time), next
//! to the f32-activation `Cuda::matmul` on the same data, plus the time of `quantize_act` for the 512 x cols
//! input (paid once per input, shared by the weights that read it).
//!
//! The weights stay in the H100's 50 MB L2 between launches (prefill is compute-bound: one 512-token GEMM of a
//! 4096 x 4096 Q4_0 weight reads it 8 times per launch anyway). Each figure is the median over 5 repetitions of
//! back-to-back launches on one stream, timed with device events.
//!
//! With `--tok N,N,..` the same at those token counts instead of 512: decode batches, which read their weights
//! from memory, so the launches then rotate over copies of the weight that together exceed the L2, and the table
//! adds the weight bandwidth (GB/s). Up to 32 tokens `matmul_q8` takes the thin tile (`mmqt_*`); the table gives
//! its time next to the prefill tile's (`64-tile us`), without split-K (`unsplit us`), with the splits added up by
//! a launch of their own rather than by each tile's last block (`sum-launch us`; the default from 16 tokens on),
//! and, up to 8 tokens, the multi-column mat-vec's (`Cuda::matvec_q8_cols`, the decode path for 2 to 4 sequences).
//!
//! Usage: gpu_mmq [TYPE,TYPE,..] [--no-f32] [--tok N,N,..]   (types as ggml names; default Q4_0, Q4_K, Q4_1,
//! Q8_0, Q6_K)

#[path = "../tests/support/quant_data.rs"]
mod quant_data;

use host::backend::cuda::{availability, Cuda};
use host::backend::cuda_mmq::supports_mmq;
use host::backend::cuda_q8::{act_row_bytes, MV_COLS_MAX};
use host::gguf::GgmlType;
use quant_data::{random_weights, Rng};

const SHAPES: [(usize, usize); 3] = [(4096, 4096), (11008, 4096), (4096, 11008)];
const DEFAULT_TYPES: [GgmlType; 5] = [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q6_K];
const N_TOK_DEFAULT: usize = 512;
const REPS: usize = 5;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Median of `REPS` timings of `iters` calls of `launch()`, in microseconds per call.
fn time_us(cuda: &Cuda, iters: usize, mut launch: impl FnMut() -> host::Result<()>) -> Res<f64> {
    for _ in 0..2 {
        launch()?; // warm-up: module JIT, caches
    }
    cuda.synchronize()?;
    let mut t = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        let start = cuda.timed_event()?;
        for _ in 0..iters {
            launch()?;
        }
        let end = cuda.timed_event()?;
        t.push(start.elapsed_ms(&end)? as f64 * 1e3 / iters as f64);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[REPS / 2])
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let no_f32 = args.iter().any(|a| a == "--no-f32");
    let toks: Vec<usize> = match args.iter().position(|a| a == "--tok") {
        Some(i) => args.get(i + 1).ok_or("--tok needs a list")?.split(',').map(|t| t.parse()).collect::<Result<_, _>>()?,
        None => vec![N_TOK_DEFAULT],
    };
    let filter: Vec<GgmlType> = args
        .iter()
        .enumerate()
        .filter(|&(i, a)| !a.starts_with("--") && (i == 0 || args[i - 1] != "--tok"))
        .map(|(_, a)| a)
        .flat_map(|a| a.split(','))
        .filter_map(GgmlType::from_name)
        .collect();
    let types: Vec<GgmlType> = if filter.is_empty() { DEFAULT_TYPES.to_vec() } else { filter };
    if let Err(why) = availability() {
        println!("SKIP gpu_mmq: {why}");
        return Ok(());
    }
    let cuda = Cuda::new(0)?;
    println!("device: {}", cuda.ctx.name()?);
    let mut rng = Rng::new(42);

    for &n_tok in &toks {
        section(&cuda, &mut rng, &types, n_tok, no_f32)?;
    }
    Ok(())
}

/// The table for `n_tok` activation rows.
fn section(cuda: &Cuda, rng: &mut Rng, types: &[GgmlType], n_tok: usize, no_f32: bool) -> Res<()> {
    println!("quantize_act {n_tok} tokens:");
    let mut xqs = Vec::new();
    for n_cols in [4096usize, 11008] {
        let x = cuda.upload(&rng.vec_f32(n_tok * n_cols))?;
        let mut xq = cuda.zeros::<u8>(n_tok * act_row_bytes(n_cols))?;
        let us = time_us(cuda, 20, || cuda.quantize_act(&x, n_tok, n_cols, &mut xq))?;
        println!("  cols {n_cols:5}: {us:8.1} us");
        xqs.push((n_cols, x, xq));
    }

    println!(
        "\n| type | rows x cols | kernel | us | TOP/s | GB/s | splits | unsplit us | sum-launch us | 64-tile us | mat-vec \
         us | regs | smem KiB | f32 matmul us | f32 TFLOP/s | speed-up |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let decode = n_tok <= 64;
    for &ty in types {
        if !supports_mmq(ty) {
            println!("| {ty} | - | unsupported | | | | | | | | | | | | | |");
            continue;
        }
        let (kernel, g) = cuda.mmq_kernel(ty, n_tok).ok_or("no kernel")?;
        for (n_rows, n_cols) in SHAPES {
            let bytes = n_rows * ty.row_bytes(n_cols as u64).ok_or("row bytes")? as usize;
            let data = random_weights(ty, n_rows, n_cols, rng);
            // decode: enough copies to stream 128 MB (past the 50 MB L2) before a copy is read again
            let copies = if decode { (128usize << 20).div_ceil(bytes) } else { 1 };
            let ws = (0..copies).map(|_| cuda.upload(&data)).collect::<host::Result<Vec<_>>>()?;
            let next = std::cell::Cell::new(0usize);
            let w = || {
                next.set((next.get() + 1) % copies);
                &ws[next.get()]
            };
            let (_, x, xq) = xqs.iter().find(|e| e.0 == n_cols).expect("activations of this width");
            let mut y = cuda.zeros::<f32>(n_tok * n_rows)?;
            let ops = 2.0 * (n_rows * n_cols * n_tok) as f64;
            let mut mm = || cuda.matmul_q8(ty, w(), n_rows, n_cols, xq, n_tok, &mut y);
            let us = time_us(cuda, 20, &mut mm)?;
            let splits = cuda.mmq_splits(g, n_rows, n_cols, n_tok);
            let (unsplit, sum_launch) = match splits {
                1 => ("-".to_string(), "-".to_string()),
                _ => (
                    format!("{:.1}", without(cuda, Cuda::set_split_k, || time_us(cuda, 20, &mut mm))?),
                    format!("{:.1}", without(cuda, Cuda::set_split_fixup, || time_us(cuda, 20, &mut mm))?),
                ),
            };
            let wide = match g.decoded {
                true => "-".to_string(),
                false => format!("{:.1}", without(cuda, Cuda::set_thin_mmq, || time_us(cuda, 20, &mut mm))?),
            };
            let mv = match n_tok {
                2..=MV_COLS_MAX => {
                    let mut y2 = cuda.zeros::<f32>(n_tok * n_rows)?;
                    let t = time_us(cuda, 20, || cuda.matvec_q8_cols(ty, w(), n_rows, n_cols, xq, n_tok, &mut y2))?;
                    format!("{t:.1}")
                }
                _ => "-".to_string(),
            };
            let regs = cuda.func(kernel)?.num_regs()?;
            let (f32_us, f32_t) = if no_f32 {
                ("-".to_string(), "-".to_string())
            } else {
                let f = time_us(cuda, 2, || cuda.matmul(ty, w(), n_rows, n_cols, x, n_tok, &mut y))?;
                (format!("{f:.0}"), format!("{:.1}", ops / f / 1e6))
            };
            let speedup = f32_us.parse::<f64>().map(|f| format!("{:.1}x", f / us)).unwrap_or_default();
            println!(
                "| {ty} | {n_rows} x {n_cols} | {kernel} | {us:.1} | {:.0} | {:.0} | {splits} | {unsplit} | {sum_launch} | {wide} \
                 | {mv} \
                 | {regs} | {:.0} | {f32_us} | {f32_t} | {speedup} |",
                ops / us / 1e6,
                bytes as f64 / us / 1e3,
                g.smem_bytes() as f64 / 1024.0
            );
        }
    }
    Ok(())
}

/// `f()` with a kernel path turned off by `set(cuda, false)`, turned on again after.
fn without<T>(cuda: &Cuda, set: fn(&Cuda, bool), f: impl FnOnce() -> Res<T>) -> Res<T> {
    set(cuda, false);
    let r = f();
    set(cuda, true);
    r
}
