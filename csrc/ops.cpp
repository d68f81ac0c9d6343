// The fastrnn operator library, defined with the schemas of ops.h.

#include <Python.h>
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(fastrnn, m) { fastrnn::define_ops(m); }

// Importing fastrnn._C runs the registrations above; the module itself holds nothing.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
