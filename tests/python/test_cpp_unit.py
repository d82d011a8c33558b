"""Builds the C++ unit tests (tests/cpp) with CMake and runs them."""

import os
import shutil
import subprocess

import pytest

from conftest import REPO

BUILD = REPO / "build" / "cpp-tests"


@pytest.fixture(scope="module")
def cpp_test_binary():
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    if not (REPO / "CMakeLists.txt").exists():
        pytest.skip("not running from a source checkout")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(REPO), "-B", str(BUILD), *generator, "-DZIPMOE_BUILD_TESTS=ON",
                    "-DZIPMOE_BUILD_PYTHON=OFF", "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True)
    jobs = str(os.cpu_count() or 2)
    build = subprocess.run(["cmake", "--build", str(BUILD), "-j", jobs, "--target", "zipmoe_tests"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-5000:] + build.stderr[-5000:]
    return BUILD / "tests" / "cpp" / "zipmoe_tests"


def test_cpp_unit_tests_pass(cpp_test_binary):
    run = subprocess.run([str(cpp_test_binary)], capture_output=True, text=True, timeout=900)
    print(run.stdout)
    assert run.returncode == 0, run.stderr[-10000:]
    assert " passed, 0 failed" in run.stdout


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_cpp_unit_tests_pass_with_forced_isa(cpp_test_binary, isa):
    import zipmoe

    if isa not in zipmoe.available_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    env = dict(os.environ, ZIPMOE_ISA=isa)
    run = subprocess.run([str(cpp_test_binary)], capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stderr[-10000:]
