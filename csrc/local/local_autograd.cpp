// First derivatives of local_forward (tiled and unshared convolution), registered in C++ for
// the Autograd dispatch key (every device; see csrc/autograd_common.h for why C++).
// grad_input and grad_weight are the ops local_input_backward and local_weight_backward,
// whose own derivatives (double backward) are registered in torch_cnn_ops/ops/local.py.

#include <torch/library.h>

#include <vector>

#include "../autograd_common.h"

namespace tco {
namespace {

using namespace tco::autograd;

using LocalForward = Tensor(const Tensor&, const Tensor&, const OptTensor&, at::IntArrayRef, at::IntArrayRef,
                            at::IntArrayRef, at::IntArrayRef);
// input_size / weight_size are SymInt[] (symbolic under torch.compile).
using LocalBackward = Tensor(const Tensor&, const Tensor&, c10::SymIntArrayRef, at::IntArrayRef, at::IntArrayRef,
                             at::IntArrayRef);

struct LocalFunction : torch::autograd::Function<LocalFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& weight, const OptTensor& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef padding_end,
                        at::IntArrayRef dilation) {
    static const auto op = find_op<LocalForward>("cnn_ops::local_forward");
    Tensor out = call_below_autograd(op, input, weight, bias, stride, padding, padding_end, dilation);
    ctx->save_for_backward({input, weight});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["bias_dim"] = given(bias) ? bias->dim() : int64_t{0};
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto input_op = find_op<LocalBackward>("cnn_ops::local_input_backward");
    static const auto weight_op = find_op<LocalBackward>("cnn_ops::local_weight_backward");
    variable_list result(7);
    const Tensor& grad = grads[0];
    if (!grad.defined()) return result;
    const auto saved = ctx->get_saved_variables();
    const Tensor &input = saved[0], &weight = saved[1];
    const std::vector<int64_t> stride = ctx->saved_data["stride"].toIntVector();
    const std::vector<int64_t> padding = ctx->saved_data["padding"].toIntVector();
    const std::vector<int64_t> dilation = ctx->saved_data["dilation"].toIntVector();
    const int64_t bias_dim = ctx->saved_data["bias_dim"].toInt();
    // Edges: input, weight, then bias when given.
    if (ctx->needs_input_grad(0))
      result[0] = call_backward_op(input_op, grad, weight, input.sym_sizes(), stride, padding, dilation);
    if (ctx->needs_input_grad(1))
      result[1] = call_backward_op(weight_op, grad, input, weight.sym_sizes(), stride, padding, dilation);
    if (bias_dim > 0 && ctx->needs_input_grad(2)) {
      // A per-channel bias sums over samples and positions, a per-position one over samples.
      std::vector<int64_t> dims{0};
      if (bias_dim == 1)
        for (int64_t d = 2; d < grad.dim(); ++d) dims.push_back(d);
      result[2] = grad.sum(dims);
    }
    return result;
  }
};

Tensor local_forward_autograd(const Tensor& input, const Tensor& weight, const OptTensor& bias,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef padding_end,
                              at::IntArrayRef dilation) {
  return LocalFunction::apply(input, weight, bias, stride, padding, padding_end, dilation);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnn_ops, Autograd, m) { m.impl("local_forward", TORCH_FN(local_forward_autograd)); }

}  // namespace tco
