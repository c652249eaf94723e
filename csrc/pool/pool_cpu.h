// The CPU passes of the pool family that live outside pool_cpu.cpp, one file per kind of
// pooling; pool_cpu.cpp puts them with its window passes into the CPU backend (pool_ops.h,
// which says what each pass does).
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kmax_pool.h"
#include "pool_geometry.h"

namespace tco {

// Planes (or rows) per at::parallel_for task, for tasks of about `task_elems` elements of work.
inline int64_t grain_for(int64_t elems_per_plane, int64_t task_elems = int64_t(1) << 15) {
  return std::max<int64_t>(1, task_elems / std::max<int64_t>(elems_per_plane, 1));
}

// kmax_pool_cpu.cpp
void kmax_forward_cpu(const at::Tensor& input, const KmaxShape& s, const at::Tensor& values,
                      const at::Tensor& positions);
void kmax_backward_cpu(const at::Tensor& grad_output, const at::Tensor& positions, const KmaxShape& s,
                       const at::Tensor& grad_input);

// gaussian_pool_cpu.cpp
void gaussian_forward_cpu(const at::Tensor& input, const PoolGeometry& g, const std::vector<double>& weights,
                          const at::Tensor& output);
void gaussian_backward_cpu(const at::Tensor& grad_output, const PoolGeometry& g, const std::vector<double>& weights,
                           const at::Tensor& grad_input);

// stochastic_pool_cpu.cpp
void stochastic_train_cpu(const at::Tensor& input, const at::Tensor& uniform, const PoolGeometry& g,
                          const at::Tensor& output, const at::Tensor& indices);
void stochastic_eval_cpu(const at::Tensor& input, const PoolGeometry& g, const at::Tensor& output);
void stochastic_eval_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input, const PoolGeometry& g,
                                  const at::Tensor& grad_input);

}  // namespace tco
