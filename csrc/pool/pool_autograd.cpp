// Autograd of every pooling (see csrc/autograd_common.h for how and why in C++).
//
// * Max / min (window and adaptive), k-max, stochastic training: the output picks inputs at
//   indices. Gradient: scatter to them (max_pool_backward, kmax_pool_backward); the scatter's
//   own adjoint, and every tangent, is a gather at the indices.
// * Avg (window and adaptive), Gaussian: linear. The backward op spreads grad_output over the
//   windows; its adjoint is the forward op with the same arguments, and each op's tangent is
//   the op applied to the input's tangent.
// * lp and stochastic eval: nonlinear. Their backward ops (lp_pool_backward,
//   stochastic_pool_eval_backward) run as compositions of the avg ops and torch's when they are
//   differentiated (differentiating in autograd_common.h); the tangents are written out below.

#include <ATen/ops/ones_like.h>
#include <c10/util/accumulate.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <tuple>
#include <vector>

#include "../autograd_common.h"
#include "pool_common.h"

namespace tco {
namespace {

using namespace tco::autograd;
using Tensor2 = std::tuple<Tensor, Tensor>;
using Ints = std::vector<int64_t>;
using SymInts = std::vector<c10::SymInt>;
using OptInt = std::optional<int64_t>;

// ---- the ops ----

using MaxPoolForward = Tensor2(const Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                               bool, bool, at::IntArrayRef);
using AdaptiveMaxPoolForward = Tensor2(const Tensor&, at::IntArrayRef, bool);
using MaxPoolBackward = Tensor(const Tensor&, const Tensor&, c10::SymIntArrayRef);
using AvgPoolForward = Tensor(const Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool, bool, OptInt,
                              at::IntArrayRef);
using AvgPoolBackward = Tensor(const Tensor&, c10::SymIntArrayRef, at::IntArrayRef, at::IntArrayRef,
                               at::IntArrayRef, bool, bool, OptInt, at::IntArrayRef);
using AdaptiveAvgPoolForward = Tensor(const Tensor&, at::IntArrayRef);
using AdaptiveAvgPoolBackward = Tensor(const Tensor&, c10::SymIntArrayRef);
using LpPoolForward = Tensor(const Tensor&, double, at::IntArrayRef, at::IntArrayRef, bool);
using LpPoolBackward = Tensor(const Tensor&, const Tensor&, double, at::IntArrayRef, at::IntArrayRef, bool);
using KMaxPoolForward = Tensor2(const Tensor&, int64_t, int64_t);
using KMaxPoolBackward = Tensor(const Tensor&, const Tensor&, int64_t, c10::SymIntArrayRef);
using GaussianPoolForward = Tensor(const Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, double);
using GaussianPoolBackward = Tensor(const Tensor&, c10::SymIntArrayRef, at::IntArrayRef, at::IntArrayRef,
                                    at::IntArrayRef, double);
using StochasticPoolForward = Tensor2(const Tensor&, const Tensor&, at::IntArrayRef, at::IntArrayRef);
using StochasticEvalForward = Tensor(const Tensor&, at::IntArrayRef, at::IntArrayRef);
using StochasticEvalBackward = Tensor(const Tensor&, const Tensor&, at::IntArrayRef, at::IntArrayRef);

#define TCO_POOL_OP(getter, Signature, name)          \
  const auto& getter() {                              \
    static const auto op = find_op<Signature>(name); \
    return op;                                        \
  }
TCO_POOL_OP(max_pool_op, MaxPoolForward, "cnn_ops::max_pool_forward")
TCO_POOL_OP(adaptive_max_pool_op, AdaptiveMaxPoolForward, "cnn_ops::adaptive_max_pool_forward")
TCO_POOL_OP(max_pool_backward_op, MaxPoolBackward, "cnn_ops::max_pool_backward")
TCO_POOL_OP(avg_pool_op, AvgPoolForward, "cnn_ops::avg_pool_forward")
TCO_POOL_OP(avg_pool_backward_op, AvgPoolBackward, "cnn_ops::avg_pool_backward")
TCO_POOL_OP(adaptive_avg_pool_op, AdaptiveAvgPoolForward, "cnn_ops::adaptive_avg_pool_forward")
TCO_POOL_OP(adaptive_avg_pool_backward_op, AdaptiveAvgPoolBackward, "cnn_ops::adaptive_avg_pool_backward")
TCO_POOL_OP(lp_pool_op, LpPoolForward, "cnn_ops::lp_pool_forward")
TCO_POOL_OP(lp_pool_backward_op, LpPoolBackward, "cnn_ops::lp_pool_backward")
TCO_POOL_OP(kmax_pool_op, KMaxPoolForward, "cnn_ops::kmax_pool_forward")
TCO_POOL_OP(kmax_pool_backward_op, KMaxPoolBackward, "cnn_ops::kmax_pool_backward")
TCO_POOL_OP(gaussian_pool_op, GaussianPoolForward, "cnn_ops::gaussian_pool_forward")
TCO_POOL_OP(gaussian_pool_backward_op, GaussianPoolBackward, "cnn_ops::gaussian_pool_backward")
TCO_POOL_OP(stochastic_pool_op, StochasticPoolForward, "cnn_ops::stochastic_pool_forward")
TCO_POOL_OP(stochastic_eval_op, StochasticEvalForward, "cnn_ops::stochastic_pool_eval_forward")
TCO_POOL_OP(stochastic_eval_backward_op, StochasticEvalBackward, "cnn_ops::stochastic_pool_eval_backward")
#undef TCO_POOL_OP

// ---- picking inputs at indices: max / min, adaptive max / min, stochastic training ----

// values (N, C, *in) read at the flat plane indices (N, C, *out): the adjoint of the scatter.
// (view rather than flatten: autograd's vectorised jacobians batch the formula with the legacy
// batching rules, which have no flatten.)
Tensor gather_planes(const Tensor& values, const Tensor& indices) {
  const auto planes = [](const Tensor& t) {
    return t.contiguous().view_symint({t.sym_size(0), t.sym_size(1), -1});
  };
  return planes(values).gather(2, planes(indices)).view_symint(indices.sym_sizes());
}

// Records a pooling whose output is input read at `indices` (flat positions in each plane).
void record_pick(const Tensor& input, const Tensor& out, const Tensor& indices) {
  SymInts input_size = input.sym_sizes().vec();
  record("PickPoolBackward", {input}, out, {indices},
         [input_size](const FormulaNode&, const variable_list& saved, const Tensor& grad) -> variable_list {
           return {max_pool_backward_op().call(grad, saved[0], input_size)};
         });
  if (any_tangent({input})) set_tangent(out, gather_planes(tangent(input), indices));
}

Tensor2 max_pool_forward_autograd(const Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode, bool minimum,
                                  at::IntArrayRef padding_end) {
  auto [out, indices] = call_below_autograd(max_pool_op(), input, kernel_size, stride, padding, dilation, ceil_mode,
                                            minimum, padding_end);
  record_pick(input, out, indices);
  return {out, indices};
}

Tensor2 adaptive_max_pool_forward_autograd(const Tensor& input, at::IntArrayRef output_size, bool minimum) {
  auto [out, indices] = call_below_autograd(adaptive_max_pool_op(), input, output_size, minimum);
  record_pick(input, out, indices);
  return {out, indices};
}

Tensor2 stochastic_pool_forward_autograd(const Tensor& input, const Tensor& uniform, at::IntArrayRef kernel_size,
                                         at::IntArrayRef stride) {
  auto [out, indices] = call_below_autograd(stochastic_pool_op(), input, uniform, kernel_size, stride);
  record_pick(input, out, indices);
  return {out, indices};
}

Tensor max_pool_backward_autograd(const Tensor& grad_output, const Tensor& indices, c10::SymIntArrayRef input_size) {
  Tensor out = call_below_autograd(max_pool_backward_op(), grad_output, indices, input_size);
  record("MaxPoolBackwardBackward", {grad_output}, out, {indices},
         [](const FormulaNode&, const variable_list& saved, const Tensor& grad) -> variable_list {
           return {gather_planes(grad, saved[0])};
         });
  if (any_tangent({grad_output})) set_tangent(out, max_pool_backward_op().call(tangent(grad_output), indices, input_size));
  return out;
}

// ---- k-max: picks along `dim` ----

Tensor2 kmax_pool_forward_autograd(const Tensor& input, int64_t k, int64_t dim) {
  auto [values, indices] = call_below_autograd(kmax_pool_op(), input, k, dim);
  SymInts input_size = input.sym_sizes().vec();
  record("KMaxPoolBackward", {input}, values, {indices},
         [dim, input_size](const FormulaNode&, const variable_list& saved, const Tensor& grad) -> variable_list {
           return {kmax_pool_backward_op().call(grad, saved[0], dim, input_size)};
         });
  if (any_tangent({input})) set_tangent(values, tangent(input).gather(dim, indices));
  return {values, indices};
}

Tensor kmax_pool_backward_autograd(const Tensor& grad_output, const Tensor& indices, int64_t dim,
                                   c10::SymIntArrayRef input_size) {
  Tensor out = call_below_autograd(kmax_pool_backward_op(), grad_output, indices, dim, input_size);
  record("KMaxPoolBackwardBackward", {grad_output}, out, {indices},
         [dim](const FormulaNode&, const variable_list& saved, const Tensor& grad) -> variable_list {
           return {grad.gather(dim, saved[0])};
         });
  if (any_tangent({grad_output}))
    set_tangent(out, kmax_pool_backward_op().call(tangent(grad_output), indices, dim, input_size));
  return out;
}

// ---- linear poolings: avg, adaptive avg, Gaussian ----

// A linear pooling `forward(x)` and its transpose `backward(gy, input_size)`: records both
// directions (the forward op's gradient is the backward op, the backward op's is the forward
// op) and pushes tangents through the same op.
template <typename Forward, typename Backward>
Tensor linear_forward(const char* name, const Tensor& input, Forward forward, Backward backward) {
  Tensor out = forward(input, /*below_autograd=*/true);
  SymInts input_size = input.sym_sizes().vec();
  // A channels-last input (use_channels_last) is pooled, and its gradient computed, in that
  // layout; the backward kernels follow grad_output's, so it is handed over in it.
  const bool channels_last = use_channels_last(input);
  record(name, {input}, out, {},
         [backward, input_size, channels_last](const FormulaNode&, const variable_list&,
                                               const Tensor& grad) -> variable_list {
           return {backward(channels_last ? grad.contiguous(at::MemoryFormat::ChannelsLast) : grad, input_size, false)};
         });
  if (any_tangent({input})) set_tangent(out, forward(tangent(input), false));
  return out;
}

template <typename Forward, typename Backward>
Tensor linear_backward(const char* name, const Tensor& grad_output, c10::SymIntArrayRef input_size, Forward forward,
                       Backward backward) {
  Tensor out = backward(grad_output, input_size, /*below_autograd=*/true);
  record(name, {grad_output}, out, {},
         [forward](const FormulaNode&, const variable_list&, const Tensor& grad) -> variable_list {
           return {forward(grad, false)};
         });
  if (any_tangent({grad_output})) set_tangent(out, backward(tangent(grad_output), input_size, false));
  return out;
}

struct AvgArgs {
  Ints kernel_size, stride, padding;
  bool ceil_mode, count_include_pad;
  OptInt divisor_override;
  Ints padding_end;

  auto forward() const {
    return [a = *this](const Tensor& x, bool below) {
      return call(avg_pool_op(), below, x, a.kernel_size, a.stride, a.padding, a.ceil_mode, a.count_include_pad,
                  a.divisor_override, a.padding_end);
    };
  }
  auto backward() const {
    return [a = *this](const Tensor& gy, c10::SymIntArrayRef input_size, bool below) {
      return call(avg_pool_backward_op(), below, gy, input_size, a.kernel_size, a.stride, a.padding, a.ceil_mode,
                  a.count_include_pad, a.divisor_override, a.padding_end);
    };
  }
};

Tensor avg_pool_forward_autograd(const Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                 OptInt divisor_override, at::IntArrayRef padding_end) {
  const AvgArgs a{kernel_size.vec(), stride.vec(), padding.vec(), ceil_mode, count_include_pad, divisor_override,
                  padding_end.vec()};
  return linear_forward("AvgPoolBackward", input, a.forward(), a.backward());
}

Tensor avg_pool_backward_autograd(const Tensor& grad_output, c10::SymIntArrayRef input_size,
                                  at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                  bool ceil_mode, bool count_include_pad, OptInt divisor_override,
                                  at::IntArrayRef padding_end) {
  const AvgArgs a{kernel_size.vec(), stride.vec(), padding.vec(), ceil_mode, count_include_pad, divisor_override,
                  padding_end.vec()};
  return linear_backward("AvgPoolBackwardBackward", grad_output, input_size, a.forward(), a.backward());
}

auto adaptive_avg_forward(Ints output_size) {
  return [output_size](const Tensor& x, bool below) { return call(adaptive_avg_pool_op(), below, x, output_size); };
}
auto adaptive_avg_backward() {
  return [](const Tensor& gy, c10::SymIntArrayRef input_size, bool below) {
    return call(adaptive_avg_pool_backward_op(), below, gy, input_size);
  };
}

Tensor adaptive_avg_pool_forward_autograd(const Tensor& input, at::IntArrayRef output_size) {
  return linear_forward("AdaptiveAvgPoolBackward", input, adaptive_avg_forward(output_size.vec()),
                        adaptive_avg_backward());
}

Tensor adaptive_avg_pool_backward_autograd(const Tensor& grad_output, c10::SymIntArrayRef input_size) {
  // The forward op's output size is grad_output's spatial size.
  Ints output_size;
  for (int64_t d = 2; d < grad_output.dim(); ++d)
    output_size.push_back(grad_output.sym_size(d).guard_int(__FILE__, __LINE__));
  return linear_backward("AdaptiveAvgPoolBackwardBackward", grad_output, input_size,
                         adaptive_avg_forward(output_size), adaptive_avg_backward());
}

struct GaussianArgs {
  Ints kernel_size, stride, padding;
  double sigma;

  auto forward() const {
    return [a = *this](const Tensor& x, bool below) {
      return call(gaussian_pool_op(), below, x, a.kernel_size, a.stride, a.padding, a.sigma);
    };
  }
  auto backward() const {
    return [a = *this](const Tensor& gy, c10::SymIntArrayRef input_size, bool below) {
      return call(gaussian_pool_backward_op(), below, gy, input_size, a.kernel_size, a.stride, a.padding, a.sigma);
    };
  }
};

Tensor gaussian_pool_forward_autograd(const Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, double sigma) {
  const GaussianArgs a{kernel_size.vec(), stride.vec(), padding.vec(), sigma};
  return linear_forward("GaussianPoolBackward", input, a.forward(), a.backward());
}

Tensor gaussian_pool_backward_autograd(const Tensor& grad_output, c10::SymIntArrayRef input_size,
                                       at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                       double sigma) {
  const GaussianArgs a{kernel_size.vec(), stride.vec(), padding.vec(), sigma};
  return linear_backward("GaussianPoolBackwardBackward", grad_output, input_size, a.forward(), a.backward());
}

// ---- window sums, for the nonlinear poolings' compositions ----

// The sum over each window of lp / stochastic pooling (no padding), as torch's lp pooling
// forms it: the window's average times the kernel volume (a window that ceil_mode cuts short
// is averaged over what it holds).
Tensor window_sums(const Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride, bool ceil_mode) {
  const Ints zeros(kernel_size.size(), 0);
  const double volume = static_cast<double>(c10::multiply_integers(kernel_size));
  return avg_pool_op().call(x, kernel_size, stride, zeros, ceil_mode, true, std::nullopt, {}) * volume;
}

// Its transpose: each input position receives gy of the windows that hold it, each scaled as
// window_sums scales that window.
Tensor spread_sums(const Tensor& gy, c10::SymIntArrayRef input_size, at::IntArrayRef kernel_size,
                   at::IntArrayRef stride, bool ceil_mode) {
  const Ints zeros(kernel_size.size(), 0);
  const double volume = static_cast<double>(c10::multiply_integers(kernel_size));
  return avg_pool_backward_op().call(gy, input_size, kernel_size, stride, zeros, ceil_mode, true, std::nullopt, {}) *
         volume;
}

// ---- lp: out = (sum over the window of x^p)^(1/p), torch's formula ----
//
// d out / d x_i = x_i^(p-1) * s^(1/p - 1) with s the window's sum (0 where s is 0, as torch's
// relu gives), the factor p of d(x^p) cancelling the 1/p of the root.

// s^(1/p - 1), 0 where s is 0.
Tensor lp_scale(const Tensor& s, double p) {
  const Tensor positive = s != 0;
  return at::where(positive, at::where(positive, s, at::ones_like(s)).pow(1.0 / p - 1.0), at::zeros_like(s));
}

Tensor lp_pool_forward_autograd(const Tensor& input, double p, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                bool ceil_mode) {
  Tensor out = call_below_autograd(lp_pool_op(), input, p, kernel_size, stride, ceil_mode);
  const Ints k = kernel_size.vec(), s = stride.vec();
  record("LpPoolBackward", {input}, out, {input},
         [p, k, s, ceil_mode](const FormulaNode&, const variable_list& saved, const Tensor& grad) -> variable_list {
           return {lp_pool_backward_op().call(grad, saved[0], p, k, s, ceil_mode)};
         });
  if (any_tangent({input})) {
    const Tensor x = primal(input);
    const Tensor sums = window_sums(x.pow(p), kernel_size, stride, ceil_mode);
    set_tangent(out, lp_scale(sums, p) * window_sums(x.pow(p - 1.0) * tangent(input), kernel_size, stride, ceil_mode));
  }
  return out;
}

Tensor lp_pool_backward_autograd(const Tensor& grad_output, const Tensor& input, double p,
                                 at::IntArrayRef kernel_size, at::IntArrayRef stride, bool ceil_mode) {
  if (!differentiating({grad_output, input}))
    return call_below_autograd(lp_pool_backward_op(), grad_output, input, p, kernel_size, stride, ceil_mode);
  const Tensor sums = window_sums(input.pow(p), kernel_size, stride, ceil_mode);
  const Tensor spread = spread_sums(grad_output * lp_scale(sums, p), input.sym_sizes(), kernel_size, stride, ceil_mode);
  return input.pow(p - 1.0) * spread;
}

// ---- stochastic eval: out = sum(x^2) / sum(x) over the window, 0 where sum(x) is 0 ----
//
// d out / d x_i = (2 x_i - out) / sum(x).

// 1 / s, 0 where s is 0.
Tensor reciprocal_or_zero(const Tensor& s) {
  const Tensor positive = s != 0;
  return at::where(positive, at::where(positive, s, at::ones_like(s)).reciprocal(), at::zeros_like(s));
}

Tensor stochastic_pool_eval_forward_autograd(const Tensor& input, at::IntArrayRef kernel_size,
                                             at::IntArrayRef stride) {
  Tensor out = call_below_autograd(stochastic_eval_op(), input, kernel_size, stride);
  const Ints k = kernel_size.vec(), s = stride.vec();
  record("StochasticPoolEvalBackward", {input}, out, {input},
         [k, s](const FormulaNode&, const variable_list& saved, const Tensor& grad) -> variable_list {
           return {stochastic_eval_backward_op().call(grad, saved[0], k, s)};
         });
  if (any_tangent({input})) {
    const Tensor x = primal(input), t = tangent(input);
    const Tensor inv = reciprocal_or_zero(window_sums(x, kernel_size, stride, false));
    set_tangent(out, (2 * window_sums(x * t, kernel_size, stride, false) -
                      out * window_sums(t, kernel_size, stride, false)) * inv);
  }
  return out;
}

Tensor stochastic_pool_eval_backward_autograd(const Tensor& grad_output, const Tensor& input,
                                              at::IntArrayRef kernel_size, at::IntArrayRef stride) {
  if (!differentiating({grad_output, input}))
    return call_below_autograd(stochastic_eval_backward_op(), grad_output, input, kernel_size, stride);
  const Tensor inv = reciprocal_or_zero(window_sums(input, kernel_size, stride, false));
  const Tensor out = window_sums(input * input, kernel_size, stride, false) * inv;
  const Tensor q = grad_output * inv;
  const auto size = input.sym_sizes();
  return 2 * input * spread_sums(q, size, kernel_size, stride, false) -
         spread_sums(q * out, size, kernel_size, stride, false);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnn_ops, Autograd, m) {
  m.impl("max_pool_forward", TORCH_FN(max_pool_forward_autograd));
  m.impl("adaptive_max_pool_forward", TORCH_FN(adaptive_max_pool_forward_autograd));
  m.impl("max_pool_backward", TORCH_FN(max_pool_backward_autograd));
  m.impl("avg_pool_forward", TORCH_FN(avg_pool_forward_autograd));
  m.impl("avg_pool_backward", TORCH_FN(avg_pool_backward_autograd));
  m.impl("adaptive_avg_pool_forward", TORCH_FN(adaptive_avg_pool_forward_autograd));
  m.impl("adaptive_avg_pool_backward", TORCH_FN(adaptive_avg_pool_backward_autograd));
  m.impl("lp_pool_forward", TORCH_FN(lp_pool_forward_autograd));
  m.impl("lp_pool_backward", TORCH_FN(lp_pool_backward_autograd));
  m.impl("kmax_pool_forward", TORCH_FN(kmax_pool_forward_autograd));
  m.impl("kmax_pool_backward", TORCH_FN(kmax_pool_backward_autograd));
  m.impl("gaussian_pool_forward", TORCH_FN(gaussian_pool_forward_autograd));
  m.impl("gaussian_pool_backward", TORCH_FN(gaussian_pool_backward_autograd));
  m.impl("stochastic_pool_forward", TORCH_FN(stochastic_pool_forward_autograd));
  m.impl("stochastic_pool_eval_forward", TORCH_FN(stochastic_pool_eval_forward_autograd));
  m.impl("stochastic_pool_eval_backward", TORCH_FN(stochastic_pool_eval_backward_autograd));
}

}  // namespace tco
