// The .zmoe container (zipmoe.ContainerWriter / zipmoe.open_container).
#include "bindings/bindings.h"

namespace zipmoe::bindings {

void register_format(py::module_& m) {}

}  // namespace zipmoe::bindings
