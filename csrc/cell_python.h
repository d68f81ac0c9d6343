#pragma once
// fastrnn._C.cell_step (cell_python.cpp), added to the module by ops.cpp.

#include <Python.h>

namespace fastrnn {

// Adds cell_step to module: 0, or -1 with a Python error set.
int add_cell_step(PyObject* module);

}  // namespace fastrnn
