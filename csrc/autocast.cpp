// torch.autocast for the ops: each op follows the policy torch applies to its twin, so that a
// converted model under autocast runs in the dtypes of the original.
//
// * Lower precision (torch.autocast's dtype) on every device: convolution, and tiled / unshared
//   convolution, which are convolutions (torch: conv1d/2d/3d).
// * float32 on the CPU for 3-d max, avg and adaptive pooling (torch: max_pool3d, avg_pool3d,
//   adaptive_{max,avg}_pool3d; lp_pool3d is avg_pool3d of a power); 1-d and 2-d pooling runs
//   in the input's dtype, as torch's.
// * float32 on CUDA for group and layer norm (torch: group_norm, layer_norm).
// * Every other op runs in its inputs' dtypes (the Autocast keys fall through), as torch's
//   pooling and batch / instance norm do; the norms accept a low-precision input with float32
//   parameters and statistics, as torch's.
//
// Casting follows torch's rules (at::autocast::cached_cast): only floating-point tensors on the
// autocast device that are not float64; float32 weights cast to the lower precision are cached
// for the autocast region.

#include <ATen/autocast_mode.h>
#include <torch/library.h>

namespace tco {
namespace {

enum class Policy {
  kLowerPrecision,   // cast to the autocast dtype
  kFloat32,          // cast to float32
  kFloat32For3d,     // cast to float32 when the input has three spatial dimensions
};

constexpr c10::DispatchKey autocast_key(c10::DeviceType device) {
  return device == c10::DeviceType::CPU ? c10::DispatchKey::AutocastCPU : c10::DispatchKey::AutocastCUDA;
}

// Casts every tensor argument on the stack as the policy says, then calls the op below autocast.
template <Policy policy, c10::DeviceType device>
void autocast_kernel(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key(device));
  const size_t num_args = op.schema().arguments().size();
  const auto args = stack->end() - static_cast<std::ptrdiff_t>(num_args);
  bool cast = true;
  if constexpr (policy == Policy::kFloat32For3d) cast = args->isTensor() && args->toTensor().dim() == 5;
  if (cast) {
    const at::ScalarType to =
        policy == Policy::kLowerPrecision ? at::autocast::get_autocast_dtype(device) : at::kFloat;
    for (auto arg = args; arg != stack->end(); ++arg)
      if (arg->isTensor()) *arg = at::autocast::cached_cast(to, arg->toTensor(), device);
  }
  op.callBoxed(stack);
}

template <Policy policy, c10::DeviceType device>
torch::CppFunction kernel() {
  return torch::CppFunction::makeFromBoxedFunction<&autocast_kernel<policy, device>>();
}

}  // namespace

TORCH_LIBRARY_IMPL(cnn_ops, AutocastCPU, m) {
  constexpr auto cpu = c10::DeviceType::CPU;
  m.impl("conv_forward", kernel<Policy::kLowerPrecision, cpu>());
  m.impl("local_forward", kernel<Policy::kLowerPrecision, cpu>());
  for (const char* pool : {"max_pool_forward", "adaptive_max_pool_forward", "avg_pool_forward",
                           "adaptive_avg_pool_forward", "lp_pool_forward"})
    m.impl(pool, kernel<Policy::kFloat32For3d, cpu>());
}

TORCH_LIBRARY_IMPL(cnn_ops, AutocastCUDA, m) {
  constexpr auto cuda = c10::DeviceType::CUDA;
  m.impl("conv_forward", kernel<Policy::kLowerPrecision, cuda>());
  m.impl("local_forward", kernel<Policy::kLowerPrecision, cuda>());
  m.impl("group_norm_forward", kernel<Policy::kFloat32, cuda>());
  m.impl("layer_norm_forward", kernel<Policy::kFloat32, cuda>());
}

}  // namespace tco
