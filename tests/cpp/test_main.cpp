#include <cstring>
#include <exception>

#include "test_framework.h"

int main(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : nullptr;
  int passed = 0, failed = 0;
  for (const auto& test : ztest::registry()) {
    if (filter && !std::strstr(test.name, filter)) continue;
    ztest::failures_in_current_test() = 0;
    std::fprintf(stderr, "[ RUN  ] %s\n", test.name);
    try {
      test.fn();
    } catch (const std::exception& e) {
      ztest::report_failure(__FILE__, __LINE__, std::string("unexpected exception: ") + e.what());
    } catch (...) {
      ztest::report_failure(__FILE__, __LINE__, "unexpected non-standard exception");
    }
    if (ztest::failures_in_current_test() == 0) {
      ++passed;
      std::fprintf(stderr, "[  OK  ] %s\n", test.name);
    } else {
      ++failed;
      std::fprintf(stderr, "[ FAIL ] %s\n", test.name);
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
