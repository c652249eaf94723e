// Python entry points for the common calls of the functional API (torch_cnn_ops._C.<name>).
//
// Why: `torch.ops.cnn_ops.<op>(...)` matches its Python arguments against the schema on every
// call (IValues on a boxed stack, a Python frame, bound-method objects): 4-5 us for a
// convolution's nine arguments, as long as the whole of a small convolution. Networks of
// small layers lost a tenth of their time there (MobileNetV3-Small's 52 convolutions made its
// eval forward 1.4 ms slower than torch's 10.4 ms; 0.1 ms through these). torch's own
// functions parse in generated C++ instead; these do the same for convolution, batch, group and
// layer norm, max/min, avg and adaptive avg pooling (the layers a network calls many times).
//
// Each function takes the arguments of the Python function it serves as the user passed them.
// When they are all in the plain forms (tensors that are exactly torch.Tensor or
// nn.Parameter, None, bools, ints, floats, tuples or lists of ints) and no torch-function mode
// is on, it calls the op through the dispatcher, as torch.ops would: autograd, autocast, torch.func's
// transforms, fake tensors and dispatch modes apply alike. Otherwise it returns
// NotImplemented and the Python function takes its general path, which normalises the
// arguments and raises torch's errors for bad ones: these functions raise only what the op
// itself raises. Under torch.compile the Python functions do not come here (dynamo traces
// torch.ops calls, not these).

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/SmallVector.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <optional>
#include <tuple>

#include "python_calls.h"

namespace tco {
namespace {

using SpatialArgs = c10::SmallVector<int64_t, 3>;

// A tensor argument: exactly torch.Tensor or nn.Parameter (a subclass may override
// __torch_function__), else nullptr.
const at::Tensor* plain_tensor(PyObject* obj) {
  return THPVariable_CheckExact(obj) ? &THPVariable_Unpack(obj) : nullptr;
}

bool plain_optional_tensor(PyObject* obj, std::optional<at::Tensor>& out) {
  if (obj == Py_None) return true;
  const at::Tensor* t = plain_tensor(obj);
  if (t != nullptr) out = *t;
  return t != nullptr;
}

// A Python int within int64 (not a bool: PyLong_CheckExact refuses bool's type).
bool plain_int(PyObject* obj, int64_t& out) {
  if (!PyLong_CheckExact(obj)) return false;
  int overflow = 0;
  out = PyLong_AsLongLongAndOverflow(obj, &overflow);
  return overflow == 0;
}

// A Python bool (not an int).
bool plain_bool(PyObject* obj, bool& out) {
  out = obj == Py_True;
  return obj == Py_True || obj == Py_False;
}

// An int[n] argument: one int, or a tuple or list of n ints; entries at least `min`.
bool plain_ints(PyObject* obj, int64_t n, int64_t min, SpatialArgs& out) {
  out.clear();
  int64_t v = 0;
  if (plain_int(obj, v)) {
    out.assign(n, v);
  } else if ((PyTuple_CheckExact(obj) || PyList_CheckExact(obj)) && PySequence_Fast_GET_SIZE(obj) == n) {
    PyObject** items = PySequence_Fast_ITEMS(obj);
    for (int64_t i = 0; i < n; ++i) {
      if (!plain_int(items[i], v)) return false;
      out.push_back(v);
    }
  } else {
    return false;
  }
  for (int64_t x : out) {
    if (x < min) return false;
  }
  return true;
}

PyObject* not_implemented() { Py_RETURN_NOTIMPLEMENTED; }

// The op `name` (cnn_ops::...) with the C++ signature Sig; each entry looks its ops up once.
template <typename Sig>
c10::TypedOperatorHandle<Sig> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// An entry: checks the argument count (a TypeError) and that no torch-function mode is on
// (NotImplemented), then runs Body, which reads the arguments and returns the op's result or
// NotImplemented; torch's exceptions become Python's as in torch's own functions.
template <PyObject* (*Body)(PyObject* const*), Py_ssize_t kArgs>
PyObject* entry(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != kArgs) {
    PyErr_Format(PyExc_TypeError, "this torch_cnn_ops._C function takes %zd arguments, got %zd", kArgs, nargs);
    return nullptr;
  }
  if (at::impl::torch_function_mode_enabled()) return not_implemented();
  return Body(args);
  END_HANDLE_TH_ERRORS
}

// Runs call() (an op call returning a tensor) with the GIL released, as torch's functions run
// their kernels, and wraps the tensor.
template <typename Call>
PyObject* without_gil(Call&& call) {
  at::Tensor out;
  {
    pybind11::gil_scoped_release no_gil;
    out = call();
  }
  return THPVariable_Wrap(std::move(out));
}

using ConvForward = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                               at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t,
                               c10::string_view);

// conv(nd, input, weight, bias, stride, padding, dilation, groups, flip, algorithm): the
// arguments of torch_cnn_ops.functional.conv{nd}d. Plain: a batched input and the weight of
// nd + 2 dimensions, int padding (no string, none negative), flip False; the algorithm is
// checked by the caller.
PyObject* conv(PyObject* const* args) {
  int64_t nd = 0, groups = 0;
  const at::Tensor* input = plain_tensor(args[1]);
  const at::Tensor* weight = plain_tensor(args[2]);
  std::optional<at::Tensor> bias;
  SpatialArgs stride, padding, dilation;
  if (!plain_int(args[0], nd) || input == nullptr || weight == nullptr || !plain_optional_tensor(args[3], bias) ||
      input->dim() != nd + 2 || weight->dim() != nd + 2 || !plain_ints(args[4], nd, INT64_MIN, stride) ||
      !plain_ints(args[5], nd, 0, padding) || !plain_ints(args[6], nd, INT64_MIN, dilation) ||
      !plain_int(args[7], groups) || args[8] != Py_False || !PyUnicode_CheckExact(args[9])) {
    return not_implemented();
  }
  Py_ssize_t length = 0;
  const char* algorithm = PyUnicode_AsUTF8AndSize(args[9], &length);
  if (algorithm == nullptr) return nullptr;
  static const auto op = typed_op<ConvForward>("cnn_ops::conv_forward");
  return without_gil([&] {
    return op.call(*input, *weight, bias, stride, padding, padding, dilation, groups,
                   c10::string_view(algorithm, static_cast<size_t>(length)));
  });
}

// A Python float, or int (not bool), as a double; false for anything else.
bool plain_float(PyObject* obj, double& out) {
  if (PyFloat_CheckExact(obj)) {
    out = PyFloat_AS_DOUBLE(obj);
    return true;
  }
  int64_t v = 0;
  if (!plain_int(obj, v)) return false;
  out = static_cast<double>(v);
  return true;
}

using BatchNormForward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool, double);
using BatchNormUpdateStats = void(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                  double);

// batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps): the
// arguments of torch_cnn_ops.functional.batch_norm. Plain: a floating-point input with
// channels and more than one value per channel in training, both running statistics or
// (training only) neither, a bool training, float momentum and eps, eps positive in
// training and not negative in eval.
PyObject* batch_norm(PyObject* const* args) {
  const at::Tensor* input = plain_tensor(args[0]);
  std::optional<at::Tensor> running_mean, running_var, weight, bias;
  double momentum = 0, eps = 0;
  bool training = false;
  if (input == nullptr || !plain_optional_tensor(args[1], running_mean) ||
      !plain_optional_tensor(args[2], running_var) || !plain_optional_tensor(args[3], weight) ||
      !plain_optional_tensor(args[4], bias) || !plain_bool(args[5], training) ||
      !plain_float(args[6], momentum) || !plain_float(args[7], eps)) {
    return not_implemented();
  }
  if (input->dim() < 2 || !input->is_floating_point() || running_mean.has_value() != running_var.has_value() ||
      (!training && !running_mean.has_value()) || !(training ? eps > 0 : eps >= 0)) {
    return not_implemented();
  }
  int64_t count = input->size(0);
  for (int64_t d = 2; d < input->dim(); ++d) count *= input->size(d);
  if (training && count == 1) return not_implemented();
  static const auto forward = typed_op<BatchNormForward>("cnn_ops::batch_norm_forward");
  static const auto update_stats = typed_op<BatchNormUpdateStats>("cnn_ops::batch_norm_update_stats");
  return without_gil([&] {
    auto [y, mean, invstd, var] = forward.call(*input, weight, bias, running_mean, running_var, training, eps);
    if (training && running_mean.has_value()) {
      update_stats.call(*running_mean, *running_var, mean, var, count, momentum);
    }
    return y;
  });
}

using NormResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;  // output, mean, rstd
using GroupNormForward = NormResult(const at::Tensor&, const std::optional<at::Tensor>&,
                                    const std::optional<at::Tensor>&, int64_t, double);
using LayerNormForward = NormResult(const at::Tensor&, at::IntArrayRef, const std::optional<at::Tensor>&,
                                    const std::optional<at::Tensor>&, double);

// A weight or bias of a normalization: None or exactly a floating-point tensor.
bool plain_affine(PyObject* obj, std::optional<at::Tensor>& out) {
  return plain_optional_tensor(obj, out) && (!out.has_value() || out->is_floating_point());
}

// group_norm(input, num_groups, weight, bias, eps): torch_cnn_ops.functional.group_norm.
// Plain: a floating-point input of at least 2 dimensions whose groups hold more than one value,
// a positive int num_groups, floating-point weight and bias or None, a float (or int) eps.
PyObject* group_norm(PyObject* const* args) {
  const at::Tensor* input = plain_tensor(args[0]);
  int64_t num_groups = 0;
  std::optional<at::Tensor> weight, bias;
  double eps = 0;
  if (input == nullptr || !input->is_floating_point() || input->dim() < 2 || !plain_int(args[1], num_groups) ||
      num_groups < 1 || !plain_affine(args[2], weight) || !plain_affine(args[3], bias) || !plain_float(args[4], eps)) {
    return not_implemented();
  }
  // torch's Python check: the input seen as (N * C / num_groups, num_groups, *) holds more than
  // one value per entry of dimension 1 (the Python path raises its ValueError)
  int64_t per_group = input->size(0) * input->size(1) / num_groups;
  for (int64_t d = 2; d < input->dim(); ++d) per_group *= input->size(d);
  if (per_group == 1) return not_implemented();
  static const auto op = typed_op<GroupNormForward>("cnn_ops::group_norm_forward");
  return without_gil([&] { return std::get<0>(op.call(*input, weight, bias, num_groups, eps)); });
}

// layer_norm(input, normalized_shape, weight, bias, eps): torch_cnn_ops.functional.layer_norm.
// Plain: a floating-point input, normalized_shape an int or a tuple or list of ints (each at
// least 1), floating-point weight and bias or None, a float (or int) eps.
PyObject* layer_norm(PyObject* const* args) {
  const at::Tensor* input = plain_tensor(args[0]);
  SpatialArgs normalized_shape;
  std::optional<at::Tensor> weight, bias;
  double eps = 0;
  PyObject* shape = args[1];
  const int64_t length = PyLong_CheckExact(shape) ? 1
                         : PyTuple_CheckExact(shape) || PyList_CheckExact(shape) ? PySequence_Fast_GET_SIZE(shape)
                                                                                 : -1;
  if (input == nullptr || !input->is_floating_point() || length < 1 ||
      !plain_ints(shape, length, 1, normalized_shape) || !plain_affine(args[2], weight) ||
      !plain_affine(args[3], bias) || !plain_float(args[4], eps)) {
    return not_implemented();
  }
  static const auto op = typed_op<LayerNormForward>("cnn_ops::layer_norm_forward");
  return without_gil([&] { return std::get<0>(op.call(*input, normalized_shape, weight, bias, eps)); });
}

// ---- pooling ------------------------------------------------------------------------------------
//
// Plain: a batched floating-point input of nd + 2 dimensions, sizes as ints or nd-tuples (kernel
// sizes, strides, dilations and output sizes at least 1, paddings at least 0; a stride of None
// or () is the kernel's), bools for the flags. Padding strings, unbatched inputs and everything
// else take the Python path, which gives torch's errors.

// The batched input of an nd-d pooling: exactly a tensor, floating point, nd + 2 dimensions.
const at::Tensor* plain_pool_input(PyObject* obj, int64_t nd) {
  const at::Tensor* input = plain_tensor(obj);
  return input != nullptr && input->dim() == nd + 2 && input->is_floating_point() ? input : nullptr;
}

bool empty_sequence(PyObject* obj) {
  return (PyTuple_CheckExact(obj) || PyList_CheckExact(obj)) && PySequence_Fast_GET_SIZE(obj) == 0;
}

// kernel_size, stride (None or empty: the kernel's) and padding of a window pooling.
bool plain_window(PyObject* const* args, int64_t nd, SpatialArgs& kernel_size, SpatialArgs& stride,
                  SpatialArgs& padding) {
  if (!plain_ints(args[0], nd, 1, kernel_size) || !plain_ints(args[2], nd, 0, padding)) return false;
  if (args[1] == Py_None || empty_sequence(args[1])) {
    stride = kernel_size;
    return true;
  }
  return plain_ints(args[1], nd, 1, stride);
}

using MaxPoolForward = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                                          at::IntArrayRef, at::IntArrayRef, bool, bool,
                                                          at::IntArrayRef);

// max_pool(nd, minimum, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
// torch_cnn_ops.functional.{max,min}_pool{nd}d. The output, or (output, indices).
PyObject* max_pool(PyObject* const* args) {
  int64_t nd = 0;
  bool minimum = false, ceil_mode = false, return_indices = false;
  SpatialArgs kernel_size, stride, padding, dilation;
  const at::Tensor* input = nullptr;
  if (!plain_int(args[0], nd) || !plain_bool(args[1], minimum) || (input = plain_pool_input(args[2], nd)) == nullptr ||
      !plain_window(args + 3, nd, kernel_size, stride, padding) || !plain_ints(args[6], nd, 1, dilation) ||
      !plain_bool(args[7], ceil_mode) || !plain_bool(args[8], return_indices)) {
    return not_implemented();
  }
  static const auto op = typed_op<MaxPoolForward>("cnn_ops::max_pool_forward");
  at::Tensor out, indices;
  {
    pybind11::gil_scoped_release no_gil;
    std::tie(out, indices) = op.call(*input, kernel_size, stride, padding, dilation, ceil_mode, minimum, padding);
  }
  if (!return_indices) return THPVariable_Wrap(std::move(out));
  PyObject* pair = PyTuple_New(2);
  if (pair == nullptr) return nullptr;
  PyTuple_SET_ITEM(pair, 0, THPVariable_Wrap(std::move(out)));  // steals the reference
  PyTuple_SET_ITEM(pair, 1, THPVariable_Wrap(std::move(indices)));
  if (PyTuple_GET_ITEM(pair, 0) == nullptr || PyTuple_GET_ITEM(pair, 1) == nullptr) {
    Py_DECREF(pair);  // frees whichever was made (a tuple's NULL items are skipped)
    return nullptr;
  }
  return pair;
}

using AvgPoolForward = at::Tensor(const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool, bool,
                                  std::optional<int64_t>, at::IntArrayRef);

// avg_pool(nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
// divisor_override): torch_cnn_ops.functional.avg_pool{nd}d (divisor_override None or an int).
PyObject* avg_pool(PyObject* const* args) {
  int64_t nd = 0, divisor = 0;
  bool ceil_mode = false, count_include_pad = false;
  SpatialArgs kernel_size, stride, padding;
  const at::Tensor* input = nullptr;
  if (!plain_int(args[0], nd) || (input = plain_pool_input(args[1], nd)) == nullptr ||
      !plain_window(args + 2, nd, kernel_size, stride, padding) || !plain_bool(args[5], ceil_mode) ||
      !plain_bool(args[6], count_include_pad) || (args[7] != Py_None && !plain_int(args[7], divisor))) {
    return not_implemented();
  }
  std::optional<int64_t> divisor_override;
  if (args[7] != Py_None) divisor_override = divisor;
  static const auto op = typed_op<AvgPoolForward>("cnn_ops::avg_pool_forward");
  return without_gil([&] {
    return op.call(*input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, padding);
  });
}

// adaptive_avg_pool(nd, input, output_size): torch_cnn_ops.functional.adaptive_avg_pool{nd}d
// (output_size an int or nd ints; Nones take the Python path).
PyObject* adaptive_avg_pool(PyObject* const* args) {
  int64_t nd = 0;
  SpatialArgs output_size;
  const at::Tensor* input = nullptr;
  if (!plain_int(args[0], nd) || (input = plain_pool_input(args[1], nd)) == nullptr ||
      !plain_ints(args[2], nd, 1, output_size)) {
    return not_implemented();
  }
  static const auto op =
      typed_op<at::Tensor(const at::Tensor&, at::IntArrayRef)>("cnn_ops::adaptive_avg_pool_forward");
  return without_gil([&] { return op.call(*input, output_size); });
}

// A METH_FASTCALL function as PyMethodDef holds it.
PyCFunction fastcall(PyObject* (*fn)(PyObject*, PyObject* const*, Py_ssize_t)) {
  return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fn));
}

PyMethodDef methods[] = {
    {"conv", fastcall(entry<conv, 10>), METH_FASTCALL,
     "The plain calls of torch_cnn_ops.functional.conv1d/2d/3d; NotImplemented for others."},
    {"batch_norm", fastcall(entry<batch_norm, 8>), METH_FASTCALL,
     "The plain calls of torch_cnn_ops.functional.batch_norm; NotImplemented for others."},
    {"group_norm", fastcall(entry<group_norm, 5>), METH_FASTCALL,
     "The plain calls of torch_cnn_ops.functional.group_norm; NotImplemented for others."},
    {"layer_norm", fastcall(entry<layer_norm, 5>), METH_FASTCALL,
     "The plain calls of torch_cnn_ops.functional.layer_norm; NotImplemented for others."},
    {"max_pool", fastcall(entry<max_pool, 9>), METH_FASTCALL,
     "The plain calls of torch_cnn_ops.functional.max_pool/min_pool 1d-3d; NotImplemented for others."},
    {"avg_pool", fastcall(entry<avg_pool, 8>), METH_FASTCALL,
     "The plain calls of torch_cnn_ops.functional.avg_pool1d/2d/3d; NotImplemented for others."},
    {"adaptive_avg_pool", fastcall(entry<adaptive_avg_pool, 3>), METH_FASTCALL,
     "The plain calls of torch_cnn_ops.functional.adaptive_avg_pool1d/2d/3d; NotImplemented for others."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

PyMethodDef* python_call_methods() { return methods; }

}  // namespace tco
