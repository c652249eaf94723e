// CPU kernels of k-max pooling: per row along `dim`, the k largest values in their original
// order and their positions; the gradient scatters back through the positions.
//
// Forward, per row (rows split over threads with at::parallel_for, each with its own scratch):
//  1. the row's keys (kmax_pool.h: integers ordered as topk orders the values, NaN highest);
//  2. the k-th largest key T: a radix select on the keys' bytes from the top (histogram of the
//     current byte of the remaining candidates, keep the bucket that holds the k-th largest)
//     until few candidates remain, then std::nth_element on those;
//  3. one ordered pass that keeps every element whose key is >= T.
// When that pass keeps exactly k elements (no value equal to T is left out: always the case
// for distinct values), the set is the only possible one and therefore topk's. Otherwise some
// copies of T must be dropped, and which ones torch.topk keeps on the CPU is not a rule on
// positions: it is whatever std::nth_element (std::partial_sort when k * 64 <= length) leaves
// in the first k places of the (value, position) pairs under topk's comparator
// (ATen/native/TopKImpl.h). Such rows rerun exactly that selection, so the set, ties
// included, is topk's.
//
// Backward: the gradient is zero except at the k positions of each row, which are distinct,
// so a task owning a block of rows zero-fills its part of grad_input and writes grad_output
// there without atomics.
//
// No ATen op runs inside the parallel regions; float16 and bfloat16 are compared as floats
// (selection accumulates nothing).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../cpu_vectorize.h"
#include "kmax_pool.h"
#include "pool_cpu.h"

namespace tco {
namespace {

template <typename scalar_t>
using key_t = std::conditional_t<std::is_same_v<scalar_t, double>, uint64_t, uint32_t>;

template <typename scalar_t>
inline key_t<scalar_t> key_of(scalar_t v) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    return kmax::compare_key(v);
  } else {
    return kmax::compare_key(static_cast<float>(v));
  }
}

// The keys of one row, whose elements are `step` apart.
template <typename scalar_t, typename K>
TCO_VECTORIZE void row_keys(K* __restrict keys, const scalar_t* __restrict src, int64_t length, int64_t step) {
  if (step == 1) {
    for (int64_t j = 0; j < length; ++j) keys[j] = key_of(src[j]);
  } else {
    for (int64_t j = 0; j < length; ++j) keys[j] = key_of(src[j * step]);
  }
}

// torch.topk's own selection of a row, for rows where copies of the threshold must be
// dropped: the same pairs, comparator and algorithm as ATen's topk_impl_loop, so the same
// copies survive. Writes the chosen positions, increasing, to picked[0, k).
template <typename scalar_t>
void select_like_topk(const scalar_t* src, int64_t inner, int64_t length, int64_t k,
                      std::vector<std::pair<double, int64_t>>& queue, std::vector<uint8_t>& chosen,
                      int64_t* picked) {
  // Comparisons of doubles order float, float16 and bfloat16 values as comparisons of those
  // types do, and the algorithms only see comparison results.
  queue.resize(length);
  for (int64_t j = 0; j < length; ++j) queue[j] = {static_cast<double>(src[j * inner]), j};
  const auto larger = [](const std::pair<double, int64_t>& x, const std::pair<double, int64_t>& y) {
    return (std::isnan(x.first) && !std::isnan(y.first)) || x.first > y.first;
  };
  if (k * 64 <= length) {
    std::partial_sort(queue.begin(), queue.begin() + k, queue.end(), larger);
  } else {
    std::nth_element(queue.begin(), queue.begin() + (k - 1), queue.end(), larger);
  }
  chosen.assign(length, 0);
  for (int64_t m = 0; m < k; ++m) chosen[queue[m].second] = 1;
  int64_t n = 0;
  for (int64_t j = 0; j < length; ++j) {
    picked[n] = j;
    n += chosen[j];
  }
}

// Radix digits of 8 bits; below this many candidates std::nth_element finishes the search
// (a histogram pass costs about as much as one partitioning pass of nth_element).
constexpr int kDigitBits = 8;
constexpr int64_t kFewCandidates = 48;

// The `need`-th largest of keys[0, n) (1 <= need <= n), given `hist`, the histogram of their top
// digit. `work` (n entries) is scratch; `hist` (256 entries) is reused for the lower digits.
template <typename K>
K kth_largest(const K* keys, int64_t n, int64_t need, K* work, int64_t* hist) {
  const K* cand = keys;
  for (int shift = int(sizeof(K)) * 8 - kDigitBits;; shift -= kDigitBits) {
    // The digit of the need-th largest, counting buckets from the top.
    int b = (1 << kDigitBits) - 1;
    while (hist[b] < need) need -= hist[b--];
    if (hist[b] != n) {  // else every candidate has this digit: nothing to drop
      int64_t m = 0;
      for (int64_t j = 0; j < n; ++j) {  // branch-free; in place once cand == work (m <= j)
        const K key = cand[j];
        work[m] = key;
        m += static_cast<int>((key >> shift) & 0xFF) == b;
      }
      cand = work;
      n = m;
    }
    if (n <= kFewCandidates || shift == 0) break;
    std::fill_n(hist, 1 << kDigitBits, 0);
    for (int64_t j = 0; j < n; ++j) ++hist[(cand[j] >> (shift - kDigitBits)) & 0xFF];
  }
  if (cand != work) std::copy_n(cand, n, work);
  std::nth_element(work, work + (n - need), work + n);
  return work[n - need];
}

template <typename scalar_t>
void kmax_forward_kernel(const scalar_t* in, scalar_t* out, int64_t* positions, const KmaxShape& s) {
  using K = key_t<scalar_t>;
  const int64_t L = s.length, inner = s.inner, k = s.k;
  // Sizes captured by value: through references they would be reloaded after every store
  // to the int64 scratch, which may alias them.
  at::parallel_for(0, s.rows(), grain_for(L), [in, out, positions, L, inner, k](int64_t r0, int64_t r1) {
    std::vector<K> keys(L), work(L);
    std::vector<int64_t> picked(L + 1);  // one spare slot: the branch-free compaction writes one past
    std::vector<std::pair<double, int64_t>> queue;
    std::vector<uint8_t> chosen;
    int64_t hist[1 << kDigitBits];
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t o = r / inner, i = r % inner;
      const scalar_t* src = in + o * L * inner + i;
      if (k == L) {
        for (int64_t j = 0; j < L; ++j) picked[j] = j;
      } else {
        row_keys(keys.data(), src, L, inner);
        std::fill_n(hist, 1 << kDigitBits, 0);
        for (int64_t j = 0; j < L; ++j) ++hist[keys[j] >> (sizeof(K) * 8 - kDigitBits)];
        const K threshold = kth_largest(keys.data(), L, k, work.data(), hist);
        int64_t n = 0;
        for (int64_t j = 0; j < L; ++j) {
          picked[n] = j;
          n += keys[j] >= threshold;
        }
        if (n != k) select_like_topk(src, inner, L, k, queue, chosen, picked.data());
      }
      scalar_t* dst = out + o * k * inner + i;
      int64_t* pos = positions + o * k * inner + i;
      for (int64_t m = 0; m < k; ++m) {
        dst[m * inner] = src[picked[m] * inner];
        pos[m * inner] = picked[m];
      }
    }
  });
}

template <typename scalar_t>
void kmax_backward_kernel(const scalar_t* gout, const int64_t* positions, scalar_t* gin, const KmaxShape& s) {
  const int64_t L = s.length, inner = s.inner, k = s.k;
  // A task owns the columns [i0, i1) of one outer slab: the rows (o, i0..i1) and exactly the
  // grad_input elements they can write. Columns come in blocks so that a dim=-1 row (inner 1)
  // is one task and a long inner dimension still splits.
  const int64_t block = std::min<int64_t>(inner, std::max<int64_t>(1, 4096 / std::max<int64_t>(L, 1)));
  const int64_t blocks_per_slab = (inner + block - 1) / block;
  at::parallel_for(0, s.outer * blocks_per_slab, grain_for(L * block),
                   [gout, positions, gin, L, inner, k, block, blocks_per_slab](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t o = t / blocks_per_slab, i0 = (t % blocks_per_slab) * block;
      const int64_t width = std::min(block, inner - i0);
      scalar_t* slab = gin + o * L * inner + i0;
      if (width == inner) {  // whole slabs (always for dim=-1): one contiguous fill
        std::fill_n(slab, L * inner, scalar_t(0));
      } else {
        for (int64_t j = 0; j < L; ++j) std::fill_n(slab + j * inner, width, scalar_t(0));
      }
      const scalar_t* gy = gout + o * k * inner + i0;
      const int64_t* pos = positions + o * k * inner + i0;
      for (int64_t m = 0; m < k; ++m) {
        for (int64_t c = 0; c < width; ++c) {
          const int64_t p = pos[m * inner + c];
          TORCH_CHECK(p >= 0 && p < L, "cnn_ops.kmax_pool_backward: index ", p,
                      " is outside the pooled dimension of size ", L);
          slab[p * inner + c] = gy[m * inner + c];
        }
      }
    }
  });
}

}  // namespace

void kmax_forward_cpu(const at::Tensor& input, const KmaxShape& s, const at::Tensor& values,
                      const at::Tensor& positions) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "kmax_pool_forward_cpu", [&] {
    kmax_forward_kernel<scalar_t>(input.const_data_ptr<scalar_t>(), values.mutable_data_ptr<scalar_t>(),
                                  positions.mutable_data_ptr<int64_t>(), s);
  });
}

void kmax_backward_cpu(const at::Tensor& grad_output, const at::Tensor& positions, const KmaxShape& s,
                       const at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(), "kmax_pool_backward_cpu", [&] {
    kmax_backward_kernel<scalar_t>(grad_output.const_data_ptr<scalar_t>(), positions.const_data_ptr<int64_t>(),
                                   grad_input.mutable_data_ptr<scalar_t>(), s);
  });
}

}  // namespace tco
