//! GPU quant kernels: per type, on a 4096 x 11008 and an 11008 x 4096 weight (rows x cols, GGUF layout),
//! mat-vec time and achieved bandwidth (weight bytes / time), and mat-mul time at n_tok = 512 with its effective
//! TFLOP/s (2 rows cols n_tok / time).
//!
//! Mat-vec launches rotate among enough copies of the weight (>= 400 MB in all, 8x the H100's 50 MB L2) that the
//! cache does not serve the reads; each figure is the median over 5 repetitions of 50 back-to-back launches on one
//! stream, timed with device events (so it includes the launch gaps between kernels, about 1 us).
//!
//! Usage: gpu_quant [TYPE,TYPE,..] [--no-matmul] [--no-variants]   (types as ggml names, default all)

#[path = "../tests/support/quant_data.rs"]
mod quant_data;

use cudarc::driver::sys::CUevent_flags;
use host::backend::cuda::{availability, Cuda};
use host::backend::cuda_quant::geometry::MV_VARIANTS;
use host::gguf::GgmlType;
use quant_data::{random_weights, Rng, TYPES};

const SHAPES: [(usize, usize); 2] = [(4096, 11008), (11008, 4096)];
const ROTATE_BYTES: usize = 400 << 20;
const MATVEC_ITERS: usize = 50;
const REPS: usize = 5;
const N_TOK: usize = 512;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Median of `REPS` timings of `iters` calls of `launch(i)`, in microseconds per call.
fn time_us(cuda: &Cuda, iters: usize, mut launch: impl FnMut(usize) -> host::Result<()>) -> Res<f64> {
    let ev = || cuda.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT));
    let (start, end) = (ev()?, ev()?);
    for i in 0..iters.min(8) {
        launch(i)?; // warm-up: module JIT, first touch of every copy
    }
    cuda.synchronize()?;
    let mut t = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        start.record(&cuda.stream)?;
        for i in 0..iters {
            launch(i)?;
        }
        end.record(&cuda.stream)?;
        t.push(start.elapsed_ms(&end)? as f64 * 1e3 / iters as f64);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[REPS / 2])
}

struct Row {
    ty: GgmlType,
    shape: (usize, usize),
    mb: f64,
    mv_us: f64,
    mm_ms: Option<f64>,
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
    let types: Vec<GgmlType> = TYPES.into_iter().filter(|t| filter.is_empty() || filter.contains(t)).collect();
    if let Err(why) = availability() {
        println!("SKIP gpu_quant: {why}");
        return Ok(());
    }
    let cuda = Cuda::new(0)?;
    println!("device: {}", cuda.ctx.name()?);

    let mut rng = Rng::new(42);
    let mut rows = Vec::new();
    let mut variants = Vec::new();
    for &ty in &types {
        for (n_rows, n_cols) in SHAPES {
            let w = random_weights(ty, n_rows, n_cols, &mut rng);
            let bytes = w.len();
            let first = cuda.upload(&w)?;
            drop(w);
            let copies = ROTATE_BYTES.div_ceil(bytes).clamp(2, 32);
            let mut ws = vec![first];
            for _ in 1..copies {
                let mut c = cuda.zeros::<u8>(bytes)?;
                cuda.stream.memcpy_dtod(&ws[0], &mut c)?;
                ws.push(c);
            }
            let x = cuda.upload(&rng.vec_f32(n_cols))?;
            let mut y = cuda.zeros::<f32>(n_rows)?;

            let mv_us = time_us(&cuda, MATVEC_ITERS, |i| cuda.matvec(ty, &ws[i % copies], n_rows, n_cols, &x, &mut y))?;
            if !flag("--no-variants") {
                for &(name, id, g) in MV_VARIANTS.iter().filter(|v| v.1 == ty.id()) {
                    let _ = id;
                    let us = time_us(&cuda, MATVEC_ITERS, |i| {
                        cuda.matvec_with(name, g, ty, &ws[i % copies], n_rows, n_cols, &x, &mut y)
                    })?;
                    variants.push((name, (n_rows, n_cols), bytes as f64 / us / 1e3, us));
                }
            }
            let mm_ms = if flag("--no-matmul") {
                None
            } else {
                let xm = cuda.upload(&rng.vec_f32(N_TOK * n_cols))?;
                let mut ym = cuda.zeros::<f32>(N_TOK * n_rows)?;
                Some(time_us(&cuda, 2, |i| cuda.matmul(ty, &ws[i % copies], n_rows, n_cols, &xm, N_TOK, &mut ym))? / 1e3)
            };
            let row = Row { ty, shape: (n_rows, n_cols), mb: bytes as f64 / 1e6, mv_us, mm_ms };
            eprintln!("{:5} {}x{} done ({:.1} us)", ty.name(), n_rows, n_cols, mv_us);
            rows.push(row);
        }
    }

    if !variants.is_empty() {
        println!("\nmat-vec geometry variants (rows/warp, warps, units, stages in gpu-kernels/src/quant/geometry.rs):");
        println!("| kernel | rows x cols | us | GB/s |");
        println!("|---|---|---:|---:|");
        for (name, (r, c), gbs, us) in &variants {
            println!("| {name} | {r}x{c} | {us:.1} | {gbs:.0} |");
        }
    }
    println!("\nmat-vec: weight bytes / time over rotating copies; mat-mul: n_tok = {N_TOK}, 2 rows cols n_tok flops");
    println!("| type | rows x cols | weight MB | matvec us | matvec GB/s | matmul ms | matmul TFLOP/s |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        let gbs = r.mb * 1e6 / r.mv_us / 1e3;
        let (mm, tf) = match r.mm_ms {
            Some(ms) => {
                let flops = 2.0 * r.shape.0 as f64 * r.shape.1 as f64 * N_TOK as f64;
                (format!("{ms:.2}"), format!("{:.1}", flops / ms / 1e9))
            }
            None => ("-".into(), "-".into()),
        };
        println!("| {} | {}x{} | {:.1} | {:.1} | {:.0} | {mm} | {tf} |", r.ty.name(), r.shape.0, r.shape.1, r.mb, r.mv_us, gbs);
    }
    Ok(())
}
