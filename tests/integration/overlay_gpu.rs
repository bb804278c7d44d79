#![cfg(feature = "gui")]
//! The GPU overlay (`shaders/heatmap.wgsl`, as the app draws it) against the CPU overlay the CLI writes
//! as PNG: same image, same map, same colormap, same picture. Runs on any wgpu adapter; CI has Mesa's
//! software Vulkan (lavapipe).

use image::{Rgb, RgbImage};
use promptscope::app::overlay::{headless_device, render_offscreen, OverlayData};
use promptscope::render::heatmap::overlay;
use promptscope::render::{Colormap, GridMap, HeatmapStyle};
use promptscope::rng::Rng;

fn picture(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x + y) % 256) as u8,
        ])
    })
}

fn data(base: &RgbImage, map: GridMap) -> OverlayData {
    let rgba: Vec<u8> = base
        .pixels()
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect();
    OverlayData {
        id: 1,
        image: rgba,
        size: [base.width(), base.height()],
        map,
    }
}

#[test]
fn the_shader_draws_what_the_cpu_overlay_draws() {
    let (device, queue, adapter) = headless_device().expect("a wgpu adapter");
    let mut rng = Rng::new(4);
    let values: Vec<f32> = (0..49)
        .map(|_| (rng.next_u64() % 1000) as f32 / 1000.0 - 0.3)
        .collect();
    let map = GridMap::new(&values, [7, 7]).unwrap();
    let base = picture(224, 224);
    for (colormap, opacity) in [
        (Colormap::Viridis, 0.55),
        (Colormap::Jet, 1.0),
        (Colormap::Viridis, 0.0),
    ] {
        let style = HeatmapStyle {
            colormap,
            opacity,
            grid_lines: false,
            threshold: 0.0,
        };
        let (gpu, _) = render_offscreen(
            &device,
            &queue,
            &data(&base, map.clone()),
            &style,
            [224, 224],
            1,
        )
        .unwrap();
        let cpu = overlay(
            &base,
            &map,
            &HeatmapStyle {
                colormap,
                opacity,
                grid_lines: false,
                threshold: 0.0,
            },
        )
        .unwrap();
        let mut worst = 0u8;
        for (g, c) in gpu.pixels().zip(cpu.pixels()) {
            for ch in 0..3 {
                worst = worst.max(g[ch].abs_diff(c[ch]));
            }
        }
        println!("{adapter}: {colormap:?} opacity {opacity}: max channel difference GPU vs CPU {worst}/255");
        assert!(
            worst <= 2,
            "{colormap:?} at {opacity}: GPU and CPU overlays differ by {worst}/255"
        );
    }
}

#[test]
fn the_threshold_leaves_the_image_alone_below_it_on_the_gpu_as_on_the_cpu() {
    let (device, queue, _) = headless_device().expect("a wgpu adapter");
    let mut rng = Rng::new(5);
    let values: Vec<f32> = (0..49)
        .map(|_| (rng.next_u64() % 1000) as f32 / 1000.0)
        .collect();
    let map = GridMap::new(&values, [7, 7]).unwrap();
    let base = picture(224, 224);
    let style = HeatmapStyle {
        colormap: Colormap::Jet,
        opacity: 0.8,
        grid_lines: false,
        threshold: 0.6,
    };
    let (gpu, _) = render_offscreen(
        &device,
        &queue,
        &data(&base, map.clone()),
        &style,
        [224, 224],
        1,
    )
    .unwrap();
    let cpu = overlay(&base, &map, &style).unwrap();
    // Pixels whose interpolated value sits within float error of the threshold may fall either side;
    // everywhere else the two agree as without a threshold.
    let differ = gpu
        .pixels()
        .zip(cpu.pixels())
        .filter(|(g, c)| (0..3).any(|ch| g[ch].abs_diff(c[ch]) > 2))
        .count();
    let untouched = gpu
        .pixels()
        .zip(base.pixels())
        .filter(|(g, b)| g.0[..3] == b.0)
        .count();
    println!(
        "threshold 0.6: {differ} of {} pixels differ GPU vs CPU; {untouched} show the image alone",
        224 * 224
    );
    assert!(differ <= 224 * 224 / 200, "{differ} pixels differ");
    assert!(
        untouched > 224 * 224 / 10,
        "the threshold hid nothing: {untouched} untouched pixels"
    );
}

#[test]
fn the_overlay_upsamples_a_coarse_grid_smoothly_at_any_size() {
    let (device, queue, _) = headless_device().expect("a wgpu adapter");
    // One hot patch in a 2×2 grid, drawn at 512×512 over a black image at full opacity.
    let map = GridMap::new(&[1.0, 0.0, 0.0, 0.0], [2, 2]).unwrap();
    let base = RgbImage::new(64, 64);
    let style = HeatmapStyle {
        colormap: Colormap::Viridis,
        opacity: 1.0,
        grid_lines: false,
        threshold: 0.0,
    };
    let (img, times) =
        render_offscreen(&device, &queue, &data(&base, map), &style, [512, 512], 3).unwrap();
    assert_eq!(times.len(), 3);
    let hot = Colormap::Viridis.sample_u8(1.0);
    let cold = Colormap::Viridis.sample_u8(0.0);
    let px = |x, y| {
        let p = img.get_pixel(x, y);
        [p[0], p[1], p[2]]
    };
    assert_eq!(px(10, 10), hot, "the hot patch's corner");
    assert_eq!(px(500, 500), cold, "the far corner");
    // Between the two patch centres the colour is in between (bilinear, not nearest).
    let mid = px(256, 128);
    assert!(mid != hot && mid != cold, "{mid:?}");
}
