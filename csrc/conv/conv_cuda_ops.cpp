// The CUDA backend of the conv ops (conv_ops.h, whose entries check the arguments, set the
// device and answer the empty cases): tensors in, kernel launches of conv_cuda.cu and cuBLAS
// GEMMs (through ATen's bmm) out. Compiled by the host compiler only in CUDA builds; narrow
// headers keep it quick to build.
//
// The algorithms are those of conv_cpu.cpp, and Winograd's (conv_winograd.h):
//  * direct: one thread per output element (conv_cuda.cu).
//  * im2col: unfold a chunk of samples into a (groups, C/groups * kernel_volume,
//    samples * output_plane) column matrix in one launch, then one batched GEMM over the
//    groups. The input gradient runs the GEMM the other way (col = W^T @ grad_output) and
//    folds the columns back with col2im; the weight gradient accumulates
//    grad_output @ col^T over the chunks.
// float16 and bfloat16 run their GEMMs on float32 copies ("compute type"), so they
// accumulate in float32 end to end, as the direct kernels do.

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/all.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../cuda_glue.h"
#include "conv_common.h"
#include "conv_cuda.h"
#include "conv_ops.h"

namespace tco {
namespace {

// Samples unfolded together. A GEMM over one sample of a small output plane (14x14 = 196
// columns) leaves most of the GPU idle; grouping samples widens it. The column buffer is
// kept under kColBudgetBytes so that memory stays bounded whatever the batch.
constexpr int64_t kTargetColumns = int64_t(1) << 15;
constexpr int64_t kColBudgetBytes = int64_t(256) << 20;

int64_t samples_per_chunk(const ConvGeometry& g, int64_t elem_size) {
  const int64_t L = std::max<int64_t>(g.out_plane(), 1);
  const int64_t per_sample = std::max<int64_t>(g.in_channels * g.kernel_volume() * L * elem_size, 1);
  const int64_t nb = std::min(std::max<int64_t>(1, kTargetColumns / L),
                              std::max<int64_t>(1, kColBudgetBytes / per_sample));
  return std::max<int64_t>(1, std::min(nb, g.batch));
}

// The geometry of samples [n0, n0 + count): the kernels see only the chunk.
ConvGeometry chunk_geometry(const ConvGeometry& g, int64_t count) {
  ConvGeometry c = g;
  c.batch = count;
  return c;
}

// Unfolds samples [n0, n0 + count) of `input` into the front of `col_buffer`, returned as
// (groups, col_rows, count * L).
at::Tensor unfold_chunk(const at::Tensor& input, const at::Tensor& col_buffer, int64_t n0,
                        int64_t count, const ConvGeometry& g) {
  const int64_t cols = count * g.out_plane();
  at::Tensor col = col_buffer.narrow(0, 0, g.in_channels * g.kernel_volume() * cols)
                       .view({g.groups, g.col_rows(), cols});
  C10_CUDA_CHECK(cuda_conv::im2col(cuda_dtype_of(input.scalar_type()), chunk_geometry(g, count),
                                   input.narrow(0, n0, count).const_data_ptr(),
                                   col.mutable_data_ptr(), current_cuda_stream()));
  return col;
}

// grad_output of samples [n0, n0 + count) as (groups, Og, count * L) in the compute type:
// a view for one sample already in that type, else a transposing copy into `buffer`.
at::Tensor grad_output_chunk(const at::Tensor& gout, const at::Tensor& buffer, int64_t n0,
                             int64_t count, const ConvGeometry& g) {
  const int64_t O = g.out_channels, L = g.out_plane();
  const at::Tensor block = gout.view({g.batch, O, L}).narrow(0, n0, count);
  if (count == 1 && gout.scalar_type() == buffer.scalar_type()) {
    return block.select(0, 0).view({g.groups, g.out_per_group(), L});
  }
  at::Tensor dst = buffer.narrow(0, 0, O * count * L).view({O, count, L});
  dst.copy_(block.transpose(0, 1));
  return dst.view({g.groups, g.out_per_group(), count * L});
}

at::Tensor im2col_forward(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const ConvGeometry& g) {
  const at::ScalarType st = input.scalar_type(), ct = compute_type(st);
  const int64_t N = g.batch, O = g.out_channels, G = g.groups, Og = g.out_per_group();
  const int64_t L = g.out_plane(), CK = g.col_rows();
  at::Tensor out = at::empty({N, O, L}, input.options());
  const at::Tensor w = weight.to(ct).view({G, Og, CK});
  std::optional<at::Tensor> b;
  if (bias.has_value()) b = bias->to(ct).view({G, Og, 1});
  const int64_t nb = samples_per_chunk(g, at::elementSize(ct));
  const at::Tensor col_buffer = at::empty({g.in_channels * g.kernel_volume() * nb * L},
                                          input.options().dtype(ct));
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    const int64_t count = std::min(nb, N - n0);
    const at::Tensor col = unfold_chunk(input, col_buffer, n0, count, g);
    const std::vector<int64_t> y_shape{G, Og, count * L};
    if (count == 1 && ct == st) {
      // The GEMM writes straight into this sample's output.
      at::Tensor dst = out.select(0, n0).view(y_shape);
      if (b) {
        at::baddbmm_out(dst, b->expand(y_shape), w, col);
      } else {
        at::bmm_out(dst, w, col);
      }
    } else {
      const at::Tensor y = b ? at::baddbmm(b->expand(y_shape), w, col) : at::bmm(w, col);
      out.narrow(0, n0, count).copy_(y.view({O, count, L}).transpose(0, 1));
    }
  }
  return out;
}

at::Tensor im2col_input_backward(const at::Tensor& gout, const at::Tensor& weight,
                                 const ConvGeometry& g, at::IntArrayRef input_size) {
  const at::ScalarType st = gout.scalar_type(), ct = compute_type(st);
  const int64_t N = g.batch, O = g.out_channels, G = g.groups, Og = g.out_per_group();
  const int64_t L = g.out_plane(), CK = g.col_rows();
  at::Tensor gin = at::empty(input_size, gout.options());  // col2im writes every element
  const at::Tensor w_t = weight.to(ct).view({G, Og, CK}).transpose(1, 2);  // (G, CK, Og)
  const int64_t nb = samples_per_chunk(g, at::elementSize(ct));
  const at::TensorOptions ct_options = gout.options().dtype(ct);
  const at::Tensor col_buffer = at::empty({G * CK * nb * L}, ct_options);
  const at::Tensor gout_buffer = at::empty({O * nb * L}, ct_options);
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    const int64_t count = std::min(nb, N - n0);
    const at::Tensor gout_g = grad_output_chunk(gout, gout_buffer, n0, count, g);
    at::Tensor col = col_buffer.narrow(0, 0, G * CK * count * L).view({G, CK, count * L});
    at::bmm_out(col, w_t, gout_g);
    C10_CUDA_CHECK(cuda_conv::col2im(cuda_dtype_of(st), chunk_geometry(g, count), col.const_data_ptr(),
                                     gin.narrow(0, n0, count).mutable_data_ptr(), current_cuda_stream()));
  }
  return gin;
}

at::Tensor im2col_weight_backward(const at::Tensor& gout, const at::Tensor& input,
                                  const ConvGeometry& g, at::IntArrayRef weight_size) {
  const at::ScalarType ct = compute_type(gout.scalar_type());
  const int64_t N = g.batch, G = g.groups, L = g.out_plane();
  const at::TensorOptions ct_options = gout.options().dtype(ct);
  at::Tensor gw = at::zeros({G, g.out_per_group(), g.col_rows()}, ct_options);
  const int64_t nb = samples_per_chunk(g, at::elementSize(ct));
  const at::Tensor col_buffer = at::empty({g.in_channels * g.kernel_volume() * nb * L}, ct_options);
  const at::Tensor gout_buffer = at::empty({g.out_channels * nb * L}, ct_options);
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    const int64_t count = std::min(nb, N - n0);
    const at::Tensor col = unfold_chunk(input, col_buffer, n0, count, g);
    gw.baddbmm_(grad_output_chunk(gout, gout_buffer, n0, count, g), col.transpose(1, 2));
  }
  return gw.view(weight_size).to(gout.scalar_type());
}

// ---------------------------------------------------------------------------------------
// Winograd (conv_winograd.h): the weight transformed once, then per chunk of samples the
// input transform, one batched GEMM M = U @ V over (groups x alpha^2) and the output
// transform. V and M of a chunk stay within kColBudgetBytes.
std::optional<at::Tensor> winograd_forward(const at::Tensor& input, const at::Tensor& weight,
                                           const std::optional<at::Tensor>& bias, const ConvGeometry& g, int tile) {
  const WinogradPlan p = winograd_plan(g, tile);
  const cuda_conv::DType dtype = cuda_dtype_of(input.scalar_type());
  const at::ScalarType ct = compute_type(input.scalar_type());
  const at::TensorOptions ct_options = input.options().dtype(ct);
  const int64_t GA = g.groups * p.alpha_area(), Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t per_sample = p.tiles_per_sample();
  const cudaStream_t stream = current_cuda_stream();
  at::Tensor u = at::empty({GA, Og, Cg}, ct_options);
  C10_CUDA_CHECK(cuda_conv::winograd_weight_transform(dtype, g, p, weight.const_data_ptr(), u.mutable_data_ptr(),
                                                      stream));
  at::Tensor out = at::empty({g.batch, g.out_channels, g.out_plane()}, input.options());
  const int64_t sample_bytes = GA * (Cg + Og) * per_sample * static_cast<int64_t>(at::elementSize(ct));
  const int64_t nb = std::clamp<int64_t>(kColBudgetBytes / std::max<int64_t>(sample_bytes, 1), 1, g.batch);
  const at::Tensor v_buffer = at::empty({GA * Cg * nb * per_sample}, ct_options);
  const at::Tensor m_buffer = at::empty({GA * Og * nb * per_sample}, ct_options);
  for (int64_t n0 = 0; n0 < g.batch; n0 += nb) {
    const int64_t count = std::min(nb, g.batch - n0), tiles = count * per_sample;
    const ConvGeometry c = chunk_geometry(g, count);
    at::Tensor v = v_buffer.narrow(0, 0, GA * Cg * tiles).view({GA, Cg, tiles});
    at::Tensor m = m_buffer.narrow(0, 0, GA * Og * tiles).view({GA, Og, tiles});
    C10_CUDA_CHECK(cuda_conv::winograd_input_transform(dtype, c, p, input.narrow(0, n0, count).const_data_ptr(),
                                                       v.mutable_data_ptr(), stream));
    at::bmm_out(m, u, v);
    C10_CUDA_CHECK(cuda_conv::winograd_output_transform(dtype, c, p, m.const_data_ptr(),
                                                        bias ? bias->const_data_ptr() : nullptr,
                                                        out.narrow(0, n0, count).mutable_data_ptr(), stream));
  }
  if (!at::isfinite(out).all().item<bool>()) return std::nullopt;
  return out;
}

// ---------------------------------------------------------------------------------------
// The direct passes of the CUDA backend.

void direct_forward(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b,
                    const ConvGeometry& g, const at::Tensor& out) {
  C10_CUDA_CHECK(cuda_conv::direct_forward(cuda_dtype_of(x.scalar_type()), g, x.const_data_ptr(), w.const_data_ptr(),
                                           b ? b->const_data_ptr() : nullptr, out.mutable_data_ptr(),
                                           current_cuda_stream()));
}

void direct_input_backward(const at::Tensor& gout, const at::Tensor& w, const ConvGeometry& g,
                           const at::Tensor& gin) {
  C10_CUDA_CHECK(cuda_conv::direct_input_backward(cuda_dtype_of(gout.scalar_type()), g, gout.const_data_ptr(),
                                                  w.const_data_ptr(), gin.mutable_data_ptr(), current_cuda_stream()));
}

void direct_weight_backward(const at::Tensor& gout, const at::Tensor& x, const ConvGeometry& g,
                            const at::Tensor& gw) {
  C10_CUDA_CHECK(cuda_conv::direct_weight_backward(cuda_dtype_of(gout.scalar_type()), g, gout.const_data_ptr(),
                                                   x.const_data_ptr(), gw.mutable_data_ptr(), current_cuda_stream()));
}

const ConvBackend& cuda_conv_backend() {
  static const ConvBackend backend{kCudaBackendDevice,   &direct_forward,         &direct_input_backward,
                                   &direct_weight_backward, &im2col_forward,         &im2col_input_backward,
                                   &im2col_weight_backward, nullptr,                nullptr,
                                   nullptr,                 nullptr,                &winograd_forward,
                                   nullptr,                 nullptr};
  return backend;
}

}  // namespace
}  // namespace tco

TCO_CUDA_LIBRARY_IMPL(m) { tco::register_conv_ops(m, tco::cuda_conv_backend()); }
