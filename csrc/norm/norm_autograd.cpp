// First derivatives of the norm family's forward ops, registered in C++ for the Autograd
// dispatch key (every device): batch_norm_forward, group_norm_forward, layer_norm_forward
// (see csrc/autograd_common.h for why C++). BatchNorm1d on (256, 256) moves 256 KB, about
// 15 us of kernels; with the formulas in Python it took 2.1x torch's time.

#include <torch/library.h>

#include <tuple>

#include "../autograd_common.h"

namespace tco {
namespace {

using namespace tco::autograd;
using Tensor3 = std::tuple<Tensor, Tensor, Tensor>;
using Tensor4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;

// What the backward needs to know of the optional weight and bias: whether they were given,
// and bias's dtype (its gradient comes back in weight's, which may differ).
void save_params(AutogradContext* ctx, const OptTensor& weight, const OptTensor& bias) {
  const bool has_bias = given(bias);
  ctx->saved_data["has_weight"] = given(weight);
  ctx->saved_data["has_bias"] = has_bias;
  if (has_bias) ctx->saved_data["bias_dtype"] = static_cast<int64_t>(bias->scalar_type());
}

// The gradients of (input, weight, bias) that are wanted, as undefined tensors where not.
// needs_input_grad counts the tensor arguments that were given (the graph's edges), in order:
// input first, then weight and bias when present; the running statistics come after them.
std::tuple<Tensor, Tensor, Tensor> wanted(AutogradContext* ctx, const Tensor& gi, const Tensor& gw,
                                          const Tensor& gb) {
  const bool has_weight = ctx->saved_data["has_weight"].toBool();
  const bool has_bias = ctx->saved_data["has_bias"].toBool();
  size_t edge = 0;
  const bool want_input = ctx->needs_input_grad(edge++);
  const bool want_weight = has_weight && ctx->needs_input_grad(edge++);
  const bool want_bias = has_bias && ctx->needs_input_grad(edge++);
  return {want_input ? gi : Tensor(), want_weight ? gw : Tensor(),
          want_bias ? gb.to(static_cast<at::ScalarType>(ctx->saved_data["bias_dtype"].toInt())) : Tensor()};
}

// ---- batch norm ----

using BatchNormForward = Tensor4(const Tensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                                 const OptTensor&, bool, double);
using BatchNormBackward = Tensor3(const Tensor&, const Tensor&, const OptTensor&, const Tensor&, const Tensor&,
                                  bool, double);

struct BatchNormFunction : torch::autograd::Function<BatchNormFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const OptTensor& weight,
                               const OptTensor& bias, const OptTensor& running_mean, const OptTensor& running_var,
                               bool training, double eps) {
    static const auto op = find_op<BatchNormForward>("cnn_ops::batch_norm_forward");
    auto [out, mean, invstd, var] = call_below_autograd(op, input, weight, bias, running_mean, running_var, training, eps);
    ctx->mark_non_differentiable({mean, invstd, var});
    ctx->set_materialize_grads(false);  // no zero gradients for the statistics
    ctx->save_for_backward({input, value_or_undefined(weight), mean, invstd});
    ctx->saved_data["training"] = training;
    ctx->saved_data["eps"] = eps;
    save_params(ctx, weight, bias);
    return {out, mean, invstd, var};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<BatchNormBackward>("cnn_ops::batch_norm_backward");
    if (!grads[0].defined()) return variable_list(7);
    const auto saved = ctx->get_saved_variables();
    auto [gi, gw, gb] = call_backward_op(op, grads[0], saved[0], as_optional(saved[1]), saved[2], saved[3],
                                         ctx->saved_data["training"].toBool(), ctx->saved_data["eps"].toDouble());
    auto [dx, dw, db] = wanted(ctx, gi, gw, gb);
    return {dx, dw, db, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor4 batch_norm_forward_autograd(const Tensor& input, const OptTensor& weight, const OptTensor& bias,
                                    const OptTensor& running_mean, const OptTensor& running_var, bool training,
                                    double eps) {
  auto r = BatchNormFunction::apply(input, weight, bias, running_mean, running_var, training, eps);
  return {r[0], r[1], r[2], r[3]};
}

// ---- group norm ----

using GroupNormForward = Tensor3(const Tensor&, const OptTensor&, const OptTensor&, int64_t, double);
using GroupNormBackward = Tensor3(const Tensor&, const Tensor&, const OptTensor&, const Tensor&, const Tensor&,
                                  int64_t, double);

struct GroupNormFunction : torch::autograd::Function<GroupNormFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const OptTensor& weight,
                               const OptTensor& bias, int64_t num_groups, double eps) {
    static const auto op = find_op<GroupNormForward>("cnn_ops::group_norm_forward");
    auto [out, mean, rstd] = call_below_autograd(op, input, weight, bias, num_groups, eps);
    ctx->mark_non_differentiable({mean, rstd});
    ctx->set_materialize_grads(false);  // no zero gradients for the statistics
    ctx->save_for_backward({input, value_or_undefined(weight), mean, rstd});
    ctx->saved_data["num_groups"] = num_groups;
    ctx->saved_data["eps"] = eps;
    save_params(ctx, weight, bias);
    return {out, mean, rstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<GroupNormBackward>("cnn_ops::group_norm_backward");
    if (!grads[0].defined()) return variable_list(5);
    const auto saved = ctx->get_saved_variables();
    auto [gi, gw, gb] = call_backward_op(op, grads[0], saved[0], as_optional(saved[1]), saved[2], saved[3],
                                         ctx->saved_data["num_groups"].toInt(), ctx->saved_data["eps"].toDouble());
    auto [dx, dw, db] = wanted(ctx, gi, gw, gb);
    return {dx, dw, db, Tensor(), Tensor()};
  }
};

Tensor3 group_norm_forward_autograd(const Tensor& input, const OptTensor& weight, const OptTensor& bias,
                                    int64_t num_groups, double eps) {
  auto r = GroupNormFunction::apply(input, weight, bias, num_groups, eps);
  return {r[0], r[1], r[2]};
}

// ---- layer norm ----

using LayerNormForward = Tensor3(const Tensor&, at::IntArrayRef, const OptTensor&, const OptTensor&, double);
using LayerNormBackward = Tensor3(const Tensor&, const Tensor&, at::IntArrayRef, const OptTensor&, const Tensor&,
                                  const Tensor&, double);

struct LayerNormFunction : torch::autograd::Function<LayerNormFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, at::IntArrayRef normalized_shape,
                               const OptTensor& weight, const OptTensor& bias, double eps) {
    static const auto op = find_op<LayerNormForward>("cnn_ops::layer_norm_forward");
    auto [out, mean, rstd] = call_below_autograd(op, input, normalized_shape, weight, bias, eps);
    ctx->mark_non_differentiable({mean, rstd});
    ctx->set_materialize_grads(false);  // no zero gradients for the statistics
    ctx->save_for_backward({input, value_or_undefined(weight), mean, rstd});
    ctx->saved_data["normalized_shape"] = normalized_shape;
    ctx->saved_data["eps"] = eps;
    save_params(ctx, weight, bias);
    return {out, mean, rstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = find_op<LayerNormBackward>("cnn_ops::layer_norm_backward");
    if (!grads[0].defined()) return variable_list(5);
    const auto saved = ctx->get_saved_variables();
    const std::vector<int64_t> shape = ctx->saved_data["normalized_shape"].toIntVector();
    auto [gi, gw, gb] = call_backward_op(op, grads[0].contiguous(), saved[0], shape, as_optional(saved[1]), saved[2],
                                         saved[3], ctx->saved_data["eps"].toDouble());
    auto [dx, dw, db] = wanted(ctx, gi, gw, gb);
    return {dx, Tensor(), dw, db, Tensor()};
  }
};

Tensor3 layer_norm_forward_autograd(const Tensor& input, at::IntArrayRef normalized_shape, const OptTensor& weight,
                                    const OptTensor& bias, double eps) {
  auto r = LayerNormFunction::apply(input, normalized_shape, weight, bias, eps);
  return {r[0], r[1], r[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(cnn_ops, Autograd, m) {
  m.impl("batch_norm_forward", TORCH_FN(batch_norm_forward_autograd));
  m.impl("group_norm_forward", TORCH_FN(group_norm_forward_autograd));
  m.impl("layer_norm_forward", TORCH_FN(layer_norm_forward_autograd));
}

}  // namespace tco
