// CPU kernels of the conv family.
//
// Two algorithms, both ours:
//  * direct: loops over output planes and kernel taps; the innermost loop runs along an
//    output row, so it is a contiguous (for stride 1) multiply-add that the compiler
//    vectorises. Best when each group has few input channels (depthwise), where a GEMM
//    has too little depth to pay for an unfolded copy of the input.
//  * im2col: unfold the input of a chunk of samples into a (C/groups * kernel_volume,
//    samples * output_plane) matrix, then one GEMM per group through ATen's mm (BLAS).
//
// Backward passes:
//  * input: the transposed-kernel convolution. Direct: every output gradient is scattered
//    back through the kernel taps into the input plane it came from, which is the 'full'
//    correlation of the stride-dilated grad_output with the 180°-rotated, channel-swapped
//    kernel, without materialising the zeros. im2col: col = W^T @ grad_output, then col2im.
//  * weight: the correlation of the input with grad_output (a dot product per tap, or
//    grad_output @ col^T).
//
// float16 and bfloat16 accumulate in float32: the direct kernels keep float32 accumulators,
// the im2col path runs its GEMMs on float32 copies ("compute type").

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../cpu_vectorize.h"
#include "conv_common.h"

namespace tco {
namespace {

// ---------------------------------------------------------------------------------------
// Row kernels: the only loops that run per element. Marked for multi-versioning.

// dst[i] += w * src[i * step]
template <typename acc_t, typename src_t>
TCO_VECTORIZE void axpy_gather(acc_t* __restrict dst, const src_t* __restrict src, acc_t w,
                               int64_t n, int64_t step) {
  if (step == 1) {
    for (int64_t i = 0; i < n; ++i) dst[i] += w * static_cast<acc_t>(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] += w * static_cast<acc_t>(src[i * step]);
  }
}

// dst[i * step] += w * src[i]
template <typename acc_t, typename src_t>
TCO_VECTORIZE void axpy_scatter(acc_t* __restrict dst, const src_t* __restrict src, acc_t w,
                                int64_t n, int64_t step) {
  if (step == 1) {
    for (int64_t i = 0; i < n; ++i) dst[i] += w * static_cast<acc_t>(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i * step] += w * static_cast<acc_t>(src[i]);
  }
}

// sum_i a[i] * b[i * step]
template <typename acc_t, typename src_t>
TCO_VECTORIZE acc_t dot_strided(const src_t* __restrict a, const src_t* __restrict b, int64_t n,
                                int64_t step) {
  acc_t sum = 0;
  if (step == 1) {
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) sum += static_cast<acc_t>(a[i]) * static_cast<acc_t>(b[i]);
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i)
      sum += static_cast<acc_t>(a[i]) * static_cast<acc_t>(b[i * step]);
  }
  return sum;
}

// ---------------------------------------------------------------------------------------
// Direct algorithm.

template <typename scalar_t>
void direct_forward(const scalar_t* in, const scalar_t* w, const scalar_t* bias, scalar_t* out,
                    const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t O = g.out_channels, Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t K = g.kernel_volume(), in_plane = g.in_plane(), out_plane = g.out_plane();
  at::parallel_for(0, g.batch * O, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(out_plane);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / O, oc = task % O, grp = oc / Og;
      std::fill(acc.begin(), acc.end(), bias ? static_cast<acc_t>(bias[oc]) : acc_t(0));
      for (int64_t ic = 0; ic < Cg; ++ic) {
        const scalar_t* in_c = in + (n * g.in_channels + grp * Cg + ic) * in_plane;
        const scalar_t* w_c = w + (oc * Cg + ic) * K;
        for_each_tap_row(g, [&](int64_t tap, int64_t o, int64_t i, int64_t count) {
          axpy_gather<acc_t, scalar_t>(acc.data() + o, in_c + i, static_cast<acc_t>(w_c[tap]),
                                       count, g.stride[2]);
        });
      }
      std::copy(acc.begin(), acc.end(), out + task * out_plane);
    }
  });
}

template <typename scalar_t>
void direct_input_backward(const scalar_t* gout, const scalar_t* w, scalar_t* gin,
                           const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = g.in_channels, Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t K = g.kernel_volume(), in_plane = g.in_plane(), out_plane = g.out_plane();
  // One task per input plane: every write of a task lands in its own plane, so no races.
  at::parallel_for(0, g.batch * C, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(in_plane);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / C, c = task % C, grp = c / Cg, ic = c % Cg;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t oc = grp * Og; oc < (grp + 1) * Og; ++oc) {
        const scalar_t* gout_c = gout + (n * g.out_channels + oc) * out_plane;
        const scalar_t* w_c = w + (oc * Cg + ic) * K;
        for_each_tap_row(g, [&](int64_t tap, int64_t o, int64_t i, int64_t count) {
          axpy_scatter<acc_t, scalar_t>(acc.data() + i, gout_c + o, static_cast<acc_t>(w_c[tap]),
                                        count, g.stride[2]);
        });
      }
      std::copy(acc.begin(), acc.end(), gin + task * in_plane);
    }
  });
}

template <typename scalar_t>
void direct_weight_backward(const scalar_t* gout, const scalar_t* in, scalar_t* gw,
                            const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t K = g.kernel_volume(), in_plane = g.in_plane(), out_plane = g.out_plane();
  // One task per (out channel, in channel of its group) pair: it owns K weight entries.
  at::parallel_for(0, g.out_channels * Cg, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(K);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t oc = task / Cg, ic = task % Cg, grp = oc / Og;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t n = 0; n < g.batch; ++n) {
        const scalar_t* gout_c = gout + (n * g.out_channels + oc) * out_plane;
        const scalar_t* in_c = in + (n * g.in_channels + grp * Cg + ic) * in_plane;
        for_each_tap_row(g, [&](int64_t tap, int64_t o, int64_t i, int64_t count) {
          acc[tap] += dot_strided<acc_t, scalar_t>(gout_c + o, in_c + i, count, g.stride[2]);
        });
      }
      std::copy(acc.begin(), acc.end(), gw + task * K);
    }
  });
}

// ---------------------------------------------------------------------------------------
// im2col algorithm.

// Unfolds one sample's input channels [0, Cg) of `in` (which points at the group's first
// channel) into `col`, row r = ic * K + tap, `L = out_plane` columns starting at `col`,
// rows `row_stride` apart. Every element of the block is written once (zeros for padding).
template <typename src_t, typename col_t>
void im2col(const src_t* in, col_t* col, int64_t row_stride, const ConvGeometry& g) {
  const int64_t K = g.kernel_volume(), in_plane = g.in_plane();
  const int64_t oD = g.out_size[0], oH = g.out_size[1], oW = g.out_size[2];
  const int64_t H = g.in_size[1], W = g.in_size[2];
  at::parallel_for(0, g.in_per_group() * K, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t ic = r / K, tap = r % K;
      const int64_t kw = tap % g.kernel[2], kh = (tap / g.kernel[2]) % g.kernel[1],
                    kd = tap / (g.kernel[2] * g.kernel[1]);
      const int64_t off_d = tap_offset(g, 0, kd), off_h = tap_offset(g, 1, kh),
                    off_w = tap_offset(g, 2, kw);
      const IndexRange rw = valid_outputs(g, 2, off_w);
      const int64_t lo = std::min(rw.lo, oW), hi = std::max(lo, rw.hi);
      const src_t* in_c = in + ic * in_plane;
      col_t* dst = col + r * row_stride;
      for (int64_t od = 0; od < oD; ++od) {
        const int64_t id = od * g.stride[0] + off_d;
        for (int64_t oh = 0; oh < oH; ++oh, dst += oW) {
          const int64_t ih = oh * g.stride[1] + off_h;
          if (id < 0 || id >= g.in_size[0] || ih < 0 || ih >= H) {
            std::fill(dst, dst + oW, col_t(0));
            continue;
          }
          const src_t* src = in_c + (id * H + ih) * W + off_w;
          std::fill(dst, dst + lo, col_t(0));
          if (g.stride[2] == 1) {
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = static_cast<col_t>(src[ow]);
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = static_cast<col_t>(src[ow * g.stride[2]]);
          }
          std::fill(dst + hi, dst + oW, col_t(0));
        }
      }
    }
  });
}

// The adjoint of im2col: adds the columns back into one sample's input-gradient channels
// [0, Cg) of `gin`. One task per input channel, so the scattered adds never race.
template <typename col_t>
void col2im(const col_t* col, int64_t row_stride, col_t* gin, const ConvGeometry& g) {
  const int64_t K = g.kernel_volume(), in_plane = g.in_plane();
  at::parallel_for(0, g.in_per_group(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t ic = begin; ic < end; ++ic) {
      col_t* gin_c = gin + ic * in_plane;
      for_each_tap_row(g, [&](int64_t tap, int64_t o, int64_t i, int64_t count) {
        axpy_scatter<col_t, col_t>(gin_c + i, col + (ic * K + tap) * row_stride + o, col_t(1),
                                   count, g.stride[2]);
      });
    }
  });
}

// GEMMs run in float32 for half and bfloat16 inputs (accumulation in float32 end to end).
at::ScalarType compute_type(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

// Samples unfolded together. A GEMM over one sample of a small output plane (14x14 = 196
// columns) runs far below BLAS peak; grouping samples widens it. The unfolded buffer is
// kept under kColBudgetBytes so that memory stays bounded whatever the batch.
constexpr int64_t kTargetColumns = 2048;
constexpr int64_t kColBudgetBytes = int64_t(64) << 20;

int64_t samples_per_chunk(const ConvGeometry& g, int64_t elem_size) {
  const int64_t L = std::max<int64_t>(g.out_plane(), 1);
  int64_t nb = std::max<int64_t>(1, kTargetColumns / L);
  const int64_t per_sample = g.col_rows() * L * elem_size;
  nb = std::min(nb, std::max<int64_t>(1, kColBudgetBytes / std::max<int64_t>(per_sample, 1)));
  return std::max<int64_t>(1, std::min(nb, g.batch));
}

// A 1x1 kernel with unit stride and no padding reads the input as it is: no unfold needed.
bool is_pointwise(const ConvGeometry& g) {
  for (int d = 0; d < 3; ++d)
    if (g.kernel[d] != 1 || g.stride[d] != 1 || g.pad[d] != 0) return false;
  return true;
}

// Unfolds samples [n0, n0 + count) of group `grp` into `col` (rows of `col.stride(0)`).
void unfold_chunk(const at::Tensor& input, at::Tensor& col, int64_t n0, int64_t count, int64_t grp,
                  const ConvGeometry& g) {
  const int64_t L = g.out_plane(), Cg = g.in_per_group();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "cnn_ops_im2col", [&] {
    using src_t = scalar_t;
    const src_t* in = input.const_data_ptr<src_t>();
    AT_DISPATCH_FLOATING_TYPES(col.scalar_type(), "cnn_ops_im2col_col", [&] {
      for (int64_t j = 0; j < count; ++j) {
        im2col<src_t, scalar_t>(in + ((n0 + j) * g.in_channels + grp * Cg) * g.in_plane(),
                                col.data_ptr<scalar_t>() + j * L, col.stride(0), g);
      }
    });
  });
}

// grad_output of samples [n0, n0 + count), channels of group `grp`, as an (Og, count * L)
// matrix in the compute type. A view when possible, a copy otherwise.
at::Tensor grad_output_chunk(const at::Tensor& gout, int64_t n0, int64_t count, int64_t grp,
                             const ConvGeometry& g, at::ScalarType ct) {
  const int64_t Og = g.out_per_group(), L = g.out_plane();
  at::Tensor block = gout.view({g.batch, g.out_channels, L}).narrow(0, n0, count).narrow(1, grp * Og, Og);
  if (count == 1 && block.scalar_type() == ct) return block.select(0, 0);
  return block.transpose(0, 1).to(ct).reshape({Og, count * L});
}

at::Tensor im2col_forward(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const ConvGeometry& g) {
  const at::ScalarType ct = compute_type(input.scalar_type());
  const int64_t N = g.batch, O = g.out_channels, Og = g.out_per_group(), Cg = g.in_per_group();
  const int64_t L = g.out_plane(), CK = g.col_rows();
  at::Tensor out = at::empty({N, O, L}, input.options());
  const at::Tensor w = weight.to(ct).reshape({O, CK});
  const bool pointwise = is_pointwise(g);
  const int64_t nb = samples_per_chunk(g, at::elementSize(ct));
  at::Tensor col_buffer;
  if (!(pointwise && nb == 1)) col_buffer = at::empty({CK, nb * L}, input.options().dtype(ct));
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    const int64_t count = std::min(nb, N - n0);
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const at::Tensor w_g = w.narrow(0, grp * Og, Og);
      at::Tensor col;
      if (pointwise && nb == 1) {
        col = input.view({N, g.in_channels, L}).select(0, n0).narrow(0, grp * Cg, Cg).to(ct);
      } else {
        col = col_buffer.narrow(1, 0, count * L);
        unfold_chunk(input, col, n0, count, grp, g);
      }
      at::Tensor out_block = out.narrow(0, n0, count).narrow(1, grp * Og, Og);
      if (count == 1 && ct == input.scalar_type()) {
        at::Tensor dst = out_block.select(0, 0);
        at::mm_out(dst, w_g, col);
      } else {
        out_block.copy_(at::mm(w_g, col).view({Og, count, L}).transpose(0, 1));
      }
    }
  }
  if (bias.has_value() && bias->defined()) out.add_(bias->view({1, O, 1}));
  return out;
}

at::Tensor im2col_input_backward(const at::Tensor& gout, const at::Tensor& weight,
                                 const ConvGeometry& g, at::IntArrayRef input_size) {
  const at::ScalarType ct = compute_type(gout.scalar_type());
  const int64_t N = g.batch, Og = g.out_per_group(), Cg = g.in_per_group();
  const int64_t L = g.out_plane(), CK = g.col_rows();
  const at::Tensor w = weight.to(ct).reshape({g.out_channels, CK});
  at::Tensor gin = at::zeros({N, g.in_channels, g.in_plane()}, gout.options().dtype(ct));
  const bool pointwise = is_pointwise(g);
  const int64_t nb = samples_per_chunk(g, at::elementSize(ct));
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    const int64_t count = std::min(nb, N - n0);
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const at::Tensor w_t = w.narrow(0, grp * Og, Og).t();  // (CK, Og)
      const at::Tensor gout_g = grad_output_chunk(gout, n0, count, grp, g, ct);
      if (pointwise && count == 1) {
        at::Tensor dst = gin.select(0, n0).narrow(0, grp * Cg, Cg);
        at::mm_out(dst, w_t, gout_g);
        continue;
      }
      const at::Tensor col = at::mm(w_t, gout_g);  // (CK, count * L)
      AT_DISPATCH_FLOATING_TYPES(ct, "cnn_ops_col2im", [&] {
        for (int64_t j = 0; j < count; ++j) {
          col2im<scalar_t>(col.const_data_ptr<scalar_t>() + j * L, col.stride(0),
                           gin.data_ptr<scalar_t>() + ((n0 + j) * g.in_channels + grp * Cg) * g.in_plane(), g);
        }
      });
    }
  }
  return gin.view(input_size).to(gout.scalar_type());
}

at::Tensor im2col_weight_backward(const at::Tensor& gout, const at::Tensor& input,
                                  const ConvGeometry& g, at::IntArrayRef weight_size) {
  const at::ScalarType ct = compute_type(gout.scalar_type());
  const int64_t N = g.batch, Og = g.out_per_group(), Cg = g.in_per_group();
  const int64_t L = g.out_plane(), CK = g.col_rows();
  at::Tensor gw = at::zeros({g.out_channels, CK}, gout.options().dtype(ct));
  const bool pointwise = is_pointwise(g);
  const int64_t nb = samples_per_chunk(g, at::elementSize(ct));
  at::Tensor col_buffer;
  if (!(pointwise && nb == 1)) col_buffer = at::empty({CK, nb * L}, input.options().dtype(ct));
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    const int64_t count = std::min(nb, N - n0);
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      at::Tensor col;
      if (pointwise && nb == 1) {
        col = input.view({N, g.in_channels, L}).select(0, n0).narrow(0, grp * Cg, Cg).to(ct);
      } else {
        col = col_buffer.narrow(1, 0, count * L);
        unfold_chunk(input, col, n0, count, grp, g);
      }
      at::Tensor gw_g = gw.narrow(0, grp * Og, Og);
      gw_g.addmm_(grad_output_chunk(gout, n0, count, grp, g, ct), col.t());
    }
  }
  return gw.view(weight_size).to(gout.scalar_type());
}

// ---------------------------------------------------------------------------------------
// Op entry points (CPU dispatch key).

at::Tensor output_shape_tensor(const at::Tensor& flat, const ConvGeometry& g, int64_t nd) {
  std::vector<int64_t> shape{g.batch, g.out_channels};
  for (int64_t d = 3 - nd; d < 3; ++d) shape.push_back(g.out_size[d]);
  return flat.view(shape);
}

at::Tensor conv_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef padding_end,
                            at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm) {
  const ConvGeometry g =
      forward_geometry(input, weight, bias, stride, padding, padding_end, dilation, groups);
  const ConvAlgorithm algo = resolve_algorithm(algorithm, g);
  const int64_t nd = static_cast<int64_t>(stride.size());
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  std::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) b = bias->contiguous();
  if (g.batch == 0 || g.out_plane() == 0) {
    return output_shape_tensor(at::empty({g.batch * g.out_channels * g.out_plane()}, x.options()), g, nd);
  }
  if (algo == ConvAlgorithm::Im2col) return output_shape_tensor(im2col_forward(x, w, b, g), g, nd);
  at::Tensor out = at::empty({g.batch * g.out_channels * g.out_plane()}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "cnn_ops_conv_forward", [&] {
    direct_forward<scalar_t>(x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                             b ? b->const_data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), g);
  });
  return output_shape_tensor(out, g, nd);
}

at::Tensor conv_input_backward_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                   at::IntArrayRef input_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation,
                                   int64_t groups, c10::string_view algorithm) {
  const ConvGeometry g =
      input_backward_geometry(grad_output, weight, input_size, stride, padding, dilation, groups);
  const ConvAlgorithm algo = resolve_algorithm(algorithm, g);
  const at::Tensor gout = grad_output.contiguous(), w = weight.contiguous();
  if (g.batch == 0 || g.in_plane() == 0 || g.in_channels == 0) {
    return at::zeros(input_size, gout.options());
  }
  if (algo == ConvAlgorithm::Im2col) return im2col_input_backward(gout, w, g, input_size);
  at::Tensor gin = at::empty(input_size, gout.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gout.scalar_type(), "cnn_ops_conv_input_backward", [&] {
    direct_input_backward<scalar_t>(gout.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                    gin.data_ptr<scalar_t>(), g);
  });
  return gin;
}

at::Tensor conv_weight_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                    at::IntArrayRef weight_size, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation,
                                    int64_t groups, c10::string_view algorithm) {
  const ConvGeometry g =
      weight_backward_geometry(grad_output, input, weight_size, stride, padding, dilation, groups);
  const ConvAlgorithm algo = resolve_algorithm(algorithm, g);
  const at::Tensor gout = grad_output.contiguous(), x = input.contiguous();
  if (g.batch == 0 || g.out_plane() == 0) return at::zeros(weight_size, gout.options());
  if (algo == ConvAlgorithm::Im2col) return im2col_weight_backward(gout, x, g, weight_size);
  at::Tensor gw = at::empty(weight_size, gout.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gout.scalar_type(), "cnn_ops_conv_weight_backward", [&] {
    direct_weight_backward<scalar_t>(gout.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                     gw.data_ptr<scalar_t>(), g);
  });
  return gw;
}

}  // namespace
}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CPU, m) {
  m.impl("conv_forward", &tco::conv_forward_cpu);
  m.impl("conv_input_backward", &tco::conv_input_backward_cpu);
  m.impl("conv_weight_backward", &tco::conv_weight_backward_cpu);
}
