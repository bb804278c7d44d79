//! `cargo bench`: the performance suite on a random-weight ViT-B/32 (openai/clip-vit-base-patch32's
//! architecture) that the benchmark writes once under target/bench-models. The same operations as
//! `promptscope bench --suite`, with criterion's statistics; PyTorch's side is in scripts/.

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

criterion_group!(benches, towers, methods);
criterion_main!(benches);
