// CUDA side of src/clip/fused.rs: the element-wise and per-row pieces of the transformer block as single
// kernels with their backward passes. Compiled at run time by NVRTC (src/clip/kernels/cuda.rs), so a
// CUDA build needs no extra build step. All f32, contiguous, row-major.
//
// Row kernels run one warp per row (blockDim = (32, ROWS_PER_BLOCK)): rows are at most a few thousand
// wide here (768 in ViT-B, 77 + prefix for attention), so a warp's shuffles are the whole reduction.

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float quick_gelu_sigmoid(float v) {
    return 1.0f / (1.0f + expf(-1.702f * v));
}

extern "C" __global__ void ps_quick_gelu_fwd(const float* x, float* y, unsigned long long n) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        float v = x[i];
        y[i] = v * quick_gelu_sigmoid(v);
    }
}

// d/dx x·s(ax) = s + a·x·s·(1 - s), s = σ(ax).
extern "C" __global__ void ps_quick_gelu_bwd(const float* x, const float* g, float* dx, unsigned long long n) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        float v = x[i];
        float s = quick_gelu_sigmoid(v);
        dx[i] = g[i] * (s + 1.702f * v * s * (1.0f - s));
    }
}

// y[r, c] += b[c] over `rows` rows of `cols`.
extern "C" __global__ void ps_bias_add(float* y, const float* b, unsigned long long n, unsigned int cols) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        y[i] += b[i % cols];
    }
}

// Mean and 1/std of one row (two passes: the centred sum of squares, not E[x²] - E[x]², as the CPU op).
__device__ __forceinline__ void row_stats(const float* xr, int d, float eps, float* mean, float* rstd) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < d; i += 32) s += xr[i];
    float m = warp_sum(s) / d;
    float v = 0.0f;
    for (int i = threadIdx.x; i < d; i += 32) {
        float c = xr[i] - m;
        v += c * c;
    }
    *mean = m;
    *rstd = 1.0f / sqrtf(warp_sum(v) / d + eps);
}

extern "C" __global__ void ps_layer_norm_fwd(const float* x, const float* w, const float* b, float* y, int rows, int d, float eps) {
    int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;
    const float* xr = x + (unsigned long long)row * d;
    float* yr = y + (unsigned long long)row * d;
    float mean, rstd;
    row_stats(xr, d, eps, &mean, &rstd);
    for (int i = threadIdx.x; i < d; i += 32) yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
}

// dx = rstd · (g·w - mean(g·w) - x̂ · mean(g·w·x̂)).
extern "C" __global__ void ps_layer_norm_bwd(const float* x, const float* w, const float* g, float* dx, int rows, int d, float eps) {
    int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;
    const float* xr = x + (unsigned long long)row * d;
    const float* gr = g + (unsigned long long)row * d;
    float* dr = dx + (unsigned long long)row * d;
    float mean, rstd;
    row_stats(xr, d, eps, &mean, &rstd);
    float sg = 0.0f, sgx = 0.0f;
    for (int i = threadIdx.x; i < d; i += 32) {
        float gw = gr[i] * w[i];
        sg += gw;
        sgx += gw * (xr[i] - mean) * rstd;
    }
    sg = warp_sum(sg) / d;
    sgx = warp_sum(sgx) / d;
    for (int i = threadIdx.x; i < d; i += 32) {
        float xh = (xr[i] - mean) * rstd;
        dr[i] = rstd * (gr[i] * w[i] - sg - xh * sgx);
    }
}

extern "C" __global__ void ps_softmax_fwd(const float* x, float* y, int rows, int d) {
    int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;
    const float* xr = x + (unsigned long long)row * d;
    float* yr = y + (unsigned long long)row * d;
    const float neg_inf = __int_as_float(0xff800000);
    float m = neg_inf;
    for (int i = threadIdx.x; i < d; i += 32) m = fmaxf(m, xr[i]);
    m = warp_max(m);
    if (m == neg_inf) m = 0.0f;  // a fully masked row gives zeros, not NaN
    float s = 0.0f;
    for (int i = threadIdx.x; i < d; i += 32) s += expf(xr[i] - m);
    float total = warp_sum(s);
    float inv = total > 0.0f ? 1.0f / total : 0.0f;
    for (int i = threadIdx.x; i < d; i += 32) yr[i] = expf(xr[i] - m) * inv;
}

// dx = y · (g - Σ g·y).
extern "C" __global__ void ps_softmax_bwd(const float* y, const float* g, float* dx, int rows, int d) {
    int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= rows) return;
    const float* yr = y + (unsigned long long)row * d;
    const float* gr = g + (unsigned long long)row * d;
    float* dr = dx + (unsigned long long)row * d;
    float dot = 0.0f;
    for (int i = threadIdx.x; i < d; i += 32) dot += gr[i] * yr[i];
    dot = warp_sum(dot);
    for (int i = threadIdx.x; i < d; i += 32) dr[i] = yr[i] * (gr[i] - dot);
}
