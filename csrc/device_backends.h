// The device backends of a family's ops: each device's TORCH_LIBRARY_IMPL block registers its
// backend (a struct of passes with a `device` member) together with the family's entries, and
// the entries look up the backend of the device they are called on. One table per backend type.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/util/Exception.h>

#include <array>

namespace tco {

template <typename Backend>
class DeviceBackends {
 public:
  static void add(const Backend& backend) { table()[index(backend.device)] = &backend; }

  // The dispatcher reaches an entry only through a dispatch key whose block added a backend.
  static const Backend& of(const at::Tensor& t, const char* family) {
    const Backend* backend = table()[index(t.device().type())];
    TORCH_CHECK(backend != nullptr, "cnn_ops: no ", family, " backend for device ", t.device());
    return *backend;
  }

 private:
  static constexpr size_t kDeviceTypes = static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES);
  static size_t index(c10::DeviceType type) { return static_cast<size_t>(type); }
  static std::array<const Backend*, kDeviceTypes>& table() {
    static std::array<const Backend*, kDeviceTypes> backends{};
    return backends;
  }
};

}  // namespace tco
