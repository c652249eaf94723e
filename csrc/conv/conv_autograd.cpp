// First derivatives of conv_forward, registered in C++ for the Autograd dispatch key (every
// device; see csrc/autograd_common.h for why C++). grad_input and grad_weight are the ops
// conv_input_backward and conv_weight_backward, whose own derivatives (double backward) are
// registered in torch_cnn_ops/ops/conv.py; grad_bias sums grad_output over all but channels.

#include <torch/library.h>

#include <string>
#include <vector>

#include "../autograd_common.h"

namespace tco {
namespace {

using namespace tco::autograd;

using ConvForward = Tensor(const Tensor&, const Tensor&, const OptTensor&, at::IntArrayRef, at::IntArrayRef,
                           at::IntArrayRef, at::IntArrayRef, int64_t, c10::string_view);
// input_size / weight_size are SymInt[] (symbolic under torch.compile).
using ConvInputBackward = Tensor(const Tensor&, const Tensor&, c10::SymIntArrayRef, at::IntArrayRef,
                                 at::IntArrayRef, at::IntArrayRef, int64_t, c10::string_view);
using ConvWeightBackward = ConvInputBackward;

struct ConvFunction : torch::autograd::Function<ConvFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& weight, const OptTensor& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef padding_end,
                        at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm) {
    static const auto op = find_op<ConvForward>("cnn_ops::conv_forward");
    Tensor out = call_below_autograd(op, input, weight, bias, stride, padding, padding_end, dilation, groups,
                                     algorithm);
    ctx->save_for_backward({input, weight});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["algorithm"] = std::string(algorithm);
    ctx->saved_data["has_bias"] = given(bias);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto input_op = find_op<ConvInputBackward>("cnn_ops::conv_input_backward");
    static const auto weight_op = find_op<ConvWeightBackward>("cnn_ops::conv_weight_backward");
    variable_list result(9);
    const Tensor& grad = grads[0];
    if (!grad.defined()) return result;
    const auto saved = ctx->get_saved_variables();
    const Tensor &input = saved[0], &weight = saved[1];
    const std::vector<int64_t> stride = ctx->saved_data["stride"].toIntVector();
    const std::vector<int64_t> padding = ctx->saved_data["padding"].toIntVector();
    const std::vector<int64_t> dilation = ctx->saved_data["dilation"].toIntVector();
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const std::string algorithm = ctx->saved_data["algorithm"].toStringRef();
    // Edges: input, weight, then bias when given.
    if (ctx->needs_input_grad(0))
      result[0] = call_backward_op(input_op, grad, weight, input.sym_sizes(), stride, padding, dilation, groups,
                                   algorithm);
    if (ctx->needs_input_grad(1))
      result[1] = call_backward_op(weight_op, grad, input, weight.sym_sizes(), stride, padding, dilation, groups,
                                   algorithm);
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) {
      std::vector<int64_t> dims{0};
      for (int64_t d = 2; d < grad.dim(); ++d) dims.push_back(d);
      result[2] = grad.sum(dims);
    }
    return result;
  }
};

Tensor conv_forward_autograd(const Tensor& input, const Tensor& weight, const OptTensor& bias,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef padding_end,
                             at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm) {
  return ConvFunction::apply(input, weight, bias, stride, padding, padding_end, dilation, groups, algorithm);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnn_ops, Autograd, m) { m.impl("conv_forward", TORCH_FN(conv_forward_autograd)); }

}  // namespace tco
