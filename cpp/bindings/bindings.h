// Declarations shared by the binding files: one register_*() per area.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>

#include "zipmoe/thread_pool.h"

namespace zipmoe::bindings {

namespace py = pybind11;

void register_errors(py::module_& m);
void register_common(py::module_& m);
void register_codec(py::module_& m);
void register_format(py::module_& m);
void register_tools(py::module_& m);
void register_model(py::module_& m);
void register_generate(py::module_& m);  // after register_model (it takes a Context)
void register_cuda(py::module_& m);  // always present; GPU paths only with ZIPMOE_HAVE_CUDA
void register_text(py::module_& m);
void register_names(py::module_& m);  // register_names.cpp: the core's name tables

// Resolves an optional Python ThreadPool argument (None -> run on the calling thread).
inline ThreadPool* pool_or_null(const std::shared_ptr<ThreadPool>& pool) { return pool.get(); }

}  // namespace zipmoe::bindings
