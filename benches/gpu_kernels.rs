//! Bandwidth of the f32 kernels on the GPU. RMSNorm on 4096 x 4096: bytes = one read of x, one read of w and
//! one write of out = (2 * rows * dim + dim) * 4.
//! Prints "skipped" without a CUDA device.

use host::backend::cuda::{availability, Cuda};

fn main() {
    if let Err(why) = availability() {
        println!("gpu_kernels bench skipped: {why}");
        return;
    }
    let gpu = Cuda::new(0).expect("cuda");
    let (rows, dim) = (4096usize, 4096usize);
    let x: Vec<f32> = (0..rows * dim).map(|i| ((i % 97) as f32 - 48.0) * 0.01).collect();
    let w: Vec<f32> = (0..dim).map(|i| 1.0 + (i % 7) as f32 * 0.1).collect();
    let (dx, dw) = (gpu.upload(&x).unwrap(), gpu.upload(&w).unwrap());
    let mut dout = gpu.zeros::<f32>(rows * dim).unwrap();

    let iters = 200;
    for _ in 0..10 {
        gpu.rmsnorm(&mut dout, &dx, &dw, dim, 1e-5).unwrap();
    }
    let start = gpu.timed_event().unwrap();
    for _ in 0..iters {
        gpu.rmsnorm(&mut dout, &dx, &dw, dim, 1e-5).unwrap();
    }
    let end = gpu.timed_event().unwrap();
    end.synchronize().unwrap();
    let us = start.elapsed_ms(&end).unwrap() as f64 * 1e3 / iters as f64;
    let bytes = ((2 * rows * dim + dim) * 4) as f64;
    println!("rmsnorm_f32 {rows}x{dim}: {us:.1} us/iter, {:.0} GB/s (one read of x and w, one write of out)", bytes / us / 1e3);
}
