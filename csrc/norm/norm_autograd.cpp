// Autograd of the norm family's forward and backward ops (see csrc/autograd_common.h for how
// and why in C++): batch_norm_forward, group_norm_forward, layer_norm_forward and their backward
// ops. BatchNorm1d on (256, 256) moves 256 KB, about 15 us of kernels; with the formulas in
// Python it took 2.1x torch's time.
//
// Each norm normalises groups of values, xhat = (x - mean) * rstd over a group (a channel over
// the batch for batch norm in training, a (sample, group) for group norm, a row for layer
// norm), then applies the per-channel (or per-element) affine. Normalisation's Jacobian is the
// symmetric map  v -> rstd * (v - mean(v) - xhat * mean(v * xhat))  (`project` below), so one
// formula gives both the input gradient (v = grad_output * weight) and the tangent (v = the
// input's tangent). With the running statistics (batch norm in eval) mean and rstd are
// constants and the map is v -> rstd * v.
//
// The backward ops are differentiated as compositions (differentiating in autograd_common.h):
// the same formula written with torch's ops, the statistics recomputed from the input so that
// their own dependence on it is differentiated too. That is torch's approach for its native
// batch norm's double backward, and it serves every order and torch.func.

#include <ATen/ops/rsqrt.h>
#include <torch/library.h>

#include <tuple>
#include <utility>
#include <vector>

#include "../autograd_common.h"

namespace tco {
namespace {

using namespace tco::autograd;
using Tensor3 = std::tuple<Tensor, Tensor, Tensor>;
using Tensor4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;
using Ints = std::vector<int64_t>;

using BatchNormForward = Tensor4(const Tensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                                 const OptTensor&, bool, double);
using BatchNormBackward = Tensor3(const Tensor&, const Tensor&, const OptTensor&, const Tensor&, const Tensor&,
                                  bool, double);
using GroupNormForward = Tensor3(const Tensor&, const OptTensor&, const OptTensor&, int64_t, double);
using GroupNormBackward = Tensor3(const Tensor&, const Tensor&, const OptTensor&, const Tensor&, const Tensor&,
                                  int64_t, double);
using LayerNormForward = Tensor3(const Tensor&, at::IntArrayRef, const OptTensor&, const OptTensor&, double);
using LayerNormBackward = Tensor3(const Tensor&, const Tensor&, at::IntArrayRef, const OptTensor&, const Tensor&,
                                  const Tensor&, double);

// ---- shared formulas ----

// Statistics and the formulas below are in float32 for float16 / bfloat16 (as the kernels), in
// the input's type otherwise.
at::ScalarType compute_type(const Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// The Jacobian of normalisation applied to v (see the top of the file); `dims` are the
// dimensions of a group in the grouped view.
Tensor project(const Tensor& v, const Tensor& xhat, const Tensor& rstd, at::IntArrayRef dims) {
  return rstd * (v - v.mean(dims, true) - xhat * (v * xhat).mean(dims, true));
}

// (C) -> (1, C, 1, ...) for an input of `dim` dimensions.
Tensor per_channel(const Tensor& t, int64_t dim) {
  Ints shape(dim, 1);
  shape[1] = -1;
  return t.view(shape);
}

// The dimensions of the input other than the channels.
Ints all_but_channels(int64_t dim) {
  Ints dims{0};
  for (int64_t d = 2; d < dim; ++d) dims.push_back(d);
  return dims;
}

// How one norm groups its input: `group(t)` views t (of the input's shape) so that a group is
// `dims` and the statistics broadcast; `stat(s)` views a statistic that way; `ungroup` undoes.
struct Grouping {
  std::function<Tensor(const Tensor&)> group, stat;
  Ints dims;
  c10::SymIntArrayRef shape;
  Tensor ungroup(const Tensor& t) const { return t.reshape_symint(shape); }
};

Grouping batch_grouping(const Tensor& input) {
  const int64_t dim = input.dim();
  return {[](const Tensor& t) { return t; }, [dim](const Tensor& s) { return per_channel(s, dim); },
          all_but_channels(dim), input.sym_sizes()};
}

Grouping group_grouping(const Tensor& input, int64_t num_groups) {
  const c10::SymInt n = input.sym_size(0);
  return {[n, num_groups](const Tensor& t) { return t.reshape_symint({n, num_groups, -1}); },
          [](const Tensor& s) { return s.unsqueeze(-1); }, {2}, input.sym_sizes()};
}

Grouping layer_grouping(const Tensor& input, at::IntArrayRef normalized_shape) {
  const int64_t cols = c10::multiply_integers(normalized_shape);
  return {[cols](const Tensor& t) { return t.reshape({-1, cols}); }, [](const Tensor& s) { return s.unsqueeze(-1); },
          {1}, input.sym_sizes()};
}

// The affine's parameters broadcast over the input: per channel for batch and group norm,
// per element of normalized_shape (already trailing) for layer norm.
using ParamView = std::function<Tensor(const Tensor&)>;

// The mean and rstd of each group of x (grouped), written with torch's ops so that their
// dependence on x is differentiated.
std::pair<Tensor, Tensor> group_stats(const Tensor& x, const Grouping& g, double eps) {
  const Tensor m = x.mean(g.dims, true);
  return {m, at::rsqrt((x - m).pow(2).mean(g.dims, true) + eps)};
}

// Tangent of y = xhat * weight + bias. With batch statistics they are recomputed from the
// input with torch's ops (the kernel's carry no history), so that the tangent can itself be
// differentiated (jacrev of jacfwd); with constant ones (`mean`, `rstd`) they are used as given.
Tensor norm_tangent(const Tensor& input, const OptTensor& weight, const OptTensor& bias, const Tensor& mean,
                    const Tensor& rstd, bool constant_stats, double eps, const Grouping& g, const ParamView& param) {
  const auto wide = compute_type(input);
  const Tensor x = g.group(primal(input).to(wide));
  const auto [m, r] = constant_stats ? std::pair{g.stat(mean), g.stat(rstd)} : group_stats(x, g, eps);
  const Tensor xhat = (x - m) * r;
  Tensor t;
  if (const Tensor tx = tangent(input); tx.defined()) {
    const Tensor v = g.group(tx.to(wide));
    t = g.ungroup(constant_stats ? v * r : project(v, xhat, r, g.dims));
    if (weight.has_value()) t = t * param(primal(*weight).to(wide));
  }
  if (const Tensor tw = tangent(weight); tw.defined()) t = add_defined(t, g.ungroup(xhat) * param(tw.to(wide)));
  if (const Tensor tb = tangent(bias); tb.defined()) t = add_defined(t, param(tb.to(wide)).expand_symint(g.shape));
  return t.to(input.scalar_type());
}

// (grad_input, grad_weight, grad_bias) of y = xhat * weight + bias written with torch's ops.
// With batch statistics they are recomputed from the input (so that their dependence on it is
// differentiated); with constant ones (`mean`, `rstd`) they are used as given.
Tensor3 norm_backward_composite(const Tensor& grad_output, const Tensor& input, const OptTensor& weight,
                                const Tensor& mean, const Tensor& rstd, bool constant_stats, double eps,
                                const Grouping& g, const ParamView& param, at::IntArrayRef param_dims) {
  const auto wide = compute_type(input);
  const Tensor x = g.group(input.to(wide));
  const Tensor dy = grad_output.to(wide);
  const auto [m, r] = constant_stats ? std::pair{g.stat(mean.to(wide)), g.stat(rstd.to(wide))} : group_stats(x, g, eps);
  const Tensor xhat = (x - m) * r;
  const Tensor v = g.group(weight.has_value() ? dy * param(weight->to(wide)) : dy);
  const Tensor grad_input = g.ungroup(constant_stats ? v * r : project(v, xhat, r, g.dims));
  // Sums over every dimension that is not a parameter's; none for a layer norm over the whole
  // input (a sum over no dimensions would reduce them all).
  const Tensor dy_xhat = dy * g.ungroup(xhat);
  const Tensor grad_weight = param_dims.empty() ? dy_xhat : dy_xhat.sum(param_dims);
  const Tensor grad_bias = param_dims.empty() ? dy : dy.sum(param_dims);
  const auto param_type = weight.has_value() ? weight->scalar_type() : input.scalar_type();
  return {grad_input.to(input.scalar_type()), grad_weight.to(param_type), grad_bias.to(param_type)};
}

// The gradients of the forward's (input, weight, bias) that are wanted; the bias's comes back
// in its own dtype (the backward op returns weight's).
variable_list wanted(const FormulaNode& node, const Tensor3& grads, std::optional<at::ScalarType> bias_type) {
  const auto& [gi, gw, gb] = grads;
  return {node.wants(0) ? gi : Tensor(), node.wants(1) ? gw : Tensor(),
          node.wants(2) && bias_type ? gb.to(*bias_type) : Tensor()};
}

std::optional<at::ScalarType> type_of(const OptTensor& t) {
  return t.has_value() ? std::optional<at::ScalarType>(t->scalar_type()) : std::nullopt;
}

// ---- batch norm ----

const auto& batch_norm_forward_op() {
  static const auto op = find_op<BatchNormForward>("cnn_ops::batch_norm_forward");
  return op;
}
const auto& batch_norm_backward_op() {
  static const auto op = find_op<BatchNormBackward>("cnn_ops::batch_norm_backward");
  return op;
}

Tensor4 batch_norm_forward_autograd(const Tensor& input, const OptTensor& weight, const OptTensor& bias,
                                    const OptTensor& running_mean, const OptTensor& running_var, bool training,
                                    double eps) {
  auto [out, mean, invstd, var] =
      call_below_autograd(batch_norm_forward_op(), input, weight, bias, running_mean, running_var, training, eps);
  record("BatchNormBackward", {input, value_or_undefined(weight), value_or_undefined(bias)}, out,
         {input, value_or_undefined(weight), mean, invstd},
         [training, eps, bias_type = type_of(bias)](const FormulaNode& node, const variable_list& s,
                                                    const Tensor& grad) {
           return wanted(node,
                         batch_norm_backward_op().call(grad, s[0], as_optional(s[1]), s[2], s[3], training, eps),
                         bias_type);
         });
  if (any_tangent({input, value_or_undefined(weight), value_or_undefined(bias)})) {
    const int64_t dim = input.dim();
    set_tangent(out, norm_tangent(input, weight, bias, mean, invstd, !training, eps, batch_grouping(input),
                                  [dim](const Tensor& p) { return per_channel(p, dim); }));
  }
  return {out, mean, invstd, var};
}

Tensor3 batch_norm_backward_autograd(const Tensor& grad_output, const Tensor& input, const OptTensor& weight,
                                     const Tensor& mean, const Tensor& invstd, bool training, double eps) {
  if (!differentiating({grad_output, input, value_or_undefined(weight)}))
    return call_below_autograd(batch_norm_backward_op(), grad_output, input, weight, mean, invstd, training, eps);
  const int64_t dim = input.dim();
  return norm_backward_composite(grad_output, input, weight, mean, invstd, !training, eps, batch_grouping(input),
                                 [dim](const Tensor& p) { return per_channel(p, dim); }, all_but_channels(dim));
}

// ---- group norm ----

const auto& group_norm_forward_op() {
  static const auto op = find_op<GroupNormForward>("cnn_ops::group_norm_forward");
  return op;
}
const auto& group_norm_backward_op() {
  static const auto op = find_op<GroupNormBackward>("cnn_ops::group_norm_backward");
  return op;
}

Tensor3 group_norm_forward_autograd(const Tensor& input, const OptTensor& weight, const OptTensor& bias,
                                    int64_t num_groups, double eps) {
  auto [out, mean, rstd] = call_below_autograd(group_norm_forward_op(), input, weight, bias, num_groups, eps);
  record("GroupNormBackward", {input, value_or_undefined(weight), value_or_undefined(bias)}, out,
         {input, value_or_undefined(weight), mean, rstd},
         [num_groups, eps, bias_type = type_of(bias)](const FormulaNode& node, const variable_list& s,
                                                      const Tensor& grad) {
           return wanted(node,
                         group_norm_backward_op().call(grad, s[0], as_optional(s[1]), s[2], s[3], num_groups, eps),
                         bias_type);
         });
  if (any_tangent({input, value_or_undefined(weight), value_or_undefined(bias)})) {
    const int64_t dim = input.dim();
    set_tangent(out, norm_tangent(input, weight, bias, mean, rstd, false, eps, group_grouping(input, num_groups),
                                  [dim](const Tensor& p) { return per_channel(p, dim); }));
  }
  return {out, mean, rstd};
}

Tensor3 group_norm_backward_autograd(const Tensor& grad_output, const Tensor& input, const OptTensor& weight,
                                     const Tensor& mean, const Tensor& rstd, int64_t num_groups, double eps) {
  if (!differentiating({grad_output, input, value_or_undefined(weight)}))
    return call_below_autograd(group_norm_backward_op(), grad_output, input, weight, mean, rstd, num_groups, eps);
  const int64_t dim = input.dim();
  return norm_backward_composite(grad_output, input, weight, mean, rstd, false, eps,
                                 group_grouping(input, num_groups),
                                 [dim](const Tensor& p) { return per_channel(p, dim); }, all_but_channels(dim));
}

// ---- layer norm ----

const auto& layer_norm_forward_op() {
  static const auto op = find_op<LayerNormForward>("cnn_ops::layer_norm_forward");
  return op;
}
const auto& layer_norm_backward_op() {
  static const auto op = find_op<LayerNormBackward>("cnn_ops::layer_norm_backward");
  return op;
}

Tensor same(const Tensor& p) { return p; }

Tensor3 layer_norm_forward_autograd(const Tensor& input, at::IntArrayRef normalized_shape, const OptTensor& weight,
                                    const OptTensor& bias, double eps) {
  auto [out, mean, rstd] = call_below_autograd(layer_norm_forward_op(), input, normalized_shape, weight, bias, eps);
  record("LayerNormBackward", {input, value_or_undefined(weight), value_or_undefined(bias)}, out,
         {input, value_or_undefined(weight), mean, rstd},
         [shape = normalized_shape.vec(), eps, bias_type = type_of(bias)](const FormulaNode& node,
                                                                          const variable_list& s,
                                                                          const Tensor& grad) {
           return wanted(node,
                         layer_norm_backward_op().call(grad.contiguous(), s[0], shape, as_optional(s[1]), s[2],
                                                       s[3], eps),
                         bias_type);
         });
  if (any_tangent({input, value_or_undefined(weight), value_or_undefined(bias)}))
    set_tangent(out, norm_tangent(input, weight, bias, mean, rstd, false, eps, layer_grouping(input, normalized_shape),
                                  same));
  return {out, mean, rstd};
}

Tensor3 layer_norm_backward_autograd(const Tensor& grad_output, const Tensor& input, at::IntArrayRef normalized_shape,
                                     const OptTensor& weight, const Tensor& mean, const Tensor& rstd, double eps) {
  if (!differentiating({grad_output, input, value_or_undefined(weight)}))
    return call_below_autograd(layer_norm_backward_op(), grad_output, input, normalized_shape, weight, mean, rstd,
                               eps);
  Ints leading;
  for (int64_t d = 0; d < input.dim() - static_cast<int64_t>(normalized_shape.size()); ++d) leading.push_back(d);
  return norm_backward_composite(grad_output, input, weight, mean, rstd, false, eps,
                                 layer_grouping(input, normalized_shape), same, leading);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnn_ops, Autograd, m) {
  m.impl("batch_norm_forward", TORCH_FN(batch_norm_forward_autograd));
  m.impl("batch_norm_backward", TORCH_FN(batch_norm_backward_autograd));
  m.impl("group_norm_forward", TORCH_FN(group_norm_forward_autograd));
  m.impl("group_norm_backward", TORCH_FN(group_norm_backward_autograd));
  m.impl("layer_norm_forward", TORCH_FN(layer_norm_forward_autograd));
  m.impl("layer_norm_backward", TORCH_FN(layer_norm_backward_autograd));
}

}  // namespace tco
