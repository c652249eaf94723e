// The ops of the pool family, once for every device. pool_ops.cpp holds each op's entry: the
// argument checks and geometry (pool_common.cpp), the device guard, the memory layout, the
// output allocation and the shortcut for empty outputs. A device backend holds only the passes
// over the data (pool_cpu.cpp with the k-max, Gaussian and stochastic CPU files; pool_cuda_ops.cpp),
// each filling outputs that the entry allocated; each device registers the ops for its dispatch
// key with register_pool_ops(m, its backend).
//
// Adding a pooling op: its schema (csrc/registration.cpp), its entry and one line of
// register_pool_ops (pool_ops.cpp), a pass in each backend (a slot below), its derivative
// (pool_autograd.cpp), its fake kernel (torch_cnn_ops/ops/pool.py) and its public function
// and module (torch_cnn_ops/functional/pool.py, torch_cnn_ops/nn/pool.py).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <torch/library.h>

#include <vector>

#include "kmax_pool.h"
#include "pool_geometry.h"

namespace tco {

// The passes of one device. Inputs come contiguous (4-d ones channels_last where the entry
// chose that layout, see channels_last below); outputs are allocated by the entry, in the
// inputs' layout, and are not empty. A pass may allocate scratch of its own.
struct PoolBackend {
  c10::DeviceType device;
  // Whether the window passes (extreme, scatter, sum) read and write a 4-d channels_last
  // tensor in that layout. If not, they get NCHW tensors and the entry converts the results
  // to the layout the op promises (use_channels_last in pool_common.h).
  bool channels_last;

  // Max (or min) over each window of g (regular or adaptive): values and flat input-plane
  // indices (int64).
  void (*extreme_forward)(const at::Tensor& input, const PoolGeometry& g, bool minimum, const at::Tensor& output,
                          const at::Tensor& indices);
  // grad_output scattered to the indices; every element of grad_input is written.
  void (*scatter_backward)(const at::Tensor& grad_output, const at::Tensor& indices, const PoolGeometry& g,
                           const at::Tensor& grad_input);
  // Window sums divided by g's divisor (avg), or the lp norm of the window (lp: x^p summed,
  // then the 1/p power) with p = norm_type.
  void (*sum_forward)(const at::Tensor& input, const PoolGeometry& g, bool lp, double norm_type,
                      const at::Tensor& output);
  // Their gradient; input is undefined for avg (lp needs it).
  void (*sum_backward)(const at::Tensor& grad_output, const at::Tensor& input, const PoolGeometry& g, bool lp,
                       double norm_type, const at::Tensor& grad_input);

  // k-max pooling on (outer, length, inner) rows (KmaxShape): the k largest values of each row
  // in their order along it, and their positions (int64).
  void (*kmax_forward)(const at::Tensor& input, const KmaxShape& s, const at::Tensor& values,
                       const at::Tensor& positions);
  // grad_output written at the positions, zero elsewhere (every element of grad_input written).
  void (*kmax_backward)(const at::Tensor& grad_output, const at::Tensor& positions, const KmaxShape& s,
                        const at::Tensor& grad_input);

  // Gaussian pooling with the weight tables of gaussian_weights (gaussian_pool.h), and its
  // transpose.
  void (*gaussian_forward)(const at::Tensor& input, const PoolGeometry& g, const std::vector<double>& weights,
                           const at::Tensor& output);
  void (*gaussian_backward)(const at::Tensor& grad_output, const PoolGeometry& g, const std::vector<double>& weights,
                            const at::Tensor& grad_input);

  // Stochastic pooling: training picks (values and flat indices) from uniform numbers of the
  // output's shape; eval's sum(x^2) / sum(x) per window, and its gradient.
  void (*stochastic_train)(const at::Tensor& input, const at::Tensor& uniform, const PoolGeometry& g,
                           const at::Tensor& output, const at::Tensor& indices);
  void (*stochastic_eval)(const at::Tensor& input, const PoolGeometry& g, const at::Tensor& output);
  void (*stochastic_eval_backward)(const at::Tensor& grad_output, const at::Tensor& input, const PoolGeometry& g,
                                   const at::Tensor& grad_input);
};

// The CPU backend (pool_cpu.cpp).
const PoolBackend& cpu_pool_backend();

// Registers every op of the family for the library block `m` (the backend's dispatch key),
// its entries running the passes of `backend`.
void register_pool_ops(torch::Library& m, const PoolBackend& backend);

}  // namespace tco
