// The name arguments the bindings share ("bf16", "avx2", "huffman", "direct",
// ...): each parsed by one function that throws InvalidArgumentError naming the
// argument and listing its choices from the core's own name tables.
#pragma once

#include <optional>
#include <string>

#include "zipmoe/container.h"
#include "zipmoe/types.h"

namespace zipmoe::bindings {

// "bf16", "f16", "f32" (and their aliases, see parse_dtype); `what` names the
// argument in the message.
DType dtype_argument(const std::string& name, const char* what = "dtype");
// An instruction-set path this CPU and build can run; None: the default (nullopt).
std::optional<Isa> isa_argument(const std::optional<std::string>& name);
// A codec a writer may be asked for (not "constant", which is chosen, never asked).
Codec codec_argument(const std::string& name);
IoMode io_mode_argument(const std::string& name);

}  // namespace zipmoe::bindings
