#include "model/tokenizer_files.h"

#include "format/gguf_reader.h"

namespace zipmoe::model {

Status tokenizer_from_gguf_file(const std::string& path, std::shared_ptr<const text::Tokenizer>* out) {
  GgufMetadata metadata;
  ZIPMOE_RETURN_IF_ERROR(format::read_gguf_metadata(path, text::is_tokenizer_key, &metadata));
  return text::Tokenizer::from_gguf_metadata(metadata, path, out);
}

}  // namespace zipmoe::model
