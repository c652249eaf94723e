// Helpers of the first derivatives registered in C++ for the Autograd dispatch key
// (csrc/<family>/<family>_autograd.cpp). Those cover the layers of every network (convolution,
// max / avg pooling, the norms): from Python, torch.library.register_autograd costs about
// 35 us per forward and 80 us per backward, more than the kernels of a small layer.
//
// A backward calls the family's backward ops through the dispatcher. With grad mode on
// (create_graph=True) it goes through their Autograd kernels, whose formulas (double
// backward) are registered from Python (torch_cnn_ops/ops/<family>.py); with grad mode off
// it goes straight to the device kernel, as nothing would be recorded anyway.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>

#include <optional>
#include <utility>

namespace tco::autograd {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// Calls the forward op below the Autograd key (inside a Function's forward).
template <typename Signature, typename... Args>
auto call_below_autograd(const c10::TypedOperatorHandle<Signature>& op, Args&&... args) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(std::forward<Args>(args)...);
}

// Calls a backward op below the Autograd key when grad mode is off, through it otherwise.
template <typename Signature, typename... Args>
auto call_backward_op(const c10::TypedOperatorHandle<Signature>& op, Args&&... args) {
  if (at::GradMode::is_enabled()) return op.call(std::forward<Args>(args)...);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(std::forward<Args>(args)...);
}

inline OptTensor as_optional(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }
inline Tensor value_or_undefined(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }
inline bool given(const OptTensor& t) { return t.has_value() && t->defined(); }

}  // namespace tco::autograd
