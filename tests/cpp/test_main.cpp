// The test runner:
//
//   zipmoe_tests                  every test
//   zipmoe_tests --suite codec    the tests of test_codec.cpp (one ctest entry each)
//   zipmoe_tests --list-suites    the suite names, one a line
//   zipmoe_tests FILTER           the tests whose name contains FILTER
//
// Exit status: 0 all passed, 1 a test failed, 2 bad usage, and kSkipped when
// ZIPMOE_ISA names a path this CPU cannot run (ctest reports those entries as
// skipped rather than running the default path under the forced path's name).
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <set>
#include <string>
#include <vector>

#include "common/cpu_features.h"
#include "test_framework.h"

namespace {

constexpr int kSkipped = 77;  // SKIP_RETURN_CODE in tests/cpp/CMakeLists.txt

struct Options {
  const char* suite = nullptr;
  const char* filter = nullptr;
  bool list_suites = false;
};

std::set<std::string> suite_names() {
  std::set<std::string> names;
  for (const auto& test : ztest::registry()) names.insert(test.suite);
  return names;
}

bool parse_options(int argc, char** argv, Options* options) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--suite") == 0 && i + 1 < argc) {
      options->suite = argv[++i];
    } else if (std::strcmp(argv[i], "--list-suites") == 0) {
      options->list_suites = true;
    } else if (argv[i][0] != '-' && !options->filter) {
      options->filter = argv[i];
    } else {
      std::fprintf(stderr, "usage: %s [--suite NAME | --list-suites] [FILTER]\n", argv[0]);
      return false;
    }
  }
  if (options->suite && !suite_names().count(options->suite)) {
    std::fprintf(stderr, "no suite named '%s' (see --list-suites)\n", options->suite);
    return false;
  }
  return true;
}

// kSkipped when ZIPMOE_ISA forces a path this CPU/build lacks, 2 when it names
// no path at all, 0 otherwise.
int check_forced_isa() {
  const char* forced = std::getenv("ZIPMOE_ISA");
  if (!forced || !*forced) return 0;
  zipmoe::Isa isa;
  if (!zipmoe::parse_isa(forced, &isa)) {
    std::fprintf(stderr, "ZIPMOE_ISA='%s' is not one of scalar, avx2, avx512, neon\n", forced);
    return 2;
  }
  if (!zipmoe::isa_supported(isa)) {
    std::printf("ZIPMOE_ISA=%s: this CPU/build cannot run that path; nothing was tested\n", forced);
    return kSkipped;
  }
  return 0;
}

bool run_one(const ztest::TestCase& test) {
  ztest::failures_in_current_test() = 0;
  std::fprintf(stderr, "[ RUN  ] %s\n", test.name);
  try {
    test.fn();
  } catch (const std::exception& e) {
    ztest::report_failure(__FILE__, __LINE__, std::string("unexpected exception: ") + e.what());
  } catch (...) {
    ztest::report_failure(__FILE__, __LINE__, "unexpected non-standard exception");
  }
  const bool ok = ztest::failures_in_current_test() == 0;
  std::fprintf(stderr, "[ %s ] %s\n", ok ? " OK " : "FAIL", test.name);
  return ok;
}

// The expert cache stores the machine's measured speeds per container file
// (cache/machine_profile.h): tests write containers by the hundred, so their
// profiles go to a directory of this run, not the user's cache.
class MachineProfileDir {
 public:
  MachineProfileDir() {
    const char* set = std::getenv("ZIPMOE_CACHE_DIR");
    if (set && *set) return;
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/zipmoe-tests-cache-XXXXXX";
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    if (::mkdtemp(name.data()) == nullptr) return;
    path_ = name.data();
    ::setenv("ZIPMOE_CACHE_DIR", path_.c_str(), 1);
  }
  ~MachineProfileDir() {
    if (!path_.empty()) std::system(("rm -rf '" + path_ + "'").c_str());
  }

 private:
  std::string path_;
};

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!parse_options(argc, argv, &options)) return 2;
  const MachineProfileDir profiles;
  if (options.list_suites) {
    for (const auto& name : suite_names()) std::printf("%s\n", name.c_str());
    return 0;
  }
  if (const int status = check_forced_isa()) return status;
  int passed = 0, failed = 0;
  for (const auto& test : ztest::registry()) {
    if (options.suite && test.suite != options.suite) continue;
    if (options.filter && !std::strstr(test.name, options.filter)) continue;
    if (run_one(test)) {
      ++passed;
    } else {
      ++failed;
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
