#include "bindings/bindings.h"

#ifndef ZIPMOE_VERSION
#define ZIPMOE_VERSION "0.0.0"
#endif

PYBIND11_MODULE(_core, m) {
  m.doc() = "zipmoe native core (use the zipmoe package, not this module)";
  m.attr("__version__") = ZIPMOE_VERSION;
  zipmoe::bindings::register_errors(m);
  zipmoe::bindings::register_common(m);
  zipmoe::bindings::register_codec(m);
  zipmoe::bindings::register_format(m);
  zipmoe::bindings::register_tools(m);
  zipmoe::bindings::register_model(m);
  zipmoe::bindings::register_generate(m);
  zipmoe::bindings::register_cuda(m);
  zipmoe::bindings::register_text(m);
  zipmoe::bindings::register_names(m);
}
