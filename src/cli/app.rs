//! The verbs that need the desktop stack: the app itself and the GPU overlay benchmark (errors that say
//! so in a build without the `gui` feature).

use std::path::PathBuf;

use anyhow::Result;

use super::args::{Format, MethodArg, TabArg};

/// No verb: the app on its first tab, with what it remembers.
pub fn open_default_app() -> Result<()> {
    open_app(None, None, AppStart::default())
}

#[derive(Default)]
#[cfg_attr(not(feature = "gui"), allow(dead_code))]
pub struct AppStart {
    pub tab: TabArg,
    pub autorun: bool,
    pub epochs: Option<usize>,
    pub prompts: Vec<PathBuf>,
    pub side_by_side: bool,
    pub base_to_novel: bool,
    pub method: Option<MethodArg>,
    pub super_category: Option<String>,
    pub compare_methods: Vec<promptscope::align::maps::MapMethod>,
    pub evaluate_maps: bool,
}

#[cfg(feature = "gui")]
pub fn open_app(model: Option<String>, data: Option<PathBuf>, start: AppStart) -> Result<()> {
    if start.compare_methods.len() > promptscope::app::COMPARE_MAX {
        anyhow::bail!(
            "--compare-methods: at most {} methods side by side, not {}",
            promptscope::app::COMPARE_MAX,
            start.compare_methods.len()
        );
    }
    let tab = match start.tab {
        TabArg::Compare => promptscope::app::Tab::Compare,
        TabArg::Train => promptscope::app::Tab::Train,
        TabArg::Align => promptscope::app::Tab::Align,
        TabArg::Export => promptscope::app::Tab::Export,
    };
    use promptscope::app::train_form::TrainKind;
    use promptscope::prompt::PromptMethodKind;
    let method = start.method.map(|m| match m {
        MethodArg::Coop => TrainKind::Prompts(PromptMethodKind::Coop),
        MethodArg::Cocoop => TrainKind::Prompts(PromptMethodKind::Cocoop),
        MethodArg::Mpfgvc => TrainKind::Prompts(PromptMethodKind::Datp),
        MethodArg::Pretrain | MethodArg::PretrainScenes => TrainKind::Pretrain,
    });
    let scenes = matches!(start.method, Some(MethodArg::PretrainScenes));
    let startup = promptscope::app::Startup {
        tab,
        autorun: start.autorun,
        epochs: start.epochs,
        prompts: start.prompts,
        side_by_side: start.side_by_side,
        base_to_novel: start.base_to_novel,
        method,
        pretrain_scenes: scenes,
        super_category: start.super_category,
        compare_methods: start.compare_methods,
        evaluate_maps: start.evaluate_maps,
    };
    promptscope::app::run(model, data, startup)
}

#[cfg(feature = "gui")]
pub fn bench_overlay(size: u32, repeats: usize, format: Format) -> Result<()> {
    use promptscope::app::overlay::{headless_device, render_offscreen, OverlayData};
    let (device, queue, adapter) = headless_device()?;
    let values: Vec<f32> = (0..49).map(|i| ((i * 37) % 49) as f32).collect();
    let map = promptscope::render::GridMap::new(&values, [7, 7])?;
    let image: Vec<u8> = (0..224 * 224)
        .flat_map(|i| [(i % 224) as u8, (i / 224) as u8, 128, 255])
        .collect();
    let data = OverlayData {
        id: 1,
        image,
        size: [224, 224],
        map,
    };
    let style = promptscope::render::HeatmapStyle {
        grid_lines: true,
        ..Default::default()
    };
    // The first draw compiles the pipeline's shaders: not counted.
    let (_, mut times) = render_offscreen(
        &device,
        &queue,
        &data,
        &style,
        [size, size],
        repeats.max(1) + 1,
    )?;
    times.remove(0);
    let ms: Vec<f64> = times.iter().map(|t| t * 1e3).collect();
    let (n, median, p99) = promptscope::app::FrameTimes::stats(&ms).expect("at least one draw");
    match format {
        Format::Json => outln!("{}", serde_json::json!({"adapter": adapter, "size": size, "repeats": n, "median_ms": median, "p99_ms": p99})),
        Format::Text => outln!("overlay {size}×{size} on {adapter}: median {median:.3} ms, p99 {p99:.3} ms per draw ({n} draws, submit + wait)"),
    }
    Ok(())
}

#[cfg(not(feature = "gui"))]
pub fn bench_overlay(_: u32, _: usize, _: Format) -> Result<()> {
    anyhow::bail!("this promptscope was built without the GPU overlay (feature `gui`)")
}

#[cfg(not(feature = "gui"))]
pub fn open_app(_: Option<String>, _: Option<PathBuf>, _: AppStart) -> Result<()> {
    anyhow::bail!("this promptscope was built without the desktop app (feature `gui`); use a verb, see --help")
}
