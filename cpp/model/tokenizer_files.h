// Tokenizers from files: the glue between the GGUF reader (format/) and the
// tokenizer (text/), which sit side by side in the stack and know nothing of
// each other.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "text/tokenizer.h"

namespace zipmoe::model {

// The tokenizer of a GGUF file (a model or a vocabulary-only file); reads only
// its key/values. Status::Io for a file that cannot be read, Format for a
// corrupt one, Unsupported for a tokenizer zipmoe does not implement.
Status tokenizer_from_gguf_file(const std::string& path, std::shared_ptr<const text::Tokenizer>* out);

}  // namespace zipmoe::model
