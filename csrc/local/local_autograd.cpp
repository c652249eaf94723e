// Autograd of the local family, tiled and unshared convolution: as for conv, the three ops are
// linear in each tensor argument, so every derivative is another of them
// (csrc/bilinear_autograd.h; see csrc/autograd_common.h for how and why in C++).
//
// The weight is (*grid, out_channels, in_channels, *kernel); the bias (out_channels) or
// (out_channels, *output_size).

#include <torch/library.h>

#include <vector>

#include "../bilinear_autograd.h"

namespace tco {
namespace {

using namespace tco::autograd;

using LocalForward = Tensor(const Tensor&, const Tensor&, const OptTensor&, at::IntArrayRef, at::IntArrayRef,
                            at::IntArrayRef, at::IntArrayRef);
// input_size / weight_size are SymInt[] (symbolic under torch.compile).
using LocalBackward = Tensor(const Tensor&, const Tensor&, c10::SymIntArrayRef, at::IntArrayRef, at::IntArrayRef,
                             at::IntArrayRef);

struct Local {
  struct Args {
    std::vector<int64_t> stride, padding, dilation;
  };

  static const auto& forward_op() {
    static const auto op = find_op<LocalForward>("cnn_ops::local_forward");
    return op;
  }
  static const auto& input_backward_op() {
    static const auto op = find_op<LocalBackward>("cnn_ops::local_input_backward");
    return op;
  }
  static const auto& weight_backward_op() {
    static const auto op = find_op<LocalBackward>("cnn_ops::local_weight_backward");
    return op;
  }

  static Tensor forward(const Tensor& x, const Tensor& w, const Tensor& b, at::IntArrayRef padding_end,
                        const Args& a) {
    return forward_op().call(x, w, as_optional(b), a.stride, a.padding, padding_end, a.dilation);
  }
  static Tensor forward_below_autograd(const Tensor& x, const Tensor& w, const Tensor& b,
                                       at::IntArrayRef padding_end, const Args& a) {
    return call_below_autograd(forward_op(), x, w, as_optional(b), a.stride, a.padding, padding_end, a.dilation);
  }
  static Tensor input_backward(const Tensor& gy, const Tensor& w, c10::SymIntArrayRef size, const Args& a,
                               bool below) {
    return call(input_backward_op(), below, gy, w, size, a.stride, a.padding, a.dilation);
  }
  static Tensor weight_backward(const Tensor& gy, const Tensor& x, c10::SymIntArrayRef size, const Args& a,
                                bool below) {
    return call(weight_backward_op(), below, gy, x, size, a.stride, a.padding, a.dilation);
  }
  static c10::SymIntArrayRef kernel(const Tensor& w, const Args& a) {
    return w.sym_sizes().slice(a.stride.size() + 2);
  }
  // A per-channel bias sums over samples and positions, a per-position one over samples.
  static Tensor bias_grad(const Tensor& grad, int64_t bias_dim) {
    std::vector<int64_t> dims{0};
    if (bias_dim == 1)
      for (int64_t d = 2; d < grad.dim(); ++d) dims.push_back(d);
    return grad.sum(dims);
  }
  static Tensor bias_as_output(const Tensor& bias, const Tensor& out) {
    if (bias.dim() > 1) return bias.unsqueeze(0).expand(out.sizes());
    std::vector<int64_t> shape(out.dim(), 1);
    shape[1] = -1;
    return bias.view(shape).expand(out.sizes());
  }
};

using Autograd = BilinearAutograd<Local>;

Tensor local_forward_autograd(const Tensor& input, const Tensor& weight, const OptTensor& bias,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef padding_end,
                              at::IntArrayRef dilation) {
  return Autograd::forward(input, weight, value_or_undefined(bias), padding_end,
                           {stride.vec(), padding.vec(), dilation.vec()}, "LocalForwardBackward");
}

Tensor local_input_backward_autograd(const Tensor& grad_output, const Tensor& weight,
                                     c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation) {
  return Autograd::input_backward(grad_output, weight, input_size, {stride.vec(), padding.vec(), dilation.vec()},
                                  "LocalInputBackwardBackward");
}

Tensor local_weight_backward_autograd(const Tensor& grad_output, const Tensor& input,
                                      c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation) {
  return Autograd::weight_backward(grad_output, input, weight_size, {stride.vec(), padding.vec(), dilation.vec()},
                                   "LocalWeightBackwardBackward");
}

}  // namespace

TORCH_LIBRARY_IMPL(cnn_ops, Autograd, m) {
  m.impl("local_forward", TORCH_FN(local_forward_autograd));
  m.impl("local_input_backward", TORCH_FN(local_input_backward_autograd));
  m.impl("local_weight_backward", TORCH_FN(local_weight_backward_autograd));
}

}  // namespace tco
