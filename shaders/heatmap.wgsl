// Alignment heatmap over an image, drawn by the app through an egui_wgpu paint callback.
// The patch-grid values (R32Float, one texel per patch, already normalised to 0..1 by
// `render::heatmap::GridMap`) are upsampled bilinearly here on the GPU, mapped through a colormap
// lookup texture and blended over the image with the chosen opacity.

struct Uniforms {
    // Clip-space rectangle of the image: x0, y0, x1, y1.
    rect: vec4<f32>,
    opacity: f32,
    // 1.0 draws patch-grid lines, 0.0 does not.
    grid_lines: f32,
    grid_size: vec2<f32>,
    // 1.0 when the target is an sRGB format (the hardware encodes on write, so we output linear).
    srgb_target: f32,
    // Map values below this keep the image alone.
    threshold: f32,
    _pad1: f32,
    _pad2: f32,
};

@group(0) @binding(0) var<uniform> u: Uniforms;
@group(0) @binding(1) var image_tex: texture_2d<f32>;
@group(0) @binding(2) var heat_tex: texture_2d<f32>;
@group(0) @binding(3) var lut_tex: texture_2d<f32>;
@group(0) @binding(4) var linear_sampler: sampler;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

// A quad of two triangles covering `u.rect`, without a vertex buffer.
@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> VertexOut {
    var corners = array<vec2<f32>, 6>(
        vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 0.0), vec2<f32>(0.0, 1.0),
        vec2<f32>(0.0, 1.0), vec2<f32>(1.0, 0.0), vec2<f32>(1.0, 1.0),
    );
    let c = corners[i];
    var out: VertexOut;
    let xy = mix(u.rect.xy, u.rect.zw, c);
    out.position = vec4<f32>(xy, 0.0, 1.0);
    out.uv = c;
    return out;
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let base = textureSample(image_tex, linear_sampler, in.uv);
    // R32Float is not filterable everywhere: bilinear interpolation by hand from the four texels.
    let p = in.uv * u.grid_size - vec2<f32>(0.5, 0.5);
    let p0 = clamp(floor(p), vec2<f32>(0.0, 0.0), u.grid_size - vec2<f32>(1.0, 1.0));
    let p1 = clamp(p0 + vec2<f32>(1.0, 1.0), vec2<f32>(0.0, 0.0), u.grid_size - vec2<f32>(1.0, 1.0));
    let f = clamp(p - p0, vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 1.0));
    let v00 = textureLoad(heat_tex, vec2<i32>(p0), 0).r;
    let v10 = textureLoad(heat_tex, vec2<i32>(vec2<f32>(p1.x, p0.y)), 0).r;
    let v01 = textureLoad(heat_tex, vec2<i32>(vec2<f32>(p0.x, p1.y)), 0).r;
    let v11 = textureLoad(heat_tex, vec2<i32>(p1), 0).r;
    let v = mix(mix(v00, v10, f.x), mix(v01, v11, f.x), f.y);
    // Texel centres: 0 lands on the first entry and 1 on the last, as the CPU colormap samples.
    let n = f32(textureDimensions(lut_tex).x);
    let lut_u = (clamp(v, 0.0, 1.0) * (n - 1.0) + 0.5) / n;
    let heat = textureSample(lut_tex, linear_sampler, vec2<f32>(lut_u, 0.5)).rgb;
    let alpha = select(u.opacity, 0.0, v < u.threshold);
    var rgb = mix(base.rgb, heat, alpha);
    if (u.grid_lines > 0.5) {
        let cell = fract(in.uv * u.grid_size);
        let edge = min(min(cell.x, 1.0 - cell.x), min(cell.y, 1.0 - cell.y));
        if (edge < 0.02) {
            rgb = mix(rgb, vec3<f32>(1.0, 1.0, 1.0), 0.5);
        }
    }
    if (u.srgb_target > 0.5) {
        rgb = to_linear(rgb);
    }
    return vec4<f32>(rgb, 1.0);
}

// The image, the colormap and the blend are in gamma space, as egui's own colours are.
fn to_linear(c: vec3<f32>) -> vec3<f32> {
    let lo = c / 12.92;
    let hi = pow((c + vec3<f32>(0.055)) / 1.055, vec3<f32>(2.4));
    return select(hi, lo, c <= vec3<f32>(0.04045));
}
