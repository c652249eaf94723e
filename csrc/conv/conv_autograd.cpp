// Autograd of the conv family (see csrc/autograd_common.h for how and why in C++). All three
// ops are linear in each tensor argument, so every derivative is another of the three ops:
//
// * conv_forward(x, W): grad_x = conv_input_backward(gy, W), grad_W = conv_weight_backward(gy, x);
//   tangent conv(tx, W) + conv(x, tW) + tb.
// * conv_input_backward(gy, W): its adjoint in gy is the forward convolution, in W the weight
//   gradient.
// * conv_weight_backward(gy, x): its adjoint in gy is the forward convolution of x with the
//   cotangent as a kernel, in x the input gradient.

#include <torch/library.h>

#include <string>
#include <vector>

#include "../autograd_common.h"

namespace tco {
namespace {

using namespace tco::autograd;
using Ints = std::vector<int64_t>;
using SymInts = std::vector<c10::SymInt>;

using ConvForward = Tensor(const Tensor&, const Tensor&, const OptTensor&, at::IntArrayRef, at::IntArrayRef,
                           at::IntArrayRef, at::IntArrayRef, int64_t, c10::string_view);
// input_size / weight_size are SymInt[] (symbolic under torch.compile).
using ConvBackward = Tensor(const Tensor&, const Tensor&, c10::SymIntArrayRef, at::IntArrayRef, at::IntArrayRef,
                           at::IntArrayRef, int64_t, c10::string_view);

const auto& forward_op() {
  static const auto op = find_op<ConvForward>("cnn_ops::conv_forward");
  return op;
}
const auto& input_backward_op() {
  static const auto op = find_op<ConvBackward>("cnn_ops::conv_input_backward");
  return op;
}
const auto& weight_backward_op() {
  static const auto op = find_op<ConvBackward>("cnn_ops::conv_weight_backward");
  return op;
}

// The arguments every op of the family shares besides its tensors and sizes.
struct ConvArgs {
  Ints stride, padding, dilation;
  int64_t groups;
  std::string algorithm;
};

// The forward convolution (no bias) of `input` with `weight` whose output has the spatial
// sizes of `like` (see exact_padding_end).
Tensor conv_like(const Tensor& input, const Tensor& weight, const Tensor& like, const ConvArgs& a) {
  const auto padding_end =
      exact_padding_end(input, weight.sym_sizes().slice(2), like, a.stride, a.padding, a.dilation);
  return forward_op().call(input, weight, std::nullopt, a.stride, a.padding, padding_end, a.dilation, a.groups,
                           a.algorithm);
}

Tensor input_backward(const Tensor& grad_output, const Tensor& weight, c10::SymIntArrayRef input_size,
                      const ConvArgs& a) {
  return input_backward_op().call(grad_output, weight, input_size, a.stride, a.padding, a.dilation, a.groups,
                                  a.algorithm);
}

Tensor weight_backward(const Tensor& grad_output, const Tensor& input, c10::SymIntArrayRef weight_size,
                       const ConvArgs& a) {
  return weight_backward_op().call(grad_output, input, weight_size, a.stride, a.padding, a.dilation, a.groups,
                                   a.algorithm);
}

// Bias broadcast over the output: (C) -> (1, C, 1, ...).
Tensor per_channel(const Tensor& bias, int64_t dim) {
  std::vector<int64_t> shape(dim, 1);
  shape[1] = -1;
  return bias.view(shape);
}

Tensor conv_forward_autograd(const Tensor& input, const Tensor& weight, const OptTensor& bias,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef padding_end,
                             at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm) {
  const Tensor bias_t = value_or_undefined(bias);
  Tensor out = call_below_autograd(forward_op(), input, weight, bias, stride, padding, padding_end, dilation, groups,
                                   algorithm);
  ConvArgs a{stride.vec(), padding.vec(), dilation.vec(), groups, std::string(algorithm)};
  record("ConvForwardBackward", {input, weight, bias_t}, out, {input, weight},
         [a](const FormulaNode& node, const variable_list& saved, const Tensor& grad) {
           const Tensor &x = saved[0], &w = saved[1];
           variable_list g(3);
           if (node.wants(0)) g[0] = input_backward(grad, w, x.sym_sizes(), a);
           if (node.wants(1)) g[1] = weight_backward(grad, x, w.sym_sizes(), a);
           if (node.wants(2)) {
             Ints dims{0};
             for (int64_t d = 2; d < grad.dim(); ++d) dims.push_back(d);
             g[2] = grad.sum(dims);
           }
           return g;
         });
  if (any_tangent({input, weight, bias_t})) {
    const Tensor tx = tangent(input), tw = tangent(weight), tb = tangent(bias_t);
    Tensor t;
    if (tx.defined())
      t = forward_op().call(tx, primal(weight), std::nullopt, stride, padding, padding_end, dilation, groups,
                            algorithm);
    if (tw.defined())
      t = add_defined(t, forward_op().call(primal(input), tw, std::nullopt, stride, padding, padding_end, dilation,
                                           groups, algorithm));
    if (tb.defined()) t = add_defined(t, per_channel(tb, out.dim()).expand(out.sizes()));
    set_tangent(out, t);
  }
  return out;
}

Tensor conv_input_backward_autograd(const Tensor& grad_output, const Tensor& weight, c10::SymIntArrayRef input_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                    int64_t groups, c10::string_view algorithm) {
  ConvArgs a{stride.vec(), padding.vec(), dilation.vec(), groups, std::string(algorithm)};
  Tensor out = call_below_autograd(input_backward_op(), grad_output, weight, input_size, stride, padding, dilation,
                                   groups, algorithm);
  record("ConvInputBackwardBackward", {grad_output, weight}, out, {grad_output, weight},
         [a](const FormulaNode& node, const variable_list& saved, const Tensor& grad) {
           const Tensor &gy = saved[0], &w = saved[1];
           variable_list g(2);
           if (node.wants(0)) g[0] = conv_like(grad, w, gy, a);
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

Tensor conv_weight_backward_autograd(const Tensor& grad_output, const Tensor& input, c10::SymIntArrayRef weight_size,
                                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups, c10::string_view algorithm) {
  ConvArgs a{stride.vec(), padding.vec(), dilation.vec(), groups, std::string(algorithm)};
  Tensor out = call_below_autograd(weight_backward_op(), grad_output, input, weight_size, stride, padding, dilation,
                                   groups, algorithm);
  record("ConvWeightBackwardBackward", {grad_output, input}, out, {grad_output, input},
         [a](const FormulaNode& node, const variable_list& saved, const Tensor& grad) {
           const Tensor &gy = saved[0], &x = saved[1];
           variable_list g(2);
           if (node.wants(0)) g[0] = conv_like(x, grad, gy, a);
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
  m.impl("conv_forward", TORCH_FN(conv_forward_autograd));
  m.impl("conv_input_backward", TORCH_FN(conv_input_backward_autograd));
  m.impl("conv_weight_backward", TORCH_FN(conv_weight_backward_autograd));
}

}  // namespace tco
