// Python exception classes mirroring include/zipmoe/error.h, and the translator
// that maps each C++ exception to its Python class.
#include <Python.h>

#include "bindings/bindings.h"
#include "zipmoe/error.h"

namespace zipmoe::bindings {

namespace {

PyObject* new_exception(py::module_& m, const char* name, PyObject* bases, const char* doc) {
  const std::string qualified = std::string("zipmoe.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases, nullptr);
  if (!type) throw py::error_already_set();
  m.add_object(name, py::handle(type));
  return type;
}

PyObject* tuple_of(PyObject* a, PyObject* b = nullptr) {
  PyObject* t = b ? PyTuple_Pack(2, a, b) : PyTuple_Pack(1, a);
  if (!t) throw py::error_already_set();
  return t;
}

PyObject* g_error = nullptr;
PyObject* g_format = nullptr;
PyObject* g_checksum = nullptr;
PyObject* g_invalid = nullptr;
PyObject* g_io = nullptr;
PyObject* g_unsupported = nullptr;
PyObject* g_budget = nullptr;
PyObject* g_busy = nullptr;

}  // namespace

void register_errors(py::module_& m) {
  g_error = new_exception(m, "ZipMoEError", tuple_of(PyExc_Exception), "Base class of every zipmoe error.");
  g_format = new_exception(m, "FormatError", tuple_of(g_error),
                           "Malformed or truncated input (blob, container, model file).");
  g_checksum = new_exception(m, "ChecksumError", tuple_of(g_format),
                             "Stored and computed checksums differ: the data is corrupted.");
  g_invalid = new_exception(m, "InvalidArgumentError", tuple_of(g_error, PyExc_ValueError),
                            "An argument outside what the function accepts.");
  g_io = new_exception(m, "IoError", tuple_of(g_error, PyExc_OSError), "A read or write failed.");
  g_unsupported = new_exception(m, "UnsupportedModelError", tuple_of(g_error),
                                "A model, architecture or tensor type zipmoe cannot handle.");
  g_budget = new_exception(m, "BudgetError", tuple_of(g_error), "A memory budget too small for what was asked.");
  g_busy = new_exception(m, "BusyError", tuple_of(g_error),
                         "The model is in use by another call (an unfinished streamed generation, or a call from "
                         "another thread); one use at a time.");

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ChecksumError& e) {
      PyErr_SetString(g_checksum, e.what());
    } catch (const FormatError& e) {
      PyErr_SetString(g_format, e.what());
    } catch (const InvalidArgumentError& e) {
      PyErr_SetString(g_invalid, e.what());
    } catch (const IoError& e) {
      PyErr_SetString(g_io, e.what());
    } catch (const UnsupportedModelError& e) {
      PyErr_SetString(g_unsupported, e.what());
    } catch (const BudgetError& e) {
      PyErr_SetString(g_budget, e.what());
    } catch (const BusyError& e) {
      PyErr_SetString(g_busy, e.what());
    } catch (const Error& e) {
      PyErr_SetString(g_error, e.what());
    }
  });
}

}  // namespace zipmoe::bindings
