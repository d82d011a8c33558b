"""Tiny random Hugging Face checkpoints of every architecture zipmoe supports, built at test time.

    from tiny_models import make_tiny_model, TINY_ARCHITECTURES
    path = make_tiny_model("qwen2_moe", tmp_path / "qwen2_moe")               # one BF16 model.safetensors
    path = make_tiny_model("mixtral", tmp_path / "m", shard_size="40KB")     # sharded, with the index json
    path = make_tiny_model("olmoe", tmp_path / "o", num_hidden_layers=3)     # any config key can be overridden

Each model is built offline by transformers from a small config
(``AutoConfig.for_model`` -> ``AutoModelForCausalLM.from_config``), cast to BF16
and saved with ``save_pretrained``, in about a second. DeepSeek V2/V3 routers and
V3's score-correction bias (and those of GLM-4.5, dots.llm1, ERNIE 4.5, Hunyuan)
are kept in F32, as the published checkpoints have them. torch and transformers are test-only dependencies: import this module
only from tests and tools.

The configs also satisfy llama.cpp's convert_hf_to_gguf.py where it has extra
demands (olmoe: as many key/value heads as heads; deepseek: q_lora_rank set and
as many key/value heads as heads; qwen3_moe: norm_topk_prob).
"""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

TINY_ARCHITECTURES = ("qwen2_moe", "qwen3_moe", "mixtral", "olmoe", "deepseek_v2", "deepseek_v3", "gpt_oss",
                      "granitemoe", "phimoe", "llama", "qwen2")
# The families added with the 2026 MoE releases (tests of their own: test_families.py).
FAMILY_ARCHITECTURES = ("glm4_moe", "dots1", "minimax_m2", "hunyuan_v1_moe", "ernie4_5_moe", "dbrx", "llama4_text")

_COMMON = dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0,
               tie_word_embeddings=False)

_MLA = dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, n_shared_experts=1,
            first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=4, qk_nope_head_dim=8,
            v_head_dim=8, n_group=1, topk_group=1, num_key_value_heads=4)

# Per-family keys (each transformers config names the MoE sizes its own way); every MoE has 4 experts, 2 per token.
TINY_CONFIGS = {
    "qwen2_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                      shared_expert_intermediate_size=24),
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, head_dim=8,
                      norm_topk_prob=True),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "olmoe": dict(num_experts=4, num_experts_per_tok=2, num_key_value_heads=4),
    "deepseek_v2": dict(_MLA),
    "deepseek_v3": dict(_MLA),
    "gpt_oss": dict(num_local_experts=4, num_experts_per_tok=2, head_dim=8, sliding_window=16),
    "granitemoe": dict(num_local_experts=4, num_experts_per_tok=2),
    "phimoe": dict(num_local_experts=4, num_experts_per_tok=2),
    "llama": dict(),
    "qwen2": dict(),
    # first layer dense, sigmoid routing with a correction bias, a shared expert, half-rotary RoPE
    "glm4_moe": dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, n_shared_experts=1,
                     first_k_dense_replace=1),
    "dots1": dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, n_shared_experts=1,
                  first_k_dense_replace=1),
    "minimax_m2": dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=16, head_dim=8, rotary_dim=4),
    # per-layer lists, as the published configs write them
    "hunyuan_v1_moe": dict(num_experts=4, moe_topk=[2, 2], intermediate_size=16, moe_intermediate_size=[16, 16],
                           num_shared_expert=[1, 1], use_qk_norm=True, use_cla=False, head_dim=8),
    "ernie4_5_moe": dict(moe_num_experts=4, moe_k=2, moe_intermediate_size=16, moe_num_shared_experts=1),
    "dbrx": dict(ffn_config={"ffn_hidden_size": 16, "moe_num_experts": 4, "moe_top_k": 2},
                 attn_config={"kv_n_heads": 2, "clip_qkv": 8.0, "rope_theta": 10000.0}),
    # 4 layers: MoE every second one (top-1, a shared expert), NoPE every second one (temperature tuning from
    # position 7), chunks of 8 positions on the RoPE layers
    "llama4_text": dict(num_hidden_layers=4, num_local_experts=4, num_experts_per_tok=1, intermediate_size=16,
                        intermediate_size_mlp=48, interleave_moe_layer_step=2, no_rope_layer_interval=2,
                        attention_chunk_size=8, floor_scale=8, head_dim=8),
}

CHAT_TEMPLATE = ("{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")

_F32_IN_PUBLISHED_CHECKPOINTS = {"deepseek_v2": ("mlp.gate.weight",),
                                 "deepseek_v3": ("mlp.gate.weight", "mlp.gate.e_score_correction_bias"),
                                 "glm4_moe": ("mlp.gate.weight", "mlp.gate.e_score_correction_bias"),
                                 "dots1": ("mlp.gate.weight", "mlp.gate.e_score_correction_bias"),
                                 "ernie4_5_moe": ("mlp.gate.weight", "moe_statics.e_score_correction_bias"),
                                 "hunyuan_v1_moe": ("mlp.gate.wg.weight",)}


def tiny_config(arch: str, **overrides):
    """The transformers config of the tiny ``arch`` model, with ``overrides`` applied."""
    from transformers import AutoConfig

    if arch not in TINY_CONFIGS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(TINY_ARCHITECTURES + FAMILY_ARCHITECTURES)}")
    common = dict(_COMMON)
    if arch == "dbrx":  # MPT-style names; the KV heads live in attn_config
        common = {_DBRX_NAMES.get(k, k): v for k, v in common.items() if k not in ("intermediate_size",
                                                                                   "num_key_value_heads")}
    return AutoConfig.for_model(arch, **{**common, **TINY_CONFIGS[arch], **overrides})


_DBRX_NAMES = {"hidden_size": "d_model", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
               "max_position_embeddings": "max_seq_len"}


def make_tiny_tokenizer(out_dir, vocab_size: int = 128, chat_template: str = CHAT_TEMPLATE):
    """A word-level tokenizer of ``vocab_size`` tokens (ids 0-2: <pad>, <s>, </s>) with a chat template,
    saved as tokenizer.json + tokenizer_config.json (+ chat template) in ``out_dir``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(vocab_size - 4)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = chat_template
    fast.save_pretrained(str(out_dir))


def make_tiny_model(arch: str, out_dir, *, shard_size: str | None = None, seed: int = 0, tokenizer: bool = True,
                    keep_published_dtypes: bool = True, qk_scale: float = 1.0, **config_overrides) -> pathlib.Path:
    """Builds a tiny random ``arch`` model in BF16 and saves it to ``out_dir``; returns the folder.

    shard_size: e.g. "40KB" to split the weights into several safetensors files
        with a model.safetensors.index.json (None: one file).
    tokenizer: also save a tiny word-level tokenizer with a chat template.
    keep_published_dtypes: keep the tensors that published checkpoints store in
        F32 (DeepSeek routers, V3's correction bias) in F32.
    qk_scale: multiplies the query and key projections, so that attention scores
        are of order 1 rather than nearly uniform (random weights give q.k ~ 0.01):
        position encodings, windows and masks then change the logits visibly.
    config_overrides: any config key, e.g. num_hidden_layers=3.
    """
    import torch
    from transformers import AutoModelForCausalLM

    out_dir = pathlib.Path(out_dir)
    config = tiny_config(arch, **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if tensor.dtype == torch.bfloat16 and name.endswith(("norm.weight", "layernorm.weight")):
                # norms start at exactly 1.0; random values make every element count in round trips
                tensor.copy_(1.0 + 0.1 * torch.randn_like(tensor, dtype=torch.float32))
            elif tensor.dtype == torch.bfloat16 and (tensor.ndim == 1 or name.endswith("correction_bias")) \
                    and torch.count_nonzero(tensor) == 0:
                tensor.copy_(0.02 * torch.randn_like(tensor, dtype=torch.float32))
        if qk_scale != 1.0:
            for name, tensor in model.named_parameters():
                if name.endswith(("q_proj.weight", "k_proj.weight", "Wqkv.weight")):
                    tensor.mul_(qk_scale)
        if keep_published_dtypes:
            suffixes = _F32_IN_PUBLISHED_CHECKPOINTS.get(arch, ())
            for module_name, module in model.named_modules():
                for attr in ("weight", "e_score_correction_bias"):
                    tensor = getattr(module, attr, None)
                    if isinstance(tensor, torch.Tensor) and f"{module_name}.{attr}".endswith(suffixes):
                        tensor.data = tensor.data.float()
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(str(out_dir), **kwargs)
    if tokenizer:
        make_tiny_tokenizer(out_dir, vocab_size=config.vocab_size)
    return out_dir


# ------------------------------------------------------------------------------------------------ GGUF

GGUF_ARCH = {"qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "mixtral": "llama", "olmoe": "olmoe",
             "deepseek_v2": "deepseek2", "deepseek_v3": "deepseek2", "gpt_oss": "gpt-oss",
             "granitemoe": "granitemoe", "phimoe": "phimoe", "llama": "llama", "qwen2": "qwen2"}

# HF name (after "model.layers.{i}.") -> GGUF name (after "blk.{i}."), as llama.cpp's converter names them.
_GGUF_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight", "input_layernorm.bias": "attn_norm.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight", "post_attention_layernorm.bias": "ffn_norm.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
    "self_attn.sinks": "attn_sinks.weight",
    "self_attn.q_a_proj.weight": "attn_q_a.weight", "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
    "self_attn.q_b_proj.weight": "attn_q_b.weight", "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
    "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight", "block_sparse_moe.gate.weight": "ffn_gate_inp.weight",
    "mlp.router.weight": "ffn_gate_inp.weight", "mlp.router.bias": "ffn_gate_inp.bias",
    "block_sparse_moe.router.layer.weight": "ffn_gate_inp.weight",
    "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
    "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
    "mlp.experts.down_proj_bias": "ffn_down_exps.bias",
}
for _hf, _gg in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("o_proj", "attn_output")):
    for _kind in ("weight", "bias"):
        _GGUF_LAYER_NAMES[f"self_attn.{_hf}.{_kind}"] = f"{_gg}.{_kind}"
for _shared in ("shared_expert", "shared_experts"):
    for _p in ("gate", "up", "down"):
        _GGUF_LAYER_NAMES[f"mlp.{_shared}.{_p}_proj.weight"] = f"ffn_{_p}_shexp.weight"


def _llama_permute(w, groups: int):
    import numpy as np

    return np.ascontiguousarray(
        w.reshape(groups, 2, w.shape[0] // groups // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def make_tiny_gguf(hf_dir, out_path, dtype: str = "bf16", quantized_tensor: str | None = None) -> pathlib.Path:
    """Writes the tiny HF model in ``hf_dir`` as a GGUF file laid out as llama.cpp's converter lays it out.

    Experts stacked per layer (``ffn_*_exps``), shared experts as ``*_shexp``, q/k
    rows permuted for llama-family architectures, deepseek's kv_b split into
    attn_k_b/attn_v_b, gpt_oss's fused experts transposed and de-interleaved.
    dtype: "bf16", "f16" or "f32" for the matrices; 1-D tensors and routers are
    F32, as llama.cpp keeps them. quantized_tensor: a GGUF tensor name to store
    as Q8_0 (for the error path). The key/values hold the config, a tokenizer
    (from tokenizer.json when present) and the chat template.
    """
    import json

    import gguf
    import numpy as np
    from safetensors.torch import load_file

    hf_dir = pathlib.Path(hf_dir)
    config = json.loads((hf_dir / "config.json").read_text())
    arch = config["model_type"]
    gguf_arch = GGUF_ARCH[arch]
    hf = {}
    for shard in sorted(hf_dir.glob("*.safetensors")):
        hf.update(load_file(str(shard)))
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    layers = config["num_hidden_layers"]

    out: dict = {}  # GGUF name -> float32 array (numpy row-major order)
    stacked: dict = {}  # (layer, projection) -> {expert: array}
    for name, tensor in hf.items():
        x = tensor.float().numpy()
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = x
            continue
        if name.startswith("model.norm."):
            out["output_norm." + name.rsplit(".", 1)[1]] = x
            continue
        if name.startswith("lm_head."):
            out["output." + name.rsplit(".", 1)[1]] = x
            continue
        _, _, layer, rest = name.split(".", 3)
        i = int(layer)
        prefix = f"blk.{i}."
        parts = rest.split(".")
        if rest in _GGUF_LAYER_NAMES:
            target = _GGUF_LAYER_NAMES[rest]
            if gguf_arch == "gpt-oss" and target == "ffn_norm.weight":
                target = "post_attention_norm.weight"
            if gguf_arch in ("llama", "granitemoe") and target.startswith(("attn_q.", "attn_k.")):
                x = _llama_permute(x, heads if target.startswith("attn_q.") else kv_heads)
            out[prefix + target] = x
        elif rest == "self_attn.kv_b_proj.weight":
            nope, v = config["qk_nope_head_dim"], config["v_head_dim"]
            kv_b = x.reshape(heads, nope + v, x.shape[-1])
            out[prefix + "attn_k_b.weight"] = np.ascontiguousarray(kv_b[:, :nope, :].transpose(0, 2, 1))
            out[prefix + "attn_v_b.weight"] = np.ascontiguousarray(kv_b[:, nope:, :])
        elif parts[:2] == ["mlp", "experts"] and parts[2].isdigit():
            stacked.setdefault((i, parts[3].replace("_proj", "")), {})[int(parts[2])] = x
        elif parts[:2] == ["block_sparse_moe", "experts"]:
            projection = {"w1": "gate", "w3": "up", "w2": "down"}[parts[3]]
            stacked.setdefault((i, projection), {})[int(parts[2])] = x
        elif rest == "mlp.experts.gate_up_proj":  # gpt_oss [E, H, 2I], interleaved
            t = x.transpose(0, 2, 1)
            out[prefix + "ffn_gate_exps.weight"] = np.ascontiguousarray(t[:, 0::2, :])
            out[prefix + "ffn_up_exps.weight"] = np.ascontiguousarray(t[:, 1::2, :])
        elif rest == "mlp.experts.down_proj":  # gpt_oss [E, I, H]
            out[prefix + "ffn_down_exps.weight"] = np.ascontiguousarray(x.transpose(0, 2, 1))
        elif rest == "mlp.experts.gate_up_proj_bias":
            out[prefix + "ffn_gate_exps.bias"] = np.ascontiguousarray(x[:, 0::2])
            out[prefix + "ffn_up_exps.bias"] = np.ascontiguousarray(x[:, 1::2])
        elif rest == "block_sparse_moe.input_linear.weight":  # granitemoe [E, 2I, H]
            half = x.shape[1] // 2
            out[prefix + "ffn_gate_exps.weight"] = np.ascontiguousarray(x[:, :half])
            out[prefix + "ffn_up_exps.weight"] = np.ascontiguousarray(x[:, half:])
        elif rest == "block_sparse_moe.output_linear.weight":
            out[prefix + "ffn_down_exps.weight"] = x
        else:
            raise ValueError(f"make_tiny_gguf does not know {name}")
    for (i, projection), experts in stacked.items():
        out[f"blk.{i}.ffn_{projection}_exps.weight"] = np.stack([experts[e] for e in sorted(experts)])

    writer = gguf.GGUFWriter(str(out_path), gguf_arch)
    a = gguf_arch
    writer.add_string("general.name", f"tiny {arch}")
    writer.add_uint32(f"{a}.block_count", layers)
    writer.add_uint32(f"{a}.context_length", config["max_position_embeddings"])
    writer.add_uint32(f"{a}.embedding_length", config["hidden_size"])
    writer.add_uint32(f"{a}.feed_forward_length", config["intermediate_size"])
    writer.add_uint32(f"{a}.attention.head_count", heads)
    writer.add_uint32(f"{a}.attention.head_count_kv", 1 if a == "deepseek2" else kv_heads)
    writer.add_float32(f"{a}.attention.layer_norm_rms_epsilon", config.get("rms_norm_eps", 1e-6))
    rope = config.get("rope_parameters") or {}
    writer.add_float32(f"{a}.rope.freq_base", rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    writer.add_uint32(f"{a}.vocab_size", config["vocab_size"])
    if config.get("head_dim") and a in ("qwen3moe", "gpt-oss"):
        writer.add_uint32(f"{a}.attention.key_length", config["head_dim"])
        writer.add_uint32(f"{a}.attention.value_length", config["head_dim"])
    experts = config.get("num_experts") or config.get("num_local_experts") or config.get("n_routed_experts")
    if experts:
        writer.add_uint32(f"{a}.expert_count", experts)
        writer.add_uint32(f"{a}.expert_used_count", config["num_experts_per_tok"])
    if config.get("moe_intermediate_size"):
        writer.add_uint32(f"{a}.expert_feed_forward_length", config["moe_intermediate_size"])
    elif experts:
        writer.add_uint32(f"{a}.expert_feed_forward_length", config["intermediate_size"])
    if config.get("shared_expert_intermediate_size"):
        writer.add_uint32(f"{a}.expert_shared_feed_forward_length", config["shared_expert_intermediate_size"])
    if a == "qwen3moe":
        writer.add_bool(f"{a}.expert_weights_norm", bool(config.get("norm_topk_prob")))
    if a == "deepseek2":
        rope_dim = config["qk_rope_head_dim"]
        writer.add_uint32(f"{a}.leading_dense_block_count", config["first_k_dense_replace"])
        writer.add_uint32(f"{a}.expert_shared_count", config["n_shared_experts"])
        writer.add_uint32(f"{a}.attention.q_lora_rank", config["q_lora_rank"])
        writer.add_uint32(f"{a}.attention.kv_lora_rank", config["kv_lora_rank"])
        writer.add_uint32(f"{a}.attention.key_length", config["kv_lora_rank"] + rope_dim)
        writer.add_uint32(f"{a}.attention.value_length", config["kv_lora_rank"])
        writer.add_uint32(f"{a}.attention.key_length_mla", config["qk_nope_head_dim"] + rope_dim)
        writer.add_uint32(f"{a}.attention.value_length_mla", config["v_head_dim"])
        writer.add_uint32(f"{a}.rope.dimension_count", rope_dim)
        writer.add_float32(f"{a}.expert_weights_scale", config.get("routed_scaling_factor", 1.0))
        writer.add_bool(f"{a}.expert_weights_norm", bool(config.get("norm_topk_prob")))
        writer.add_uint32(f"{a}.expert_gating_func", 2 if arch == "deepseek_v3" else 1)
    if a == "gpt-oss":
        writer.add_uint32(f"{a}.attention.sliding_window", config["sliding_window"])
    vocab = config["vocab_size"]
    tokens, token_types = [f"w{i}" for i in range(vocab)], [1] * vocab
    tokenizer_json = hf_dir / "tokenizer.json"
    if tokenizer_json.exists():
        known = json.loads(tokenizer_json.read_text())["model"]["vocab"]
        for token, token_id in known.items():
            if token_id < vocab:
                tokens[token_id] = token
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_array("tokenizer.ggml.token_type", token_types)
    writer.add_array("tokenizer.ggml.scores", [float(-i) for i in range(vocab)])
    writer.add_uint32("tokenizer.ggml.bos_token_id", config.get("bos_token_id", 1))
    writer.add_uint32("tokenizer.ggml.eos_token_id", config.get("eos_token_id", 2))
    writer.add_string("tokenizer.chat_template", CHAT_TEMPLATE)

    target = {"bf16": gguf.GGMLQuantizationType.BF16, "f16": gguf.GGMLQuantizationType.F16,
              "f32": gguf.GGMLQuantizationType.F32}[dtype]
    for name, x in out.items():
        x = np.ascontiguousarray(x, dtype=np.float32)
        if name == quantized_tensor:
            writer.add_tensor(name, gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif x.ndim == 1 or "ffn_gate_inp" in name or target == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, x)
        elif target == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, x.astype(np.float16))
        else:
            bits = x.view(np.uint32)
            # x came from BF16 or is rounded-to-nearest-even into it
            bf16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
            writer.add_tensor(name, bf16, raw_dtype=gguf.GGMLQuantizationType.BF16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return pathlib.Path(out_path)
