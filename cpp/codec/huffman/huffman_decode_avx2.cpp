// Huffman segment decoder, avx2 build: the shared kernel (huffman_decode.inc)
// compiled with this ISA's flags and merged with this ISA's merge_into.
#include <nmmintrin.h>

#include <cstring>

#include "codec/huffman/huffman.h"
#include "common/checksum.h"

namespace zipmoe::codec::avx2 {

#include "codec/huffman/huffman_decode.inc"

}  // namespace zipmoe::codec::avx2
