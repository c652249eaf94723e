// The autograd of every op, registered in C++ for the Autograd dispatch key (every device) in
// csrc/<family>/<family>_autograd.cpp: first derivatives of the forward ops, derivatives of the
// backward ops (double backward), and tangents (forward-mode AD).
//
// An op's Autograd kernel records a node the way torch's own operators do (a Node subclass with
// saved variables, as torch/csrc/autograd/generated), not a torch::autograd::Function: torch.func's
// transforms (grad, vjp, jacrev, and vmap over them) refuse C++ Functions, and Python
// registration (torch.library.register_autograd) costs about 35 us per forward and 80 us per
// backward, more than the kernels of a small layer.
//
// The backward formulas call the family's ops through the dispatcher, so with create_graph they
// are recorded in turn (double backward, to any order). Nonlinear backward ops (lp and
// stochastic pooling, the norms) are differentiated as compositions: when a derivative of such
// an op is wanted, its Autograd kernel computes the same values with differentiable ops instead
// of its fused kernel (`differentiating` below), so the graph built is torch's own.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace tco::autograd {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using torch::autograd::variable_list;

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// Calls an op below the Autograd key: the device kernel of the op whose autograd is being
// recorded.
template <typename Signature, typename... Args>
auto call_below_autograd(const c10::TypedOperatorHandle<Signature>& op, Args&&... args) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(std::forward<Args>(args)...);
}

// op.call below the Autograd key (the kernel of the op being recorded) or through it (a
// formula's own call, recorded in turn).
template <typename Signature, typename... Args>
auto call(const c10::TypedOperatorHandle<Signature>& op, bool below_autograd, Args&&... args) {
  if (below_autograd) return call_below_autograd(op, std::forward<Args>(args)...);
  return op.call(std::forward<Args>(args)...);
}

inline Tensor value_or_undefined(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }
inline OptTensor as_optional(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// ---- reverse mode ----

// Node pointers are std::shared_ptr in older torch and c10::intrusive_ptr in newer; Edge says
// which.
using NodePtr = decltype(torch::autograd::Edge::function);
constexpr bool kIntrusiveNodes = !std::is_same_v<NodePtr, std::shared_ptr<torch::autograd::Node>>;

// The gradient of an op with one differentiable output: `formula(node, saved, grad)` returns one
// gradient per input edge (undefined where none flows), reading the tensors saved at the
// forward in the order given; node.wants(i) says whether the gradient of edge i is needed.
class FormulaNode : public torch::autograd::Node {
 public:
  using Formula = std::function<variable_list(const FormulaNode&, const variable_list&, const Tensor&)>;

  FormulaNode(const char* name, Formula formula) : name_(name), formula_(std::move(formula)) {}

  std::string name() const override { return name_; }
  bool wants(size_t edge) const { return task_should_compute_output(edge); }

  void save(const variable_list& tensors) {
    saved_.reserve(tensors.size());
    for (const Tensor& t : tensors) saved_.emplace_back(t, /*is_output=*/false);
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!grads[0].defined()) return variable_list(num_outputs());
    variable_list saved;
    saved.reserve(saved_.size());
    for (const auto& s : saved_) saved.push_back(s.unpack(self()));
    variable_list result = formula_(*this, saved, grads[0]);
    TORCH_INTERNAL_ASSERT(result.size() == num_outputs(), name_, ": its formula returned ", result.size(),
                          " gradients for ", num_outputs(), " inputs");
    return result;
  }

 protected:
  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& s : saved_) s.reset_data();
  }

 private:
  template <typename Self = FormulaNode>
  NodePtr self() {
    if constexpr (kIntrusiveNodes) return static_cast<Self*>(this)->getptr();
    else return static_cast<Self*>(this)->shared_from_this();
  }

  const char* name_;
  Formula formula_;
  std::vector<torch::autograd::SavedVariable> saved_;
};

// Whether the op being called must be recorded: grad mode is on and an input requires grad.
inline bool any_requires_grad(std::initializer_list<Tensor> inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

// Whether a backward formula may compute its results outside the family's ops: no graph is being
// built of it (grad mode off: no create_graph) and the tensors are real ones in eager code, not
// fake, functional or torch.func-wrapped tensors nor seen by a dispatch mode, whose traces and
// transforms must see the ops.
inline bool plain_eager_backward(std::initializer_list<Tensor> tensors) {
  if (at::GradMode::is_enabled()) return false;
  static const c10::DispatchKeySet traced({c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot,
                                        c10::DispatchKey::Functionalize, c10::DispatchKey::FuncTorchBatched,
                                        c10::DispatchKey::FuncTorchGradWrapper, c10::DispatchKey::FuncTorchDynamicLayerFrontMode});
  if (!(c10::impl::tls_local_dispatch_key_set().included_ & traced).empty()) return false;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    if (!(t.key_set() & traced).empty()) return false;
    if (t.device().type() != c10::DeviceType::CPU && t.device().type() != c10::DeviceType::CUDA) return false;
  }
  return true;
}

// Records an op with one differentiable output when any_requires_grad(inputs): a FormulaNode
// whose edges are `inputs` (undefined for an absent optional), saving `saved`.
template <typename Formula>
void record(const char* name, std::initializer_list<Tensor> inputs, const Tensor& output,
            const variable_list& saved, Formula&& formula) {
  if (!any_requires_grad(inputs)) return;
  NodePtr node;
  if constexpr (kIntrusiveNodes) node = c10::make_intrusive<FormulaNode>(name, std::forward<Formula>(formula));
  else node = std::make_shared<FormulaNode>(name, std::forward<Formula>(formula));
  auto* formula_node = static_cast<FormulaNode*>(node.get());
  node->set_next_edges(torch::autograd::collect_next_edges(variable_list(inputs)));
  formula_node->save(saved);
  torch::autograd::set_history(output, node);
}

// ---- convolution-like ops (conv, tiled / unshared) ----

// The trailing pads for which a forward convolution of `input` (spatial sizes from dim 2) with
// kernel sizes `kernel` gives the spatial sizes of `like`: the trailing pad only decides how many
// outputs there are, never their values, so the smallest such pad rebuilds the convolution a
// gradient came from. Sizes may be symbolic (torch.compile); the pads are ints, so they guard.
inline std::vector<int64_t> exact_padding_end(const Tensor& input, c10::SymIntArrayRef kernel, const Tensor& like,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation) {
  std::vector<int64_t> end(stride.size());
  for (size_t i = 0; i < end.size(); ++i) {
    const c10::SymInt span = (like.sym_size(2 + i) - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 -
                             input.sym_size(2 + i) - padding[i];
    end[i] = std::max<int64_t>(0, span.guard_int(__FILE__, __LINE__));
  }
  return end;
}

// ---- forward mode ----

// The tangent of t at forward-AD level 0 (the level torch.func.jvp and torch.autograd.forward_ad
// use), undefined when t has none.
inline Tensor tangent(const Tensor& t) { return t.defined() ? t._fw_grad(/*level=*/0) : Tensor(); }
inline Tensor tangent(const OptTensor& t) { return t.has_value() ? tangent(*t) : Tensor(); }

// t without its tangent, for the tangent formulas (torch's generated kernels read the primals
// there too, so that a formula's own ops do not push the input's tangent forward again).
inline Tensor primal(const Tensor& t) { return t.defined() ? t._fw_primal(/*level=*/0) : t; }

inline bool any_tangent(std::initializer_list<Tensor> inputs) {
  for (const Tensor& t : inputs)
    if (tangent(t).defined()) return true;
  return false;
}

// a + b where either may be undefined (a missing term of a tangent).
inline Tensor add_defined(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return a + b;
}

inline void set_tangent(const Tensor& output, const Tensor& t) {
  if (t.defined()) output._set_fw_grad(t, /*level=*/0, /*is_inplace_op=*/false);
}

// ---- ops differentiated as compositions ----

// Whether a derivative of an op with these inputs will be taken (recorded for reverse mode, or
// a tangent to push forward): then the op runs as its differentiable composition.
inline bool differentiating(std::initializer_list<Tensor> inputs) {
  return any_requires_grad(inputs) || any_tangent(inputs);
}

}  // namespace tco::autograd
