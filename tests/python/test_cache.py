"""The tiered expert cache (zipmoe.load(..., memory_budget=...)): the guarantees of docs/CACHE.md.

- Logits bit-identical to the fully resident run for every budget from the minimum
  to everything, every policy, thread count, I/O mode, prefetch setting and tier set,
  on tiny models of several families and on a small one with skewed routing.
- A budget below the minimum is a BudgetError that states the minimum.
- Statistics add up: hits + misses = requests, bytes read = the chunks of the experts
  fetched.
- The resident size of a process stays within budget + the documented overhead over
  a long generation.
- A container truncated or overwritten under a running model fails that call with a
  zipmoe error (no crash, no hang) and the model works again once the file is back.
- Routing profiles: recorded (`zipmoe profile`), saved, read back by the planner.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import zipmoe
from zipmoe.model import parse_size

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import make_tiny_model  # noqa: E402

# The fixed overhead of docs/CACHE.md: beyond the budget, a process holds what it
# held before load (interpreter, libraries) plus at most this much.
RSS_OVERHEAD = 32 << 20


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> .zmoe path; built on first use."""
    root = tmp_path_factory.mktemp("cache")
    cache = {}

    def get(name):
        if name in cache:
            return cache[name]
        if name == "small":
            # 6 MoE layers of 16 experts (top 4) of 128 x 256, routers skewed as trained ones are.
            folder = make_tiny_model("qwen2_moe", root / name, tokenizer=False, hidden_size=128,
                                     moe_intermediate_size=256, shared_expert_intermediate_size=128, num_experts=16,
                                     num_experts_per_tok=4, num_hidden_layers=6, num_attention_heads=4,
                                     num_key_value_heads=2, max_position_embeddings=512)
            skew_routers(folder)
        elif name == "rss":
            # ~100 MB of experts: big enough that holding them would show in the resident size.
            folder = make_tiny_model("mixtral", root / name, tokenizer=False, hidden_size=256, intermediate_size=512,
                                     num_local_experts=16, num_experts_per_tok=2, num_hidden_layers=12,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
        else:
            folder = make_tiny_model(name, root / name, tokenizer=False)
        path = root / f"{name}.zmoe"
        zipmoe.convert(folder, path, threads=2)
        cache[name] = path
        return path

    return get


def skew_routers(folder):
    """Scales router rows so that a few experts take most tokens (rank r gets 1 / (1 + r)^0.7)."""
    import torch
    from safetensors.torch import load_file, save_file

    files = sorted(folder.glob("*.safetensors"))
    for f in files:
        tensors = load_file(str(f))
        for name, t in tensors.items():
            if name.endswith("mlp.gate.weight"):
                layer = int(re.search(r"layers\.(\d+)\.", name).group(1))
                order = torch.roll(torch.arange(t.shape[0]), 3 * layer)
                scale = 3.0 / (1.0 + order.float()) ** 0.7
                tensors[name] = (t.float() * scale[:, None]).to(t.dtype)
        save_file(tensors, str(f), metadata={"format": "pt"})


def prompt(length, seed=0, vocab=128):
    return np.random.default_rng(seed).integers(0, vocab, size=length)


def run(model, tokens, prompt_length):
    """A prompt step, then one step per token: every row of logits."""
    rows = [model.logits(tokens[:prompt_length])]
    rows += [model.eval([int(t)]) for t in tokens[prompt_length:]]
    return np.concatenate(rows)


def minimum_budget(path, **options):
    with pytest.raises(zipmoe.BudgetError) as error:
        zipmoe.load(path, memory_budget=1, **options)
    match = re.search(r"the minimum is [^(]*\((\d+) bytes\)", str(error.value))
    assert match, str(error.value)
    return int(match.group(1))


def check_stats(model):
    s = model.stats()
    assert s["streaming"]
    total = s["total"]
    assert total["hits"] + total["misses"] == total["requests"]
    assert sum(total["served_from"].values()) == total["requests"]
    for key in ("requests", "bytes_read", "prefetch_bytes_read", "chunks_read", "decoded_bytes", "prefetch_hits"):
        assert sum(layer[key] for layer in s["layers"]) == total[key], key
    assert total["prefetch_bytes_read"] <= total["bytes_read"]
    for tier in zipmoe.model.EXPERT_TIERS:
        assert s["tier_bytes"][tier] <= s["tier_capacity"][tier] or tier == "absent"
    assert s["working_set_bytes"] + sum(s["tier_bytes"].values()) <= model.memory()["experts"]
    assert sum(s["experts_in"].values()) == len(s["layers"]) * model.info["num_experts"]
    return s


# ------------------------------------------------------------------------------------- bit-exact


@pytest.mark.parametrize("name", ["qwen2_moe", "deepseek_v3", "gpt_oss", "mixtral"])
def test_tiny_models_bit_identical_from_the_minimum_budget_to_everything(built, name):
    path = built(name)
    tokens = prompt(24, seed=1)
    options = dict(precision="exact", max_context=64, batch=8)
    resident = zipmoe.load(path, threads=2, **options)
    expected = run(resident, tokens, 10)
    assert not resident.stats()["streaming"]
    assert resident.stats()["total"]["served_from"]["full"] == resident.stats()["total"]["requests"] > 0
    minimum = minimum_budget(path, threads=2, **options)
    everything = resident.memory()["total"] + (1 << 20)
    for i, budget in enumerate(np.linspace(minimum, everything, 5).astype(int)):
        model = zipmoe.load(path, threads=1 + i % 2, memory_budget=int(budget), io=("pread", "direct", "mmap")[i % 3],
                            prefetch=i % 2 == 0, **options)
        assert np.array_equal(run(model, tokens, 10), expected), (name, budget)
        assert model.memory()["peak"] <= budget
        check_stats(model)


def test_small_model_every_policy_thread_count_io_mode_and_tier_set(built):
    path = built("small")
    tokens = prompt(48, seed=2)
    options = dict(precision="exact", max_context=128, batch=16)
    expected = run(zipmoe.load(path, threads=2, **options), tokens, 16)
    minimum = minimum_budget(path, threads=2, **options)
    resident_total = zipmoe.load(path, threads=1, **options).memory()["total"]
    budgets = [minimum, minimum + (resident_total - minimum) // 8, minimum + (resident_total - minimum) // 3,
               resident_total + (1 << 20)]
    combos = []
    for b, budget in enumerate(budgets):
        for p, policy in enumerate(zipmoe.model.CACHE_POLICIES):
            combos.append(dict(memory_budget=int(budget), cache_policy=policy, threads=1 + (b + p) % 2,
                               io=("pread", "direct", "mmap")[(b + p) % 3], prefetch=(b + p) % 2 == 0))
    for tiers in (zipmoe.model.PAPER_TIERS, ("compressed",), ("sm",), ("e",), ("full",), ("full", "e")):
        combos.append(dict(memory_budget=int(budgets[2]), tiers=tiers, threads=2, prefetch=True))
    combos.append(dict(memory_budget=int(budgets[1]), reorder_fetches=False, threads=2))
    for combo in combos:
        model = zipmoe.load(path, **options, **combo)
        assert np.array_equal(run(model, tokens, 16), expected), combo
        s = check_stats(model)
        assert model.memory()["peak"] <= combo["memory_budget"]
        if "tiers" in combo:
            for tier in ("full", "compressed", "sm", "e"):
                if tier not in combo["tiers"]:
                    assert s["experts_in"][tier] == 0 and s["tier_capacity"][tier] == 0, (combo, tier)


def test_more_memory_means_fewer_bytes_read(built):
    path = built("small")
    tokens = prompt(40, seed=4)
    options = dict(max_context=128, batch=16, threads=2, prefetch=False)
    minimum = minimum_budget(path, **options)
    span = zipmoe.load(path, **options).memory()["total"] - minimum
    read = []
    for extra in (0, span // 8, span // 3, 2 * span):
        model = zipmoe.load(path, memory_budget=minimum + extra, **options)
        run(model, tokens, 8)
        s = model.stats()
        read.append(s["total"]["bytes_read"])
        if extra == 0:
            assert s["total"]["misses"] == s["total"]["requests"]  # nothing fits beside the working set
    assert read[0] > read[1] > read[3], read
    assert read[3] == 0  # everything resident


# ------------------------------------------------------------------------------- budget and stats


def test_budget_error_states_the_minimum(built):
    path = built("qwen2_moe")
    minimum = minimum_budget(path, threads=1, max_context=64)
    with pytest.raises(zipmoe.BudgetError, match=r"minimum is .*dense weights .*KV cache .*expert cache"):
        zipmoe.load(path, threads=1, max_context=64, memory_budget=minimum - 1)
    model = zipmoe.load(path, threads=1, max_context=64, memory_budget=minimum)
    assert model.memory()["total"] <= minimum
    model.logits([1, 2, 3])
    # a dense model: the minimum is its non-expert part
    dense = built("llama")
    dense_minimum = minimum_budget(dense, threads=1, max_context=64)
    zipmoe.load(dense, threads=1, max_context=64, memory_budget=dense_minimum).logits([1, 2])
    # smaller contexts lower the minimum
    assert minimum_budget(path, threads=1, max_context=32) < minimum


def test_bytes_read_are_the_chunks_of_the_experts_routed(built):
    # At the minimum budget without prefetch nothing is kept: every request reads both
    # planes of its expert, so bytes read = sum over single-token steps of chunk sizes.
    path = built("small")
    model = zipmoe.load(path, threads=2, max_context=128, batch=16, prefetch=False,
                        memory_budget=minimum_budget(path, threads=2, max_context=128, batch=16))
    for t in prompt(20, seed=7):
        model.eval([int(t)])
    s = check_stats(model)
    profile = model.routing_profile()
    expected = chunks = 0
    with zipmoe.open_container(path) as c:
        table = c.chunks()
        for layer in profile["layers"]:
            assert layer["tokens"] == 20
            for expert, count in enumerate(layer["counts"]):
                for projection in ("gate", "up", "down"):
                    info = next(t for t in c.tensors if t.role == "expert" and t.layer == layer["layer"]
                                and t.expert == expert and t.projection == projection)
                    expected += count * (table[info.exponent_chunk]["stored_size"] + table[info.sm_chunk]["stored_size"])
                    chunks += 2 * count
    assert s["total"]["requests"] == 20 * 4 * 6
    assert s["total"]["misses"] == s["total"]["requests"]
    assert s["total"]["bytes_read"] == expected
    assert s["total"]["chunks_read"] == chunks
    assert s["total"]["decode_seconds"] > 0
    model.reset_stats()
    assert model.stats()["total"]["requests"] == 0


def test_prefetch_statistics(built):
    path = built("small")
    minimum = minimum_budget(path, threads=2, max_context=128, batch=16)
    model = zipmoe.load(path, threads=2, max_context=128, batch=16, memory_budget=minimum + (2 << 20))
    for t in prompt(30, seed=8):
        model.eval([int(t)])
    s = check_stats(model)
    assert s["prefetches"] > 0
    assert s["prefetches_used"] <= s["prefetches"]
    assert s["total"]["prefetch_hits"] == s["prefetches_used"]
    assert s["steps"] == 30


# --------------------------------------------------------------------------------- resident size


RSS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import zipmoe

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    path, budget, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    before = status("VmRSS")
    model = zipmoe.load(path, threads=2, max_context=512, batch=16, memory_budget=budget or None, io=sys.argv[4])
    tokens = np.random.default_rng(0).integers(0, 128, size=steps)
    model.logits(tokens[:8])
    for t in tokens[8:]:
        model.eval([int(t)])
    print(json.dumps({"before": before, "hwm": status("VmHWM"), "file_pages": status("RssFile"),
                      "peak": model.memory()["peak"], "experts": model.memory()["experts"],
                      "stats": model.stats()["total"]}))
""")

# Mapped reads leave no file pages behind: at most one 256 KiB window per reader thread is mapped at a
# time (common/file_io.h), so mmap mode holds no more file pages than pread mode, up to those and noise.
MAPPED_WINDOWS_SLACK = 4 << 20


@functools.lru_cache(maxsize=None)
def measure_rss(path, budget, steps, io="pread"):
    done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(path), str(budget), str(steps), io],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("io", ["pread", "mmap"])
def test_peak_resident_size_stays_within_budget_over_a_long_generation(built, io):
    path = str(built("rss"))
    resident = measure_rss(path, 0, 40)
    # a budget well below the model: a fifth of the experts' bytes beside the rest
    dense = resident["peak"] - resident["experts"]
    budget = dense + resident["experts"] // 5
    streamed = measure_rss(path, budget, 220, io)
    assert streamed["peak"] <= budget
    assert streamed["stats"]["misses"] > 0
    assert streamed["hwm"] <= streamed["before"] + budget + RSS_OVERHEAD, (streamed, budget)
    # the check has teeth: the resident run holds far more than that
    assert resident["hwm"] > streamed["before"] + budget + RSS_OVERHEAD
    # File pages mapped by mmap mode must not build up either. On this model they stayed within the overhead
    # above even when every chunk read left the pages beside it mapped (8-10 MiB after 60 steps: the kernel
    # maps the cached pages around a faulting one, up to 64 KiB, and dropping the chunk's own pages left
    # those), but they grow with the number of chunks (36 MiB on the 6-layer benchmark model), so they are
    # compared with pread's directly.
    if io != "pread":
        baseline = measure_rss(path, budget, 220, "pread")
        assert streamed["file_pages"] <= baseline["file_pages"] + MAPPED_WINDOWS_SLACK, (streamed, baseline)


# ------------------------------------------------------------------------------ damaged files


DAMAGE_SCRIPT = textwrap.dedent("""
    import os, shutil, sys
    import numpy as np
    import zipmoe

    path, io, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
    original = open(path, "rb").read()
    tokens = np.arange(1, 9)
    expected = zipmoe.load(path, threads=2, max_context=64).logits(tokens)
    model = zipmoe.load(path, threads=2, max_context=64, memory_budget=budget, io=io)
    assert np.array_equal(model.logits(tokens), expected)
    results = []
    for damage in ("truncate", "overwrite"):
        if damage == "truncate":
            os.truncate(path, 8192)
        else:
            with open(path, "r+b") as f:
                f.seek(4096)
                f.write(bytes(len(original) - 3 * 4096))
        try:
            model.logits(tokens)
            results.append("no error")
        except zipmoe.ZipMoEError as e:
            results.append(type(e).__name__ + ": " + str(e))
        with open(path, "wb") as f:
            f.write(original)
        model.reset()
        assert np.array_equal(model.logits(tokens), expected), "not usable after the file came back"
    print("\\n".join(results))
""")


@pytest.mark.parametrize("io", ["pread", "direct", "mmap"])
def test_file_truncated_or_overwritten_under_a_running_model(built, tmp_path, io):
    source = built("qwen2_moe")
    path = tmp_path / "victim.zmoe"
    path.write_bytes(source.read_bytes())
    budget = minimum_budget(path, threads=2, max_context=64)
    done = subprocess.run([sys.executable, "-c", DAMAGE_SCRIPT, str(path), io, str(budget)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    truncated, overwritten = done.stdout.strip().splitlines()
    assert truncated.startswith("FormatError") and "truncated" in truncated and str(path) in truncated
    assert overwritten.startswith(("ChecksumError", "FormatError")) and str(path) in overwritten


# ---------------------------------------------------------------------------------- profiles


def test_routing_profile_round_trip_and_planner_input(built, tmp_path):
    path = built("small")
    model = zipmoe.load(path, threads=2, max_context=128)
    model.logits(prompt(30, seed=9))
    profile = model.routing_profile()
    assert profile["format"] == "zipmoe-routing-profile" and profile["num_experts"] == 16
    assert [layer["layer"] for layer in profile["layers"]] == list(range(6))
    for layer in profile["layers"]:
        assert layer["tokens"] == 30 and sum(layer["counts"]) == 30 * 4
    saved = tmp_path / "profile.json"
    model.save_routing_profile(saved)
    assert json.loads(saved.read_text()) == profile
    # the planner places the experts the profile says are hot
    budget = minimum_budget(path, threads=2, max_context=128) + (1 << 20)
    profiled = zipmoe.load(path, threads=2, max_context=128, memory_budget=budget, profile=saved, prefetch=False)
    run_tokens = prompt(30, seed=9)
    profiled.logits(run_tokens)
    uniform = zipmoe.load(path, threads=2, max_context=128, memory_budget=budget, prefetch=False)
    uniform.logits(run_tokens)
    assert profiled.stats()["total"]["hits"] > uniform.stats()["total"]["hits"]
    # profiles of another model, or malformed, are refused
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**profile, "num_experts": 8,
                                 "layers": [{**l, "counts": l["counts"][:8]} for l in profile["layers"]]}))
    with pytest.raises(zipmoe.InvalidArgumentError, match="routing profile"):
        zipmoe.load(path, memory_budget=budget, profile=other)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "zipmoe-routing-profile", "version": 1}')
    with pytest.raises(zipmoe.FormatError, match="num_layers"):
        zipmoe.load(path, memory_budget=budget, profile=bad)
    with pytest.raises(zipmoe.IoError):
        zipmoe.load(path, memory_budget=budget, profile=tmp_path / "missing.json")


def test_profile_command(built, tmp_path):
    path = built("small")
    out = tmp_path / "p.json"
    done = subprocess.run([sys.executable, "-m", "zipmoe", "profile", str(path), "-o", str(out), "--random", "3",
                           "--random-length", "12", "--generate", "4", "--threads", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "3 prompts, 48 tokens" in done.stdout
    profile = json.loads(out.read_text())
    assert all(layer["tokens"] == 48 for layer in profile["layers"])
    zipmoe.load(path, max_context=128, memory_budget=minimum_budget(path, max_context=128) + (1 << 20),
                profile=out).logits([1, 2, 3])
    no_prompt = subprocess.run([sys.executable, "-m", "zipmoe", "profile", str(path), "-o", str(out)],
                               capture_output=True, text=True, timeout=120)
    assert no_prompt.returncode == 2
    # Under a budget it also reports the machine's speeds and the plan (measured once per machine and file).
    budget = str(minimum_budget(path, max_context=128) + (1 << 20))
    streamed = subprocess.run([sys.executable, "-m", "zipmoe", "profile", str(path), "-o", str(out), "--random", "1",
                               "--random-length", "8", "--generate", "2", "--threads", "2", "--max-context", "128",
                               "--memory-budget", budget], capture_output=True, text=True, timeout=300)
    assert streamed.returncode == 0, streamed.stderr
    machine = re.search(r"machine \((measured|cached)\): reads [0-9.]+ GB/s \+ \d+ us per read, decoding [0-9.]+ GB/s",
                        streamed.stdout)
    assert machine, streamed.stdout
    assert re.search(r"plan: full \d+, compressed \d+, sm \d+, e \d+ of 96 experts", streamed.stdout)


def test_planner_measures_once_and_warns_when_raw_bytes_would_be_faster(built, tmp_path, monkeypatch):
    path = built("small")
    monkeypatch.setenv("ZIPMOE_CACHE_DIR", str(tmp_path))
    budget = minimum_budget(path, max_context=128) + (1 << 20)
    first = zipmoe.load(path, threads=2, max_context=128, memory_budget=budget)
    planner = first.stats()["planner"]
    assert planner["source"] == "measured"
    assert planner["storage_bandwidth"] > 0 and planner["decode_throughput"] > 0 and planner["other_cpu_seconds"] > 0
    expected = first.logits([5, 6, 7, 8])
    del first
    files = list((tmp_path / "machines").glob("*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert stored["storage_bandwidth"] == planner["storage_bandwidth"]
    # The same machine and file again: the stored speeds, nothing measured. Made slow to decode and fast to
    # read, the planner expects raw bytes to win and says so once, at load.
    stored.update(storage_bandwidth=1e11, read_latency=1e-6, decode_throughput=2e7, coded_decode_throughput=0.0)
    files[0].write_text(json.dumps(stored))
    with pytest.warns(UserWarning, match=r"decoding 0\.02 GB/s.*zipmoe convert --codec raw") as caught:
        model = zipmoe.load(path, threads=2, max_context=128, memory_budget=budget)
    assert len(caught) == 1
    planner = model.stats()["planner"]
    assert planner["source"] == "cached" and planner["compressed_slower_than_raw"]
    assert planner["seconds_per_token"] > planner["raw_seconds_per_token"] > 0
    np.testing.assert_array_equal(model.logits([5, 6, 7, 8]), expected)


# ------------------------------------------------------------------------------------ arguments


def test_sizes_and_bad_arguments(built):
    assert parse_size(123) == 123
    assert parse_size("4GB") == 4 * 10**9
    assert parse_size("4G") == parse_size("4GiB") == 4 << 30
    assert parse_size("1.5 MiB") == 3 << 19
    assert parse_size("300mb") == 300 * 10**6
    for bad in ("", "GB", "4 XB", "-1GB", -5, True, [1], "nan"):
        with pytest.raises(zipmoe.InvalidArgumentError):
            parse_size(bad)
    path = built("qwen2_moe")
    for kwargs in (dict(memory_budget=0), dict(memory_budget="4GB", cache_policy="mru"),
                   dict(memory_budget="4GB", tiers=("full", "warm")), dict(memory_budget="4GB", storage_bandwidth=-1),
                   dict(memory_budget="4GB", decode_throughput=float("inf"))):
        with pytest.raises(zipmoe.InvalidArgumentError):
            zipmoe.load(path, **kwargs)
    # the tier set may be given as a string
    model = zipmoe.load(path, memory_budget="64MB", tiers="full,sm")
    assert model.stats()["tier_capacity"]["compressed"] == 0
