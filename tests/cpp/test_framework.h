// A small self-contained test harness for the C++ unit tests.
//
// Chosen over GoogleTest/Catch2 so that the aarch64 cross build (run under
// qemu-user in CI) needs nothing beyond the cross compiler.
//
//   ZTEST(suite_name) { ZCHECK(x == 1); ZCHECK_EQ(a, b); }
//
// A suite is one source file: the tests in test_codec.cpp form the suite
// "codec". The runner prints one line per failure and "N passed, N failed" at
// the end. `zipmoe_tests --suite codec` runs one suite (ctest has one entry per
// suite, see CMakeLists.txt), `zipmoe_tests --list-suites` names them, and
// `zipmoe_tests FILTER` runs the tests whose name contains FILTER.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace ztest {

struct TestCase {
  const char* name;
  std::string suite;
  std::function<void()> fn;
};

// "path/to/test_codec.cpp" -> "codec".
inline std::string suite_of_file(const char* file) {
  std::string name(file);
  const auto slash = name.find_last_of("/\\");
  if (slash != std::string::npos) name.erase(0, slash + 1);
  if (name.rfind("test_", 0) == 0) name.erase(0, 5);
  const auto dot = name.rfind('.');
  if (dot != std::string::npos) name.erase(dot);
  return name;
}

inline std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

inline int& failures_in_current_test() {
  static int n = 0;
  return n;
}

struct Registrar {
  Registrar(const char* name, const char* file, std::function<void()> fn) {
    registry().push_back({name, suite_of_file(file), std::move(fn)});
  }
};

inline void report_failure(const char* file, int line, const std::string& what) {
  ++failures_in_current_test();
  std::fprintf(stderr, "  %s:%d: check failed: %s\n", file, line, what.c_str());
}

template <typename T>
void print_value(std::ostream& os, const T& v) {
  if constexpr (std::is_arithmetic_v<T>) {
    os << +v;  // show chars as numbers
  } else {
    os << v;
  }
}

template <typename A, typename B>
std::string describe(const A& a, const B& b, const char* ea, const char* eb) {
  std::ostringstream os;
  os << ea << " == " << eb << " (";
  print_value(os, a);
  os << " vs ";
  print_value(os, b);
  os << ")";
  return os.str();
}

}  // namespace ztest

#define ZTEST_CAT2(a, b) a##b
#define ZTEST_CAT(a, b) ZTEST_CAT2(a, b)
#define ZTEST(name)                                                                        \
  static void ztest_fn_##name();                                                           \
  static ::ztest::Registrar ZTEST_CAT(ztest_reg_, name)(#name, __FILE__, ztest_fn_##name); \
  static void ztest_fn_##name()

#define ZCHECK(cond)                                                     \
  do {                                                                   \
    if (!(cond)) ::ztest::report_failure(__FILE__, __LINE__, #cond);     \
  } while (0)

#define ZCHECK_EQ(a, b)                                                                        \
  do {                                                                                         \
    const auto& _za = (a);                                                                     \
    const auto& _zb = (b);                                                                     \
    if (!(_za == _zb)) ::ztest::report_failure(__FILE__, __LINE__, ::ztest::describe(_za, _zb, #a, #b)); \
  } while (0)

// Fails the test (and returns from it) when the expression throws nothing.
#define ZCHECK_THROWS(expr, ExceptionType)                                              \
  do {                                                                                  \
    bool _zthrown = false;                                                              \
    try {                                                                               \
      (void)(expr);                                                                     \
    } catch (const ExceptionType&) {                                                    \
      _zthrown = true;                                                                  \
    } catch (...) {                                                                     \
    }                                                                                   \
    if (!_zthrown) ::ztest::report_failure(__FILE__, __LINE__, #expr " throws " #ExceptionType); \
  } while (0)
