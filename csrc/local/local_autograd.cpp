// Autograd of the local family, tiled and unshared convolution (see csrc/autograd_common.h for
// how and why in C++). As for conv, the three ops are linear in each tensor argument:
//
// * local_forward(x, W): grad_x = local_input_backward(gy, W), grad_W = local_weight_backward(gy, x);
//   tangent local(tx, W) + local(x, tW) + tb.
// * local_input_backward(gy, W): its adjoint in gy is the forward op, in W the weight gradient.
// * local_weight_backward(gy, x): its adjoint in gy is the forward op of x with the cotangent as
//   the weight, in x the input gradient.
//
// The weight is (*grid, out_channels, in_channels, *kernel); bias (out_channels) or
// (out_channels, *output_size).

#include <torch/library.h>

#include <vector>

#include "../autograd_common.h"

namespace tco {
namespace {

using namespace tco::autograd;
using Ints = std::vector<int64_t>;

using LocalForward = Tensor(const Tensor&, const Tensor&, const OptTensor&, at::IntArrayRef, at::IntArrayRef,
                            at::IntArrayRef, at::IntArrayRef);
// input_size / weight_size are SymInt[] (symbolic under torch.compile).
using LocalBackward = Tensor(const Tensor&, const Tensor&, c10::SymIntArrayRef, at::IntArrayRef, at::IntArrayRef,
                             at::IntArrayRef);

const auto& forward_op() {
  static const auto op = find_op<LocalForward>("cnn_ops::local_forward");
  return op;
}
const auto& input_backward_op() {
  static const auto op = find_op<LocalBackward>("cnn_ops::local_input_backward");
  return op;
}
const auto& weight_backward_op() {
  static const auto op = find_op<LocalBackward>("cnn_ops::local_weight_backward");
  return op;
}

struct LocalArgs {
  Ints stride, padding, dilation;
};

// The forward op (no bias) whose output has the spatial sizes of `like` (see exact_padding_end).
Tensor local_like(const Tensor& input, const Tensor& weight, const Tensor& like, const LocalArgs& a) {
  const size_t nd = a.stride.size();
  const auto padding_end =
      exact_padding_end(input, weight.sym_sizes().slice(nd + 2), like, a.stride, a.padding, a.dilation);
  return forward_op().call(input, weight, std::nullopt, a.stride, a.padding, padding_end, a.dilation);
}

Tensor input_backward(const Tensor& grad_output, const Tensor& weight, c10::SymIntArrayRef input_size,
                      const LocalArgs& a) {
  return input_backward_op().call(grad_output, weight, input_size, a.stride, a.padding, a.dilation);
}

Tensor weight_backward(const Tensor& grad_output, const Tensor& input, c10::SymIntArrayRef weight_size,
                       const LocalArgs& a) {
  return weight_backward_op().call(grad_output, input, weight_size, a.stride, a.padding, a.dilation);
}

// A per-channel bias (C) is viewed as (1, C, 1, ...); a per-position one (C, *out) as (1, C, *out).
Tensor bias_view(const Tensor& bias, int64_t out_dim) {
  if (bias.dim() > 1) return bias.unsqueeze(0);
  Ints shape(out_dim, 1);
  shape[1] = -1;
  return bias.view(shape);
}

Tensor local_forward_autograd(const Tensor& input, const Tensor& weight, const OptTensor& bias,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef padding_end,
                              at::IntArrayRef dilation) {
  const Tensor bias_t = value_or_undefined(bias);
  Tensor out = call_below_autograd(forward_op(), input, weight, bias, stride, padding, padding_end, dilation);
  LocalArgs a{stride.vec(), padding.vec(), dilation.vec()};
  const int64_t bias_dim = bias_t.defined() ? bias_t.dim() : 0;
  record("LocalForwardBackward", {input, weight, bias_t}, out, {input, weight},
         [a, bias_dim](const FormulaNode& node, const variable_list& saved, const Tensor& grad) {
           const Tensor &x = saved[0], &w = saved[1];
           variable_list g(3);
           if (node.wants(0)) g[0] = input_backward(grad, w, x.sym_sizes(), a);
           if (node.wants(1)) g[1] = weight_backward(grad, x, w.sym_sizes(), a);
           if (node.wants(2)) {
             // A per-channel bias sums over samples and positions, a per-position one over samples.
             Ints dims{0};
             if (bias_dim == 1)
               for (int64_t d = 2; d < grad.dim(); ++d) dims.push_back(d);
             g[2] = grad.sum(dims);
           }
           return g;
         });
  if (any_tangent({input, weight, bias_t})) {
    const Tensor tx = tangent(input), tw = tangent(weight), tb = tangent(bias_t);
    Tensor t;
    if (tx.defined()) t = forward_op().call(tx, primal(weight), std::nullopt, stride, padding, padding_end, dilation);
    if (tw.defined())
      t = add_defined(t, forward_op().call(primal(input), tw, std::nullopt, stride, padding, padding_end, dilation));
    if (tb.defined()) t = add_defined(t, bias_view(tb, out.dim()).expand(out.sizes()));
    set_tangent(out, t);
  }
  return out;
}

Tensor local_input_backward_autograd(const Tensor& grad_output, const Tensor& weight,
                                     c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation) {
  LocalArgs a{stride.vec(), padding.vec(), dilation.vec()};
  Tensor out =
      call_below_autograd(input_backward_op(), grad_output, weight, input_size, stride, padding, dilation);
  record("LocalInputBackwardBackward", {grad_output, weight}, out, {grad_output, weight},
         [a](const FormulaNode& node, const variable_list& saved, const Tensor& grad) {
           const Tensor &gy = saved[0], &w = saved[1];
           variable_list g(2);
           if (node.wants(0)) g[0] = local_like(grad, w, gy, a);
           if (node.wants(1)) g[1] = weight_backward(gy, grad, w.sym_sizes(), a);
           return g;
         });
  if (any_tangent({grad_output, weight})) {
    const Tensor tg = tangent(grad_output), tw = tangent(weight);
    Tensor t;
    if (tg.defined()) t = input_backward(tg, primal(weight), input_size, a);
    if (tw.defined()) t = add_defined(t, input_backward(primal(grad_output), tw, input_size, a));
    set_tangent(out, t);
  }
  return out;
}

Tensor local_weight_backward_autograd(const Tensor& grad_output, const Tensor& input,
                                      c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation) {
  LocalArgs a{stride.vec(), padding.vec(), dilation.vec()};
  Tensor out =
      call_below_autograd(weight_backward_op(), grad_output, input, weight_size, stride, padding, dilation);
  record("LocalWeightBackwardBackward", {grad_output, input}, out, {grad_output, input},
         [a](const FormulaNode& node, const variable_list& saved, const Tensor& grad) {
           const Tensor &gy = saved[0], &x = saved[1];
           variable_list g(2);
           if (node.wants(0)) g[0] = local_like(x, grad, gy, a);
           if (node.wants(1)) g[1] = input_backward(gy, grad, x.sym_sizes(), a);
           return g;
         });
  if (any_tangent({grad_output, input})) {
    const Tensor tg = tangent(grad_output), tx = tangent(input);
    Tensor t;
    if (tg.defined()) t = weight_backward(tg, primal(input), weight_size, a);
    if (tx.defined()) t = add_defined(t, weight_backward(primal(grad_output), tx, weight_size, a));
    set_tangent(out, t);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(cnn_ops, Autograd, m) {
  m.impl("local_forward", TORCH_FN(local_forward_autograd));
  m.impl("local_input_backward", TORCH_FN(local_input_backward_autograd));
  m.impl("local_weight_backward", TORCH_FN(local_weight_backward_autograd));
}

}  // namespace tco
