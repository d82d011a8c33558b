"""The inference engine (zipmoe.load / zipmoe.Model) against transformers in FP32.

Every architecture runs as a tiny random model built at test time
(tiny_models.make_tiny_model), converted to .zmoe, and compared with
transformers on the same BF16-valued weights upcast to FP32: logits within
1e-2 x max|logit| over 40 positions, and identical greedy continuations of 32
tokens. Then the engine's own guarantees: eval() in pieces equals logits()
(KV cache), every codec gives bit-identical logits, 1 and 2 threads agree bit
for bit, every ISA path agrees with the scalar reference, and bad input fails
with the documented errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import zipmoe

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import make_tiny_model  # noqa: E402

PROMPT_POSITIONS = 40
GREEDY_TOKENS = 32
TOLERANCE = 1e-2

YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32,
        "mscale": 0.707, "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1}

# name -> (architecture, config overrides, load options). The plain ones cover every
# family; the others reach the features their configs switch on.
CASES = {
    "llama": ("llama", {}, {}),
    "qwen2": ("qwen2", {}, {}),
    "qwen2_moe": ("qwen2_moe", {}, {}),
    "qwen3_moe": ("qwen3_moe", {}, {}),
    "mixtral": ("mixtral", {}, {}),
    "olmoe": ("olmoe", {}, {}),
    "deepseek_v2": ("deepseek_v2", {}, {}),
    "deepseek_v3": ("deepseek_v3", {}, {}),
    "gpt_oss": ("gpt_oss", {}, {}),
    "granitemoe": ("granitemoe", {}, {}),
    "phimoe": ("phimoe", {}, {}),
    # group-limited greedy routing, YaRN with mscale (softmax scale), no q LoRA, scaled weights
    "deepseek_v2_groups_yarn": ("deepseek_v2", dict(topk_method="group_limited_greedy", n_group=2, topk_group=1,
                                                    q_lora_rank=None, routed_scaling_factor=1.5,
                                                    rope_parameters=YARN), {}),
    # sigmoid routing over groups (top-2 sums), YaRN
    "deepseek_v3_groups_yarn": ("deepseek_v3", dict(n_group=2, topk_group=1, n_routed_experts=8,
                                                    rope_parameters={**YARN, "mscale": 1.0, "mscale_all_dim": 1.0}),
                                {}),
    # rotate-half RoPE on the rope dims, unnormalized weights
    "deepseek_v3_neox": ("deepseek_v3", dict(rope_interleave=False, norm_topk_prob=False), {}),
    "granitemoe_multipliers": ("granitemoe", dict(embedding_multiplier=12.0, residual_multiplier=0.22,
                                                  attention_multiplier=0.015625, logits_scaling=8.0), {}),
    "olmoe_clip_qkv": ("olmoe", dict(clip_qkv=0.05), {}),
    "llama_llama3_rope_tied": ("llama", dict(rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                                              "factor": 8.0, "low_freq_factor": 1.0,
                                                              "high_freq_factor": 4.0,
                                                              "original_max_position_embeddings": 16},
                                             tie_word_embeddings=True), {}),
    "mixtral_sliding_window": ("mixtral", dict(sliding_window=8), {}),
    "qwen2_moe_sparse_step": ("qwen2_moe", dict(num_hidden_layers=3, decoder_sparse_step=2, norm_topk_prob=True), {}),
    "qwen3_moe_dense_layer": ("qwen3_moe", dict(mlp_only_layers=[0], norm_topk_prob=False), {}),
    "phimoe_longrope": ("phimoe", dict(rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                                        "short_factor": [1.0, 1.1, 1.3, 1.7],
                                                        "long_factor": [2.0, 3.0, 5.0, 9.0], "short_mscale": 1.2,
                                                        "long_mscale": 1.5, "original_max_position_embeddings": 64}),
                        {"max_context": 64}),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (hf folder, .zmoe path, load options); built on first use."""
    root = tmp_path_factory.mktemp("engine")
    built = {}

    def get(name):
        if name not in built:
            arch, overrides, options = CASES[name]
            folder = make_tiny_model(arch, root / name, tokenizer=False, **overrides)
            path = root / f"{name}.zmoe"
            zipmoe.convert(folder, path, threads=2)
            built[name] = (folder, path, options)
        return built[name]

    return get


def prompt(length=PROMPT_POSITIONS, seed=0, vocab=128):
    return np.random.default_rng(seed).integers(0, vocab, size=length)


def reference_model(folder):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()
    return model


def reference_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens)[None], dtype=torch.long)).logits[0].float().numpy()


def assert_close(ours, theirs, what):
    scale = float(np.abs(theirs).max())
    diff = float(np.abs(ours - theirs).max())
    assert diff <= TOLERANCE * scale, f"{what}: max|diff| {diff:.3g} > {TOLERANCE} x max|logit| {scale:.3g}"


# ----------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", list(CASES))
def test_logits_and_greedy_match_transformers(models, name):
    folder, path, options = models(name)
    reference = reference_model(folder)
    tokens = prompt()
    expected = reference_logits(reference, tokens)

    model = zipmoe.load(path, threads=2, **options)
    assert model.architecture == CASES[name][0]
    logits = model.logits(tokens)
    assert logits.dtype == np.float32 and logits.shape == (PROMPT_POSITIONS, 128)
    assert_close(logits, expected, name)

    # Greedy continuation: the engine's KV cache against transformers recomputing
    # the whole sequence. precision="exact" keeps the engine within ~1e-7 of FP32,
    # so that a near-tie between two logits cannot flip a choice.
    exact = zipmoe.load(path, threads=2, precision="exact", **options)
    short = list(tokens[:8])
    ours, theirs = [], []
    step = exact.logits(short)[-1]
    for _ in range(GREEDY_TOKENS):
        ours.append(int(step.argmax()))
        step = exact.eval([ours[-1]])[-1]
    sequence = list(short)
    for _ in range(GREEDY_TOKENS):
        theirs.append(int(reference_logits(reference, sequence)[-1].argmax()))
        sequence.append(theirs[-1])
    assert ours == theirs


# ------------------------------------------------------------------------------ engine guarantees


@pytest.mark.parametrize("name", ["llama", "qwen2_moe", "deepseek_v3", "gpt_oss"])
def test_eval_in_pieces_equals_logits(models, name):
    _, path, options = models(name)
    tokens = prompt()
    # exact: bit for bit, whatever the split (and across batch boundaries: batch=16)
    model = zipmoe.load(path, threads=2, precision="exact", batch=16, **options)
    full = model.logits(tokens)
    assert model.position == len(tokens)
    model.reset()
    assert model.position == 0
    pieces = [model.eval(tokens[:5]), model.eval(tokens[5:6]), model.eval(tokens[6:23]), model.eval(tokens[23:])]
    assert np.array_equal(np.concatenate(pieces), full)
    # last_only returns the last row of the same computation
    model.reset()
    model.eval(tokens[:30])
    assert np.array_equal(model.eval(tokens[30:], last_only=True), full[-1:])
    # fast: single-token steps never round activations; a split stays within tolerance
    fast = zipmoe.load(path, threads=2, **options)
    whole = fast.logits(tokens)
    fast.reset()
    split = np.concatenate([fast.eval(tokens[:7])] + [fast.eval([t]) for t in tokens[7:]])
    assert_close(split, whole, f"{name} fast split")


@pytest.mark.parametrize("name", ["qwen2_moe", "deepseek_v2", "gpt_oss"])
def test_every_codec_gives_bit_identical_logits_with_1_and_2_threads(models, tmp_path, name):
    folder, _, options = models(name)
    tokens = prompt()
    results = {}
    for codec in ("auto", "huffman", "rans", "raw"):
        path = tmp_path / f"{codec}.zmoe"
        zipmoe.convert(folder, path, codec=codec, threads=2)
        for threads in (1, 2):
            for precision in ("fast", "exact"):
                model = zipmoe.load(path, threads=threads, precision=precision, **options)
                results[(codec, threads, precision)] = model.logits(tokens)
    for precision in ("fast", "exact"):
        baseline = results[("raw", 1, precision)]
        for (codec, threads, p), logits in results.items():
            if p == precision:
                assert np.array_equal(logits, baseline), (codec, threads, precision)


@pytest.mark.parametrize("name", ["qwen3_moe", "deepseek_v3"])
def test_thread_count_does_not_change_logits(models, name):
    _, path, options = models(name)
    tokens = prompt(seed=3)
    for precision in ("fast", "exact"):
        results = [zipmoe.load(path, threads=t, precision=precision, **options).logits(tokens) for t in (1, 2, 3)]
        assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])


@pytest.mark.parametrize("name", ["llama", "qwen2_moe", "olmoe", "deepseek_v2", "gpt_oss", "phimoe"])
def test_every_isa_path_agrees_with_scalar(models, name):
    _, path, options = models(name)
    tokens = prompt(seed=5)
    scalar = zipmoe.load(path, threads=2, isa="scalar", **options).logits(tokens)
    scalar_exact = zipmoe.load(path, threads=1, isa="scalar", precision="exact", **options).logits(tokens)
    for isa in zipmoe.available_isas():
        for precision in ("fast", "exact"):
            model = zipmoe.load(path, threads=2, isa=isa, precision=precision, **options)
            assert model.isa == isa
            logits = model.logits(tokens)
            assert_close(logits, scalar, f"{name} {isa} {precision}")
            if precision == "exact":
                # the same bits on every path
                assert np.array_equal(logits, scalar_exact), f"{name} {isa}: exact logits differ from scalar"
                assert logits.tobytes() == scalar_exact.tobytes()


def test_zipmoe_isa_environment_variable_selects_the_path(models):
    _, path, _ = models("qwen2_moe")
    tokens = prompt(seed=6)
    scalar = zipmoe.load(path, threads=1, isa="scalar").logits(tokens)
    script = (
        "import sys, numpy as np, zipmoe\n"
        "m = zipmoe.load(sys.argv[1], threads=1)\n"
        "np.save(sys.argv[2], m.logits(np.array([int(t) for t in sys.argv[3].split(',')])))\n"
        "print(m.isa)\n")
    for isa in zipmoe.available_isas():
        out = path.parent / f"isa_{isa}.npy"
        env = dict(os.environ, ZIPMOE_ISA=isa)
        done = subprocess.run([sys.executable, "-c", script, str(path), str(out), ",".join(map(str, tokens))],
                              env=env, capture_output=True, text=True, check=True)
        assert done.stdout.strip() == isa
        logits = np.load(out)
        assert_close(logits, scalar, f"ZIPMOE_ISA={isa}")
        if isa == "scalar":
            assert np.array_equal(logits, scalar)


# ------------------------------------------------------------------------------- API and memory


def test_config_info_and_memory(models):
    folder, path, _ = models("qwen2_moe")
    model = zipmoe.load(path, threads=1, max_context=64)
    config = json.loads((folder / "config.json").read_text())
    assert model.config["hidden_size"] == config["hidden_size"] == 32
    assert model.config["model_type"] == "qwen2_moe"
    model.config["hidden_size"] = 0  # a copy
    assert model.config["hidden_size"] == 32
    info = model.info
    assert info["num_experts"] == 4 and info["experts_per_token"] == 2 and info["num_layers"] == 2
    assert model.max_context == 64 and model.vocab_size == 128
    memory = model.memory()
    assert set(memory) == {"dense_weights", "experts", "kv_cache", "scratch", "total", "peak"}
    assert memory["total"] == sum(memory[k] for k in ("dense_weights", "experts", "kv_cache", "scratch"))
    # 2 layers x K and V x 64 positions x 2 kv heads x 8 dims x 4 bytes
    assert memory["kv_cache"] == 2 * 2 * 64 * 2 * 8 * 4
    # every expert projection: 2 layers x 4 experts x 3 x 16 x 32 BF16
    assert memory["experts"] == 2 * 4 * 3 * 16 * 32 * 2
    assert memory["dense_weights"] > 0 and memory["scratch"] > 0
    assert zipmoe.load(path, threads=1, max_context=64, kv_cache_dtype="bf16").memory()["kv_cache"] == \
        memory["kv_cache"] // 2
    dense = zipmoe.load(models("llama")[1], threads=1).memory()
    assert dense["experts"] == 0
    # the default context is min(max_position_embeddings, 4096)
    assert zipmoe.load(path, threads=1).max_context == 128
    assert "qwen2_moe" in repr(model)


def test_kv_cache_in_bf16_stays_close(models):
    _, path, _ = models("mixtral")
    tokens = prompt()
    f32 = zipmoe.load(path, threads=2).logits(tokens)
    bf16 = zipmoe.load(path, threads=2, kv_cache_dtype="bf16").logits(tokens)
    assert_close(bf16, f32, "bf16 KV cache")


def test_long_calls_release_the_gil(tmp_path):
    # A model big enough that one call takes tens of milliseconds; a Python thread
    # must keep running during it (with the GIL held it would stall for the whole call).
    folder = make_tiny_model("mixtral", tmp_path / "medium", tokenizer=False, hidden_size=256, intermediate_size=512,
                             num_hidden_layers=4, num_attention_heads=8, max_position_embeddings=1024)
    path = tmp_path / "medium.zmoe"
    zipmoe.convert(folder, path, threads=2)
    model = zipmoe.load(path, threads=1, precision="exact")
    tokens = prompt(length=1024)
    stamps = []
    running = threading.Event()
    done = threading.Event()

    def tick():
        running.set()
        while not done.is_set():
            stamps.append(time.perf_counter())

    thread = threading.Thread(target=tick)
    thread.start()
    running.wait()
    try:
        start = time.perf_counter()
        model.logits(tokens)
        duration = time.perf_counter() - start
    finally:
        done.set()
        thread.join()
    # With the GIL held for the call, the ticker could not run at all between start and end. (No bound on the
    # largest gap between ticks: on a loaded machine the OS alone may deschedule the ticker for a large part of
    # the call.)
    inside = [t for t in stamps if start <= t <= start + duration]
    assert len(inside) > 100, (duration, len(inside))


# ------------------------------------------------------------------------------------- errors


def rewrite_container(src, dst, metadata=None, drop=(), replace=None):
    """Copies the container at src to dst with other metadata, tensors dropped or replaced."""
    replace = replace or {}
    with zipmoe.open_container(src) as source:
        meta = metadata if metadata is not None else source.metadata
        with zipmoe.ContainerWriter(dst, meta) as writer:
            for info in source.tensors:
                if info.name in drop:
                    continue
                data = replace.get(info.name)
                if data is None:
                    data = source.read(info.name)
                role = None if info.role == "dense" else {"layer": info.layer, "expert": info.expert,
                                                          "projection": info.projection}
                writer.add_tensor(info.name, data, dtype=info.dtype if data.dtype == np.uint16 else None, role=role)
    return dst


def test_bad_tokens_and_context_overflow_are_invalid_argument(models):
    _, path, _ = models("llama")
    model = zipmoe.load(path, threads=1, max_context=16)
    with pytest.raises(zipmoe.InvalidArgumentError, match="outside"):
        model.logits([1, 128])
    with pytest.raises(zipmoe.InvalidArgumentError, match="outside"):
        model.logits([-1])
    with pytest.raises(zipmoe.InvalidArgumentError, match="outside"):
        model.eval([2**40])
    with pytest.raises(zipmoe.InvalidArgumentError, match="empty"):
        model.logits([])
    with pytest.raises(zipmoe.InvalidArgumentError, match="integers"):
        model.logits([1.5, 2.0])
    with pytest.raises(zipmoe.InvalidArgumentError, match="one-dimensional"):
        model.logits([[1, 2]])
    model.logits(list(range(10)))
    with pytest.raises(zipmoe.InvalidArgumentError, match="context overflow"):
        model.eval(list(range(7)))
    assert model.position == 10  # nothing was run
    model.eval(list(range(6)))
    assert model.position == 16
    with pytest.raises(zipmoe.InvalidArgumentError, match="context overflow"):
        model.eval([1])
    with pytest.raises(zipmoe.InvalidArgumentError, match="context overflow"):
        model.logits(list(range(17)))
    # numpy integer arrays of any width are accepted
    assert model.logits(np.array([1, 2, 3], dtype=np.uint8)).shape == (3, 128)


def test_bad_load_arguments(models):
    _, path, _ = models("llama")
    for kwargs in (dict(threads=0), dict(threads=-2), dict(max_context=0), dict(batch=0), dict(threads=1.5),
                   dict(precision="medium"), dict(kv_cache_dtype="int8"), dict(isa="sse9"), dict(io="carrier")):
        with pytest.raises(zipmoe.InvalidArgumentError):
            zipmoe.load(path, **kwargs)
    with pytest.raises(zipmoe.IoError):
        zipmoe.load(path.parent / "missing.zmoe")


def test_unsupported_architectures_name_the_supported_ones(models, tmp_path):
    folder, path, _ = models("llama")
    generic = tmp_path / "generic.zmoe"
    zipmoe.convert(folder, generic, generic=True)
    with pytest.raises(zipmoe.UnsupportedModelError, match="generic.*supported: llama, qwen2, qwen2_moe"):
        zipmoe.load(generic)
    with zipmoe.open_container(path) as c:
        metadata = c.metadata
    for architecture, pattern in (("mamba", "'mamba' is not supported.*deepseek_v3"), (None, "names no architecture")):
        meta = dict(metadata)
        if architecture is None:
            del meta["architecture"]
        else:
            meta["architecture"] = architecture
        with pytest.raises(zipmoe.UnsupportedModelError, match=pattern):
            zipmoe.load(rewrite_container(path, tmp_path / f"{architecture}.zmoe", metadata=meta))
    meta = json.loads(json.dumps(metadata))
    meta["config"]["hidden_act"] = "gelu"
    with pytest.raises(zipmoe.UnsupportedModelError, match="hidden_act"):
        zipmoe.load(rewrite_container(path, tmp_path / "gelu.zmoe", metadata=meta))
    meta = json.loads(json.dumps(metadata))
    meta["config"]["rope_parameters"] = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    with pytest.raises(zipmoe.UnsupportedModelError, match="dynamic"):
        zipmoe.load(rewrite_container(path, tmp_path / "dynamic.zmoe", metadata=meta))


def test_inconsistent_or_malformed_containers_are_format_errors(models, tmp_path):
    _, path, _ = models("qwen2_moe")
    with zipmoe.open_container(path) as c:
        metadata = c.metadata
    # a tensor the config needs is missing
    with pytest.raises(zipmoe.FormatError, match="blk.1.attn_q.weight.*missing"):
        zipmoe.load(rewrite_container(path, tmp_path / "missing.zmoe", drop={"blk.1.attn_q.weight"}))
    with pytest.raises(zipmoe.FormatError, match="expert 3 of layer 1"):
        zipmoe.load(rewrite_container(path, tmp_path / "no_expert.zmoe", drop={"blk.1.ffn_down_exps.3.weight"}))
    # config and tensors disagree
    meta = json.loads(json.dumps(metadata))
    meta["config"]["intermediate_size"] = 48
    meta["config"]["moe_intermediate_size"] = 8
    with pytest.raises(zipmoe.FormatError, match="shape"):
        zipmoe.load(rewrite_container(path, tmp_path / "shape.zmoe", metadata=meta))
    # config values of the wrong type or out of range
    for key, value, pattern in (("hidden_size", "32", "hidden_size must be an integer"),
                                ("num_hidden_layers", -1, "num_hidden_layers is -1"),
                                ("num_key_value_heads", 3, "num_key_value_heads must divide"),
                                ("num_experts_per_tok", 9, "num_experts_per_tok is 9"),
                                ("rms_norm_eps", "tiny", "rms_norm_eps must be a number")):
        meta = json.loads(json.dumps(metadata))
        meta["config"][key] = value
        with pytest.raises(zipmoe.FormatError, match=pattern):
            zipmoe.load(rewrite_container(path, tmp_path / f"bad_{key}.zmoe", metadata=meta))
    # metadata that is not strict JSON
    bad = tmp_path / "bad_json.zmoe"
    writer = zipmoe._core.ContainerWriter(str(bad), '{"architecture": "llama", "config": {"a": 1,}}')
    writer.finish()
    with pytest.raises(zipmoe.FormatError, match="JSON"):
        zipmoe.load(bad)
    # a damaged chunk
    damaged = tmp_path / "damaged.zmoe"
    damaged.write_bytes(path.read_bytes())
    with zipmoe.open_container(damaged) as c:
        offset = c.chunks()[c.info("blk.0.attn_q.weight").sm_chunk]["offset"]
    with open(damaged, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(zipmoe.ChecksumError):
        zipmoe.load(damaged)
