// CPU kernels of stochastic pooling (Zeiler & Fergus 2013) over non-negative inputs.
//
// Training: each window picks one element with probability proportional to its value. The
// uniform numbers come in as a tensor of the output's shape (drawn by the caller from its
// generator), so the op itself is deterministic: the pick is the first element whose
// cumulative sum exceeds u * (window sum); an all-zero window gives 0 (its first element).
// The values and the picked flat indices come back; the gradient is max_pool_backward's
// scatter through the indices.
// Eval: the probability-weighted average sum(x^2) / sum(x) (0 for an all-zero window), with
// gradient (2 x_i S1 - S2) / S1^2 summed over the windows that contain x_i (a gather).
// Work is split over (batch, channel) planes; float16 and bfloat16 compute in float32.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "pool_cpu.h"
#include "stochastic_pool.h"

namespace tco {
namespace {

template <typename scalar_t>
void stochastic_train(const scalar_t* in, const scalar_t* uniform, scalar_t* out, int64_t* ind,
                      const PoolGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, g.planes, grain_for(g.out_plane() * g.kernel_volume()), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const scalar_t* src = in + p * g.in_plane();
      const auto load = [src](int64_t i) { return static_cast<acc_t>(src[i]); };
      for (int64_t od = 0; od < g.out_size[0]; ++od)
        for (int64_t oh = 0; oh < g.out_size[1]; ++oh)
          for (int64_t ow = 0; ow < g.out_size[2]; ++ow) {
            const int64_t o = p * g.out_plane() + (od * g.out_size[1] + oh) * g.out_size[2] + ow;
            const int64_t pick = stochastic_pick(g, od, oh, ow, static_cast<acc_t>(uniform[o]), load);
            out[o] = src[pick];
            ind[o] = pick;
          }
    }
  });
}

template <typename scalar_t>
void stochastic_eval(const scalar_t* in, scalar_t* out, const PoolGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, g.planes, grain_for(g.out_plane() * g.kernel_volume()), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const scalar_t* src = in + p * g.in_plane();
      scalar_t* dst = out + p * g.out_plane();
      for (int64_t od = 0; od < g.out_size[0]; ++od)
        for (int64_t oh = 0; oh < g.out_size[1]; ++oh)
          for (int64_t ow = 0; ow < g.out_size[2]; ++ow) {
            const auto m = window_moments<acc_t>(g, od, oh, ow, [src](int64_t i) { return static_cast<acc_t>(src[i]); });
            dst[(od * g.out_size[1] + oh) * g.out_size[2] + ow] = static_cast<scalar_t>(m.mean_by_weight());
          }
    }
  });
}

// grad_input[i] = the sum over the windows o that contain i of their WindowGrad at x_i
// (stochastic_pool.h), zero for all-zero windows.
template <typename scalar_t>
void stochastic_eval_backward(const scalar_t* gout, const scalar_t* in, scalar_t* gin, const PoolGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, g.planes, grain_for(g.in_plane() * g.kernel_volume()), [&](int64_t p0, int64_t p1) {
    std::vector<WindowGrad<acc_t>> coef(g.out_plane());
    for (int64_t p = p0; p < p1; ++p) {
      const scalar_t* src = in + p * g.in_plane();
      const scalar_t* gy = gout + p * g.out_plane();
      scalar_t* dst = gin + p * g.in_plane();
      for (int64_t od = 0; od < g.out_size[0]; ++od)
        for (int64_t oh = 0; oh < g.out_size[1]; ++oh)
          for (int64_t ow = 0; ow < g.out_size[2]; ++ow) {
            const int64_t o = (od * g.out_size[1] + oh) * g.out_size[2] + ow;
            const auto m = window_moments<acc_t>(g, od, oh, ow, [src](int64_t i) { return static_cast<acc_t>(src[i]); });
            coef[o] = m.grad(static_cast<acc_t>(gy[o]));
          }
      for (int64_t id = 0; id < g.in_size[0]; ++id) {
        const PoolRange rd = pool_outputs_near(g, 0, id);
        for (int64_t ih = 0; ih < g.in_size[1]; ++ih) {
          const PoolRange rh = pool_outputs_near(g, 1, ih);
          for (int64_t iw = 0; iw < g.in_size[2]; ++iw) {
            const PoolRange rw = pool_outputs_near(g, 2, iw);
            const int64_t i = (id * g.in_size[1] + ih) * g.in_size[2] + iw;
            const acc_t x = static_cast<acc_t>(src[i]);
            acc_t sum = 0;
            for (int64_t od = rd.lo; od < rd.hi; ++od)
              for (int64_t oh = rh.lo; oh < rh.hi; ++oh)
                for (int64_t ow = rw.lo; ow < rw.hi; ++ow) {
                  const int64_t o = (od * g.out_size[1] + oh) * g.out_size[2] + ow;
                  sum += coef[o].at(x);
                }
            dst[i] = static_cast<scalar_t>(sum);
          }
        }
      }
    }
  });
}

}  // namespace

void stochastic_train_cpu(const at::Tensor& input, const at::Tensor& uniform, const PoolGeometry& g,
                          const at::Tensor& output, const at::Tensor& indices) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "cnn_ops_stochastic_pool", [&] {
    stochastic_train<scalar_t>(input.const_data_ptr<scalar_t>(), uniform.const_data_ptr<scalar_t>(),
                               output.mutable_data_ptr<scalar_t>(), indices.mutable_data_ptr<int64_t>(), g);
  });
}

void stochastic_eval_cpu(const at::Tensor& input, const PoolGeometry& g, const at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "cnn_ops_stochastic_pool_eval", [&] {
    stochastic_eval<scalar_t>(input.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), g);
  });
}

void stochastic_eval_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input, const PoolGeometry& g,
                                  const at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "cnn_ops_stochastic_pool_eval_backward", [&] {
    stochastic_eval_backward<scalar_t>(grad_output.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
                                       grad_input.mutable_data_ptr<scalar_t>(), g);
  });
}

}  // namespace tco
