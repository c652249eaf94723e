// The ops of the norm family (schemas in csrc/registration.cpp), written once for every
// device on top of a NormBackend (norm_backend.h). Each device registers them for its
// dispatch key with register_norm_ops(m, its backend).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "norm_backend.h"

namespace tco {

using OptTensor = std::optional<at::Tensor>;
using Tensor2 = std::tuple<at::Tensor, at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Registers every norm op for the library block `m` (the backend's dispatch key), their
// entries (norm_ops.cpp) running the passes of `backend`.
void register_norm_ops(torch::Library& m, const NormBackend& backend);

}  // namespace tco
