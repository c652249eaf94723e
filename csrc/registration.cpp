// The one list of every op in the library: the schemas ("what it is"). Kernels register
// per dispatch key in their family folder; fake kernels and autograd live in Python
// (torch_cnn_ops/ops/<family>.py).
//
// Spatial arguments (stride, padding, dilation) have one entry per spatial dimension, so
// the same op serves 1-d, 2-d and 3-d. Padding is split into the leading `padding` and the
// trailing `padding_end` so that 'same' with an even kernel needs no padded copy.
// `algorithm` is "direct", "im2col" or "auto".

#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(cnn_ops, m) {
  // ---- conv family (csrc/conv) ----
  m.def(
      "conv_forward(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
      "int[] padding_end, int[] dilation, int groups, str algorithm) -> Tensor");
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
}

// The extension is loaded as a Python module only to run the registrations above and the
// TORCH_LIBRARY_IMPL blocks of each family; it exposes no Python functions itself.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
