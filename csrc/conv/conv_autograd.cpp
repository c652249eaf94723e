// Autograd of the conv family: the three ops are linear in each tensor argument, so every
// derivative is another of them (csrc/bilinear_autograd.h; see csrc/autograd_common.h for how
// and why in C++).

#include <torch/library.h>

#include <string>
#include <vector>

#include "../bilinear_autograd.h"
#include "conv_ops.h"

namespace tco {
namespace {

using namespace tco::autograd;

using ConvForward = Tensor(const Tensor&, const Tensor&, const OptTensor&, at::IntArrayRef, at::IntArrayRef,
                           at::IntArrayRef, at::IntArrayRef, int64_t, c10::string_view);
// input_size / weight_size are SymInt[] (symbolic under torch.compile).
using ConvBackward = Tensor(const Tensor&, const Tensor&, c10::SymIntArrayRef, at::IntArrayRef, at::IntArrayRef,
                            at::IntArrayRef, int64_t, c10::string_view);

struct Conv {
  struct Args {
    std::vector<int64_t> stride, padding, dilation;
    int64_t groups;
    std::string algorithm;
  };

  static const auto& forward_op() {
    static const auto op = find_op<ConvForward>("cnn_ops::conv_forward");
    return op;
  }
  static const auto& input_backward_op() {
    static const auto op = find_op<ConvBackward>("cnn_ops::conv_input_backward");
    return op;
  }
  static const auto& weight_backward_op() {
    static const auto op = find_op<ConvBackward>("cnn_ops::conv_weight_backward");
    return op;
  }

  static Tensor forward(const Tensor& x, const Tensor& w, const Tensor& b, at::IntArrayRef padding_end,
                        const Args& a) {
    return forward_op().call(x, w, as_optional(b), a.stride, a.padding, padding_end, a.dilation, a.groups,
                             a.algorithm);
  }
  static Tensor forward_below_autograd(const Tensor& x, const Tensor& w, const Tensor& b,
                                       at::IntArrayRef padding_end, const Args& a) {
    return call_below_autograd(forward_op(), x, w, as_optional(b), a.stride, a.padding, padding_end, a.dilation,
                               a.groups, a.algorithm);
  }
  static Tensor input_backward(const Tensor& gy, const Tensor& w, c10::SymIntArrayRef size, const Args& a,
                               bool below) {
    return call(input_backward_op(), below, gy, w, size, a.stride, a.padding, a.dilation, a.groups, a.algorithm);
  }
  static Tensor weight_backward(const Tensor& gy, const Tensor& x, c10::SymIntArrayRef size, const Args& a,
                                bool below) {
    return call(weight_backward_op(), below, gy, x, size, a.stride, a.padding, a.dilation, a.groups, a.algorithm);
  }
  // Where the wanted gradients run ATen's convolution, one call of it computes them: oneDNN then
  // converts grad_output to its blocked layout once (two calls took up to 1.2x its time), and
  // sums the bias's gradient in the same pass.
  static std::optional<std::array<Tensor, 3>> gradients_at_once(const Tensor& gy, const Tensor& x, const Tensor& w,
                                                                const Args& a, std::array<bool, 3> wanted) {
    return aten_convolution_gradients(gy, x, w, a.stride, a.padding, a.dilation, a.groups, a.algorithm, wanted);
  }
  // Weight: (out_channels, in_channels / groups, *kernel).
  static c10::SymIntArrayRef kernel(const Tensor& w, const Args&) { return w.sym_sizes().slice(2); }
  // Bias: (out_channels), summed over samples and positions.
  static Tensor bias_grad(const Tensor& grad, int64_t) {
    std::vector<int64_t> dims{0};
    for (int64_t d = 2; d < grad.dim(); ++d) dims.push_back(d);
    return grad.sum(dims);
  }
  static Tensor bias_as_output(const Tensor& bias, const Tensor& out) {
    std::vector<int64_t> shape(out.dim(), 1);
    shape[1] = -1;
    return bias.view(shape).expand(out.sizes());
  }
};

using Autograd = BilinearAutograd<Conv>;

Tensor conv_forward_autograd(const Tensor& input, const Tensor& weight, const OptTensor& bias,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef padding_end,
                             at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm) {
  // Nothing to record (inference, eval): the kernel, without copying the arguments into Args.
  const Tensor b = value_or_undefined(bias);
  if (!any_requires_grad({input, weight, b}) && !any_tangent({input, weight, b}))
    return call_below_autograd(Conv::forward_op(), input, weight, bias, stride, padding, padding_end, dilation,
                               groups, algorithm);
  return Autograd::forward(input, weight, value_or_undefined(bias), padding_end,
                           {stride.vec(), padding.vec(), dilation.vec(), groups, std::string(algorithm)},
                           "ConvForwardBackward");
}

Tensor conv_input_backward_autograd(const Tensor& grad_output, const Tensor& weight, c10::SymIntArrayRef input_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                    int64_t groups, c10::string_view algorithm) {
  return Autograd::input_backward(grad_output, weight, input_size,
                                  {stride.vec(), padding.vec(), dilation.vec(), groups, std::string(algorithm)},
                                  "ConvInputBackwardBackward");
}

Tensor conv_weight_backward_autograd(const Tensor& grad_output, const Tensor& input, c10::SymIntArrayRef weight_size,
                                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups, c10::string_view algorithm) {
  return Autograd::weight_backward(grad_output, input, weight_size,
                                   {stride.vec(), padding.vec(), dilation.vec(), groups, std::string(algorithm)},
                                   "ConvWeightBackwardBackward");
}

}  // namespace

TORCH_LIBRARY_IMPL(cnn_ops, Autograd, m) {
  m.impl("conv_forward", TORCH_FN(conv_forward_autograd));
  m.impl("conv_input_backward", TORCH_FN(conv_input_backward_autograd));
  m.impl("conv_weight_backward", TORCH_FN(conv_weight_backward_autograd));
}

}  // namespace tco
