// Thread pools, CPU features and ISA selection.
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "common/cpu_features.h"

namespace zipmoe::bindings {

void register_common(py::module_& m) {
  py::class_<ThreadPool, std::shared_ptr<ThreadPool>>(m, "ThreadPool",
                                                      "A pool of native worker threads (the caller's thread included).")
      .def(py::init<int>(), py::arg("num_threads") = 0)
      .def_property_readonly("num_threads", &ThreadPool::num_threads);
  m.attr("MAX_THREADS") = ThreadPool::kMaxThreads;

  m.def("available_isas", [] {
    std::vector<std::string> names;
    for (Isa isa : supported_isas()) names.emplace_back(isa_name(isa));
    return names;
  }, "Instruction-set paths this CPU and build can run, scalar first.");
  m.def("default_isa", [] { return std::string(isa_name(default_isa())); },
        "The path used by default: ZIPMOE_ISA if set, else the best available.");
  m.def("cpu_features", [] {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["avx2"] = f.avx2;
    d["avx512"] = f.avx512;
    d["avx512_bf16"] = f.avx512_bf16;
    d["avx512_vbmi"] = f.avx512_vbmi;
    d["neon"] = f.neon;
    return d;
  });
}

}  // namespace zipmoe::bindings
