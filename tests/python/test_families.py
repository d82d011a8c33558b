"""The MoE families of the 2026 releases against transformers, end to end.

glm4_moe, dots1, minimax_m2, hunyuan_v1_moe, ernie4_5_moe, dbrx and llama4_text
run as tiny random models (tiny_models.make_tiny_model), converted from their
Hugging Face folders to .zmoe and compared with transformers in FP32 as
test_engine.py does for the older families: logits within 1e-2 of the largest
logit, identical greedy continuations. Then the engine's guarantees on each:
every codec and thread count gives bit-identical logits, a memory budget (the
experts streamed through the cache) gives the logits of the resident run, the
instruction-set paths agree bit for bit with precision="exact", eval() in pieces
equals logits(); the HF folder exports back byte for byte; and every variant the
engine does not run is refused with an UnsupportedModelError naming the feature.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import zipmoe

pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_cache import check_stats, minimum_budget, run  # noqa: E402
from test_engine import GREEDY_TOKENS, assert_close, prompt, reference_logits, reference_model  # noqa: E402
from tiny_models import FAMILY_ARCHITECTURES, make_tiny_model  # noqa: E402
from zipmoe.conversion import registry  # noqa: E402

# Query and key projections scaled so that attention is far from uniform: RoPE
# styles, chunks, windows and the NoPE temperature then show in the logits.
QK_SCALE = 8.0

# name -> (architecture, config overrides). The plain ones cover every family; the
# others reach the features their configs switch on.
CASES = {
    **{arch: (arch, {}) for arch in FAMILY_ARCHITECTURES},
    # q/k norms and q/k/v biases, 8 experts in 2 groups, scaled unnormalized weights, 2 shared experts
    "glm4_moe_qk_norm_groups": ("glm4_moe", dict(use_qk_norm=True, attention_bias=True, n_routed_experts=8,
                                                 n_group=2, topk_group=1, routed_scaling_factor=2.5,
                                                 norm_topk_prob=False, n_shared_experts=2)),
    # the second layer slides over 8 positions
    "dots1_sliding": ("dots1", dict(sliding_window=8, max_window_layers=1, norm_topk_prob=True)),
    # NTK-alpha RoPE
    "hunyuan_v1_moe_ntk_alpha": ("hunyuan_v1_moe", dict(rope_parameters={"rope_type": "dynamic", "alpha": 1000.0, "factor": 1.0,
                                                                         "rope_theta": 10000.0})),
    # tied embeddings, every layer MoE, no shared expert
    "ernie4_5_moe_tied": ("ernie4_5_moe", dict(tie_word_embeddings=True, moe_layer_start_index=0,
                                               moe_num_shared_experts=0)),
    # weights divided by their 2-norm
    "dbrx_l2_weights": ("dbrx", dict(ffn_config={"ffn_hidden_size": 16, "moe_num_experts": 4, "moe_top_k": 2,
                                                 "moe_normalize_expert_weights": 2.0})),
    # top-2, no q/k norm, no temperature tuning, a chunk of 5 positions, explicit MoE layers, Llama 4 Scout's
    # llama3 RoPE scaling (equal low and high frequency factors)
    "llama4_text_top2": ("llama4_text", dict(num_experts_per_tok=2, use_qk_norm=False, attn_temperature_tuning=False,
                                             attention_chunk_size=5, moe_layers=[0, 3],
                                             rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                                              "factor": 16.0, "low_freq_factor": 1.0,
                                                              "high_freq_factor": 1.0,
                                                              "original_max_position_embeddings": 16})),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (hf folder, .zmoe path); built on first use."""
    root = tmp_path_factory.mktemp("families")
    built = {}

    def get(name):
        if name not in built:
            arch, overrides = CASES[name]
            folder = make_tiny_model(arch, root / name, tokenizer=False, qk_scale=QK_SCALE, **overrides)
            path = root / f"{name}.zmoe"
            zipmoe.convert(folder, path, threads=2)
            built[name] = (folder, path)
        return built[name]

    return get


# ----------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", list(CASES))
def test_logits_and_greedy_match_transformers(models, name):
    folder, path = models(name)
    reference = reference_model(folder)
    tokens = prompt()
    expected = reference_logits(reference, tokens)

    model = zipmoe.load(path, threads=2)
    assert model.architecture == CASES[name][0]
    assert_close(model.logits(tokens), expected, name)

    exact = zipmoe.load(path, threads=2, precision="exact")
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


@pytest.mark.parametrize("name", FAMILY_ARCHITECTURES)
def test_codecs_threads_and_budgets_give_bit_identical_logits(models, tmp_path, name):
    folder, path = models(name)
    tokens = prompt(seed=2)
    raw = tmp_path / "raw.zmoe"
    zipmoe.convert(folder, raw, codec="raw", threads=1)
    for precision in ("fast", "exact"):
        baseline = zipmoe.load(raw, threads=1, precision=precision, max_context=64).logits(tokens)
        for container in (path, raw):
            for threads in (1, 2):
                model = zipmoe.load(container, threads=threads, precision=precision, max_context=64)
                assert np.array_equal(model.logits(tokens), baseline), (container.name, threads, precision)
        # the experts streamed through the cache from its minimum budget: the resident run's bits
        minimum = minimum_budget(path, threads=2, precision=precision, max_context=64)
        streamed = zipmoe.load(path, threads=2, precision=precision, max_context=64, memory_budget=minimum)
        assert np.array_equal(streamed.logits(tokens), baseline), precision
        assert streamed.stats()["streaming"] and streamed.memory()["peak"] <= minimum


@pytest.mark.parametrize("name", FAMILY_ARCHITECTURES)
def test_cache_budgets_tiers_prefetch_and_io_modes_keep_the_bits(models, name):
    # a prompt, then one token per step: the expert cache from its minimum budget to
    # everything, with gate-ahead prefetch across dense layers (GLM, dots.llm1, ERNIE:
    # leading ones; Llama 4: interleaved), every I/O mode and the paper's tier set
    _, path = models(name)
    tokens = prompt(20, seed=6)
    options = dict(precision="exact", max_context=64, batch=8)
    expected = run(zipmoe.load(path, threads=2, **options), tokens, 8)
    minimum = minimum_budget(path, threads=2, **options)
    everything = zipmoe.load(path, threads=1, **options).memory()["total"] + (1 << 20)
    combos = [dict(memory_budget=minimum, threads=1, io="pread", prefetch=True),
              dict(memory_budget=(minimum + everything) // 2, threads=2, io="direct", prefetch=True,
                   cache_policy="lfu"),
              dict(memory_budget=(2 * minimum + everything) // 3, threads=2, io="mmap", prefetch=False,
                   tiers=zipmoe.model.PAPER_TIERS),
              dict(memory_budget=everything, threads=2, io="pread", prefetch=True, cache_policy="lru")]
    for combo in combos:
        model = zipmoe.load(path, **options, **combo)
        assert np.array_equal(run(model, tokens, 8), expected), combo
        check_stats(model)
        assert model.memory()["peak"] <= combo["memory_budget"]


@pytest.mark.parametrize("name", ["llama4_text", "llama4_text_top2", "ernie4_5_moe", "dbrx", "hunyuan_v1_moe"])
def test_every_isa_path_gives_the_same_exact_bits(models, name):
    _, path = models(name)
    tokens = prompt(seed=5)
    scalar = zipmoe.load(path, threads=1, isa="scalar", precision="exact").logits(tokens)
    for isa in zipmoe.available_isas():
        fast = zipmoe.load(path, threads=2, isa=isa).logits(tokens)
        assert_close(fast, scalar, f"{name} {isa} fast")
        exact = zipmoe.load(path, threads=2, isa=isa, precision="exact").logits(tokens)
        assert exact.tobytes() == scalar.tobytes(), f"{name} {isa}: exact logits differ from scalar"


@pytest.mark.parametrize("name", ["llama4_text", "dots1_sliding", "glm4_moe_qk_norm_groups"])
def test_eval_in_pieces_equals_logits(models, name):
    # chunks, windows and the NoPE temperature depend on absolute positions: the
    # KV cache and the position bookkeeping must carry them across calls
    _, path = models(name)
    tokens = prompt()
    model = zipmoe.load(path, threads=2, precision="exact", batch=6, max_context=64)
    full = model.logits(tokens)
    model.reset()
    pieces = [model.eval(tokens[:3]), model.eval(tokens[3:4]), model.eval(tokens[4:17]), model.eval(tokens[17:])]
    assert np.array_equal(np.concatenate(pieces), full)


# ------------------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("name", FAMILY_ARCHITECTURES)
def test_hf_folder_converts_per_expert_and_exports_back(models, tmp_path, name):
    folder, path = models(name)
    with zipmoe.open_container(path) as c:
        dims = registry.model_dims(name, c.metadata["config"])
        experts = [t for t in c.tensors if t.role == "expert"]
        assert len(experts) == len(dims.moe_layers) * dims.num_experts * 3 > 0
        for t in experts:
            assert t.name == f"blk.{t.layer}.ffn_{t.projection}_exps.{t.expert}.weight"
            want = (dims.hidden_size, dims.expert_intermediate_size)
            assert tuple(t.shape) == (want if t.projection == "down" else want[::-1])
        expected = registry.expected_tensors(c.metadata)
        assert set(c) <= set(expected)
        assert {n for n, e in expected.items() if e.required} <= set(c)
    zipmoe.export(path, "safetensors", tmp_path / "back")
    assert {p.name: p.read_bytes() for p in (tmp_path / "back").iterdir()} == \
        {p.name: p.read_bytes() for p in pathlib.Path(folder).iterdir()}
    assert zipmoe.verify_against(path, folder)["ok"]


def test_fused_experts_are_split_exactly(models):
    """DBRX's [E*I, H] stacks (w2 transposed) and Llama 4's [E, H, 2I] / [E, I, H]: per expert, in linear layout."""
    import torch
    from safetensors.torch import load_file

    for name, gate, up, down in (("dbrx", "transformer.blocks.0.ffn.experts.mlp.w1",
                                  "transformer.blocks.0.ffn.experts.mlp.v1", "transformer.blocks.0.ffn.experts.mlp.w2"),
                                 ("llama4_text", "model.layers.1.feed_forward.experts.gate_up_proj", None,
                                  "model.layers.1.feed_forward.experts.down_proj")):
        folder, path = models(name)
        source = {}
        for f in pathlib.Path(folder).glob("*.safetensors"):
            source.update({k: v.view(torch.int16).numpy().view(np.uint16) for k, v in load_file(str(f)).items()})
        layer = int(gate.split(".")[2])
        with zipmoe.open_container(path) as c:
            I = c.info(f"blk.{layer}.ffn_gate_exps.0.weight").shape[0]
            for e in range(4):
                got = {p: c.read(f"blk.{layer}.ffn_{p}_exps.{e}.weight") for p in ("gate", "up", "down")}
                if name == "dbrx":
                    want = {"gate": source[gate][e * I:(e + 1) * I], "up": source[up][e * I:(e + 1) * I],
                            "down": source[down][e * I:(e + 1) * I].T}
                else:
                    fused = source[gate][e]
                    want = {"gate": fused[:, :I].T, "up": fused[:, I:].T, "down": source[down][e].T}
                for p in got:
                    assert np.array_equal(got[p], want[p]), (name, e, p)
            if name == "dbrx":
                qkv = source["transformer.blocks.0.norm_attn_norm.attn.Wqkv.weight"]
                parts = [c.read(f"blk.0.attn_{x}.weight") for x in "qkv"]
                assert np.array_equal(np.concatenate(parts), qkv)


def test_glm_multi_token_prediction_layer_is_stored_and_not_run(models, tmp_path):
    """GLM-4.5's checkpoints end with num_nextn_predict_layers extra layers (a full MoE layer plus the MTP head's
    projection and norms), which transformers does not build: kept with expert roles, exported back, not run."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folder, path = models("glm4_moe")
    mtp = tmp_path / "glm4_moe_mtp"
    shutil.copytree(folder, mtp)
    config = json.loads((mtp / "config.json").read_text())
    layers = config["num_hidden_layers"]
    config["num_nextn_predict_layers"] = 1
    (mtp / "config.json").write_text(json.dumps(config))
    (shard,) = mtp.glob("*.safetensors")
    tensors = load_file(str(shard))
    last, extra = f"model.layers.{layers - 1}.", f"model.layers.{layers}."
    tensors.update({extra + k[len(last):]: v.clone() for k, v in tensors.items() if k.startswith(last)})
    hidden = config["hidden_size"]
    generator = torch.Generator().manual_seed(0)
    tensors[extra + "eh_proj.weight"] = torch.randn(hidden, 2 * hidden, generator=generator).to(torch.bfloat16)
    for norm in ("enorm", "hnorm", "shared_head.norm"):
        tensors[f"{extra}{norm}.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
    save_file(tensors, str(shard), metadata={"format": "pt"})

    out = tmp_path / "mtp.zmoe"
    zipmoe.convert(mtp, out, threads=2)
    with zipmoe.open_container(out) as c:
        assert c.info(f"blk.{layers}.nextn.eh_proj.weight").role == "dense"
        assert c.info(f"blk.{layers}.ffn_gate_exps.3.weight").role == "expert"
    tokens = prompt(seed=3)
    assert np.array_equal(zipmoe.load(out, threads=2).logits(tokens), zipmoe.load(path, threads=2).logits(tokens))
    zipmoe.export(out, "safetensors", tmp_path / "back")
    assert {p.name: p.read_bytes() for p in (tmp_path / "back").iterdir()} == \
        {p.name: p.read_bytes() for p in mtp.iterdir()}


# -------------------------------------------------------------------------------------- refusals


def _check(architecture, config):
    zipmoe._core.check_model_config(json.dumps({"architecture": architecture, "config": config}))


@pytest.mark.parametrize("arch, change, feature", [
    ("hunyuan_v1_moe", dict(use_cla=True), "use_cla"),
    ("hunyuan_v1_moe", dict(num_shared_expert=[2, 2]), "num_shared_expert 2"),
    ("hunyuan_v1_moe", dict(moe_topk=[2, 1]), "moe_topk varies per layer"),
    ("ernie4_5_moe", dict(use_bias=True), "use_bias"),
    ("ernie4_5_moe", dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    ("dbrx", dict(ffn_config={"ffn_hidden_size": 16, "moe_num_experts": 4, "moe_top_k": 2,
                              "moe_normalize_expert_weights": 3.0}), "moe_normalize_expert_weights 3"),
    ("dbrx", dict(ffn_config={"ffn_hidden_size": 16, "moe_num_experts": 4, "moe_top_k": 2,
                              "ffn_act_fn": {"name": "gelu"}}), "hidden_act 'gelu'"),
    ("dots1", dict(scoring_func="softmax"), "scoring_func 'softmax'"),
    ("llama4_text", dict(layer_types=["sliding_attention"] * 4), "layer type 'sliding_attention'"),
    ("glm4_moe", dict(rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}),
     "rope scaling type 'dynamic'"),
])
def test_variants_the_engine_does_not_run_are_refused_by_name(models, tmp_path, arch, change, feature):
    folder, path = models(arch)
    config = {**json.loads((folder / "config.json").read_text()), **change}
    with pytest.raises(zipmoe.UnsupportedModelError, match=feature):
        _check(arch, config)
    # and at load, with the container otherwise intact
    from test_engine import rewrite_container

    with zipmoe.open_container(path) as c:
        metadata = c.metadata
    metadata["config"] = config
    with pytest.raises(zipmoe.UnsupportedModelError, match=feature):
        zipmoe.load(rewrite_container(path, tmp_path / "changed.zmoe", metadata=metadata))
