// The machine's speeds the expert cache plans with, measured once at load by
// short probes (ExpertCache::measure) and kept in a small JSON file per
// machine, container file, ISA path, thread count and I/O mode, so that later
// loads plan their first tokens with them at no cost:
//
//   $ZIPMOE_CACHE_DIR, else $XDG_CACHE_HOME/zipmoe, else $HOME/.cache/zipmoe
//     machines/<64-bit hash of the key, hex>.json
//
// The key names the CPU (its model and feature flags as the kernel reports
// them, its logical CPU count), the host (name, /etc/machine-id), the ISA path,
// the pool's threads, the I/O mode, and the file (device, inode, size,
// modification time): any difference measures again. The file stores its key
// and is ignored unless the key matches exactly. Everything here is best
// effort: a cache that cannot be read or written only means measuring again.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <string>

#include "format/container_file.h"
#include "zipmoe/types.h"

namespace zipmoe::cache {

struct MachineSpeeds {
  double storage_bandwidth = 0;        // bytes/s of chunk reads (probe reads, in the cache's I/O mode)
  double read_latency = 0;             // seconds per chunk read beyond its bytes
  double decode_throughput = 0;        // decoded bytes/s, all threads: verified decode into memory
  double coded_decode_throughput = 0;  // decoded bytes/s, all threads: decoding inside coded products
                                       // (their time beyond the same product over decoded weights); 0: none
  double matmul_throughput = 0;        // weight bytes/s, all threads, of single-token products
  double merge_throughput = 0;         // decoded bytes/s, all threads, of merging uncompressed planes
                                       // (what a raw container's "decode" costs)
};

// The key of `file` on this machine (see above).
std::string machine_profile_key(const format::ContainerFile& file, Isa isa, int threads, IoMode mode);
// The directory of the profiles ("" when no home or cache directory is known).
std::string machine_profile_dir();
// The speeds stored for `key`; false when there are none (or unreadable, or
// another key's, or implausible).
bool load_machine_profile(const std::string& key, MachineSpeeds* speeds);
// Stores `speeds` for `key` (atomically; failures ignored).
void save_machine_profile(const std::string& key, const MachineSpeeds& speeds);

}  // namespace zipmoe::cache
