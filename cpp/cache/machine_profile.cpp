#include "cache/machine_profile.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "common/cpu_features.h"
#include "common/file_io.h"
#include "common/json.h"

namespace zipmoe::cache {

namespace {

constexpr const char* kFormat = "zipmoe-machine-profile";
constexpr int kVersion = 1;

std::string read_small_file(const std::string& path, std::size_t limit = 1 << 20) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::string text(limit, '\0');
  in.read(&text[0], static_cast<std::streamsize>(limit));
  text.resize(static_cast<std::size_t>(in.gcount()));
  return text;
}

std::string trim(const std::string& s) {
  const std::size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r\n") - a + 1);
}

// What /proc/cpuinfo says of the CPU model, once (the first processor's
// identifying lines: frequencies and per-core ids change, these do not).
std::string cpu_identity() {
  std::istringstream in(read_small_file("/proc/cpuinfo"));
  std::string line, out;
  int processors = 0;
  bool first = true;
  while (std::getline(in, line)) {
    const std::size_t colon = line.find(':');
    if (colon == std::string::npos) {
      if (!trim(line).empty()) continue;
      if (processors > 0) first = false;
      continue;
    }
    const std::string name = trim(line.substr(0, colon));
    if (name == "processor") ++processors;
    if (!first) continue;
    for (const char* wanted : {"vendor_id", "model name", "cpu family", "model", "stepping", "flags", "CPU implementer",
                               "CPU part", "CPU variant", "Features"}) {
      if (name == wanted) out += name + "=" + trim(line.substr(colon + 1)) + ";";
    }
  }
  return out + "processors=" + std::to_string(processors) + ";hardware_threads=" +
         std::to_string(std::thread::hardware_concurrency());
}

std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string profile_path(const std::string& key) {
  const std::string dir = machine_profile_dir();
  if (dir.empty()) return "";
  char name[40];
  std::snprintf(name, sizeof(name), "%016llx.json", static_cast<unsigned long long>(fnv1a(key)));
  return dir + "/machines/" + name;
}

bool plausible(double v, double low, double high) { return std::isfinite(v) && v >= low && v <= high; }

// Keeps the most recently written profiles (one per container file ever
// loaded with a budget would otherwise pile up).
constexpr std::size_t kMaxProfiles = 64;

void prune(const std::string& dir) {
  std::vector<std::pair<long long, std::string>> files;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name.size() != 21 || name.compare(16, 5, ".json") != 0) continue;
      struct stat st;
      if (::stat((dir + "/" + name).c_str(), &st) == 0) files.emplace_back(static_cast<long long>(st.st_mtime), name);
    }
    ::closedir(d);
  }
  if (files.size() <= kMaxProfiles) return;
  std::sort(files.begin(), files.end());
  for (std::size_t i = 0; i + kMaxProfiles < files.size(); ++i) ::unlink((dir + "/" + files[i].second).c_str());
}

}  // namespace

std::string machine_profile_dir() {
  if (const char* dir = std::getenv("ZIPMOE_CACHE_DIR"); dir && *dir) return dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::string(xdg) + "/zipmoe";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/zipmoe";
  return "";
}

std::string machine_profile_key(const format::ContainerFile& file, Isa isa, int threads, IoMode mode) {
  std::string key = std::string(kFormat) + " " + std::to_string(kVersion) + ";";
  key += cpu_identity() + ";";
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) == 0) key += std::string("host=") + host + ";";
  key += "machine_id=" + trim(read_small_file("/etc/machine-id", 256)) + ";";
  key += std::string("isa=") + isa_name(isa) + ";threads=" + std::to_string(threads) + ";io=" +
         std::to_string(static_cast<int>(mode)) + ";direct=" + (file.direct_io_active() ? "1" : "0") + ";";
  struct stat st;
  if (::stat(file.path().c_str(), &st) == 0) {
    key += "file=" + std::to_string(static_cast<unsigned long long>(st.st_dev)) + ":" +
           std::to_string(static_cast<unsigned long long>(st.st_ino)) + ":" +
           std::to_string(static_cast<long long>(st.st_size)) + ":" + std::to_string(static_cast<long long>(st.st_mtim.tv_sec)) +
           "." + std::to_string(static_cast<long long>(st.st_mtim.tv_nsec));
  } else {
    key += "file=" + file.path() + ":" + std::to_string(file.file_size());
  }
  return key;
}

bool load_machine_profile(const std::string& key, MachineSpeeds* speeds) {
  const std::string path = profile_path(key);
  if (path.empty()) return false;
  const std::string text = read_small_file(path, 1 << 16);
  json::Value root;
  if (text.empty() || !json::parse(text, &root).ok() || !root.is_object()) return false;
  const json::Value* format = root.find("format");
  const json::Value* version = root.find("version");
  const json::Value* stored_key = root.find("key");
  if (!format || format->as_string() != kFormat || !version || version->as_int() != kVersion || !stored_key ||
      stored_key->as_string() != key) {
    return false;
  }
  MachineSpeeds s;
  auto number = [&](const char* name, double* out) {
    const json::Value* v = root.find(name);
    *out = v && v->is_number() ? v->as_number() : -1;
  };
  number("storage_bandwidth", &s.storage_bandwidth);
  number("read_latency", &s.read_latency);
  number("decode_throughput", &s.decode_throughput);
  number("coded_decode_throughput", &s.coded_decode_throughput);
  number("matmul_throughput", &s.matmul_throughput);
  number("merge_throughput", &s.merge_throughput);
  if (!plausible(s.storage_bandwidth, 1e6, 1e12) || !plausible(s.read_latency, 0, 1) ||
      !plausible(s.decode_throughput, 1e6, 1e13) || !plausible(s.coded_decode_throughput, 0, 1e13) ||
      !plausible(s.matmul_throughput, 1e6, 1e13) || !plausible(s.merge_throughput, 1e6, 1e13)) {
    return false;
  }
  *speeds = s;
  return true;
}

void save_machine_profile(const std::string& key, const MachineSpeeds& speeds) {
  const std::string path = profile_path(key);
  if (path.empty()) return;
  const std::string dir = machine_profile_dir();
  ::mkdir(dir.c_str(), 0755);  // failures show at create() below
  ::mkdir((dir + "/machines").c_str(), 0755);
  const json::Value root = json::Value::object({
      {"format", json::Value::string(kFormat)},
      {"version", json::Value::integer(kVersion)},
      {"key", json::Value::string(key)},
      {"storage_bandwidth", json::Value::number(speeds.storage_bandwidth)},
      {"read_latency", json::Value::number(speeds.read_latency)},
      {"decode_throughput", json::Value::number(speeds.decode_throughput)},
      {"coded_decode_throughput", json::Value::number(speeds.coded_decode_throughput)},
      {"matmul_throughput", json::Value::number(speeds.matmul_throughput)},
      {"merge_throughput", json::Value::number(speeds.merge_throughput)},
  });
  const std::string text = json::serialize(root) + "\n";
  std::unique_ptr<AtomicOutputFile> out;
  if (!AtomicOutputFile::create(path, &out).ok()) return;
  if (!out->append(text.data(), text.size()).ok() || !out->commit().ok()) out->discard();
  prune(dir + "/machines");
}

}  // namespace zipmoe::cache
