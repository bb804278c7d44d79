//! The alignment overlay on the GPU: `shaders/heatmap.wgsl` samples the image and a patch-grid heat
//! texture (upsampled bilinearly in the shader) through a colormap lookup texture. Used three ways: as an
//! `egui_wgpu` paint callback in the window, offscreen into a texture (tests compare it with the CPU
//! overlay the CLI writes), and by `promptscope bench --overlay` for its draw time.

use std::collections::HashMap;
use std::sync::Arc;

use egui_wgpu::wgpu;

use crate::render::{Colormap, GridMap, HeatmapStyle};

/// The overlay shader (compiled into the binary, so the file cannot go missing at run time).
pub const HEATMAP_WGSL: &str = include_str!("../../shaders/heatmap.wgsl");

/// Texels of the colormap lookup texture.
const LUT_SIZE: usize = 256;

/// What one overlay shows. `id` changes whenever the pixels or the map change, so the GPU copy is
/// refreshed only then.
pub struct OverlayData {
    pub id: u64,
    /// RGBA8, row-major.
    pub image: Vec<u8>,
    pub size: [u32; 2],
    pub map: GridMap,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Uniforms {
    rect: [f32; 4],
    opacity: f32,
    grid_lines: f32,
    grid_size: [f32; 2],
    srgb_target: f32,
    threshold: f32,
    _pad: [f32; 2],
}

impl Uniforms {
    fn bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(48);
        for f in self
            .rect
            .into_iter()
            .chain([self.opacity, self.grid_lines])
            .chain(self.grid_size)
            .chain([self.srgb_target, self.threshold])
            .chain(self._pad)
        {
            v.extend_from_slice(&f.to_le_bytes());
        }
        v
    }
}

/// The render pipeline for one target format.
pub struct OverlayPipeline {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    srgb: bool,
}

/// The textures and bind group of one overlay's content.
pub struct OverlayTextures {
    content: u64,
    colormap: Colormap,
    uniforms: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    grid: [usize; 2],
}

impl OverlayPipeline {
    pub fn new(device: &wgpu::Device, format: wgpu::TextureFormat) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("promptscope heatmap"),
            source: wgpu::ShaderSource::Wgsl(HEATMAP_WGSL.into()),
        });
        let tex = |binding, filterable| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                sample_type: wgpu::TextureSampleType::Float { filterable },
                view_dimension: wgpu::TextureViewDimension::D2,
                multisampled: false,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("promptscope heatmap"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::VERTEX_FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                tex(1, true),
                tex(2, false),
                tex(3, true),
                wgpu::BindGroupLayoutEntry {
                    binding: 4,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("promptscope heatmap"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("promptscope heatmap"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs_main"),
                targets: &[Some(wgpu::ColorTargetState {
                    format,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            }),
            multiview_mask: None,
            cache: None,
        });
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("promptscope heatmap"),
            mag_filter: wgpu::FilterMode::Linear,
            min_filter: wgpu::FilterMode::Linear,
            address_mode_u: wgpu::AddressMode::ClampToEdge,
            address_mode_v: wgpu::AddressMode::ClampToEdge,
            ..Default::default()
        });
        Self {
            pipeline,
            layout,
            sampler,
            srgb: format.is_srgb(),
        }
    }

    /// Uploads the image, the heat grid and the colormap.
    pub fn upload(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        data: &OverlayData,
        colormap: Colormap,
    ) -> OverlayTextures {
        let texture = |label,
                       width: u32,
                       height: u32,
                       format: wgpu::TextureFormat,
                       bytes: &[u8],
                       texel: u32| {
            let size = wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            };
            let t = device.create_texture(&wgpu::TextureDescriptor {
                label: Some(label),
                size,
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            queue.write_texture(
                t.as_image_copy(),
                bytes,
                wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(texel * width),
                    rows_per_image: Some(height),
                },
                size,
            );
            t.create_view(&wgpu::TextureViewDescriptor::default())
        };
        let [w, h] = data.size;
        let image = texture(
            "overlay image",
            w,
            h,
            wgpu::TextureFormat::Rgba8Unorm,
            &data.image,
            4,
        );
        let [gh, gw] = data.map.grid;
        let heat = texture(
            "overlay heat",
            gw as u32,
            gh as u32,
            wgpu::TextureFormat::R32Float,
            &data.map.texture_bytes(),
            4,
        );
        let lut_bytes: Vec<u8> = colormap.lut(LUT_SIZE).into_iter().flatten().collect();
        let lut = texture(
            "overlay colormap",
            LUT_SIZE as u32,
            1,
            wgpu::TextureFormat::Rgba8Unorm,
            &lut_bytes,
            4,
        );
        let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("overlay uniforms"),
            size: 48,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("overlay"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniforms.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&image),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(&heat),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: wgpu::BindingResource::TextureView(&lut),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: wgpu::BindingResource::Sampler(&self.sampler),
                },
            ],
        });
        OverlayTextures {
            content: data.id,
            colormap,
            uniforms,
            bind_group,
            grid: data.map.grid,
        }
    }

    pub fn write_style(&self, queue: &wgpu::Queue, tex: &OverlayTextures, style: &HeatmapStyle) {
        let [gh, gw] = tex.grid;
        let u = Uniforms {
            // The callback's viewport is the overlay's rectangle: cover it all, top-left first.
            rect: [-1.0, 1.0, 1.0, -1.0],
            opacity: style.opacity.clamp(0.0, 1.0),
            grid_lines: if style.grid_lines { 1.0 } else { 0.0 },
            grid_size: [gw as f32, gh as f32],
            srgb_target: if self.srgb { 1.0 } else { 0.0 },
            threshold: style.threshold.clamp(0.0, 1.0),
            _pad: [0.0; 2],
        };
        queue.write_buffer(&tex.uniforms, 0, &u.bytes());
    }

    pub fn draw(&self, pass: &mut wgpu::RenderPass<'_>, tex: &OverlayTextures) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &tex.bind_group, &[]);
        pass.draw(0..6, 0..1);
    }
}

/// GPU objects kept between frames in egui_wgpu's callback resources: a pipeline per target format and
/// the textures of each overlay on screen (by slot, so a replaced picture frees the old one).
#[derive(Default)]
struct OverlayCache {
    pipelines: HashMap<wgpu::TextureFormat, OverlayPipeline>,
    slots: HashMap<u64, OverlayTextures>,
}

/// One overlay drawn in an egui rectangle.
pub struct OverlayCallback {
    pub slot: u64,
    pub format: wgpu::TextureFormat,
    pub data: Arc<OverlayData>,
    pub style: HeatmapStyle,
}

impl egui_wgpu::CallbackTrait for OverlayCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if resources.get::<OverlayCache>().is_none() {
            resources.insert(OverlayCache::default());
        }
        let cache: &mut OverlayCache = resources.get_mut().expect("inserted above");
        let pipeline = cache
            .pipelines
            .entry(self.format)
            .or_insert_with(|| OverlayPipeline::new(device, self.format));
        let stale = cache
            .slots
            .get(&self.slot)
            .is_none_or(|t| t.content != self.data.id || t.colormap != self.style.colormap);
        if stale {
            cache.slots.insert(
                self.slot,
                pipeline.upload(device, queue, &self.data, self.style.colormap),
            );
        }
        pipeline.write_style(queue, &cache.slots[&self.slot], &self.style);
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        let Some(cache) = resources.get::<OverlayCache>() else {
            return;
        };
        if let (Some(p), Some(t)) = (
            cache.pipelines.get(&self.format),
            cache.slots.get(&self.slot),
        ) {
            p.draw(pass, t);
        }
    }
}

/// A wgpu device without a window (software rasteriser preferred), for tests and benchmarks.
pub fn headless_device() -> anyhow::Result<(wgpu::Device, wgpu::Queue, String)> {
    let setup = egui_wgpu::WgpuSetup::without_display_handle();
    let instance = pollster::block_on(setup.new_instance());
    let state = pollster::block_on(egui_wgpu::RenderState::create(
        &egui_wgpu::WgpuConfiguration { wgpu_setup: setup, ..Default::default() },
        &instance,
        None,
        egui_wgpu::RendererOptions::default(),
    ))
    .map_err(|e| anyhow::anyhow!("no GPU adapter (install Mesa's lavapipe, mesa-vulkan-drivers, for a software one): {e}"))?;
    let info = state.adapter.get_info();
    Ok((
        state.device,
        state.queue,
        format!("{} ({:?})", info.name, info.backend),
    ))
}

/// Draws `data` offscreen into a `width`×`height` RGBA8 target; returns the pixels and
/// the GPU time of `repeats` draws (each submitted and waited for), in seconds.
pub fn render_offscreen(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    data: &OverlayData,
    style: &HeatmapStyle,
    [width, height]: [u32; 2],
    repeats: usize,
) -> anyhow::Result<(image::RgbaImage, Vec<f64>)> {
    let format = wgpu::TextureFormat::Rgba8Unorm;
    let pipeline = OverlayPipeline::new(device, format);
    let tex = pipeline.upload(device, queue, data, style.colormap);
    pipeline.write_style(queue, &tex, style);
    let size = wgpu::Extent3d {
        width,
        height,
        depth_or_array_layers: 1,
    };
    let target = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("overlay target"),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let view = target.create_view(&wgpu::TextureViewDescriptor::default());
    let wait = |index| {
        device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: Some(std::time::Duration::from_secs(30)),
            })
            .map_err(|e| anyhow::anyhow!("the GPU did not finish: {e}"))
    };
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let start = std::time::Instant::now();
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("overlay"),
        });
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("overlay"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            pipeline.draw(&mut pass, &tex);
        }
        wait(queue.submit([encoder.finish()]))?;
        times.push(start.elapsed().as_secs_f64());
    }
    // Read back: rows padded to 256 bytes.
    let row = 4 * width as usize;
    let padded = row.div_ceil(256) * 256;
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("overlay readback"),
        size: (padded * height as usize) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("readback"),
    });
    encoder.copy_texture_to_buffer(
        target.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &buffer,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(padded as u32),
                rows_per_image: None,
            },
        },
        size,
    );
    let index = queue.submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    buffer
        .slice(..)
        .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
    wait(index)?;
    rx.recv()?
        .map_err(|e| anyhow::anyhow!("reading the overlay back: {e}"))?;
    let mapped = buffer
        .slice(..)
        .get_mapped_range()
        .map_err(|e| anyhow::anyhow!("reading the overlay back: {e}"))?;
    let pixels: Vec<u8> = mapped
        .chunks_exact(padded)
        .flat_map(|r| r[..row].iter().copied())
        .collect();
    let img = image::RgbaImage::from_raw(width, height, pixels)
        .ok_or_else(|| anyhow::anyhow!("readback size"))?;
    Ok((img, times))
}

#[cfg(test)]
mod shader_tests {
    /// A typo in the shader fails here, not in front of a user.
    #[test]
    fn heatmap_shader_parses_and_validates() {
        use wgpu::naga;
        let module = naga::front::wgsl::parse_str(super::HEATMAP_WGSL)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(super::HEATMAP_WGSL)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .expect("valid shader");
        assert!(module.entry_points.iter().any(|e| e.name == "fs_main"));
    }
}
