#include "common/system_memory.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

namespace zipmoe {

namespace {

// Limits at or above this mean "none" (cgroup v1 writes PAGE_COUNTER_MAX pages).
constexpr std::uint64_t kNoLimit = std::uint64_t(1) << 60;

bool read_text(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::ostringstream text;
  text << in.rdbuf();
  *out = text.str();
  return true;
}

// The number after "key" at the start of a line of `text` ("MemAvailable: 123 kB", "file 456").
bool find_value(const std::string& text, const std::string& key, std::uint64_t* value) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.compare(0, key.size(), key) != 0) continue;
    const std::string rest = line.substr(key.size());
    if (rest.empty() || (rest[0] != ' ' && rest[0] != ':')) continue;
    const char* start = rest.c_str() + (rest[0] == ':' ? 1 : 0);
    char* end = nullptr;
    const unsigned long long v = std::strtoull(start, &end, 10);
    if (end == start) return false;
    *value = v;
    return true;
  }
  return false;
}

bool read_number(const std::string& path, std::uint64_t* value) {
  std::string text;
  if (!read_text(path, &text)) return false;
  if (text.compare(0, 3, "max") == 0) {
    *value = kNoLimit;
    return true;
  }
  char* end = nullptr;
  *value = std::strtoull(text.c_str(), &end, 10);
  return end != text.c_str();
}

struct CgroupFiles {
  std::string dir;
  const char* limit;
  const char* usage;
  const char* file_cache;  // key in memory.stat
};

// The directories of the memory cgroups this process is in, innermost first,
// up to the mount point (v2: the unified hierarchy; v1: the memory controller).
std::vector<CgroupFiles> memory_cgroups() {
  std::vector<CgroupFiles> out;
  std::string membership;
  if (!read_text("/proc/self/cgroup", &membership)) return out;
  std::istringstream lines(membership);
  std::string line;
  while (std::getline(lines, line)) {
    const std::size_t first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    std::string path = line.substr(second + 1);
    CgroupFiles files;
    std::string root;
    if (controllers.empty()) {
      root = "/sys/fs/cgroup";
      files = {"", "memory.max", "memory.current", "file"};
    } else if (("," + controllers + ",").find(",memory,") != std::string::npos) {
      root = "/sys/fs/cgroup/memory";
      files = {"", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_cache"};
    } else {
      continue;
    }
    // Inside a container the path may name the host's hierarchy: then only the mount point is ours.
    std::ifstream probe(root + path + "/" + files.limit);
    if (!probe) path = "";
    for (;;) {
      files.dir = root + path;
      out.push_back(files);
      if (path.empty() || path == "/") break;
      path = path.substr(0, path.find_last_of('/'));
    }
  }
  return out;
}

void lower_to(AvailableMemory* available, std::uint64_t bytes, const std::string& source) {
  if (!available->known || bytes < available->bytes) {
    available->known = true;
    available->bytes = bytes;
    available->source = source;
  }
}

void apply_cgroup(AvailableMemory* available, std::uint64_t limit, std::uint64_t usage, std::uint64_t file_cache,
                  const std::string& name) {
  if (limit == 0 || limit >= kNoLimit) return;
  const std::uint64_t held = usage - std::min(usage, file_cache);
  lower_to(available, limit - std::min(limit, held), "the limit of memory cgroup " + name);
}

}  // namespace

AvailableMemory available_memory_from(const std::string& meminfo, std::uint64_t cgroup_limit,
                                      std::uint64_t cgroup_usage, std::uint64_t cgroup_file_cache,
                                      const std::string& cgroup_name) {
  AvailableMemory available;
  std::uint64_t kilobytes = 0;
  if (find_value(meminfo, "MemAvailable", &kilobytes)) {
    lower_to(&available, kilobytes * 1024, "MemAvailable in /proc/meminfo");
  }
  apply_cgroup(&available, cgroup_limit, cgroup_usage, cgroup_file_cache, cgroup_name);
  return available;
}

AvailableMemory available_memory() {
  std::string meminfo;
  read_text("/proc/meminfo", &meminfo);
  AvailableMemory available = available_memory_from(meminfo, 0, 0, 0, "");
  for (const CgroupFiles& cgroup : memory_cgroups()) {
    std::uint64_t limit = 0, usage = 0, file_cache = 0;
    std::string stat;
    if (!read_number(cgroup.dir + "/" + cgroup.limit, &limit) ||
        !read_number(cgroup.dir + "/" + cgroup.usage, &usage)) {
      continue;
    }
    if (read_text(cgroup.dir + "/memory.stat", &stat)) find_value(stat, cgroup.file_cache, &file_cache);
    apply_cgroup(&available, limit, usage, file_cache, cgroup.dir);
  }
  return available;
}

}  // namespace zipmoe
