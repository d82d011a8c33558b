// LZ4HC coding of exponent planes (the ZipMoE paper's exponent codec), built
// when liblz4 is present (ZIPMOE_HAVE_LZ4); docs/FORMAT.md "LZ4HC payload" is
// the normative description.
//
// ---------------------------------------------------------------------------
// Table (the coded plane's `table`, 1 byte)
//   offset  size  field
//   0       1     level   the LZ4HC compression level the encoder used, 1..12.
// Informative only (LZ4 blocks decode the same whatever level made them);
// decoders check the range and nothing else.
//
// ---------------------------------------------------------------------------
// Segment payload (one per segment of n symbols, P bytes)
// The segment's symbols are cut into m = ceil(n / 16384) blocks of 16384
// symbols (the last holds the rest). The payload is, for each block in order:
//   offset  size  field
//   0       4     u32 LE  c, the bytes of the compressed block (1 <= c)
//   4       c     one LZ4 block (the LZ4 block format, no frame) that
//                 decompresses to exactly the block's symbols
// and nothing after the last block. Decoders reject a size running past the
// payload, bytes left over, a block that is malformed or decompresses to any
// other number of bytes.
//
// Why blocks of 16 KiB: each block decompresses into a stack buffer that stays
// in L1 while merge_into turns it into elements, like the other coders' decode
// blocks; LZ4 matches on exponent symbols are short, so the smaller window costs
// little (measured in docs/FORMAT.md). Blocks are independent of each other and
// of other segments, so threads decode segments in parallel.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/coder.h"

namespace zipmoe::codec {

constexpr std::size_t kLz4hcBlockSymbols = 16384;
constexpr int kLz4hcLevel = 9;  // LZ4HC's default level
constexpr std::size_t kLz4hcTableBytes = 1;

// True when this build can encode and decode lz4hc planes.
bool lz4hc_available();

// The status every lz4hc request returns in a build without liblz4.
Status lz4hc_unavailable_status();

}  // namespace zipmoe::codec
