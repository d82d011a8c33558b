// Huffman segment decoder, neon build: the shared kernel (huffman_decode.inc)
// compiled with this ISA's flags and merged with this ISA's merge_into.
#include <cstring>

#include "codec/huffman/huffman.h"
#include "common/checksum.h"

namespace zipmoe::codec::neon {

#include "codec/huffman/huffman_decode.inc"

}  // namespace zipmoe::codec::neon
