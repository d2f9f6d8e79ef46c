// Integrate-and-fire over a chunk of steps in one pass per item (backends/gpu/fused.py).
//
// Per item b and step k, over the item's N neurons in memory order:
//   v <- v + (d[k] + c)   (d or c absent: that term left out; the same float32 rounding as the engine's ops)
//   s <- [v >= theta];  v <- v - theta (subtract) or 0 (reset "zero") where s
// writing s as uint8 and the step's spike count and synaptic events (sum of s * fan) as float32.
// Compiled with -ffp-contract=off: no fused multiply-add may change a rounding.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

// One step of one item over neurons [start, stop): the input term chosen at compile time (D: the step's dynamic
// current, C: the constant), one vectorized pass; returns the spikes and adds the events into ``events``.
template <bool D, bool C, bool Zero, bool Wide>
static int64_t step_block(float* vb, const float* db, const float* cb, const float* tp, const int32_t* fp,
                          uint8_t* sb, int64_t start, int64_t stop, int64_t& events) {
  int32_t block_spikes = 0, block_events = 0;
  int64_t wide_events = 0;
  for (int64_t n = start; n < stop; ++n) {
    float x = vb[n];
    if constexpr (D && C) x = x + (db[n] + cb[n]);
    else if constexpr (D) x = x + db[n];
    else if constexpr (C) x = x + cb[n];
    const float t = tp[n];
    const int32_t s = x >= t;
    sb[n] = static_cast<uint8_t>(s);
    if constexpr (Zero) vb[n] = s ? 0.0f : x;
    else vb[n] = x - t * static_cast<float>(s);  // x - 0 * theta = x where no spike
    block_spikes += s;
    if constexpr (Wide) wide_events += static_cast<int64_t>(s) * fp[n];
    else block_events += s * fp[n];
  }
  events += Wide ? wide_events : block_events;
  return block_spikes;
}

template <bool D, bool C, bool Zero, bool Wide>
static void scan(int64_t B, int64_t N, int64_t S, float* vp, const float* dp, const float* cp, int64_t c_stride,
                 const float* tp, const int32_t* fp, uint8_t* sp, float* outp) {
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      float* vb = vp + b * N;
      const float* cb = C ? cp + b * c_stride : nullptr;
      for (int64_t k = 0; k < S; ++k) {
        const float* db = D ? dp + (k * B + b) * N : nullptr;
        uint8_t* sb = sp + (k * B + b) * N;
        int64_t n_spikes = 0, events = 0;
        // blocks of at most 2^16 neurons: with fan-outs below 2^15 their sums fit int32 (vectorizes)
        for (int64_t start = 0; start < N; start += 65536) {
          n_spikes += step_block<D, C, Zero, Wide>(vb, db, cb, tp, fp, sb, start, std::min(N, start + 65536), events);
        }
        outp[(k * B + b) * 2] = static_cast<float>(n_spikes);
        outp[(k * B + b) * 2 + 1] = static_cast<float>(events);
      }
    }
  });
}

template <bool D, bool C>
static void scan_reset(bool zero, bool wide, int64_t B, int64_t N, int64_t S, float* vp, const float* dp,
                       const float* cp, int64_t c_stride, const float* tp, const int32_t* fp, uint8_t* sp,
                       float* outp) {
  if (zero && wide) scan<D, C, true, true>(B, N, S, vp, dp, cp, c_stride, tp, fp, sp, outp);
  else if (zero) scan<D, C, true, false>(B, N, S, vp, dp, cp, c_stride, tp, fp, sp, outp);
  else if (wide) scan<D, C, false, true>(B, N, S, vp, dp, cp, c_stride, tp, fp, sp, outp);
  else scan<D, C, false, false>(B, N, S, vp, dp, cp, c_stride, tp, fp, sp, outp);
}

void if_chunk(torch::Tensor v, c10::optional<torch::Tensor> dynamic, c10::optional<torch::Tensor> constant,
              torch::Tensor theta, torch::Tensor fan, bool reset_to_zero, bool wide, torch::Tensor spikes,
              torch::Tensor counts) {
  // wide: some fan-out is 2^15 or more (events summed in int64 instead of int32 blocks)
  // v [B, N] float32, dynamic [S, B, N] float32, constant [Bc, N] float32 (Bc 1 or B), theta [N] float32,
  // fan [N] int32, spikes [S, B, N] uint8 (out), counts [S, B, 2] float32 (out); all contiguous
  TORCH_CHECK(v.dtype() == torch::kFloat32 && v.is_contiguous() && v.dim() == 2, "v: contiguous float32 [B, N]");
  const int64_t B = v.size(0), N = v.size(1), S = spikes.size(0);
  TORCH_CHECK(spikes.dtype() == torch::kUInt8 && spikes.is_contiguous() && spikes.numel() == S * B * N,
              "spikes: contiguous uint8 [S, B, N]");
  TORCH_CHECK(counts.dtype() == torch::kFloat32 && counts.is_contiguous() && counts.numel() == S * B * 2,
              "counts: contiguous float32 [S, B, 2]");
  TORCH_CHECK(theta.dtype() == torch::kFloat32 && theta.is_contiguous() && theta.numel() == N, "theta: float32 [N]");
  TORCH_CHECK(fan.dtype() == torch::kInt32 && fan.is_contiguous() && fan.numel() == N, "fan: int32 [N]");
  TORCH_CHECK(!dynamic.has_value() || (dynamic->dtype() == torch::kFloat32 && dynamic->is_contiguous()
              && dynamic->numel() == S * B * N), "dynamic: contiguous float32 [S, B, N]");
  TORCH_CHECK(!constant.has_value() || (constant->dtype() == torch::kFloat32 && constant->is_contiguous()
              && (constant->numel() == N || constant->numel() == B * N)), "constant: contiguous float32 [1 or B, N]");
  float* vp = v.data_ptr<float>();
  const float* dp = dynamic.has_value() ? dynamic->data_ptr<float>() : nullptr;
  const float* cp = constant.has_value() ? constant->data_ptr<float>() : nullptr;
  const int64_t c_stride = (constant.has_value() && constant->numel() > N) ? N : 0;
  const float* tp = theta.data_ptr<float>();
  const int32_t* fp = fan.data_ptr<int32_t>();
  uint8_t* sp = spikes.data_ptr<uint8_t>();
  float* outp = counts.data_ptr<float>();
  if (dp && cp) scan_reset<true, true>(reset_to_zero, wide, B, N, S, vp, dp, cp, c_stride, tp, fp, sp, outp);
  else if (dp) scan_reset<true, false>(reset_to_zero, wide, B, N, S, vp, dp, cp, c_stride, tp, fp, sp, outp);
  else if (cp) scan_reset<false, true>(reset_to_zero, wide, B, N, S, vp, dp, cp, c_stride, tp, fp, sp, outp);
  else scan_reset<false, false>(reset_to_zero, wide, B, N, S, vp, dp, cp, c_stride, tp, fp, sp, outp);
}

// The paired patches of a convolution over uint8 spikes (backends/gpu/binary_ops.py, small maps): for every
// output position (row-major over items, rows, columns) and kernel tap (i, j) the input's C channels at
// (r sh - ph + i, c sw - pw + j) as [pair * s, s] (2C bytes), zeros where the tap falls into the padding.
torch::Tensor paired_patches(torch::Tensor x, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                             int64_t pw, int64_t pair) {
  // x: uint8 [n, H, W, C] contiguous (a channels-last [n, C, H, W] permuted); returns [n R Q, kh kw 2C]
  TORCH_CHECK(x.dtype() == torch::kUInt8 && x.is_contiguous() && x.dim() == 4, "x: contiguous uint8 [n, H, W, C]");
  const int64_t n = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t R = (H + 2 * ph - kh) / sh + 1, Q = (W + 2 * pw - kw) / sw + 1;
  auto out = torch::empty({n * R * Q, kh * kw * 2 * C}, x.options());
  const uint8_t* xp = x.data_ptr<uint8_t>();
  uint8_t* op = out.data_ptr<uint8_t>();
  const uint8_t factor = static_cast<uint8_t>(pair);
  at::parallel_for(0, n * R, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / R, r = row % R;
      for (int64_t q = 0; q < Q; ++q) {
        uint8_t* dst = op + ((row * Q) + q) * kh * kw * 2 * C;
        for (int64_t i = 0; i < kh; ++i) {
          const int64_t y = r * sh - ph + i;
          for (int64_t j = 0; j < kw; ++j, dst += 2 * C) {
            const int64_t xx = q * sw - pw + j;
            if (y < 0 || y >= H || xx < 0 || xx >= W) {
              std::memset(dst, 0, 2 * C);
              continue;
            }
            const uint8_t* src = xp + ((b * H + y) * W + xx) * C;
            for (int64_t k = 0; k < C; ++k) dst[k] = static_cast<uint8_t>(src[k] * factor);
            std::memcpy(dst + C, src, C);
          }
        }
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("if_chunk", &if_chunk, "integrate-and-fire over a chunk, uint8 spikes and counts");
  m.def("paired_patches", &paired_patches, "paired uint8 patches of a convolution");
}
