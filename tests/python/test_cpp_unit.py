"""Builds the C++ unit tests (tests/cpp) and the C API's test programs (tests/c) with CMake and runs them once, under
ctest.

ctest has one entry per suite (cpp.<suite>), and one per instruction set (cpp.<suite>.<isa>, ZIPMOE_ISA forced) for
the suites whose code takes the process-default kernel path; see tests/cpp/CMakeLists.txt. The build is the
development build when ZIPMOE_DEV_BUILD names one configured with ZIPMOE_BUILD_TESTS=ON, else build/cpp-tests.
"""

import os
import pathlib
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree

import pytest

import zipmoe
from conftest import REPO


def _build_dir() -> pathlib.Path:
    dev = os.environ.get("ZIPMOE_DEV_BUILD")
    if dev:
        cache = pathlib.Path(dev) / "CMakeCache.txt"
        if cache.is_file() and "ZIPMOE_BUILD_TESTS:BOOL=ON" in cache.read_text(errors="replace"):
            return pathlib.Path(dev).resolve()
    return REPO / "build" / "cpp-tests"


@pytest.fixture(scope="module")
def cpp_build():
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    if not (REPO / "CMakeLists.txt").exists():
        pytest.skip("not running from a source checkout")
    build = _build_dir()
    if not (build / "CMakeCache.txt").is_file():
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        subprocess.run([cmake, "-S", str(REPO), "-B", str(build), *generator, "-DZIPMOE_BUILD_TESTS=ON",
                        "-DZIPMOE_BUILD_PYTHON=OFF", "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True)
    jobs = str(os.cpu_count() or 2)
    # zipmoe_tests, and with ZIPMOE_BUILD_SHARED the C API's test programs and libzipmoe (tests/c)
    targets = ["zipmoe_tests"]
    if "ZIPMOE_BUILD_SHARED:BOOL=OFF" not in (build / "CMakeCache.txt").read_text(errors="replace"):
        targets += ["zipmoe_c_tests", "zipmoe_cxx_link_tests"]
    done = subprocess.run([cmake, "--build", str(build), "-j", jobs, "--target", *targets],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    return build


def _ctest(cmake: str) -> str:
    beside = pathlib.Path(cmake).with_name("ctest")
    return str(beside) if beside.exists() else shutil.which("ctest")


def _suites(build: pathlib.Path) -> list:
    listed = subprocess.run([str(build / "tests" / "cpp" / "zipmoe_tests"), "--list-suites"], capture_output=True,
                            text=True, check=True)
    return listed.stdout.split()


def test_cpp_suites_pass_once_under_ctest(cpp_build, tmp_path):
    report = tmp_path / "ctest.xml"
    run = subprocess.run([_ctest(shutil.which("cmake")), "-j", str(os.cpu_count() or 2), "--output-on-failure",
                          "--no-tests=error", "--timeout", "600", "--output-junit", str(report)],
                         cwd=cpp_build, capture_output=True, text=True, timeout=1800)
    print(run.stdout[-20000:])
    assert run.returncode == 0, run.stdout[-10000:] + run.stderr[-5000:]

    status = {case.get("name"): case.get("status") for case in ElementTree.parse(report).iter("testcase")}
    available = set(zipmoe.available_isas())
    # the C API's programs (tests/c) run once each, on the default path
    expected = {name: "run" for name in status if name.startswith("c.")}
    for suite in _suites(cpp_build):
        per_isa = {name: name.rsplit(".", 1)[1] for name in status if name.startswith(f"cpp.{suite}.")}
        if not per_isa:
            expected[f"cpp.{suite}"] = "run"
        for name, isa in per_isa.items():
            expected[name] = "run" if isa in available else "notrun"
    # every suite ran once; the per-ISA entries ran on exactly the paths this CPU has and skipped the others
    assert status == expected
    assert "scalar" in {name.rsplit(".", 1)[1] for name, s in status.items() if s == "run" and name.count(".") == 2}
