// Python entry points for the common calls of the functional API (torch_cnn_ops._C.<name>).
//
// Why: `torch.ops.cnn_ops.<op>(...)` matches its Python arguments against the schema on every
// call (IValues on a boxed stack, a Python frame, bound-method objects): 4-5 us for a
// convolution's nine arguments, as long as the whole of a small convolution. Networks of
// small layers lost a tenth of their time there (MobileNetV3-Small's 52 convolutions made its
// eval forward 1.4 ms slower than torch's 10.4 ms; 0.1 ms through these). torch's own
// functions parse in generated C++ instead; these do the same.
//
// Each function takes the arguments of the Python function it serves as the user passed them.
// When they are all in the plain forms (tensors that are exactly torch.Tensor or
// nn.Parameter, None, bools, ints, floats, tuples or lists of ints) and no torch-function mode
// is on, it
// calls the op through the dispatcher, as torch.ops would: autograd, autocast, torch.func's
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

using ConvForward = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                               at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t,
                               c10::string_view);

// conv(nd, input, weight, bias, stride, padding, dilation, groups, flip, algorithm): the
// arguments of torch_cnn_ops.functional.conv{nd}d. Plain: a batched input and the weight of
// nd + 2 dimensions, int padding (no string, none negative), flip False; the algorithm is
// checked by the caller.
PyObject* conv(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 10) {
    PyErr_SetString(PyExc_TypeError, "torch_cnn_ops._C.conv takes 10 arguments");
    return nullptr;
  }
  if (at::impl::torch_function_mode_enabled()) return not_implemented();
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
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("cnn_ops::conv_forward", "").typed<ConvForward>();
  at::Tensor out;
  {
    pybind11::gil_scoped_release no_gil;
    out = op.call(*input, *weight, bias, stride, padding, padding, dilation, groups,
                  c10::string_view(algorithm, static_cast<size_t>(length)));
  }
  return THPVariable_Wrap(std::move(out));
  END_HANDLE_TH_ERRORS
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
PyObject* batch_norm(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 8) {
    PyErr_SetString(PyExc_TypeError, "torch_cnn_ops._C.batch_norm takes 8 arguments");
    return nullptr;
  }
  if (at::impl::torch_function_mode_enabled()) return not_implemented();
  const at::Tensor* input = plain_tensor(args[0]);
  std::optional<at::Tensor> running_mean, running_var, weight, bias;
  double momentum = 0, eps = 0;
  if (input == nullptr || !plain_optional_tensor(args[1], running_mean) ||
      !plain_optional_tensor(args[2], running_var) || !plain_optional_tensor(args[3], weight) ||
      !plain_optional_tensor(args[4], bias) || (args[5] != Py_True && args[5] != Py_False) ||
      !plain_float(args[6], momentum) || !plain_float(args[7], eps)) {
    return not_implemented();
  }
  const bool training = args[5] == Py_True;
  if (input->dim() < 2 || !input->is_floating_point() || running_mean.has_value() != running_var.has_value() ||
      (!training && !running_mean.has_value()) || !(training ? eps > 0 : eps >= 0)) {
    return not_implemented();
  }
  int64_t count = input->size(0);
  for (int64_t d = 2; d < input->dim(); ++d) count *= input->size(d);
  if (training && count == 1) return not_implemented();
  static const auto forward =
      c10::Dispatcher::singleton().findSchemaOrThrow("cnn_ops::batch_norm_forward", "").typed<BatchNormForward>();
  static const auto update_stats = c10::Dispatcher::singleton()
                                       .findSchemaOrThrow("cnn_ops::batch_norm_update_stats", "")
                                       .typed<BatchNormUpdateStats>();
  at::Tensor out;
  {
    pybind11::gil_scoped_release no_gil;
    auto [y, mean, invstd, var] = forward.call(*input, weight, bias, running_mean, running_var, training, eps);
    if (training && running_mean.has_value()) update_stats.call(*running_mean, *running_var, mean, var, count, momentum);
    out = std::move(y);
  }
  return THPVariable_Wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

PyMethodDef methods[] = {
    {"conv", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(conv)), METH_FASTCALL,
     "The plain calls of torch_cnn_ops.functional.conv1d/2d/3d; NotImplemented for others."},
    {"batch_norm", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(batch_norm)), METH_FASTCALL,
     "The plain calls of torch_cnn_ops.functional.batch_norm; NotImplemented for others."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

PyMethodDef* python_call_methods() { return methods; }

}  // namespace tco
