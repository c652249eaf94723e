// The Python functions of torch_cnn_ops._C (csrc/python_calls.cpp).
#pragma once

#include <Python.h>

namespace tco {

// The method table of the module, ended by an entry of nullptrs.
PyMethodDef* python_call_methods();

}  // namespace tco
