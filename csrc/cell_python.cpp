// fastrnn._C.cell_step: a direct Python entry to the op fastrnn::cell_forward for eager
// calls of the cells (fastrnn/cells.py) and of a layer's single step (fastrnn/functional.py).
// torch.ops' entry matches each call's arguments against the schema and boxes them into a
// stack: at B=1, H=64 (RNNCell, 2 threads, AMD EPYC) a call took 7.3 us without autograd and
// 11.5 us with it that way, 5.0 and 8.3 us this way. This entry reads its arguments by
// position and calls the op's typed handle: the dispatcher, autograd (cell_autograd.cpp),
// autocast and __torch_dispatch__ modes run as through torch.ops. Where a tensor argument is
// not a plain tensor or parameter (a subclass may take __torch_function__), the cell number
// not an int, or a __torch_function__ mode is active, it returns NotImplemented and the
// caller goes through torch.ops.

#include <ATen/PythonTorchFunctionTLS.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/object_ptr.h>
#include <pybind11/pybind11.h>

#include "cell_python.h"
#include "cell_ops.h"

namespace fastrnn {
namespace {

// arg as a tensor, or undefined for None; false where it is neither a torch.Tensor nor a
// torch.nn.Parameter (THPVariable_CheckExact: a subclass, which may take __torch_function__,
// or not a tensor).
bool read_tensor(PyObject* arg, bool optional, at::Tensor& out) {
  if (arg == Py_None) return optional;
  if (!THPVariable_CheckExact(arg)) return false;
  out = THPVariable_Unpack(arg);
  return true;
}

// cell_step(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, unit_params) -> (y, h_new, c_new), the
// op's results with save=False; c, b_ih, b_hh and unit_params may be None.
PyObject* cell_step(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  constexpr Py_ssize_t kArgs = 9;
  if (nargs != kArgs) {
    PyErr_SetString(PyExc_TypeError, "cell_step(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, "
                                     "unit_params) takes 9 arguments");
    return nullptr;
  }
  // A cell number of another type (numpy's, say): torch.ops converts or refuses it.
  if (!PyLong_CheckExact(args[0]) || at::impl::torch_function_mode_enabled()) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  const int64_t cell = PyLong_AsLongLong(args[0]);
  if (cell == -1 && PyErr_Occurred()) return nullptr;  // OverflowError
  at::Tensor t[kArgs - 1];  // x, h, c, w_ih, w_hh, b_ih, b_hh, unit_params
  constexpr bool kOptional[kArgs - 1] = {false, false, true, false, false, true, true, true};
  for (int i = 0; i < kArgs - 1; ++i) {
    if (!read_tensor(args[i + 1], kOptional[i], t[i])) Py_RETURN_NOTIMPLEMENTED;
  }
  const auto optional = [](const at::Tensor& v) {
    return v.defined() ? std::optional<at::Tensor>(v) : std::nullopt;
  };
  at::Tensor y, h_new, c_new;
  {
    const pybind11::gil_scoped_release no_gil;  // as torch.ops does around an op
    std::tie(y, h_new, c_new, std::ignore) = cell_forward_op().call(
        cell, t[0], t[1], optional(t[2]), t[3], t[4], optional(t[5]), optional(t[6]), false,
        optional(t[7]));
  }
  THPObjectPtr result(PyTuple_New(3));  // freed on any early return or exception
  if (!result) return nullptr;
  at::Tensor* outs[] = {&y, &h_new, &c_new};
  for (int i = 0; i < 3; ++i) {
    PyObject* item = THPVariable_Wrap(std::move(*outs[i]));
    if (item == nullptr) return nullptr;
    PyTuple_SET_ITEM(result.get(), i, item);  // steals item
  }
  return result.release();
  END_HANDLE_TH_ERRORS
}

PyMethodDef kMethods[] = {
    {"cell_step", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(cell_step)),
     METH_FASTCALL, "One eager call of fastrnn::cell_forward (csrc/cell_python.cpp)."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

int add_cell_step(PyObject* module) { return PyModule_AddFunctions(module, kMethods); }

}  // namespace fastrnn
