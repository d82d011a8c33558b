// How much memory this process can still take: the engine refuses, before it
// allocates anything, to load what could not fit (model/load_plan.h), rather
// than being killed by the kernel halfway through or touching gigabytes first.
//
// The figure is MemAvailable of /proc/meminfo (free memory plus the page cache
// and slabs the kernel can reclaim, without swapping), lowered to the headroom
// of every memory cgroup above this process that has a limit: its limit less
// what it holds beyond reclaimable file cache (cgroup v2 memory.max,
// memory.current and memory.stat "file"; cgroup v1 memory.limit_in_bytes,
// memory.usage_in_bytes and memory.stat total_cache). Swap is not counted: a
// model that only fits by swapping runs far too slowly to be worth loading.
//
// Thread-safety: reads files only; may be called from any thread.
#pragma once

#include <cstdint>
#include <string>

namespace zipmoe {

struct AvailableMemory {
  bool known = false;      // false where /proc/meminfo cannot be read (not Linux)
  std::uint64_t bytes = 0;
  // What set the figure, for messages: "MemAvailable in /proc/meminfo" or
  // "the limit of memory cgroup /sys/fs/cgroup/...".
  std::string source;
};

AvailableMemory available_memory();

// The same, from the text of files given by the caller (tests): `meminfo` as
// /proc/meminfo, and for one cgroup its limit, usage and reclaimable file cache
// in bytes (limit 0: none).
AvailableMemory available_memory_from(const std::string& meminfo, std::uint64_t cgroup_limit,
                                      std::uint64_t cgroup_usage, std::uint64_t cgroup_file_cache,
                                      const std::string& cgroup_name);

}  // namespace zipmoe
