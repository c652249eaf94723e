// Autograd of a family of three ops that are linear in each tensor argument: convolution and
// tiled / unshared convolution (csrc/conv/conv_autograd.cpp, csrc/local/local_autograd.cpp).
//
// * forward(x, W) (+ bias): grad_x = input_backward(gy, W), grad_W = weight_backward(gy, x);
//   tangent forward(tx, W) + forward(x, tW) + tb.
// * input_backward(gy, W): its adjoint in gy is the forward op, in W the weight gradient.
// * weight_backward(gy, x): its adjoint in gy is the forward op of x with the cotangent as the
//   weight, in x the input gradient.
//
// A Family says how to call its ops:
//   struct Family {
//     struct Args { std::vector<int64_t> stride, padding, dilation; ... };   // the non-tensor arguments
//     static Tensor forward(x, W, bias, padding_end, const Args&);           // through the dispatcher
//     static Tensor forward_below_autograd(x, W, bias, padding_end, const Args&);
//     static Tensor input_backward(gy, W, SymIntArrayRef input_size, const Args&, bool below_autograd);
//     static Tensor weight_backward(gy, x, SymIntArrayRef weight_size, const Args&, bool below_autograd);
//     static c10::SymIntArrayRef kernel(const Tensor& W, const Args&);     // W's kernel sizes
//     static Tensor bias_grad(const Tensor& grad, int64_t bias_dim);         // grad summed to a bias of bias_dim dims
//     static Tensor bias_as_output(const Tensor& bias, const Tensor& out);   // bias broadcast to out
//     // optional: the wanted gradients of (input, weight, bias) in one call where that is
//     // cheaper, else std::nullopt (called only where plain_eager_backward holds and at least
//     // two are wanted, so the results need not be the ops')
//     static std::optional<std::array<Tensor, 3>> gradients_at_once(gy, x, W, const Args&,
//                                                                   std::array<bool, 3> wanted);
//   };
#pragma once

#include <array>

#include "autograd_common.h"

namespace tco::autograd {

template <typename Family>
struct BilinearAutograd {
  using Args = typename Family::Args;

  // The forward op (no bias) whose output has the spatial sizes of `like` (exact_padding_end).
  static Tensor forward_like(const Tensor& input, const Tensor& weight, const Tensor& like, const Args& a) {
    const auto end = exact_padding_end(input, Family::kernel(weight, a), like, a.stride, a.padding, a.dilation);
    return Family::forward(input, weight, Tensor(), end, a);
  }

  static Tensor forward(const Tensor& input, const Tensor& weight, const Tensor& bias, at::IntArrayRef padding_end,
                        const Args& a, const char* name) {
    Tensor out = Family::forward_below_autograd(input, weight, bias, padding_end, a);
    const int64_t bias_dim = bias.defined() ? bias.dim() : 0;
    record(name, {input, weight, bias}, out, {input, weight},
           [a, bias_dim](const FormulaNode& node, const variable_list& saved, const Tensor& grad) {
             const Tensor &x = saved[0], &w = saved[1];
             variable_list g(node.num_outputs());  // one per edge: input, weight, bias
             // Both gradients read grad_output, and the ops copy one with gaps or repeats (the
             // expanded gradient of a sum) into a dense tensor: here once rather than in each.
             const Tensor gy = node.wants(0) && node.wants(1) && !grad.is_non_overlapping_and_dense()
                                   ? grad.contiguous(x.suggest_memory_format())
                                   : grad;
             if constexpr (requires { Family::gradients_at_once(gy, x, w, a, std::array<bool, 3>{}); }) {
               const std::array<bool, 3> wanted{node.wants(0), node.wants(1), node.wants(2)};
               if (wanted[0] + wanted[1] + wanted[2] >= 2 && plain_eager_backward({gy, x, w})) {
                 if (auto all = Family::gradients_at_once(gy, x, w, a, wanted)) {
                   for (size_t i = 0; i < 3; ++i) g[i] = (*all)[i];
                 }
               }
             }
             if (node.wants(0) && !g[0].defined()) g[0] = Family::input_backward(gy, w, x.sym_sizes(), a, false);
             if (node.wants(1) && !g[1].defined()) g[1] = Family::weight_backward(gy, x, w.sym_sizes(), a, false);
             if (node.wants(2) && !g[2].defined()) g[2] = Family::bias_grad(grad, bias_dim);
             return g;
           });
    if (any_tangent({input, weight, bias})) {
      const Tensor tx = tangent(input), tw = tangent(weight), tb = tangent(bias);
      Tensor t;
      if (tx.defined()) t = Family::forward(tx, primal(weight), Tensor(), padding_end, a);
      if (tw.defined()) t = add_defined(t, Family::forward(primal(input), tw, Tensor(), padding_end, a));
      if (tb.defined()) t = add_defined(t, Family::bias_as_output(tb, out));
      set_tangent(out, t);
    }
    return out;
  }

  static Tensor input_backward(const Tensor& grad_output, const Tensor& weight, c10::SymIntArrayRef input_size,
                               const Args& a, const char* name) {
    Tensor out = Family::input_backward(grad_output, weight, input_size, a, true);
    record(name, {grad_output, weight}, out, {grad_output, weight},
           [a](const FormulaNode& node, const variable_list& saved, const Tensor& grad) {
             const Tensor &gy = saved[0], &w = saved[1];
             variable_list g(node.num_outputs());
             if (node.wants(0)) g[0] = forward_like(grad, w, gy, a);
             if (node.wants(1)) g[1] = Family::weight_backward(gy, grad, w.sym_sizes(), a, false);
             return g;
           });
    if (any_tangent({grad_output, weight})) {
      const Tensor tg = tangent(grad_output), tw = tangent(weight);
      Tensor t;
      if (tg.defined()) t = Family::input_backward(tg, primal(weight), input_size, a, false);
      if (tw.defined()) t = add_defined(t, Family::input_backward(primal(grad_output), tw, input_size, a, false));
      set_tangent(out, t);
    }
    return out;
  }

  static Tensor weight_backward(const Tensor& grad_output, const Tensor& input, c10::SymIntArrayRef weight_size,
                                const Args& a, const char* name) {
    Tensor out = Family::weight_backward(grad_output, input, weight_size, a, true);
    record(name, {grad_output, input}, out, {grad_output, input},
           [a](const FormulaNode& node, const variable_list& saved, const Tensor& grad) {
             const Tensor &gy = saved[0], &x = saved[1];
             variable_list g(node.num_outputs());
             if (node.wants(0)) g[0] = forward_like(x, grad, gy, a);
             if (node.wants(1)) g[1] = Family::input_backward(gy, grad, x.sym_sizes(), a, false);
             return g;
           });
    if (any_tangent({grad_output, input})) {
      const Tensor tg = tangent(grad_output), tx = tangent(input);
      Tensor t;
      if (tg.defined()) t = Family::weight_backward(tg, primal(input), weight_size, a, false);
      if (tx.defined()) t = add_defined(t, Family::weight_backward(primal(grad_output), tx, weight_size, a, false));
      set_tangent(out, t);
    }
    return out;
  }
};

}  // namespace tco::autograd
