// The entries of the pool family's ops, once for every device (pool_ops.h): checks and
// geometry (pool_common.cpp), device guard, layout and outputs here, then the backend's pass.

#include "pool_ops.h"

#include <ATen/DeviceGuard.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/Exception.h>

#include <optional>
#include <tuple>
#include <vector>

#include "../device_backends.h"
#include "gaussian_pool.h"
#include "pool_common.h"

namespace tco {
namespace {

using Tensor2 = std::tuple<at::Tensor, at::Tensor>;

const PoolBackend& backend_for(const at::Tensor& t) { return DeviceBackends<PoolBackend>::of(t, "pooling"); }

std::vector<int64_t> ones(size_t n) { return std::vector<int64_t>(n, 1); }
std::vector<int64_t> zeros(size_t n) { return std::vector<int64_t>(n, 0); }

// The layout of a window op: its results are channels_last when the tensor that decides it is
// (use_channels_last); the passes run in that layout where the backend can, else on NCHW
// tensors whose results are converted at the end.
struct Layout {
  bool channels_last;
  at::MemoryFormat pass;
};

Layout layout_of(const PoolBackend& be, const at::Tensor& t) {
  const bool cl = use_channels_last(t);
  return {cl, cl && be.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous};
}

at::Tensor empty_in(const Layout& l, at::IntArrayRef shape, const at::TensorOptions& options) {
  return at::empty(shape, options.memory_format(l.pass));
}

at::Tensor finish(const Layout& l, const at::Tensor& t) {
  return l.channels_last ? t.contiguous(at::MemoryFormat::ChannelsLast) : t;
}

// ---- window and adaptive pooling: max / min, avg, lp -------------------------------------

Tensor2 extreme(const at::Tensor& input, const PoolGeometry& g, size_t nd, bool minimum) {
  const PoolBackend& be = backend_for(input);
  const c10::OptionalDeviceGuard guard(at::device_of(input));
  const Layout l = layout_of(be, input);
  const at::Tensor x = input.contiguous(l.pass);
  const auto shape = pool_output_shape(input.size(0), input.size(1), g, static_cast<int64_t>(nd));
  at::Tensor out = empty_in(l, shape, x.options());
  at::Tensor ind = empty_in(l, shape, x.options().dtype(at::kLong));
  if (out.numel() > 0) be.extreme_forward(x, g, minimum, out, ind);
  return {finish(l, out), finish(l, ind)};
}

at::Tensor sum_forward(const at::Tensor& input, const PoolGeometry& g, size_t nd, bool lp, double norm_type) {
  const PoolBackend& be = backend_for(input);
  const c10::OptionalDeviceGuard guard(at::device_of(input));
  const Layout l = layout_of(be, input);
  const at::Tensor x = input.contiguous(l.pass);
  at::Tensor out = empty_in(l, pool_output_shape(input.size(0), input.size(1), g, static_cast<int64_t>(nd)),
                            x.options());
  if (out.numel() > 0) be.sum_forward(x, g, lp, norm_type, out);
  return finish(l, out);
}

// The gradient's layout follows the input (lp) or, for avg (input undefined), grad_output,
// which avg's autograd formula passes in the layout of the forward's input.
at::Tensor sum_backward(const at::Tensor& grad_output, const at::Tensor& input, const PoolGeometry& g,
                        at::IntArrayRef input_size, bool lp, double norm_type) {
  const PoolBackend& be = backend_for(grad_output);
  const c10::OptionalDeviceGuard guard(at::device_of(grad_output));
  const Layout l = layout_of(be, input.defined() ? input : grad_output);
  const at::Tensor gy = grad_output.contiguous(l.pass);
  const at::Tensor x = input.defined() ? input.contiguous(l.pass) : at::Tensor();
  at::Tensor gin = empty_in(l, input_size, gy.options());
  if (gin.numel() > 0) be.sum_backward(gy, x, g, lp, norm_type, gin);
  return finish(l, gin);
}

Tensor2 max_pool_forward(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode, bool minimum,
                         at::IntArrayRef padding_end) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = window_geometry(minimum ? "min_pool" : "max_pool", input, kernel_size, stride, padding,
                                         dilation, ceil_mode, padding_end);
  return extreme(input, g, kernel_size.size(), minimum);
}

Tensor2 adaptive_max_pool_forward(const at::Tensor& input, at::IntArrayRef output_size, bool minimum) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = adaptive_geometry(minimum ? "adaptive_min_pool" : "adaptive_max_pool", input, output_size);
  return extreme(input, as_regular_windows(g), output_size.size(), minimum);  // the same taps, in the same order
}

at::Tensor max_pool_backward(const at::Tensor& grad_output, const at::Tensor& indices, at::IntArrayRef input_size) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = scatter_geometry("max_pool_backward", grad_output, indices, input_size);
  const PoolBackend& be = backend_for(grad_output);
  const c10::OptionalDeviceGuard guard(at::device_of(grad_output));
  const Layout l = layout_of(be, indices);  // the forward's layout, which the indices keep
  const at::Tensor gy = grad_output.contiguous(l.pass), ix = indices.contiguous(l.pass);
  at::Tensor gin = empty_in(l, input_size, gy.options());
  if (gin.numel() > 0) be.scatter_backward(gy, ix, g, gin);
  return finish(l, gin);
}

at::Tensor avg_pool_forward(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                            at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                            std::optional<int64_t> divisor_override, at::IntArrayRef padding_end) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  PoolGeometry g = window_geometry("avg_pool", input, kernel_size, stride, padding, ones(kernel_size.size()), ceil_mode,
                                   padding_end);
  set_divisor("avg_pool", g, count_include_pad, divisor_override);
  return sum_forward(input, g, kernel_size.size(), false, 1.0);
}

at::Tensor avg_pool_backward(const at::Tensor& grad_output, at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                             std::optional<int64_t> divisor_override, at::IntArrayRef padding_end) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  PoolGeometry g = window_backward_geometry("avg_pool_backward", grad_output, input_size, kernel_size, stride,
                                            padding, ones(kernel_size.size()), ceil_mode, padding_end);
  set_divisor("avg_pool_backward", g, count_include_pad, divisor_override);
  return sum_backward(grad_output, at::Tensor(), g, input_size, false, 1.0);
}

at::Tensor adaptive_avg_pool_forward(const at::Tensor& input, at::IntArrayRef output_size) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = adaptive_geometry("adaptive_avg_pool", input, output_size, /*empty_channels_allowed=*/true);
  return sum_forward(input, as_regular_windows(g), output_size.size(), false, 1.0);
}

at::Tensor adaptive_avg_pool_backward(const at::Tensor& grad_output, at::IntArrayRef input_size) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = adaptive_backward_geometry("adaptive_avg_pool_backward", grad_output, input_size);
  return sum_backward(grad_output, at::Tensor(), as_regular_windows(g), input_size, false, 1.0);
}

at::Tensor lp_pool_forward(const at::Tensor& input, double norm_type, at::IntArrayRef kernel_size,
                           at::IntArrayRef stride, bool ceil_mode) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_norm_type("lp_pool", norm_type);
  const size_t nd = kernel_size.size();
  const PoolGeometry g = window_geometry("lp_pool", input, kernel_size, stride, zeros(nd), ones(nd), ceil_mode);
  return sum_forward(input, g, nd, true, norm_type);
}

at::Tensor lp_pool_backward(const at::Tensor& grad_output, const at::Tensor& input, double norm_type,
                            at::IntArrayRef kernel_size, at::IntArrayRef stride, bool ceil_mode) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_norm_type("lp_pool_backward", norm_type);
  check_same_dtype_device("lp_pool_backward", grad_output, input);
  const size_t nd = kernel_size.size();
  const PoolGeometry g = window_backward_geometry("lp_pool_backward", grad_output, input.sizes(), kernel_size,
                                                  stride, zeros(nd), ones(nd), ceil_mode);
  return sum_backward(grad_output, input, g, input.sizes(), true, norm_type);
}

// ---- k-max pooling ---------------------------------------------------------------------------

Tensor2 kmax_pool_forward(const at::Tensor& input, int64_t k, int64_t dim) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  int64_t d = 0;
  const KmaxShape s = kmax_forward_shape(input, k, dim, &d);
  const PoolBackend& be = backend_for(input);
  const c10::OptionalDeviceGuard guard(at::device_of(input));
  const at::Tensor x = input.contiguous();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape[d] = k;
  at::Tensor values = at::empty(shape, x.options());
  at::Tensor positions = at::empty(shape, x.options().dtype(at::kLong));
  if (values.numel() > 0) be.kmax_forward(x, s, values, positions);
  return {values, positions};
}

at::Tensor kmax_pool_backward(const at::Tensor& grad_output, const at::Tensor& indices, int64_t dim,
                              at::IntArrayRef input_size) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const KmaxShape s = kmax_backward_shape(grad_output, indices, dim, input_size);
  const PoolBackend& be = backend_for(grad_output);
  const c10::OptionalDeviceGuard guard(at::device_of(grad_output));
  const at::Tensor gy = grad_output.contiguous(), pos = indices.contiguous();
  at::Tensor grad_input = at::empty(input_size, gy.options());
  if (grad_input.numel() > 0) be.kmax_backward(gy, pos, s, grad_input);
  return grad_input;
}

// ---- Gaussian pooling ------------------------------------------------------------------------

at::Tensor gaussian_pool_forward(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, double sigma) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_gaussian("gaussian_pool", sigma, kernel_size);
  const size_t nd = kernel_size.size();
  const PoolGeometry g = window_geometry("gaussian_pool", input, kernel_size, stride, padding, ones(nd), false);
  const PoolBackend& be = backend_for(input);
  const c10::OptionalDeviceGuard guard(at::device_of(input));
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty(pool_output_shape(input.size(0), input.size(1), g, static_cast<int64_t>(nd)),
                             x.options());
  if (out.numel() > 0) be.gaussian_forward(x, g, gaussian_weights(g, sigma), out);
  return out;
}

at::Tensor gaussian_pool_backward(const at::Tensor& grad_output, at::IntArrayRef input_size,
                                  at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                  double sigma) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_gaussian("gaussian_pool_backward", sigma, kernel_size);
  const PoolGeometry g = window_backward_geometry("gaussian_pool_backward", grad_output, input_size, kernel_size,
                                                  stride, padding, ones(kernel_size.size()), false);
  const PoolBackend& be = backend_for(grad_output);
  const c10::OptionalDeviceGuard guard(at::device_of(grad_output));
  const at::Tensor gy = grad_output.contiguous();
  at::Tensor gin = at::empty(input_size, gy.options());
  if (gin.numel() > 0) be.gaussian_backward(gy, g, gaussian_weights(g, sigma), gin);
  return gin;
}

// ---- stochastic pooling ----------------------------------------------------------------------

PoolGeometry stochastic_geometry(const char* op, const at::Tensor& input, at::IntArrayRef kernel_size,
                                 at::IntArrayRef stride) {
  const size_t nd = kernel_size.size();
  const PoolGeometry g = window_geometry(op, input, kernel_size, stride, zeros(nd), ones(nd), false);
  check_non_negative(op, input);
  return g;
}

Tensor2 stochastic_pool_forward(const at::Tensor& input, const at::Tensor& uniform, at::IntArrayRef kernel_size,
                                at::IntArrayRef stride) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = stochastic_geometry("stochastic_pool", input, kernel_size, stride);
  const auto shape = pool_output_shape(input.size(0), input.size(1), g, static_cast<int64_t>(kernel_size.size()));
  check_uniform("stochastic_pool", uniform, input, shape);
  const PoolBackend& be = backend_for(input);
  const c10::OptionalDeviceGuard guard(at::device_of(input));
  const at::Tensor x = input.contiguous(), u = uniform.contiguous();
  at::Tensor out = at::empty(shape, x.options());
  at::Tensor ind = at::empty(shape, x.options().dtype(at::kLong));
  if (out.numel() > 0) be.stochastic_train(x, u, g, out, ind);
  return {out, ind};
}

at::Tensor stochastic_pool_eval_forward(const at::Tensor& input, at::IntArrayRef kernel_size,
                                        at::IntArrayRef stride) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = stochastic_geometry("stochastic_pool", input, kernel_size, stride);
  const PoolBackend& be = backend_for(input);
  const c10::OptionalDeviceGuard guard(at::device_of(input));
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty(
      pool_output_shape(input.size(0), input.size(1), g, static_cast<int64_t>(kernel_size.size())), x.options());
  if (out.numel() > 0) be.stochastic_eval(x, g, out);
  return out;
}

at::Tensor stochastic_pool_eval_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                         at::IntArrayRef kernel_size, at::IntArrayRef stride) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_same_dtype_device("stochastic_pool_eval_backward", grad_output, input);
  const size_t nd = kernel_size.size();
  const PoolGeometry g = window_backward_geometry("stochastic_pool_eval_backward", grad_output, input.sizes(),
                                                  kernel_size, stride, zeros(nd), ones(nd), false);
  const PoolBackend& be = backend_for(input);
  const c10::OptionalDeviceGuard guard(at::device_of(input));
  const at::Tensor gy = grad_output.contiguous(), x = input.contiguous();
  at::Tensor gin = at::empty(input.sizes(), x.options());
  if (gin.numel() > 0) be.stochastic_eval_backward(gy, x, g, gin);
  return gin;
}

}  // namespace

void register_pool_ops(torch::Library& m, const PoolBackend& backend) {
  DeviceBackends<PoolBackend>::add(backend);
  m.impl("max_pool_forward", TORCH_FN(max_pool_forward));
  m.impl("adaptive_max_pool_forward", TORCH_FN(adaptive_max_pool_forward));
  m.impl("max_pool_backward", TORCH_FN(max_pool_backward));
  m.impl("avg_pool_forward", TORCH_FN(avg_pool_forward));
  m.impl("avg_pool_backward", TORCH_FN(avg_pool_backward));
  m.impl("adaptive_avg_pool_forward", TORCH_FN(adaptive_avg_pool_forward));
  m.impl("adaptive_avg_pool_backward", TORCH_FN(adaptive_avg_pool_backward));
  m.impl("lp_pool_forward", TORCH_FN(lp_pool_forward));
  m.impl("lp_pool_backward", TORCH_FN(lp_pool_backward));
  m.impl("kmax_pool_forward", TORCH_FN(kmax_pool_forward));
  m.impl("kmax_pool_backward", TORCH_FN(kmax_pool_backward));
  m.impl("gaussian_pool_forward", TORCH_FN(gaussian_pool_forward));
  m.impl("gaussian_pool_backward", TORCH_FN(gaussian_pool_backward));
  m.impl("stochastic_pool_forward", TORCH_FN(stochastic_pool_forward));
  m.impl("stochastic_pool_eval_forward", TORCH_FN(stochastic_pool_eval_forward));
  m.impl("stochastic_pool_eval_backward", TORCH_FN(stochastic_pool_eval_backward));
}

}  // namespace tco
