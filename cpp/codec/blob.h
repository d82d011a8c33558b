// The core's reader of blob headers (zipmoe/codec.h), with Status errors.
#pragma once

#include <cstddef>

#include "common/status.h"
#include "zipmoe/codec.h"

namespace zipmoe::codec {

// Parses and checks the header of a blob of `size` bytes (not its checksum);
// Status::Format names what is wrong.
Status read_blob_info(const void* blob, std::size_t size, BlobInfo* out);

}  // namespace zipmoe::codec
