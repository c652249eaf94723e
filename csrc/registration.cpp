// The one list of every op in the library: the schemas ("what it is"). Kernels register
// per dispatch key in their family folder: the device kernels, the autograd
// (csrc/<family>/<family>_autograd.cpp) and the autocast policy (csrc/autocast.cpp); the fake
// kernels and batching rules are in Python (torch_cnn_ops/ops/).
//
// Spatial arguments (stride, padding, dilation) have one entry per spatial dimension, so
// the same op serves 1-d, 2-d and 3-d. Padding is split into the leading `padding` and the
// trailing `padding_end` so that 'same' with an even kernel needs no padded copy.
// `algorithm` is "direct", "im2col", "shifted" or "auto".

#include <Python.h>
#include <torch/library.h>

#include "python_calls.h"

TORCH_LIBRARY(cnn_ops, m) {
  // ---- conv family (csrc/conv) ----
  m.def(
      "conv_forward(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
      "int[] padding_end, int[] dilation, int groups, str algorithm) -> Tensor");
  // The algorithm conv_forward runs for these arguments ("auto" resolved): a question about
  // the tensors' sizes, dtype, layout and device, answered without computing (no tensor out).
  m.def(
      "conv_algorithm(Tensor input, Tensor weight, int[] stride, int[] padding, int[] padding_end, "
      "int[] dilation, int groups, str algorithm) -> str");
  // Gradient of the input: the transposed-kernel convolution of grad_output.
  m.def(
      "conv_input_backward(Tensor grad_output, Tensor weight, SymInt[] input_size, int[] stride, "
      "int[] padding, int[] dilation, int groups, str algorithm) -> Tensor");
  // Gradient of the weight: the correlation of the input with grad_output.
  m.def(
      "conv_weight_backward(Tensor grad_output, Tensor input, SymInt[] weight_size, int[] stride, "
      "int[] padding, int[] dilation, int groups, str algorithm) -> Tensor");

  // ---- local family (csrc/local): tiled and unshared (locally connected) convolution ----
  // weight: (*grid, out_channels, in_channels, *kernel); output position p uses the kernel
  // weight[p % grid] (per dimension). Tiled: grid = tile size. Unshared: grid = output size.
  // bias: (out_channels) or (out_channels, *output_size).
  m.def(
      "local_forward(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
      "int[] padding_end, int[] dilation) -> Tensor");
  m.def(
      "local_input_backward(Tensor grad_output, Tensor weight, SymInt[] input_size, int[] stride, "
      "int[] padding, int[] dilation) -> Tensor");
  m.def(
      "local_weight_backward(Tensor grad_output, Tensor input, SymInt[] weight_size, int[] stride, "
      "int[] padding, int[] dilation) -> Tensor");

  // ---- pool family (csrc/pool) ----
  // Window pooling: kernel_size, stride, padding and dilation have one entry per spatial
  // dimension (1 to 3). Indices are flat positions in the input's spatial plane (int64), as
  // torch's. `minimum` turns max pooling into min pooling (same ties and NaN rules).
  // padding_end, the padding after the input, is empty for padding on both sides, else one
  // entry per dimension (TensorFlow's 'same' pads one more at the end than at the start).
  m.def(
      "max_pool_forward(Tensor input, int[] kernel_size, int[] stride, int[] padding, "
      "int[] dilation, bool ceil_mode, bool minimum, int[] padding_end=[]) -> (Tensor, Tensor)");
  m.def("adaptive_max_pool_forward(Tensor input, int[] output_size, bool minimum) -> (Tensor, Tensor)");
  // Gradient of max / min pooling (window and adaptive): grad_output scattered to the indices.
  m.def("max_pool_backward(Tensor grad_output, Tensor indices, SymInt[] input_size) -> Tensor");
  m.def(
      "avg_pool_forward(Tensor input, int[] kernel_size, int[] stride, int[] padding, "
      "bool ceil_mode, bool count_include_pad, int? divisor_override, int[] padding_end=[]) -> Tensor");
  // Gradient of avg pooling: grad_output spread over each window, divided by its divisor.
  m.def(
      "avg_pool_backward(Tensor grad_output, SymInt[] input_size, int[] kernel_size, int[] stride, "
      "int[] padding, bool ceil_mode, bool count_include_pad, int? divisor_override, "
      "int[] padding_end=[]) -> Tensor");
  m.def("adaptive_avg_pool_forward(Tensor input, int[] output_size) -> Tensor");
  m.def("adaptive_avg_pool_backward(Tensor grad_output, SymInt[] input_size) -> Tensor");
  // Power-average pooling: (sum over the window of x^norm_type)^(1 / norm_type), torch's formula.
  m.def(
      "lp_pool_forward(Tensor input, float norm_type, int[] kernel_size, int[] stride, "
      "bool ceil_mode) -> Tensor");
  m.def(
      "lp_pool_backward(Tensor grad_output, Tensor input, float norm_type, int[] kernel_size, "
      "int[] stride, bool ceil_mode) -> Tensor");
  // k-max pooling along `dim`: the k largest values in their original order, and their
  // positions along `dim` (the set topk picks, ties included).
  m.def("kmax_pool_forward(Tensor input, int k, int dim) -> (Tensor, Tensor)");
  m.def("kmax_pool_backward(Tensor grad_output, Tensor indices, int dim, SymInt[] input_size) -> Tensor");
  // Gaussian pooling: each window weighted by the normalised Gaussian of the distance to its
  // centre (a depthwise convolution with that kernel; the padding counts as zeros).
  m.def(
      "gaussian_pool_forward(Tensor input, int[] kernel_size, int[] stride, int[] padding, "
      "float sigma) -> Tensor");
  // Its input gradient: grad_output spread back through the weighted windows (the transpose).
  m.def(
      "gaussian_pool_backward(Tensor grad_output, SymInt[] input_size, int[] kernel_size, "
      "int[] stride, int[] padding, float sigma) -> Tensor");
  // Stochastic pooling of a non-negative input (Zeiler & Fergus 2013). Training: per window,
  // the first element whose cumulative sum exceeds uniform * (window sum), uniform of the
  // output's shape in [0, 1) (drawn by the caller); values and flat indices, whose gradient is
  // max_pool_backward. Eval: sum(x^2) / sum(x) per window (0 for an all-zero window).
  m.def(
      "stochastic_pool_forward(Tensor input, Tensor uniform, int[] kernel_size, int[] stride) "
      "-> (Tensor, Tensor)");
  m.def("stochastic_pool_eval_forward(Tensor input, int[] kernel_size, int[] stride) -> Tensor");
  m.def(
      "stochastic_pool_eval_backward(Tensor grad_output, Tensor input, int[] kernel_size, "
      "int[] stride) -> Tensor");

  // ---- norm family (csrc/norm) ----
  // Statistics (mean, var, invstd = 1 / sqrt(var + eps), rstd) are in the compute type:
  // float32 for float32, float16 and bfloat16 inputs, float64 for float64. Inputs are
  // (N, C, *); weight, bias and the running statistics have C entries. The `eps` of a
  // backward op is read only by its own derivative (double backward recomputes the
  // statistics). Gradients of weight and bias come back in weight's dtype (input's if absent).
  //
  // Per-channel mean and biased variance over every dimension but 1.
  m.def("batch_norm_stats(Tensor input) -> (Tensor, Tensor)");
  // (x - mean) * invstd * weight + bias per channel.
  m.def("batch_norm_elemt(Tensor input, Tensor? weight, Tensor? bias, Tensor mean, Tensor invstd) -> Tensor");
  // Batch norm. Training: the batch statistics normalise; eval: the running ones. Returns
  // the output and the mean, invstd and biased variance it used. (Functional, so that it has
  // an autograd formula; batch_norm_update_stats then moves the running statistics.)
  m.def(
      "batch_norm_forward(Tensor input, Tensor? weight, Tensor? bias, Tensor? running_mean, "
      "Tensor? running_var, bool training, float eps) -> (Tensor, Tensor, Tensor, Tensor)");
  // running = (1 - momentum) * running + momentum * batch statistic, in place; the variance
  // enters unbiased (var * count / (count - 1), count values per channel), as torch's.
  m.def(
      "batch_norm_update_stats(Tensor(a!) running_mean, Tensor(b!) running_var, Tensor mean, Tensor var, "
      "int count, float momentum) -> ()");
  // Per channel: the sum of grad_output and the sum of grad_output * (input - mean).
  m.def("batch_norm_backward_reduce(Tensor grad_output, Tensor input, Tensor mean) -> (Tensor, Tensor)");
  // grad_input of training batch norm from those sums taken over `count` values per channel
  // (summed across processes by SyncBatchNorm).
  m.def(
      "batch_norm_backward_elemt(Tensor grad_output, Tensor input, Tensor mean, Tensor invstd, "
      "Tensor? weight, Tensor sum_dy, Tensor sum_dy_xmu, int count) -> Tensor");
  // grad_input, grad_weight, grad_bias: one reduction pass, then one pass for grad_input.
  // training = false: mean and invstd were constants (the running statistics).
  m.def(
      "batch_norm_backward(Tensor grad_output, Tensor input, Tensor? weight, Tensor mean, "
      "Tensor invstd, bool training, float eps) -> (Tensor, Tensor, Tensor)");
  // Group norm: statistics per (sample, group of C / num_groups channels), affine per
  // channel. Returns the output, mean and rstd of shape (N, num_groups).
  m.def(
      "group_norm_forward(Tensor input, Tensor? weight, Tensor? bias, int num_groups, float eps) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "group_norm_backward(Tensor grad_output, Tensor input, Tensor? weight, Tensor mean, Tensor rstd, "
      "int num_groups, float eps) -> (Tensor, Tensor, Tensor)");
  // Layer norm over the trailing `normalized_shape` dimensions; weight and bias have that
  // shape. Returns the output, mean and rstd of shape (number of normalised rows,).
  m.def(
      "layer_norm_forward(Tensor input, int[] normalized_shape, Tensor? weight, Tensor? bias, float eps) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "layer_norm_backward(Tensor grad_output, Tensor input, int[] normalized_shape, Tensor? weight, "
      "Tensor mean, Tensor rstd, float eps) -> (Tensor, Tensor, Tensor)");
}

// Importing the extension as a Python module runs the registrations above and the
// TORCH_LIBRARY_IMPL blocks of each family. Its Python functions are the fast entries of the
// functional API's common calls (csrc/python_calls.cpp).
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", /*m_doc=*/nullptr, /*m_size=*/-1, /*m_methods=*/tco::python_call_methods(),
      /*m_slots=*/nullptr,   /*m_traverse=*/nullptr, /*m_clear=*/nullptr, /*m_free=*/nullptr};
  return PyModule_Create(&module_def);
}
