// The fastrnn operator library, defined with the schemas of ops.h, and the Python module
// fastrnn._C, which holds the cells' layout facts (gates, saved slots, cell numbers) and
// the numbers of the GPU code's element types (common/dtype.h), the depth from which
// the CPU's linear takes oneDNN (LINEAR_MIN_DEPTH), the least size of its results that come
// from reused buffers (LINEAR_POOLED_BYTES) and whether its fused walks multiply in
// bfloat16 (BFLOAT16_PRODUCTS), so that Python (the fake kernels, the
// rules, the tests) reads them instead of repeating them; and the cells' eager entry,
// cell_step (cell_python.cpp).

#include <Python.h>
#include <torch/library.h>

#include "cells/all.h"
#include "common/dtype.h"
#include "cell_ops.h"
#include "cell_python.h"
#include "cpu/linear.h"

TORCH_LIBRARY(fastrnn, m) {
  fastrnn::define_ops(m);
  fastrnn::define_cell_ops(m);
}

namespace {

// <NAME>_GATES, <NAME>_SAVED and <NAME>_KIND for one cell policy.
template <class Cell>
int add_cell(PyObject* module, const std::string& name) {
  return PyModule_AddIntConstant(module, (name + "_GATES").c_str(), Cell::kGates) |
         PyModule_AddIntConstant(module, (name + "_SAVED").c_str(), Cell::kSaved) |
         PyModule_AddIntConstant(module, (name + "_KIND").c_str(), static_cast<int>(Cell::kKind));
}

// DTYPE_<NAME> for each DType, named as torch names the dtype.
int add_dtypes(PyObject* module) {
  using fastrnn::DType;
  const auto add = [&](const char* name, DType dtype) {
    return PyModule_AddIntConstant(module, name, static_cast<int>(dtype));
  };
  return add("DTYPE_FLOAT32", DType::kFloat32) | add("DTYPE_FLOAT64", DType::kFloat64) |
         add("DTYPE_FLOAT16", DType::kFloat16) | add("DTYPE_BFLOAT16", DType::kBFloat16);
}

}  // namespace

// Importing fastrnn._C runs the registrations above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  int failed = add_dtypes(module) |
               PyModule_AddIntConstant(module, "LINEAR_MIN_DEPTH",
                                       static_cast<long>(fastrnn::linear_onednn_min_depth())) |
               PyModule_AddIntConstant(module, "LINEAR_POOLED_BYTES",
                                       static_cast<long>(fastrnn::linear_pooled_bytes())) |
               PyModule_AddIntConstant(module, "LINEAR_BFLOAT16_BIAS",
                                       fastrnn::linear_onednn_bfloat16()) |
               PyModule_AddIntConstant(module, "LINEAR_FRESH_BYTES",
                                       static_cast<long>(fastrnn::linear_fresh_bytes())) |
               PyModule_AddIntConstant(module, "BFLOAT16_PRODUCTS",
                                       fastrnn::bfloat16_recurrent_products()) |
               fastrnn::add_cell_step(module);
#define FASTRNN_ADD_CELL(Cell, NAME) failed |= add_cell<Cell>(module, #NAME);
  FASTRNN_FOR_EACH_CELL(FASTRNN_ADD_CELL)
  FASTRNN_FOR_EACH_ROW_CELL(FASTRNN_ADD_CELL)
#undef FASTRNN_ADD_CELL
  if (failed) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
