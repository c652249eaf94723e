// First derivatives of every pooling (max / min, average, lp, k-max, Gaussian, stochastic),
// registered in C++ for the Autograd dispatch key (every device; see csrc/autograd_common.h for
// why C++). The backward ops' own derivatives (double backward) are registered in
// torch_cnn_ops/ops/pool.py.

#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "../autograd_common.h"
#include "pool_common.h"

namespace tco {
namespace {

using namespace tco::autograd;
using Tensor2 = std::tuple<Tensor, Tensor>;

// ---- max / min: grad_output scattered to the saved indices ----

using MaxPoolBackward = Tensor(const Tensor&, const Tensor&, c10::SymIntArrayRef);

Tensor scatter_to_indices(AutogradContext* ctx, const Tensor& grad) {
  static const auto op = find_op<MaxPoolBackward>("cnn_ops::max_pool_backward");
  const Tensor indices = ctx->get_saved_variables()[0];
  const std::vector<c10::SymInt> input_size = ctx->saved_data["input_size"].toSymIntVector();
  return call_backward_op(op, grad, indices, input_size);
}

void save_for_scatter(AutogradContext* ctx, const Tensor& input, const Tensor& indices) {
  ctx->mark_non_differentiable({indices});
  ctx->set_materialize_grads(false);
  ctx->save_for_backward({indices});
  ctx->saved_data["input_size"] = input.sym_sizes();
}

using MaxPoolForward = Tensor2(const Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
                               bool, bool);

struct MaxPoolFunction : torch::autograd::Function<MaxPoolFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               bool ceil_mode, bool minimum) {
    static const auto op = find_op<MaxPoolForward>("cnn_ops::max_pool_forward");
    auto [out, indices] = call_below_autograd(op, input, kernel_size, stride, padding, dilation, ceil_mode, minimum);
    save_for_scatter(ctx, input, indices);
    return {out, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(7);
    if (grads[0].defined() && ctx->needs_input_grad(0)) result[0] = scatter_to_indices(ctx, grads[0]);
    return result;
  }
};

using AdaptiveMaxPoolForward = Tensor2(const Tensor&, at::IntArrayRef, bool);

struct AdaptiveMaxPoolFunction : torch::autograd::Function<AdaptiveMaxPoolFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, at::IntArrayRef output_size,
                               bool minimum) {
    static const auto op = find_op<AdaptiveMaxPoolForward>("cnn_ops::adaptive_max_pool_forward");
    auto [out, indices] = call_below_autograd(op, input, output_size, minimum);
    save_for_scatter(ctx, input, indices);
    return {out, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(3);
    if (grads[0].defined() && ctx->needs_input_grad(0)) result[0] = scatter_to_indices(ctx, grads[0]);
    return result;
  }
};

// ---- average: grad_output spread over the windows ----

// A channels-last input (use_channels_last) is pooled, and its gradient computed, in that
// layout; the backward kernels follow grad_output's, so it is handed over in it.
Tensor in_input_layout(AutogradContext* ctx, const Tensor& grad) {
  return ctx->saved_data["channels_last"].toBool() ? grad.contiguous(at::MemoryFormat::ChannelsLast) : grad;
}

using AvgPoolForward = Tensor(const Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool, bool,
                              std::optional<int64_t>);
using AvgPoolBackward = Tensor(const Tensor&, c10::SymIntArrayRef, at::IntArrayRef, at::IntArrayRef,
                               at::IntArrayRef, bool, bool, std::optional<int64_t>);

struct AvgPoolFunction : torch::autograd::Function<AvgPoolFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, at::IntArrayRef kernel_size,
                        at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                        std::optional<int64_t> divisor_override) {
    static const auto op = find_op<AvgPoolForward>("cnn_ops::avg_pool_forward");
    Tensor out = call_below_autograd(op, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                     divisor_override);
    ctx->saved_data["input_size"] = input.sym_sizes();
    ctx->saved_data["channels_last"] = use_channels_last(input);
    ctx->saved_data["kernel_size"] = kernel_size;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["ceil_mode"] = ceil_mode;
    ctx->saved_data["count_include_pad"] = count_include_pad;
    ctx->saved_data["divisor_override"] = divisor_override;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<AvgPoolBackward>("cnn_ops::avg_pool_backward");
    variable_list result(7);
    if (!grads[0].defined() || !ctx->needs_input_grad(0)) return result;
    auto& d = ctx->saved_data;
    const c10::IValue& divisor = d["divisor_override"];
    result[0] = call_backward_op(op, in_input_layout(ctx, grads[0]), d["input_size"].toSymIntVector(),
                                 d["kernel_size"].toIntVector(), d["stride"].toIntVector(), d["padding"].toIntVector(),
                                 d["ceil_mode"].toBool(), d["count_include_pad"].toBool(),
                                 divisor.isNone() ? std::nullopt : std::optional<int64_t>(divisor.toInt()));
    return result;
  }
};

using AdaptiveAvgPoolForward = Tensor(const Tensor&, at::IntArrayRef);
using AdaptiveAvgPoolBackward = Tensor(const Tensor&, c10::SymIntArrayRef);

struct AdaptiveAvgPoolFunction : torch::autograd::Function<AdaptiveAvgPoolFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, at::IntArrayRef output_size) {
    static const auto op = find_op<AdaptiveAvgPoolForward>("cnn_ops::adaptive_avg_pool_forward");
    Tensor out = call_below_autograd(op, input, output_size);
    ctx->saved_data["input_size"] = input.sym_sizes();
    ctx->saved_data["channels_last"] = use_channels_last(input);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<AdaptiveAvgPoolBackward>("cnn_ops::adaptive_avg_pool_backward");
    variable_list result(2);
    if (!grads[0].defined() || !ctx->needs_input_grad(0)) return result;
    result[0] = call_backward_op(op, in_input_layout(ctx, grads[0]), ctx->saved_data["input_size"].toSymIntVector());
    return result;
  }
};

// ---- lp: the backward op reads the input ----

using LpPoolForward = Tensor(const Tensor&, double, at::IntArrayRef, at::IntArrayRef, bool);
using LpPoolBackward = Tensor(const Tensor&, const Tensor&, double, at::IntArrayRef, at::IntArrayRef, bool);

struct LpPoolFunction : torch::autograd::Function<LpPoolFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, double norm_type, at::IntArrayRef kernel_size,
                        at::IntArrayRef stride, bool ceil_mode) {
    static const auto op = find_op<LpPoolForward>("cnn_ops::lp_pool_forward");
    Tensor out = call_below_autograd(op, input, norm_type, kernel_size, stride, ceil_mode);
    ctx->save_for_backward({input});
    ctx->saved_data["norm_type"] = norm_type;
    ctx->saved_data["kernel_size"] = kernel_size;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["ceil_mode"] = ceil_mode;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<LpPoolBackward>("cnn_ops::lp_pool_backward");
    variable_list result(5);
    if (!grads[0].defined() || !ctx->needs_input_grad(0)) return result;
    auto& d = ctx->saved_data;
    result[0] = call_backward_op(op, grads[0], ctx->get_saved_variables()[0], d["norm_type"].toDouble(),
                                 d["kernel_size"].toIntVector(), d["stride"].toIntVector(), d["ceil_mode"].toBool());
    return result;
  }
};

// ---- k-max: grad_output scattered to the kept positions ----

using KMaxPoolForward = Tensor2(const Tensor&, int64_t, int64_t);
using KMaxPoolBackward = Tensor(const Tensor&, const Tensor&, int64_t, c10::SymIntArrayRef);

struct KMaxPoolFunction : torch::autograd::Function<KMaxPoolFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, int64_t k, int64_t dim) {
    static const auto op = find_op<KMaxPoolForward>("cnn_ops::kmax_pool_forward");
    auto [values, indices] = call_below_autograd(op, input, k, dim);
    ctx->mark_non_differentiable({indices});
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({indices});
    ctx->saved_data["dim"] = dim;
    ctx->saved_data["input_size"] = input.sym_sizes();
    return {values, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<KMaxPoolBackward>("cnn_ops::kmax_pool_backward");
    variable_list result(3);
    if (!grads[0].defined() || !ctx->needs_input_grad(0)) return result;
    result[0] = call_backward_op(op, grads[0], ctx->get_saved_variables()[0], ctx->saved_data["dim"].toInt(),
                                 ctx->saved_data["input_size"].toSymIntVector());
    return result;
  }
};

// ---- Gaussian: grad_output spread with the window's weights ----

using GaussianPoolForward = Tensor(const Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, double);
using GaussianPoolBackward = Tensor(const Tensor&, c10::SymIntArrayRef, at::IntArrayRef, at::IntArrayRef,
                                    at::IntArrayRef, double);

struct GaussianPoolFunction : torch::autograd::Function<GaussianPoolFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, at::IntArrayRef kernel_size,
                        at::IntArrayRef stride, at::IntArrayRef padding, double sigma) {
    static const auto op = find_op<GaussianPoolForward>("cnn_ops::gaussian_pool_forward");
    Tensor out = call_below_autograd(op, input, kernel_size, stride, padding, sigma);
    ctx->saved_data["input_size"] = input.sym_sizes();
    ctx->saved_data["kernel_size"] = kernel_size;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["sigma"] = sigma;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<GaussianPoolBackward>("cnn_ops::gaussian_pool_backward");
    variable_list result(5);
    if (!grads[0].defined() || !ctx->needs_input_grad(0)) return result;
    auto& d = ctx->saved_data;
    result[0] = call_backward_op(op, grads[0], d["input_size"].toSymIntVector(), d["kernel_size"].toIntVector(),
                                 d["stride"].toIntVector(), d["padding"].toIntVector(), d["sigma"].toDouble());
    return result;
  }
};

// ---- stochastic: training scatters to the sampled positions, eval has its own backward op ----

using StochasticPoolForward = Tensor2(const Tensor&, const Tensor&, at::IntArrayRef, at::IntArrayRef);
using StochasticEvalForward = Tensor(const Tensor&, at::IntArrayRef, at::IntArrayRef);
using StochasticEvalBackward = Tensor(const Tensor&, const Tensor&, at::IntArrayRef, at::IntArrayRef);

struct StochasticPoolFunction : torch::autograd::Function<StochasticPoolFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& uniform,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride) {
    static const auto op = find_op<StochasticPoolForward>("cnn_ops::stochastic_pool_forward");
    auto [out, indices] = call_below_autograd(op, input, uniform, kernel_size, stride);
    save_for_scatter(ctx, input, indices);
    return {out, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list result(4);
    if (grads[0].defined() && ctx->needs_input_grad(0)) result[0] = scatter_to_indices(ctx, grads[0]);
    return result;
  }
};

struct StochasticEvalFunction : torch::autograd::Function<StochasticEvalFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, at::IntArrayRef kernel_size,
                        at::IntArrayRef stride) {
    static const auto op = find_op<StochasticEvalForward>("cnn_ops::stochastic_pool_eval_forward");
    Tensor out = call_below_autograd(op, input, kernel_size, stride);
    ctx->save_for_backward({input});
    ctx->saved_data["kernel_size"] = kernel_size;
    ctx->saved_data["stride"] = stride;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<StochasticEvalBackward>("cnn_ops::stochastic_pool_eval_backward");
    variable_list result(3);
    if (!grads[0].defined() || !ctx->needs_input_grad(0)) return result;
    result[0] = call_backward_op(op, grads[0], ctx->get_saved_variables()[0],
                                 ctx->saved_data["kernel_size"].toIntVector(), ctx->saved_data["stride"].toIntVector());
    return result;
  }
};

Tensor2 stochastic_pool_forward_autograd(const Tensor& input, const Tensor& uniform, at::IntArrayRef kernel_size,
                                         at::IntArrayRef stride) {
  auto r = StochasticPoolFunction::apply(input, uniform, kernel_size, stride);
  return {r[0], r[1]};
}

Tensor stochastic_pool_eval_forward_autograd(const Tensor& input, at::IntArrayRef kernel_size,
                                             at::IntArrayRef stride) {
  return StochasticEvalFunction::apply(input, kernel_size, stride);
}

Tensor lp_pool_forward_autograd(const Tensor& input, double norm_type, at::IntArrayRef kernel_size,
                                at::IntArrayRef stride, bool ceil_mode) {
  return LpPoolFunction::apply(input, norm_type, kernel_size, stride, ceil_mode);
}

Tensor2 kmax_pool_forward_autograd(const Tensor& input, int64_t k, int64_t dim) {
  auto r = KMaxPoolFunction::apply(input, k, dim);
  return {r[0], r[1]};
}

Tensor gaussian_pool_forward_autograd(const Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, double sigma) {
  return GaussianPoolFunction::apply(input, kernel_size, stride, padding, sigma);
}

Tensor2 max_pool_forward_autograd(const Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode, bool minimum) {
  auto r = MaxPoolFunction::apply(input, kernel_size, stride, padding, dilation, ceil_mode, minimum);
  return {r[0], r[1]};
}

Tensor2 adaptive_max_pool_forward_autograd(const Tensor& input, at::IntArrayRef output_size, bool minimum) {
  auto r = AdaptiveMaxPoolFunction::apply(input, output_size, minimum);
  return {r[0], r[1]};
}

Tensor avg_pool_forward_autograd(const Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                 std::optional<int64_t> divisor_override) {
  return AvgPoolFunction::apply(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override);
}

Tensor adaptive_avg_pool_forward_autograd(const Tensor& input, at::IntArrayRef output_size) {
  return AdaptiveAvgPoolFunction::apply(input, output_size);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnn_ops, Autograd, m) {
  m.impl("max_pool_forward", TORCH_FN(max_pool_forward_autograd));
  m.impl("adaptive_max_pool_forward", TORCH_FN(adaptive_max_pool_forward_autograd));
  m.impl("avg_pool_forward", TORCH_FN(avg_pool_forward_autograd));
  m.impl("adaptive_avg_pool_forward", TORCH_FN(adaptive_avg_pool_forward_autograd));
  m.impl("lp_pool_forward", TORCH_FN(lp_pool_forward_autograd));
  m.impl("kmax_pool_forward", TORCH_FN(kmax_pool_forward_autograd));
  m.impl("gaussian_pool_forward", TORCH_FN(gaussian_pool_forward_autograd));
  m.impl("stochastic_pool_forward", TORCH_FN(stochastic_pool_forward_autograd));
  m.impl("stochastic_pool_eval_forward", TORCH_FN(stochastic_pool_eval_forward_autograd));
}

}  // namespace tco
