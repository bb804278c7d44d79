//! The CoOp step's products (C = 100: 501 rows) through the kernels' GEMM, each with its weight warm
//! (the same weight twice) and cold (another of 12 weights, as a tower's layers, after a 128 MB pass
//! that flushes the caches): what README's "Where a CoOp step goes" measures against the step.
//! Then the same products cut between the threads two ways, warm: a band of rows a thread (what the
//! kernels do at 501 rows) or a band of output columns a thread (each packs only its slice of the weight,
//! and all of the input).
//!   cargo run --release --example gemm_shapes
use std::time::Instant;

use promptscope::clip::kernels::cpu::{gemm_f32, gemm_f32_in_parts};
fn main() {
    let shapes: Vec<(usize, usize, usize, bool)> = vec![
        (501, 2048, 512, true),
        (501, 512, 2048, true),
        (501, 1536, 512, false),
        (501, 512, 512, true),
    ];
    let mut junk = vec![1f32; 32 << 20];
    for (m, k, n, bt) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        // 12 weights, as 12 layers: each call reads another (cold) one
        let bs: Vec<Vec<f32>> = (0..12)
            .map(|l| (0..k * n).map(|i| ((i + l) % 5) as f32 * 0.1).collect())
            .collect();
        let reps = 24;
        let mut c = vec![0f32; m * n];
        let mut warm = 0.0;
        let mut cold = 0.0;
        for r in 0..reps {
            let b = &bs[r % 12];
            gemm_f32(&mut c, n, &a, k, b, bt, m, k, n, false);
            let t = Instant::now();
            gemm_f32(&mut c, n, &a, k, b, bt, m, k, n, false);
            warm += t.elapsed().as_secs_f64();
            junk.iter_mut().for_each(|v| *v += 1.0);
            let b = &bs[(r + 5) % 12];
            let t = Instant::now();
            gemm_f32(&mut c, n, &a, k, b, bt, m, k, n, false);
            cold += t.elapsed().as_secs_f64();
        }
        let f = 2.0 * (m * n * k) as f64 * reps as f64 / 1e9;
        println!(
            "m={m} k={k} n={n} b_t={bt}: warm {:.1}  cold B {:.1} GFLOP/s",
            f / warm,
            f / cold
        );
    }
    println!("{}", junk[3]);
    bands();
}

/// Medians of 7 rounds, each of 12 products over 4 weights, per (row parts × column parts).
fn bands() {
    let shapes = [
        (501, 512, 1536, true),
        (501, 512, 512, true),
        (501, 512, 2048, true),
        (501, 2048, 512, true),
        (501, 1536, 512, false),
        (501, 512, 512, false),
        (501, 2048, 512, false),
        (501, 512, 2048, false),
    ];
    let splits = [(2usize, 1usize), (1, 2), (1, 4)];
    for (m, k, n, bt) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let bs: Vec<Vec<f32>> = (0..4)
            .map(|l| (0..k * n).map(|i| ((i + l) % 5) as f32 * 0.1).collect())
            .collect();
        let mut c = vec![0f32; m * n];
        let mut res = vec![vec![]; splits.len()];
        for round in 0..7 {
            for (si, &(rp, cp)) in splits.iter().enumerate() {
                let reps = 12;
                let t = Instant::now();
                for r in 0..reps {
                    let b = &bs[(r + round) % 4];
                    gemm_f32_in_parts(&mut c, &a, b, bt, (m, k, n), (rp, cp));
                }
                res[si].push(2.0 * (m * n * k * reps) as f64 / 1e9 / t.elapsed().as_secs_f64());
            }
        }
        let mut line = format!("m={m} k={k:4} n={n:4} b_t={bt:5} GFLOP/s:");
        for (si, &(rp, cp)) in splits.iter().enumerate() {
            res[si].sort_by(|a, b| a.total_cmp(b));
            line += &format!("  {rp}x{cp} {:.0}", res[si][3]);
        }
        println!("{line}");
    }
}
