// The ops of the norm family, once for every device: argument checks, the choice of layout,
// the per-channel arithmetic on small (C or N x C sized) tensors, and the running statistics.
// The passes over the data are the backend's (norm_backend.h).
//
// Batch norm sees its input in one of two layouts without copying it:
//  * planar: an NCHW-contiguous (N, C, S) input is N * C rows of S values; statistics come
//    per row and are combined per channel (equal counts, so exactly);
//  * interleaved: a channels-last input, or one with S == 1 such as (N, C), is N * S rows of
//    C values, one channel per column.
// Other strided inputs are made contiguous first. The output takes the layout computed in.
// Group norm reads a channels-last input in place, sample by sample (an S x C block with one
// channel per column); other inputs are made contiguous (a group is then one contiguous row).
// Layer norm works on contiguous inputs.

#include "norm_ops.h"

#include <ATen/MemoryOverlap.h>

#include <ATen/TensorOperators.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../conv/conv_common.h"
#include "../device_backends.h"

namespace tco {
namespace {

const NormBackend& backend_for(const at::Tensor& t) { return DeviceBackends<NormBackend>::of(t, "norm"); }

// The checks of every op: (N, C, *) input of a floating dtype.
int64_t check_input(const char* op, const at::Tensor& input) {
  check_dtype(input, "input", op);
  TORCH_CHECK(input.dim() >= 2, op, ": expected an input of shape (N, C, *), got ", shape_str(input.sizes()));
  return input.size(1);
}

// weight, bias, running statistics, mean, invstd: C entries, a floating dtype, the input's device.
void check_vector(const char* op, const at::Tensor& t, const char* name, const at::Tensor& input, int64_t size,
                  const char* what = "the input's channels") {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == size, op, ": ", name, " must have shape [", size, "] (", what,
              ", input shape ", shape_str(input.sizes()), "), got ", shape_str(t.sizes()));
  check_dtype(t, name, op);
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(), " but input is on ",
              input.device());
}

void check_vector(const char* op, const OptTensor& t, const char* name, const at::Tensor& input, int64_t size,
                  const char* what = "the input's channels") {
  if (t.has_value() && t->defined()) check_vector(op, *t, name, input, size, what);
}

// The mean / rstd a backward op is given: shape `expected` (what the forward returned), a
// floating dtype, the input's device.
void check_statistic(const char* op, const at::Tensor& t, const char* name, const at::Tensor& input,
                     at::IntArrayRef expected, const char* what) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ", shape_str(expected), " (", what,
              "), got ", shape_str(t.sizes()));
  check_dtype(t, name, op);
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(), " but input is on ",
              input.device());
}

void check_like_input(const char* op, const at::Tensor& t, const char* name, const at::Tensor& input) {
  TORCH_CHECK(t.sizes() == input.sizes(), op, ": ", name, " must have the input's shape ",
              shape_str(input.sizes()), ", got ", shape_str(t.sizes()));
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), op, ": ", name, " (", t.scalar_type(),
              ") must have the input's dtype (", input.scalar_type(), ")");
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(), " but input is on ",
              input.device());
}

bool defined(const OptTensor& t) { return t.has_value() && t->defined(); }

at::ScalarType acc_type(const at::Tensor& input) { return compute_type(input.scalar_type()); }

// A small tensor as a contiguous vector of the compute type (t itself when it is one: to() and
// contiguous() would return it too, after two dispatches).
at::Tensor acc(const at::Tensor& t, at::ScalarType type) {
  if (t.scalar_type() == type && t.is_contiguous()) return t;
  return t.to(type).contiguous();
}

// Gradients of weight and bias come back in weight's dtype (the input's without weight).
at::ScalarType param_type(const at::Tensor& input, const OptTensor& weight) {
  return defined(weight) ? weight->scalar_type() : input.scalar_type();
}

bool channels_last(const at::Tensor& t) {
  return (t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous()) ||
         (t.dim() == 5 && t.is_contiguous(at::MemoryFormat::ChannelsLast3d) && !t.is_contiguous());
}

// How batch norm reads its input (see the file comment).
struct ChannelView {
  at::Tensor x;  // the data in the layout below (input itself unless a copy was needed)
  NormLayout layout;
  int64_t n, c, s;  // batch, channels, values per channel and sample
  int64_t rows() const { return layout == NormLayout::Planar ? n * c : n * s; }
  int64_t cols() const { return layout == NormLayout::Planar ? s : c; }
  int64_t count() const { return n * s; }
  // `t` in the same layout as x (grad_output, which autograd may hand over in another one).
  at::Tensor like(const at::Tensor& t) const {
    return t.contiguous(x.is_contiguous() ? at::MemoryFormat::Contiguous : x.suggest_memory_format());
  }
  // A per-channel coefficient as the backend wants it: per column, or repeated per row.
  at::Tensor per_group(const at::Tensor& v) const;
  // Per-row results of the planar layout summed per channel (per-column ones are per channel).
  at::Tensor channel_sum(const at::Tensor& v) const;
};

ChannelView channel_view(const at::Tensor& input) {
  ChannelView v;
  v.n = input.size(0);
  v.c = input.size(1);
  v.s = 1;
  for (int64_t d = 2; d < input.dim(); ++d) v.s *= input.size(d);
  if (channels_last(input)) {
    v.x = input;
    v.layout = NormLayout::Interleaved;
  } else {
    v.x = input.contiguous();
    v.layout = v.s == 1 ? NormLayout::Interleaved : NormLayout::Planar;
  }
  return v;
}

// Per-channel arithmetic on C-sized vectors. On the CPU a formula on a short vector is one
// plain loop: as a chain of ATen ops it costs about 2 us per op, more than the passes over a
// small input such as BatchNorm1d's (256, 256). Vectors of kLoopsBelow entries or more take the
// ATen ops on every device: their overhead is small against the passes over such inputs, and
// CUDA takes them always (asynchronously on the stream), so the CPU tests with that many
// channels (or groups, or rows) check the path CUDA takes.
constexpr int64_t kLoopsBelow = 4096;

bool loops_for(const at::Tensor& t) { return t.is_cpu() && t.numel() < kLoopsBelow; }

// A vector of the compute type or null when absent (for the CPU loops).
template <typename T>
const T* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr<T>() : nullptr; }

at::Tensor acc_or_undefined(const OptTensor& t, at::ScalarType type) {
  return defined(t) ? acc(*t, type) : at::Tensor();
}

// out[i * k + j] = v[i] for a contiguous vector v of the compute type (each entry repeated k
// times): per-(sample, group) values per channel, per-channel values per plane.
at::Tensor repeat_each(const at::Tensor& v, int64_t k) {
  if (!loops_for(v)) return v.reshape({-1, 1}).expand({v.numel(), k}).reshape({v.numel() * k});
  const at::Tensor src = v.contiguous();
  at::Tensor out = at::empty({src.numel() * k}, src.options());
  for_compute_type(src.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const T* pv = src.const_data_ptr<T>();
    T* po = out.mutable_data_ptr<T>();
    for (int64_t i = 0; i < src.numel(); ++i)
      for (int64_t j = 0; j < k; ++j) po[i * k + j] = pv[i];
  });
  return out;
}

// The vector v (length k) repeated `times` times: per-channel coefficients for every sample.
at::Tensor repeat_whole(const at::Tensor& v, int64_t times) {
  if (times == 1) return v.contiguous();  // the callers only read it (a batch of one sample)
  if (!loops_for(v)) return v.reshape({1, -1}).expand({times, v.numel()}).reshape({times * v.numel()});
  const at::Tensor src = v.contiguous();
  const int64_t k = src.numel();
  at::Tensor out = at::empty({times * k}, src.options());
  for_compute_type(src.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const T* pv = src.const_data_ptr<T>();
    T* po = out.mutable_data_ptr<T>();
    for (int64_t i = 0; i < times; ++i) std::copy(pv, pv + k, po + i * k);
  });
  return out;
}

// Per channel, the sum over samples of a contiguous (n, c) matrix of the compute type.
at::Tensor sum_over_samples(const at::Tensor& v, int64_t n, int64_t c) {
  if (!loops_for(v)) return v.view({n, c}).sum(0);
  at::Tensor out = at::zeros({c}, v.options());
  for_compute_type(v.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const T* pv = v.const_data_ptr<T>();
    T* po = out.mutable_data_ptr<T>();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < c; ++j) po[j] += pv[i * c + j];
  });
  return out;
}

}  // namespace

at::Tensor ChannelView::per_group(const at::Tensor& v) const {
  return layout == NormLayout::Planar ? repeat_whole(v, n) : v;
}

at::Tensor ChannelView::channel_sum(const at::Tensor& v) const {
  return layout == NormLayout::Planar ? sum_over_samples(v, n, c) : v;
}

namespace {

// Means and biased variances of sets made of equally large parts, from the parts' own: the
// mean of the means, and the mean of the variances plus the variance of the means (exact).
// mean and var are contiguous (a, b) matrices of the compute type; the parts of a set are a
// column (over_rows: a result per column) or a row (a result per row).
std::tuple<at::Tensor, at::Tensor> combine_equal_groups(const at::Tensor& mean, const at::Tensor& var,
                                                        bool over_rows) {
  const int64_t dim = over_rows ? 0 : 1;
  if (!loops_for(mean)) {
    const at::Tensor m = mean.mean(dim, /*keepdim=*/true);
    const at::Tensor spread = (mean - m).square_().mean(dim);
    return {m.squeeze(dim), var.mean(dim).add_(spread)};
  }
  const int64_t a = mean.size(0), b = mean.size(1);
  const int64_t sets = over_rows ? b : a, parts = over_rows ? a : b;
  at::Tensor out_mean = at::empty({sets}, mean.options()), out_var = at::empty({sets}, mean.options());
  for_compute_type(mean.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const T *pm = mean.const_data_ptr<T>(), *pv = var.const_data_ptr<T>();
    T *om = out_mean.mutable_data_ptr<T>(), *ov = out_var.mutable_data_ptr<T>();
    const int64_t set_step = over_rows ? 1 : b, part_step = over_rows ? b : 1;
    for (int64_t k = 0; k < sets; ++k) {
      T m = 0, v = 0, d2 = 0;
      for (int64_t p = 0; p < parts; ++p) m += pm[k * set_step + p * part_step];
      m /= static_cast<T>(parts);
      for (int64_t p = 0; p < parts; ++p) {
        const T d = pm[k * set_step + p * part_step] - m;
        d2 += d * d;
        v += pv[k * set_step + p * part_step];
      }
      om[k] = m;
      ov[k] = (v + d2) / static_cast<T>(parts);
    }
  });
  return {out_mean, out_var};
}

// Per-channel mean and biased variance: from the backend's per-channel pass where it takes the
// shape, else per row. Planar rows all hold s values, so the channel's statistics are then the
// mean of the row means and the mean of the row variances plus the variance of the row means
// (exact for equal counts).
std::tuple<at::Tensor, at::Tensor> channel_moments(const NormBackend& be, const ChannelView& v) {
  const auto type = acc_type(v.x);
  const int64_t groups = v.layout == NormLayout::Planar ? v.rows() : v.cols();
  if (v.layout == NormLayout::Planar && be.channel_moments != nullptr && v.x.numel() > 0) {
    at::Tensor mean = at::empty({v.c}, v.x.options().dtype(type));
    at::Tensor var = at::empty({v.c}, v.x.options().dtype(type));
    if (be.channel_moments(v.x, v.n, v.c, v.s, mean, var)) return {mean, var};
  }
  at::Tensor mean = at::empty({groups}, v.x.options().dtype(type));
  at::Tensor var = at::empty({groups}, v.x.options().dtype(type));
  if (v.x.numel() > 0) be.moments(v.x, v.layout, v.rows(), v.cols(), mean, var);
  if (v.layout == NormLayout::Interleaved || v.n == 1) return {mean.view({v.c}), var.view({v.c})};
  return combine_equal_groups(mean.view({v.n, v.c}), var.view({v.n, v.c}), /*over_rows=*/true);
}


// scale = invstd * weight, shift = bias - mean * scale.
std::pair<at::Tensor, at::Tensor> affine_coefficients(const at::Tensor& mean, const at::Tensor& invstd,
                                                      const OptTensor& weight, const OptTensor& bias,
                                                      at::ScalarType type) {
  const at::Tensor m = acc(mean, type), r = acc(invstd, type);
  const at::Tensor w = acc_or_undefined(weight, type), b = acc_or_undefined(bias, type);
  if (!loops_for(m)) {
    at::Tensor scale = w.defined() ? r * w : r;
    at::Tensor shift = -m * scale;
    if (b.defined()) shift.add_(b);
    return {scale, shift};
  }
  at::Tensor scale = at::empty_like(m), shift = at::empty_like(m);
  for_compute_type(type, [&](auto zero) {
    using T = decltype(zero);
    const T *pm = m.const_data_ptr<T>(), *pr = r.const_data_ptr<T>();
    const T *pw = ptr_or_null<T>(w), *pb = ptr_or_null<T>(b);
    T *ps = scale.mutable_data_ptr<T>(), *pt = shift.mutable_data_ptr<T>();
    for (int64_t i = 0; i < m.numel(); ++i) {
      ps[i] = pw ? pr[i] * pw[i] : pr[i];
      pt[i] = (pb ? pb[i] : T(0)) - pm[i] * ps[i];
    }
  });
  return {scale, shift};
}

// invstd = 1 / sqrt(var + eps), a new tensor.
at::Tensor inverse_std(const at::Tensor& var, double eps) {
  if (!loops_for(var)) return var.add(eps).rsqrt_();
  at::Tensor out = at::empty_like(var);
  for_compute_type(var.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const T* pv = var.const_data_ptr<T>();
    T* po = out.mutable_data_ptr<T>();
    for (int64_t i = 0; i < var.numel(); ++i) po[i] = T(1) / std::sqrt(pv[i] + static_cast<T>(eps));
  });
  return out;
}

// Coefficients of training batch norm's grad_input dx = dy * a + x * b + c (channel_input_grad).
std::tuple<at::Tensor, at::Tensor, at::Tensor> input_grad_coefficients(
    const at::Tensor& mean, const at::Tensor& invstd, const OptTensor& weight, const at::Tensor& sum_dy,
    const at::Tensor& sum_dy_xmu, int64_t count, at::ScalarType type) {
  const at::Tensor m = acc(mean, type), r = acc(invstd, type), w = acc_or_undefined(weight, type);
  const at::Tensor s1 = acc(sum_dy, type), s2 = acc(sum_dy_xmu, type);
  const double inv_n = count > 0 ? 1.0 / static_cast<double>(count) : 0.0;
  if (!loops_for(m)) {
    at::Tensor a = w.defined() ? r * w : r.clone();
    at::Tensor b = -a * r * r * s2 * inv_n;
    at::Tensor c = -a * s1 * inv_n - b * m;
    return {a, b, c};
  }
  at::Tensor a = at::empty_like(m), b = at::empty_like(m), c = at::empty_like(m);
  for_compute_type(type, [&](auto zero) {
    using T = decltype(zero);
    const T *pm = m.const_data_ptr<T>(), *pr = r.const_data_ptr<T>(), *pw = ptr_or_null<T>(w);
    const T *p1 = s1.const_data_ptr<T>(), *p2 = s2.const_data_ptr<T>();
    T *pa = a.mutable_data_ptr<T>(), *pb = b.mutable_data_ptr<T>(), *pc = c.mutable_data_ptr<T>();
    const T n1 = static_cast<T>(inv_n);
    for (int64_t i = 0; i < m.numel(); ++i) {
      const auto k = input_grad_coefficient<T>(pm[i], pr[i], pw ? pw[i] : T(1), p1[i], p2[i], n1);
      pa[i] = k.a;
      pb[i] = k.b;
      pc[i] = k.c;
    }
  });
  return {a, b, c};
}

// y = x * scale + shift per channel, scale = invstd * weight, shift = bias - mean * scale.
at::Tensor channel_affine(const NormBackend& be, const ChannelView& v, const OptTensor& weight, const OptTensor& bias,
                          const at::Tensor& mean, const at::Tensor& invstd) {
  const auto [scale, shift] = affine_coefficients(mean, invstd, weight, bias, acc_type(v.x));
  at::Tensor y = at::empty_like(v.x);
  if (v.x.numel() == 0) return y;
  if (v.layout == NormLayout::Planar && be.channel_affine != nullptr &&
      be.channel_affine(v.x, v.n, v.c, v.s, scale, shift, y))
    return y;
  be.affine(v.x, v.layout, v.rows(), v.cols(), v.per_group(scale), v.per_group(shift), y);
  return y;
}

// Per channel: sum of dy and of dy * (x - mean).
std::tuple<at::Tensor, at::Tensor> channel_grad_sums(const NormBackend& be, const ChannelView& v,
                                                     const at::Tensor& dy, const at::Tensor& mean) {
  const auto type = acc_type(v.x);
  if (v.layout == NormLayout::Planar && be.channel_backward != nullptr && v.x.numel() > 0) {
    at::Tensor sum_dy = at::empty({v.c}, v.x.options().dtype(type));
    at::Tensor sum_dy_xmu = at::empty({v.c}, v.x.options().dtype(type));
    at::Tensor no_dx;  // the sums only
    if (be.channel_backward(dy, v.x, v.n, v.c, v.s, acc(mean, type), at::Tensor(), at::Tensor(), false, sum_dy,
                            sum_dy_xmu, no_dx))
      return {sum_dy, sum_dy_xmu};
  }
  const int64_t groups = v.layout == NormLayout::Planar ? v.rows() : v.cols();
  at::Tensor sum_dy = at::zeros({groups}, v.x.options().dtype(type));
  at::Tensor sum_dy_xmu = at::zeros({groups}, v.x.options().dtype(type));
  if (v.x.numel() > 0)
    be.grad_sums(dy, v.x, v.layout, v.rows(), v.cols(), v.per_group(acc(mean, type)), sum_dy, sum_dy_xmu);
  return {v.channel_sum(sum_dy), v.channel_sum(sum_dy_xmu)};
}

// grad_input of training batch norm:
//   dx = invstd * w * (dy - sum_dy / n - (x - mean) * invstd^2 * sum_dy_xmu / n)
//      = dy * a + x * b + c,  a = invstd * w,  b = -a * invstd^2 * sum_dy_xmu / n,
//                             c = -a * sum_dy / n - b * mean.
at::Tensor channel_input_grad(const NormBackend& be, const ChannelView& v, const at::Tensor& dy,
                              const OptTensor& weight, const at::Tensor& mean, const at::Tensor& invstd,
                              const at::Tensor& sum_dy, const at::Tensor& sum_dy_xmu, int64_t count) {
  const auto [a, b, c] = input_grad_coefficients(mean, invstd, weight, sum_dy, sum_dy_xmu, count, acc_type(v.x));
  at::Tensor dx = at::empty_like(v.x);
  if (v.x.numel() > 0)
    be.linear_grad(dy, v.x, v.layout, v.rows(), v.cols(), v.per_group(a), v.per_group(b), v.per_group(c), dx);
  return dx;
}

// Batch norm's grad sums and grad_input: in one pass per channel where the backend has one for
// the shape, else the sums and then the elementwise pass. In eval the statistics were
// constants: dx = dy * invstd * weight.
std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_backward(const NormBackend& be, const ChannelView& v,
                                                                const at::Tensor& dy, const OptTensor& weight,
                                                                const at::Tensor& mean, const at::Tensor& invstd,
                                                                bool training) {
  const auto type = acc_type(v.x);
  if (v.layout == NormLayout::Planar && be.channel_backward != nullptr && v.x.numel() > 0) {
    at::Tensor sum_dy = at::empty({v.c}, v.x.options().dtype(type));
    at::Tensor sum_dy_xmu = at::empty({v.c}, v.x.options().dtype(type));
    at::Tensor dx = at::empty_like(v.x);
    if (be.channel_backward(dy, v.x, v.n, v.c, v.s, acc(mean, type), acc(invstd, type),
                            acc_or_undefined(weight, type), training, sum_dy, sum_dy_xmu, dx))
      return {sum_dy, sum_dy_xmu, dx};
  }
  auto [sum_dy, sum_dy_xmu] = channel_grad_sums(be, v, dy, mean);
  if (training) return {sum_dy, sum_dy_xmu, channel_input_grad(be, v, dy, weight, mean, invstd, sum_dy, sum_dy_xmu, v.count())};
  const at::Tensor istd = acc(invstd, type);
  const at::Tensor a = defined(weight) ? istd * acc(*weight, type) : istd;
  at::Tensor dx = at::empty_like(v.x);
  if (v.x.numel() > 0)
    be.linear_grad(dy, at::Tensor(), v.layout, v.rows(), v.cols(), v.per_group(a), at::Tensor(), at::Tensor(), dx);
  return {sum_dy, sum_dy_xmu, dx};
}

void check_batch_size(const char* op, const at::Tensor& input, int64_t count) {
  TORCH_CHECK(count != 1, op, ": expected more than 1 value per channel when training, got input size ",
              shape_str(input.sizes()));
}

}  // namespace

Tensor2 batch_norm_stats(const at::Tensor& input) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_input("cnn_ops.batch_norm_stats", input);
  const NormBackend& be = backend_for(input);
  return channel_moments(be, channel_view(input));
}

at::Tensor batch_norm_elemt(const at::Tensor& input, const OptTensor& weight,
                            const OptTensor& bias, const at::Tensor& mean, const at::Tensor& invstd) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "cnn_ops.batch_norm_elemt";
  const int64_t c = check_input(op, input);
  check_vector(op, weight, "weight", input, c);
  check_vector(op, bias, "bias", input, c);
  check_vector(op, mean, "mean", input, c);
  check_vector(op, invstd, "invstd", input, c);
  const NormBackend& be = backend_for(input);
  return channel_affine(be, channel_view(input), weight, bias, mean, invstd);
}

namespace {

// Eval batch norm's statistics: copies of the running ones in the compute type (an op's outputs
// must not alias its inputs) and invstd. Plain vectors are copied by loops, with three
// allocations in all: as ATen ops (two conversions, two clones) they cost about 3 us, a third
// of a small eval layer.
std::tuple<at::Tensor, at::Tensor, at::Tensor> eval_statistics(const at::Tensor& running_mean,
                                                               const at::Tensor& running_var, double eps,
                                                               at::ScalarType type) {
  const bool plain = loops_for(running_mean) && running_mean.scalar_type() == type &&
                     running_var.scalar_type() == type && running_mean.is_contiguous() &&
                     running_var.is_contiguous();
  if (!plain) {
    const at::Tensor var = acc(running_var, type).clone();
    return {acc(running_mean, type).clone(), var, inverse_std(var, eps)};
  }
  const int64_t c = running_mean.numel();
  at::Tensor mean = at::empty({c}, running_mean.options()), var = at::empty({c}, running_mean.options());
  for_compute_type(type, [&](auto zero) {
    using T = decltype(zero);
    std::copy_n(running_mean.const_data_ptr<T>(), c, mean.mutable_data_ptr<T>());
    std::copy_n(running_var.const_data_ptr<T>(), c, var.mutable_data_ptr<T>());
  });
  return {mean, var, inverse_std(var, eps)};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_forward(
    const at::Tensor& input, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& running_mean, const OptTensor& running_var, bool training, double eps) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "cnn_ops.batch_norm";
  const int64_t c = check_input(op, input);
  check_vector(op, weight, "weight", input, c);
  check_vector(op, bias, "bias", input, c);
  check_vector(op, running_mean, "running_mean", input, c);
  check_vector(op, running_var, "running_var", input, c);
  const NormBackend& be = backend_for(input);
  TORCH_CHECK(defined(running_mean) == defined(running_var), op,
              ": running_mean and running_var must be given together");
  TORCH_CHECK(training || defined(running_mean), op,
              ": running_mean and running_var must be given in evaluation mode (training=False)");
  const ChannelView v = channel_view(input);
  const auto type = acc_type(input);
  if (!training) {
    const auto [mean, var, invstd] = eval_statistics(*running_mean, *running_var, eps, type);
    return {channel_affine(be, v, weight, bias, mean, invstd), mean, invstd, var};
  }
  check_batch_size(op, input, v.count());
  auto [mean, var] = channel_moments(be, v);
  const at::Tensor invstd = inverse_std(var, eps);
  return {channel_affine(be, v, weight, bias, mean, invstd), mean, invstd, var};
}

// Device-independent (ATen ops, or a loop, on C-sized tensors): no backend pass.
void batch_norm_update_stats(const at::Tensor& running_mean, const at::Tensor& running_var, const at::Tensor& mean,
                             const at::Tensor& var, int64_t count, double momentum) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "cnn_ops.batch_norm_update_stats";
  const int64_t c = running_mean.numel();
  check_vector(op, running_mean, "running_mean", running_mean, c, "running_mean's size");
  check_vector(op, running_var, "running_var", running_mean, c, "running_mean's size");
  check_vector(op, mean, "mean", running_mean, c, "running_mean's size");
  check_vector(op, var, "var", running_mean, c, "running_mean's size");
  TORCH_CHECK(count >= 0, op, ": count must be non-negative, got ", count);
  // Refused before either is written, so that a failed call moves neither.
  for (const auto& [t, name] : {std::pair{&running_mean, "running_mean"}, std::pair{&running_var, "running_var"}}) {
    TORCH_CHECK(at::has_internal_overlap(*t) != at::MemOverlap::Yes, op, ": ", name,
                " is updated in place, so its elements must not share memory, got a tensor of shape ",
                t->sizes(), " and strides ", t->strides(), " (an expanded tensor?); clone() it first");
    TORCH_CHECK(!(at::GradMode::is_enabled() && t->requires_grad()), op, ": ", name,
                " is updated in place, so it must not require grad (torch's batch_norm refuses that too)");
  }
  if (count == 0) return;  // an empty batch has no statistics to move towards
  // An unbiased estimate needs two values; with one (count - 1 = 0) torch's formula gives
  // inf or nan, and training batch norm has refused such a batch already.
  const double n = static_cast<double>(count);
  const double correction = count > 1 ? n / (n - 1.0) : std::numeric_limits<double>::infinity();
  const bool same_type = running_mean.scalar_type() == mean.scalar_type() &&
                         running_var.scalar_type() == mean.scalar_type() && var.scalar_type() == mean.scalar_type();
  if (loops_for(running_mean) && same_type && running_mean.is_contiguous() && running_var.is_contiguous()) {
    // One loop instead of six small ATen ops (see affine_coefficients).
    const at::Tensor m = mean.contiguous(), v = var.contiguous();
    for_compute_type(mean.scalar_type(), [&](auto zero) {
      using T = decltype(zero);
      T *rm = running_mean.mutable_data_ptr<T>(), *rv = running_var.mutable_data_ptr<T>();
      const T *pm = m.const_data_ptr<T>(), *pv = v.const_data_ptr<T>();
      const T keep = static_cast<T>(1.0 - momentum), take = static_cast<T>(momentum);
      const T corr = static_cast<T>(correction);
      for (int64_t i = 0; i < c; ++i) {
        rm[i] = rm[i] * keep + pm[i] * take;
        rv[i] = rv[i] * keep + pv[i] * corr * take;
      }
    });
    return;
  }
  running_mean.mul_(1.0 - momentum).add_(mean.to(running_mean.scalar_type()), momentum);
  running_var.mul_(1.0 - momentum).add_((var * correction).to(running_var.scalar_type()), momentum);
}

Tensor2 batch_norm_backward_reduce(const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& mean) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "cnn_ops.batch_norm_backward_reduce";
  const int64_t c = check_input(op, input);
  check_like_input(op, grad_output, "grad_output", input);
  check_vector(op, mean, "mean", input, c);
  const ChannelView v = channel_view(input);
  const NormBackend& be = backend_for(input);
  return channel_grad_sums(be, v, v.like(grad_output), mean);
}

at::Tensor batch_norm_backward_elemt(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& mean, const at::Tensor& invstd, const OptTensor& weight,
                                     const at::Tensor& sum_dy, const at::Tensor& sum_dy_xmu, int64_t count) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "cnn_ops.batch_norm_backward_elemt";
  const int64_t c = check_input(op, input);
  check_like_input(op, grad_output, "grad_output", input);
  check_vector(op, mean, "mean", input, c);
  check_vector(op, invstd, "invstd", input, c);
  check_vector(op, weight, "weight", input, c);
  check_vector(op, sum_dy, "sum_dy", input, c);
  check_vector(op, sum_dy_xmu, "sum_dy_xmu", input, c);
  const NormBackend& be = backend_for(input);
  TORCH_CHECK(count >= 0, op, ": count must be non-negative, got ", count);
  const ChannelView v = channel_view(input);
  return channel_input_grad(be, v, v.like(grad_output), weight, mean, invstd, sum_dy, sum_dy_xmu, count);
}

Tensor3 batch_norm_backward(const at::Tensor& grad_output, const at::Tensor& input,
                            const OptTensor& weight, const at::Tensor& mean, const at::Tensor& invstd, bool training,
                            double /*eps*/) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "cnn_ops.batch_norm_backward";
  const int64_t c = check_input(op, input);
  check_like_input(op, grad_output, "grad_output", input);
  check_vector(op, weight, "weight", input, c);
  check_vector(op, mean, "mean", input, c);
  check_vector(op, invstd, "invstd", input, c);
  const ChannelView v = channel_view(input);
  const auto type = acc_type(input);
  const at::Tensor dy = v.like(grad_output);
  const NormBackend& be = backend_for(input);
  auto [sum_dy, sum_dy_xmu, grad_input] = channel_backward(be, v, dy, weight, mean, invstd, training);
  const auto ptype = param_type(input, weight);
  return {grad_input, (sum_dy_xmu * acc(invstd, type)).to(ptype), sum_dy.to(ptype)};
}

// ---- group norm ----

namespace {

struct GroupView {
  int64_t n, c, s, groups;
  int64_t per_group() const { return c / groups; }
};

GroupView check_group_norm(const char* op, const at::Tensor& input, const OptTensor& weight, const OptTensor& bias,
                           int64_t num_groups) {
  const int64_t c = check_input(op, input);
  TORCH_CHECK(num_groups >= 1, op, ": num_groups must be positive, got ", num_groups);
  TORCH_CHECK(c % num_groups == 0, op, ": the input's ", c, " channels (input shape ", shape_str(input.sizes()),
              ") are not divisible by num_groups=", num_groups);
  check_vector(op, weight, "weight", input, c);
  check_vector(op, bias, "bias", input, c);
  GroupView g{input.size(0), c, 1, num_groups};
  for (int64_t d = 2; d < input.dim(); ++d) g.s *= input.size(d);
  return g;
}

// A per-(sample, group) statistic (N, G) repeated for each channel of its group: (N * C).
at::Tensor per_channel(const at::Tensor& t, const GroupView& g) { return repeat_each(t.reshape({-1}), g.per_group()); }

// Per (sample, channel), flattened (N * C): scale = rstd[n, g] * w[c], shift = b[c] - mean[n, g] * scale.
std::pair<at::Tensor, at::Tensor> group_affine_coefficients(const at::Tensor& mean, const at::Tensor& rstd,
                                                            const OptTensor& weight, const OptTensor& bias,
                                                            const GroupView& g, at::ScalarType type) {
  const at::Tensor w = acc_or_undefined(weight, type), b = acc_or_undefined(bias, type);
  if (!loops_for(mean)) {
    at::Tensor scale = per_channel(rstd, g).view({g.n, g.c});
    if (w.defined()) scale = scale * w.view({1, g.c});
    at::Tensor shift = -per_channel(mean, g).view({g.n, g.c}) * scale;
    if (b.defined()) shift.add_(b.view({1, g.c}));
    return {scale.contiguous().view(-1), shift.contiguous().view(-1)};
  }
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  at::Tensor scale = at::empty({g.n * g.c}, m.options()), shift = at::empty({g.n * g.c}, m.options());
  for_compute_type(type, [&](auto zero) {
    using T = decltype(zero);
    const T *pm = m.const_data_ptr<T>(), *pr = r.const_data_ptr<T>(), *pw = ptr_or_null<T>(w),
            *pb = ptr_or_null<T>(b);
    T *ps = scale.mutable_data_ptr<T>(), *pt = shift.mutable_data_ptr<T>();
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t c = 0; c < g.c; ++c) {
        const int64_t grp = n * g.groups + c / g.per_group(), i = n * g.c + c;
        ps[i] = pw ? pr[grp] * pw[c] : pr[grp];
        pt[i] = (pb ? pb[c] : T(0)) - pm[grp] * ps[i];
      }
  });
  return {scale, shift};
}

// The coefficients of group norm's input gradient (see group_norm_backward), per (sample,
// channel) and flattened (N * C), and the weight and bias gradients (C), from the per-(sample,
// channel) sums of dy and dy * (x - mean) over m values per group.
struct GroupGrad {
  at::Tensor a, b, c, grad_weight, grad_bias;
};

GroupGrad group_grad_coefficients(const at::Tensor& sum_dy, const at::Tensor& sum_dy_xmu, const at::Tensor& mean,
                                  const at::Tensor& rstd, const OptTensor& weight, const GroupView& g,
                                  at::ScalarType type) {
  const double m = static_cast<double>(g.per_group() * g.s);
  const at::Tensor w = acc_or_undefined(weight, type);
  if (!loops_for(mean)) {
    const at::Tensor sdy = sum_dy.view({g.n, g.c}), sdx = sum_dy_xmu.view({g.n, g.c});
    const at::Tensor r_c = per_channel(rstd, g).view({g.n, g.c});
    const at::Tensor wr = w.defined() ? w.view({1, g.c}) : at::ones({1, g.c}, sdy.options());
    const at::Tensor A = (sdy * wr).view({g.n, g.groups, g.per_group()}).sum(2);
    const at::Tensor B = (sdx * wr).view({g.n, g.groups, g.per_group()}).sum(2);
    const at::Tensor b = -rstd * rstd * rstd * B / m;
    const at::Tensor c = -rstd * A / m - b * mean;
    return {(r_c * wr).contiguous().view(-1), per_channel(b, g), per_channel(c, g), (sdx * r_c).sum(0), sdy.sum(0)};
  }
  GroupGrad out;
  const at::Tensor mu = mean.contiguous(), r = rstd.contiguous();
  out.a = at::empty({g.n * g.c}, mu.options());
  out.b = at::empty({g.n * g.c}, mu.options());
  out.c = at::empty({g.n * g.c}, mu.options());
  out.grad_weight = at::zeros({g.c}, mu.options());
  out.grad_bias = at::zeros({g.c}, mu.options());
  for_compute_type(type, [&](auto zero) {
    using T = decltype(zero);
    const T *p1 = sum_dy.const_data_ptr<T>(), *p2 = sum_dy_xmu.const_data_ptr<T>();
    const T *pm = mu.const_data_ptr<T>(), *pr = r.const_data_ptr<T>(), *pw = ptr_or_null<T>(w);
    T *pa = out.a.mutable_data_ptr<T>(), *pb = out.b.mutable_data_ptr<T>(), *pc = out.c.mutable_data_ptr<T>();
    T *gw = out.grad_weight.mutable_data_ptr<T>(), *gb = out.grad_bias.mutable_data_ptr<T>();
    const int64_t cg = g.per_group();
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        const int64_t ng = n * g.groups + grp, c0 = grp * cg, i0 = n * g.c + c0;
        const T rs = pr[ng];
        T A = 0, B = 0;
        for (int64_t j = 0; j < cg; ++j) {
          const T wj = pw ? pw[c0 + j] : T(1);
          A += p1[i0 + j] * wj;
          B += p2[i0 + j] * wj;
          gw[c0 + j] += p2[i0 + j] * rs;
          gb[c0 + j] += p1[i0 + j];
        }
        const T bb = -rs * rs * rs * B / static_cast<T>(m);
        const T cc = -rs * A / static_cast<T>(m) - bb * pm[ng];
        for (int64_t j = 0; j < cg; ++j) {
          pa[i0 + j] = pw ? rs * pw[c0 + j] : rs;
          pb[i0 + j] = bb;
          pc[i0 + j] = cc;
        }
      }
  });
  return out;
}

}  // namespace

Tensor3 group_norm_forward(const at::Tensor& input, const OptTensor& weight,
                           const OptTensor& bias, int64_t num_groups, double eps) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "cnn_ops.group_norm";
  const GroupView g = check_group_norm(op, input, weight, bias, num_groups);
  const bool cl = channels_last(input);
  const at::Tensor x = cl ? input : input.contiguous();
  const auto type = acc_type(input);
  at::Tensor mean, var;
  at::Tensor y = at::empty_like(x);
  if (x.numel() == 0) {
    mean = at::zeros({g.n, g.groups}, x.options().dtype(type));
    return {y, mean, mean.clone()};
  }
  const NormBackend& be = backend_for(input);
  if (cl) {
    // Sample n is an S x C block, one channel per column: per-channel moments, then per
    // group the mean of the channel means and the mean of the channel variances plus the
    // variance of the channel means (exact: every channel holds S values).
    at::Tensor cmean = at::empty({g.n, g.c}, x.options().dtype(type));
    at::Tensor cvar = at::empty({g.n, g.c}, x.options().dtype(type));
    for (int64_t i = 0; i < g.n; ++i) {
      at::Tensor m = cmean.select(0, i), v = cvar.select(0, i);
      be.moments(x.select(0, i), NormLayout::Interleaved, g.s, g.c, m, v);
    }
    std::tie(mean, var) = combine_equal_groups(cmean.view({g.n * g.groups, g.per_group()}),
                                               cvar.view({g.n * g.groups, g.per_group()}), /*over_rows=*/false);
    mean = mean.view({g.n, g.groups});
    var = var.view({g.n, g.groups});
  } else {
    mean = at::empty({g.n, g.groups}, x.options().dtype(type));
    if (be.group_norm_forward != nullptr) {  // a group at a time, where the backend serves the shape
      at::Tensor rstd = at::empty_like(mean);
      if (be.group_norm_forward(x, g.n, g.c, g.s, g.groups, acc_or_undefined(weight, type),
                                acc_or_undefined(bias, type), eps, y, mean, rstd)) {
        return {y, mean, rstd};
      }
    }
    var = at::empty({g.n, g.groups}, x.options().dtype(type));
    be.moments(x, NormLayout::Planar, g.n * g.groups, g.per_group() * g.s, mean, var);
  }
  const at::Tensor rstd = inverse_std(var, eps);
  // Per (sample, channel): y = x * scale + shift.
  const auto [scale, shift] = group_affine_coefficients(mean, rstd, weight, bias, g, type);
  if (cl) {
    const at::Tensor scale2 = scale.view({g.n, g.c}), shift2 = shift.view({g.n, g.c});
    for (int64_t i = 0; i < g.n; ++i) {
      at::Tensor yi = y.select(0, i);
      be.affine(x.select(0, i), NormLayout::Interleaved, g.s, g.c, scale2.select(0, i), shift2.select(0, i), yi);
    }
  } else {
    be.affine(x, NormLayout::Planar, g.n * g.c, g.s, scale, shift, y);
  }
  return {y, mean, rstd};
}

// With xhat = (x - mean) * rstd over a group of m values and dxhat = dy * w[c]:
//   dx = rstd * (dxhat - sum(dxhat) / m - xhat * sum(dxhat * xhat) / m)
//      = dy * a + x * b + c per (sample, channel) plane, where, per (sample, group),
//   A = sum_c w[c] * sum_dy[n, c], B = sum_c w[c] * sum_dy_xmu[n, c] (so sum(dxhat * xhat) = rstd * B),
//   a = rstd * w[c], b = -rstd^3 * B / m, c = -rstd * A / m - b * mean.
Tensor3 group_norm_backward(const at::Tensor& grad_output, const at::Tensor& input,
                            const OptTensor& weight, const at::Tensor& mean, const at::Tensor& rstd,
                            int64_t num_groups, double /*eps*/) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "cnn_ops.group_norm_backward";
  const GroupView g = check_group_norm(op, input, weight, std::nullopt, num_groups);
  check_like_input(op, grad_output, "grad_output", input);
  for (const auto& [t, name] : {std::pair{mean, "mean"}, std::pair{rstd, "rstd"}}) {
    check_statistic(op, t, name, input, {g.n, g.groups}, "batch, groups");
  }
  // A channels-last input is read in place, sample by sample (S x C blocks), as in the forward.
  const bool cl = channels_last(input);
  const auto format = cl ? input.suggest_memory_format() : at::MemoryFormat::Contiguous;
  const at::Tensor x = input.contiguous(format);
  const at::Tensor dy = grad_output.contiguous(format);
  const auto type = acc_type(input);
  const auto ptype = param_type(input, weight);
  at::Tensor sum_dy = at::zeros({g.n * g.c}, x.options().dtype(type));
  at::Tensor sum_dy_xmu = at::zeros({g.n * g.c}, x.options().dtype(type));
  const at::Tensor mu = acc(mean, type), r = acc(rstd, type);
  const NormBackend& be = backend_for(input);
  at::Tensor dx = at::empty_like(x);
  // Planar input a group at a time where the backend serves the shape (dx written with the sums)
  const bool by_group = x.numel() > 0 && !cl && be.group_norm_backward != nullptr &&
                        be.group_norm_backward(dy, x, g.n, g.c, g.s, g.groups, mu, r, acc_or_undefined(weight, type),
                                               sum_dy, sum_dy_xmu, dx);
  if (x.numel() > 0 && cl) {
    const at::Tensor mu_c = per_channel(mu, g).view({g.n, g.c});
    const at::Tensor s1 = sum_dy.view({g.n, g.c}), s2 = sum_dy_xmu.view({g.n, g.c});
    for (int64_t i = 0; i < g.n; ++i) {
      at::Tensor s1i = s1.select(0, i), s2i = s2.select(0, i);
      be.grad_sums(dy.select(0, i), x.select(0, i), NormLayout::Interleaved, g.s, g.c, mu_c.select(0, i), s1i, s2i);
    }
  } else if (x.numel() > 0 && !by_group) {
    be.grad_sums(dy, x, NormLayout::Planar, g.n * g.c, g.s, per_channel(mu, g), sum_dy, sum_dy_xmu);
  }
  const GroupGrad k = group_grad_coefficients(sum_dy, sum_dy_xmu, mu, r, weight, g, type);
  if (x.numel() > 0 && cl) {
    const at::Tensor a2 = k.a.view({g.n, g.c}), b2 = k.b.view({g.n, g.c}), c2 = k.c.view({g.n, g.c});
    for (int64_t i = 0; i < g.n; ++i) {
      at::Tensor dxi = dx.select(0, i);
      be.linear_grad(dy.select(0, i), x.select(0, i), NormLayout::Interleaved, g.s, g.c, a2.select(0, i),
                     b2.select(0, i), c2.select(0, i), dxi);
    }
  } else if (x.numel() > 0 && !by_group) {
    be.linear_grad(dy, x, NormLayout::Planar, g.n * g.c, g.s, k.a, k.b, k.c, dx);
  }
  return {dx, k.grad_weight.to(ptype), k.grad_bias.to(ptype)};
}

// ---- layer norm ----

namespace {

// Rows (M) and row length (K) of a layer norm over the trailing normalized_shape dimensions.
std::pair<int64_t, int64_t> check_layer_norm(const char* op, const at::Tensor& input,
                                             at::IntArrayRef normalized_shape, const OptTensor& weight,
                                             const OptTensor& bias) {
  check_dtype(input, "input", op);
  const int64_t nd = static_cast<int64_t>(normalized_shape.size());
  TORCH_CHECK(nd >= 1, op, ": normalized_shape must have at least one dimension");
  TORCH_CHECK(input.dim() >= nd && input.sizes().slice(input.dim() - nd) == normalized_shape, op,
              ": input of shape ", shape_str(input.sizes()), " does not end with normalized_shape ",
              shape_str(normalized_shape));
  for (const auto& [t, name] : {std::pair{weight, "weight"}, std::pair{bias, "bias"}}) {
    if (!defined(t)) continue;
    TORCH_CHECK(t->sizes() == normalized_shape, op, ": ", name, " must have shape normalized_shape ",
                shape_str(normalized_shape), ", got ", shape_str(t->sizes()));
    check_dtype(*t, name, op);
    TORCH_CHECK(t->device() == input.device(), op, ": ", name, " is on ", t->device(), " but input is on ",
                input.device());
  }
  // Rows: the leading dimensions' product (not numel / k, which is 0 / 0 for an empty row).
  int64_t m = 1, k = 1;
  for (int64_t d = 0; d < input.dim() - nd; ++d) m *= input.size(d);
  for (int64_t s : normalized_shape) k *= s;
  return {m, k};
}

at::Tensor flat_or_undefined(const OptTensor& t, at::ScalarType type) {
  return defined(t) ? acc(*t, type).view(-1) : at::Tensor();
}

}  // namespace

Tensor3 layer_norm_forward(const at::Tensor& input, at::IntArrayRef normalized_shape,
                           const OptTensor& weight, const OptTensor& bias, double eps) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "cnn_ops.layer_norm";
  const auto [m, k] = check_layer_norm(op, input, normalized_shape, weight, bias);
  const at::Tensor x = input.contiguous();
  const auto type = acc_type(input);
  at::Tensor y = at::empty_like(x);
  at::Tensor mean = at::zeros({m}, x.options().dtype(type));
  at::Tensor rstd = at::zeros({m}, x.options().dtype(type));
  const NormBackend& be = backend_for(input);
  if (x.numel() > 0)
    be.layer_norm_forward(x, m, k, flat_or_undefined(weight, type), flat_or_undefined(bias, type), eps, y, mean,
                          rstd);
  return {y, mean, rstd};
}

Tensor3 layer_norm_backward(const at::Tensor& grad_output, const at::Tensor& input,
                            at::IntArrayRef normalized_shape, const OptTensor& weight, const at::Tensor& mean,
                            const at::Tensor& rstd, double /*eps*/) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "cnn_ops.layer_norm_backward";
  const auto [m, k] = check_layer_norm(op, input, normalized_shape, weight, std::nullopt);
  check_like_input(op, grad_output, "grad_output", input);
  for (const auto& [t, name] : {std::pair{mean, "mean"}, std::pair{rstd, "rstd"}}) {
    check_statistic(op, t, name, input, {m}, "one entry per normalised row");
  }
  const at::Tensor x = input.contiguous();
  const at::Tensor dy = grad_output.contiguous();
  const auto type = acc_type(input);
  at::Tensor dx = at::empty_like(x);
  at::Tensor grad_weight = at::zeros({k}, x.options().dtype(type));
  at::Tensor grad_bias = at::zeros({k}, x.options().dtype(type));
  const NormBackend& be = backend_for(input);
  if (x.numel() > 0)
    be.layer_norm_backward(dy, x, m, k, acc(mean, type), acc(rstd, type), flat_or_undefined(weight, type), dx,
                           grad_weight, grad_bias);
  const auto ptype = param_type(input, weight);
  return {dx, grad_weight.view(normalized_shape).to(ptype), grad_bias.view(normalized_shape).to(ptype)};
}

void register_norm_ops(torch::Library& m, const NormBackend& backend) {
  DeviceBackends<NormBackend>::add(backend);
  m.impl("batch_norm_stats", TORCH_FN(batch_norm_stats));
  m.impl("batch_norm_elemt", TORCH_FN(batch_norm_elemt));
  m.impl("batch_norm_forward", TORCH_FN(batch_norm_forward));
  m.impl("batch_norm_update_stats", TORCH_FN(batch_norm_update_stats));
  m.impl("batch_norm_backward_reduce", TORCH_FN(batch_norm_backward_reduce));
  m.impl("batch_norm_backward_elemt", TORCH_FN(batch_norm_backward_elemt));
  m.impl("batch_norm_backward", TORCH_FN(batch_norm_backward));
  m.impl("group_norm_forward", TORCH_FN(group_norm_forward));
  m.impl("group_norm_backward", TORCH_FN(group_norm_backward));
  m.impl("layer_norm_forward", TORCH_FN(layer_norm_forward));
  m.impl("layer_norm_backward", TORCH_FN(layer_norm_backward));
}

}  // namespace tco
