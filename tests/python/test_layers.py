"""The C++ core is a one-way stack of layers with Status inside (docs/ARCHITECTURE.md): tools/check_layers.py finds
no include that points up or across the stack and no catch inside the core, and it does find them when there are."""

import importlib.util
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]


def load_checker():
    spec = importlib.util.spec_from_file_location("check_layers", REPO / "tools" / "check_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_include_points_down_the_stack():
    assert load_checker().check() == []


def test_the_checker_reports_includes_up_across_and_out_of_the_stack(tmp_path):
    checker = load_checker()
    files = {
        "cpp/cache/a.cpp": '#include "cache/a.h"\n#include "sched/io_queue.h"\n#include "model/config.h"\n',
        "cpp/codec/b.cpp": '#include "kernels/kernels.h"\n#include "common/status.h"\n',
        "cpp/kernels/c.h": '#include "zipmoe/model.h"\n#include "zipmoe/types.h"\n',
        "cpp/newfolder/d.cpp": '#include "common/status.h"\n',
        "include/zipmoe/cache.h": '#include "common/status.h"\n#include "zipmoe/types.h"\n',
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    problems = checker.check(tmp_path)
    assert problems == [
        'cpp/cache/a.cpp:3: cache includes "model/config.h" (model, above it)',
        'cpp/codec/b.cpp:1: codec includes "kernels/kernels.h" (kernels, beside it)',
        'cpp/kernels/c.h:1: kernels includes "zipmoe/model.h" (model, above it)',
        "cpp/newfolder/d.cpp: folder 'newfolder' has no place in the stack (add it to LAYERS)",
        'include/zipmoe/cache.h:1: public header includes internal "common/status.h"',
    ]


def test_no_catch_inside_the_core():
    assert load_checker().check_catches() == []


def test_the_checker_reports_a_catch_inside_the_core(tmp_path):
    checker = load_checker()
    files = {
        "cpp/cache/a.cpp": "void f() {\n  try {\n    g();\n  } catch (const std::exception& e) {\n  }\n}\n",
        "cpp/sched/b.cpp": "// a comment may say catch (anything)\n",
        "cpp/bindings/c.cpp": "} catch (const Error& e) {\n",
        "cpp/common/thread_pool.cpp": "} catch (...) {\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert checker.check_catches(tmp_path) == ["cpp/cache/a.cpp:4: catch inside the core (return a Status instead)"]
