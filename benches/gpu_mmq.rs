//! GPU int8 tensor-core mat-mul (`Cuda::matmul_q8`, kernels `mmq_*`) per type on the 7B model's prefill shapes
//! (rows x cols, GGUF layout) at n_tok = 512: time per call and effective TOP/s (2 rows cols n_tok / time), next
//! to the f32-activation `Cuda::matmul` on the same data, plus the time of `quantize_act` for the 512 x cols
//! input (paid once per input, shared by the weights that read it).
//!
//! The weights stay in the H100's 50 MB L2 between launches (prefill is compute-bound: one 512-token GEMM of a
//! 4096 x 4096 Q4_0 weight reads it 8 times per launch anyway). Each figure is the median over 5 repetitions of
//! back-to-back launches on one stream, timed with device events.
//!
//! With `--tok N,N,..` the same at those token counts instead of 512 (decode batches: 9 to 64 tokens leave most
//! SMs idle unless the mat-mul splits its columns, `Cuda::mmq_splits`), each also without split-K.
//!
//! Usage: gpu_mmq [TYPE,TYPE,..] [--no-f32] [--tok N,N,..]   (types as ggml names; default Q4_0, Q4_K, Q4_1,
//! Q8_0, Q6_K)

#[path = "../tests/support/quant_data.rs"]
mod quant_data;

use host::backend::cuda::{availability, Cuda};
use host::backend::cuda_mmq::{geom, supports_mmq};
use host::backend::cuda_q8::act_row_bytes;
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
        "\n| type | rows x cols | mmq us | mmq TOP/s | splits | unsplit us | regs | smem KiB | f32 matmul us | f32 \
         TFLOP/s | speed-up |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &ty in types {
        if !supports_mmq(ty) {
            println!("| {ty} | - | unsupported | | | | | | | | |");
            continue;
        }
        let kernel = format!("mmq_{}", ty.name().to_lowercase());
        for (n_rows, n_cols) in SHAPES {
            let w = cuda.upload(&random_weights(ty, n_rows, n_cols, rng))?;
            let (_, x, xq) = xqs.iter().find(|e| e.0 == n_cols).expect("activations of this width");
            let mut y = cuda.zeros::<f32>(n_tok * n_rows)?;
            let ops = 2.0 * (n_rows * n_cols * n_tok) as f64;
            let us = time_us(cuda, 20, || cuda.matmul_q8(ty, &w, n_rows, n_cols, xq, n_tok, &mut y))?;
            let splits = cuda.mmq_splits(ty, n_rows, n_cols, n_tok);
            let unsplit = match splits {
                1 => "-".to_string(),
                _ => {
                    cuda.set_split_k(false);
                    let u = time_us(cuda, 20, || cuda.matmul_q8(ty, &w, n_rows, n_cols, xq, n_tok, &mut y));
                    cuda.set_split_k(true);
                    format!("{:.1}", u?)
                }
            };
            let regs = cuda.func(Box::leak(kernel.clone().into_boxed_str()))?.num_regs()?;
            let (f32_us, f32_t) = if no_f32 {
                ("-".to_string(), "-".to_string())
            } else {
                let f = time_us(cuda, 2, || cuda.matmul(ty, &w, n_rows, n_cols, x, n_tok, &mut y))?;
                (format!("{f:.0}"), format!("{:.1}", ops / f / 1e6))
            };
            let speedup = f32_us.parse::<f64>().map(|f| format!("{:.1}x", f / us)).unwrap_or_default();
            println!(
                "| {ty} | {n_rows} x {n_cols} | {us:.1} | {:.0} | {splits} | {unsplit} | {regs} | {:.0} | {f32_us} | \
                 {f32_t} | {speedup} |",
                ops / us / 1e6,
                geom(ty).smem_bytes() as f64 / 1024.0
            );
        }
    }
    Ok(())
}
