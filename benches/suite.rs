//! `cargo bench`: the performance suite on a random-weight ViT-B/32 (openai/clip-vit-base-patch32's
//! architecture) that the benchmark writes once under target/bench-models. The same operations as
//! `promptscope bench suite`, with criterion's statistics; PyTorch's side is in scripts/.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use promptscope::bench::{write_photo_jpegs, CoopStepper};
use promptscope::clip::LoadedClip;

// As the `promptscope` binary does (why: `promptscope::alloc`), so the benches time what users run.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn model() -> LoadedClip {
    promptscope::alloc::keep_freed_memory();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-models/vit-b-32");
    if !dir.join("model.safetensors").exists() {
        let cfg = promptscope::clip::ClipConfig::vit_b_32();
        promptscope::clip::synth::write_model_folder(&cfg, &dir)
            .expect("writing the benchmark model");
    }
    promptscope::clip::load(dir.to_str().expect("utf-8 path"), &Device::Cpu)
        .expect("loading the benchmark model")
}

fn towers(c: &mut Criterion) {
    let clip = model();
    let s = clip.model().unwrap().config.vision_config.image_size;
    let mut g = c.benchmark_group("image_tower");
    g.sample_size(10);
    for b in [1usize, 16, 64] {
        let px = Tensor::randn(0f32, 1f32, (b, 3, s, s), &clip.device).unwrap();
        g.throughput(Throughput::Elements(b as u64));
        g.bench_with_input(BenchmarkId::from_parameter(b), &px, |bench, px| {
            bench.iter(|| clip.model().unwrap().image_features(px).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("coop_step");
    g.sample_size(10);
    for classes in [100usize, 1000] {
        let mut stepper = CoopStepper::new(&clip, classes, 16, 32, false).unwrap();
        g.bench_function(BenchmarkId::from_parameter(classes), |bench| {
            bench.iter(|| stepper.step().unwrap())
        });
    }
    g.finish();
}

fn methods(c: &mut Criterion) {
    let clip = model();
    let s = clip.model().unwrap().config.vision_config.image_size;
    c.bench_function("filip_1_image_100_prompts", |bench| {
        use promptscope::align::classify::{tokenwise_scores, TokenScore};
        let px = Tensor::randn(0f32, 1f32, (1, 3, s, s), &clip.device).unwrap();
        let pass =
            promptscope::align::pass::VisionPass::run(&clip.model().unwrap().vision, &px).unwrap();
        let image = promptscope::align::tokens::image_tokens(
            &clip.model().unwrap().vision,
            &pass,
            promptscope::align::tokens::AlignMode::Token,
            false,
        )
        .unwrap();
        let texts: Vec<String> = (0..100)
            .map(|i| format!("a photo of a thing number {i}."))
            .collect();
        let words = promptscope::align::tokens::text_tokens(&clip, &texts, false).unwrap();
        bench.iter(|| tokenwise_scores(&image, &words, 0.25, TokenScore::Mean).unwrap())
    });
    let mut g = c.benchmark_group("ssvp");
    let px = Tensor::randn(0f32, 1f32, (16, 3, s, s), &clip.device).unwrap();
    let pass =
        promptscope::align::pass::VisionPass::run(&clip.model().unwrap().vision, &px).unwrap();
    g.throughput(Throughput::Elements(16));
    g.bench_function("batch_16", |bench| {
        bench.iter(|| {
            promptscope::align::ssvp::ssvp_from_pass(&clip.model().unwrap().vision, &pass, None)
                .unwrap()
        })
    });
    g.finish();
    let mut g = c.benchmark_group("loading");
    g.sample_size(10);
    let files =
        write_photo_jpegs(&std::env::temp_dir().join("promptscope-bench-photos"), 64).unwrap();
    g.throughput(Throughput::Elements(files.len() as u64));
    g.bench_function("jpeg_500x375_x64", |bench| {
        bench.iter(|| promptscope::clip::encode::pixel_batch(&clip, &files).unwrap())
    });
    g.finish();
}

/// The pretraining kernels: a whole step for each loss, and its new parts on their own (the weight
/// gradients' row-split GEMM, the one-pass AdamW).
fn training(c: &mut Criterion) {
    use promptscope::train::epoch_loop::TrainStep;
    use promptscope::train::pretrain::{PretrainConfig, PretrainLoss, Pretrainer, TrainableClip};
    promptscope::alloc::keep_freed_memory();
    let cfg = promptscope::clip::ClipConfig::scenes();
    let model = TrainableClip::init(&cfg, 0, &Device::Cpu).unwrap();
    let data = promptscope::train::pretrain::PairTensors::scenes(&cfg, 64, 7).unwrap();
    let rows: Vec<usize> = (0..64).collect();
    let mut g = c.benchmark_group("pretrain_step_scenes_b64");
    g.sample_size(10);
    g.throughput(Throughput::Elements(64));
    for (name, loss) in [("filip", PretrainLoss::Filip), ("clip", PretrainLoss::Clip)] {
        let config = PretrainConfig {
            loss,
            batch_size: 64,
            ..PretrainConfig::default()
        };
        let mut t = Pretrainer::new(&model, config, &data).unwrap();
        g.bench_function(name, |bench| bench.iter(|| t.step(&rows, 1e-4).unwrap()));
    }
    g.finish();

    // A block's weight gradient: [out, in] summed over the rows of a batch of 64 images (50 tokens).
    let mut g = c.benchmark_group("weight_grad_gemm");
    for (out, inp) in [(384usize, 128usize), (512, 128), (128, 512)] {
        let k = 64 * 50;
        let dy = vec![0.5f32; k * out];
        let x = vec![0.25f32; k * inp];
        let mut w = vec![0f32; out * inp];
        g.throughput(Throughput::Elements((2 * out * inp * k) as u64));
        g.bench_function(format!("{out}x{inp}_over_{k}_rows"), |bench| {
            bench.iter(|| {
                promptscope::clip::kernels::cpu::gemm_f32_tn(&mut w, &dy, out, &x, inp, out, k, inp)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("adamw");
    let n = 49408 * 64;
    let var = candle_core::Var::from_tensor(
        &Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap(),
    )
    .unwrap();
    let grad = Tensor::full(0.01f32, n, &Device::Cpu).unwrap();
    let mut opt = promptscope::train::optim::AdamW::new(0.1);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("token_table_3.2m", |bench| {
        bench.iter(|| opt.step(&var, &grad, 1e-4).unwrap())
    });
    g.finish();
}

/// The CoOp step's kernels on their own (issue 30), at the shapes of a C = 100, M = 16 step of ViT-B/32's
/// text tower (501 rows: a 17-row prefix, then 100 classes of 4 or 5 rows).
fn coop_kernels(c: &mut Criterion) {
    use promptscope::clip::kernels::cpu::{bench_hooks, gemm_f32};
    promptscope::alloc::keep_freed_memory();
    let m = 501;
    // (k, n, weight given as `[n×k]`): the step's forward products `x·Wᵀ` and backward `dy·W`.
    const SHAPES: [(usize, usize, bool); 5] = [
        (512, 1536, true),
        (512, 2048, true),
        (2048, 512, true),
        (2048, 512, false),
        (1536, 512, false),
    ];
    // Through `gemm` (packing both operands every call), a band of rows a thread (`kernels::matmul`).
    let mut g = c.benchmark_group("coop_gemm");
    for (k, n, b_t) in SHAPES {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let name = format!("{m}x{k}_to_{n}_{}", if b_t { "fwd" } else { "bwd" });
        g.bench_function(name, |bench| {
            bench.iter(|| gemm_f32(&mut out, n, &a, k, &b, b_t, m, k, n, false))
        });
    }
    g.finish();

    // The same shapes over weights packed once (`kernels/cpu/packed.rs`), as the frozen tower runs them.
    let mut g = c.benchmark_group("coop_packed");
    for (k, n, b_t) in SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 31) as f32 * 0.01).collect();
        let b = vec![0.25f32; k * n];
        let Some(w) = bench_hooks::PackedWeight::new(&b, b_t, k, n) else {
            break;
        };
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let name = format!("{m}x{k}_to_{n}_{}", if b_t { "fwd" } else { "bwd" });
        g.bench_function(name, |bench| bench.iter(|| w.product(&a, m)));
    }
    g.finish();

    // fc1 and its activation: the activation on each row as the product finishes it, or a pass after.
    let mut g = c.benchmark_group("coop_fused");
    let (k, n) = (512, 2048);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 31) as f32 * 0.01 - 0.15).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 17) as f32 * 0.01 - 0.08).collect();
    if let Some(w) = bench_hooks::PackedWeight::new(&b, true, k, n) {
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        for fused in [false, true] {
            let name = format!(
                "fc1_quick_gelu_{m}x{k}_to_{n}_{}",
                if fused { "fused" } else { "after" }
            );
            g.bench_function(name, |bench| {
                bench.iter(|| w.product_quick_gelu(&a, m, fused))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("coop_elementwise");
    let xs: Vec<f32> = (0..m * 2048).map(|i| (i % 97) as f32 * 0.1 - 4.8).collect();
    g.throughput(Throughput::Elements(xs.len() as u64));
    g.bench_function("quick_gelu_501x2048", |bench| {
        bench.iter(|| bench_hooks::quick_gelu(&xs))
    });
    g.finish();

    let mut g = c.benchmark_group("coop_attention");
    let (p, d, heads) = (17usize, 512usize, 8usize);
    let lens: Vec<usize> = (0..100).map(|c| 4 + c % 2).collect();
    let rows = p + lens.iter().sum::<usize>();
    let qkv: Vec<f32> = (0..rows * 3 * d)
        .map(|i| ((i % 89) as f32 - 44.0) * 0.01)
        .collect();
    let dout: Vec<f32> = (0..rows * d)
        .map(|i| ((i % 53) as f32 - 26.0) * 0.01)
        .collect();
    g.bench_function("prefix17_100_classes_forward", |bench| {
        bench.iter(|| bench_hooks::prefix_attention(p, &lens, d, heads, &qkv, None))
    });
    g.bench_function("prefix17_100_classes_forward_backward", |bench| {
        bench.iter(|| bench_hooks::prefix_attention(p, &lens, d, heads, &qkv, Some(&dout)))
    });
    g.finish();
}

criterion_group!(benches, towers, methods, training, coop_kernels);
criterion_main!(benches);
