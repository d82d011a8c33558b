"""An HF-style config synthesized from a GGUF file's key/value pairs and tensor shapes.

The engine reads one vocabulary of config keys whatever the source was, so a
GGUF's ``{arch}.*`` keys are renamed to the keys transformers' config.json uses
for that model type. Where a GGUF lacks a number the tensors determine (vocab
size, expert count, head size), the tensor shapes fill it in.
"""

from __future__ import annotations

from . import registry
from .gguf_format import GGUFFile

_GATING = {1: "softmax", 2: "sigmoid"}


def _scalar_or_uniform(value, key: str):
    """GGUF allows per-layer arrays for some counts; a uniform array is its single value."""
    if isinstance(value, list):
        if value and all(v == value[0] for v in value):
            return value[0]
        raise registry.unsupported(f"GGUF key {key} varies per layer ({value[:8]}...), which zipmoe does not support")
    return value


def detect_architecture(gguf: GGUFFile) -> tuple:
    """(GGUF architecture, HF model_type or None when unknown)."""
    arch = gguf.value("general.architecture")
    if not isinstance(arch, str):
        raise registry.mismatch(f"{gguf.path}: GGUF file has no general.architecture")
    model_type = registry.GGUF_ARCHITECTURES.get(arch)
    names = {t.name for t in gguf.tensors}
    if arch == "llama" and (gguf.value(f"{arch}.expert_count") or 0) > 0:
        model_type = "mixtral"
    if arch == "deepseek2" and (any(n.endswith(".exp_probs_b.bias") for n in names)
                                or gguf.value(f"{arch}.expert_gating_func") == 2):
        model_type = "deepseek_v3"
    return arch, model_type


def synthesize_config(gguf: GGUFFile, arch: str, model_type: str) -> dict:
    """config.json-style dict for ``model_type`` from the GGUF's key/value pairs and tensor shapes."""
    shapes = {t.name: t.shape for t in gguf.tensors}

    def kv(suffix, default=None):
        value = gguf.value(f"{arch}.{suffix}")
        return default if value is None else _scalar_or_uniform(value, f"{arch}.{suffix}")

    embedding = shapes.get("token_embd.weight")
    hidden = kv("embedding_length", embedding[1] if embedding else None)
    heads = kv("attention.head_count")
    kv_heads = kv("attention.head_count_kv", heads)
    tokens = gguf.value("tokenizer.ggml.tokens")
    vocab = kv("vocab_size") or (embedding[0] if embedding else (len(tokens) if tokens else None))
    config = {
        "architectures": [_HF_CLASS.get(model_type, model_type)],
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": kv("feed_forward_length"),
        "num_hidden_layers": kv("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": kv("context_length"),
        "rms_norm_eps": kv("attention.layer_norm_rms_epsilon", kv("attention.layer_norm_epsilon")),
        "rope_theta": kv("rope.freq_base", 10000.0),
        "tie_word_embeddings": "output.weight" not in shapes,
    }
    key_length = kv("attention.key_length")
    if model_type not in ("deepseek_v2", "deepseek_v3"):
        q = shapes.get("blk.0.attn_q.weight")
        head_dim = key_length or (q[0] // heads if q and heads else None)
        if head_dim:
            config["head_dim"] = head_dim
    scaling_type = kv("rope.scaling.type")
    if scaling_type and scaling_type != "none":
        scaling = {"rope_type": scaling_type, "type": scaling_type}
        for key, name in (("rope.scaling.factor", "factor"),
                          ("rope.scaling.original_context_length", "original_max_position_embeddings"),
                          ("rope.scaling.yarn_log_multiplier", "mscale_all_dim"),
                          ("rope.scaling.yarn_beta_fast", "beta_fast"),
                          ("rope.scaling.yarn_beta_slow", "beta_slow"),
                          ("rope.scaling.attn_factor", "attention_factor")):
            value = kv(key)
            if value is not None:
                # llama.cpp writes 0.1 * mscale_all_dim for deepseek2 (see its converter)
                scaling[name] = value * 10 if name == "mscale_all_dim" and arch == "deepseek2" else value
        config["rope_scaling"] = scaling
    bos, eos = gguf.value("tokenizer.ggml.bos_token_id"), gguf.value("tokenizer.ggml.eos_token_id")
    if bos is not None:
        config["bos_token_id"] = bos
    if eos is not None:
        config["eos_token_id"] = eos
    if "blk.0.attn_q.bias" in shapes or "blk.0.attn_output.bias" in shapes:
        config["attention_bias"] = "blk.0.attn_output.bias" in shapes
    if model_type == "qwen2_moe":
        config["qkv_bias"] = "blk.0.attn_q.bias" in shapes
    if model_type in registry.MOE_ARCHITECTURES:
        experts = kv("expert_count")
        if not experts:
            stacked = shapes.get("blk.0.ffn_gate_exps.weight")
            experts = stacked[0] if stacked else None
        key = {"qwen2_moe": "num_experts", "qwen3_moe": "num_experts", "olmoe": "num_experts",
               "deepseek_v2": "n_routed_experts", "deepseek_v3": "n_routed_experts", "glm4_moe": "n_routed_experts",
               "dots1": "n_routed_experts"}.get(model_type, "num_local_experts")
        config[key] = experts
        config["num_experts_per_tok"] = kv("expert_used_count")
    if model_type in ("qwen2_moe", "qwen3_moe"):
        config["moe_intermediate_size"] = kv("expert_feed_forward_length")
        # llama.cpp renormalizes qwen3moe top-k weights and does not for qwen2moe
        config["norm_topk_prob"] = bool(kv("expert_weights_norm", model_type == "qwen3_moe"))
        if model_type == "qwen2_moe":
            config["shared_expert_intermediate_size"] = kv("expert_shared_feed_forward_length", 0)
        moe = [i for i in range(config["num_hidden_layers"] or 0) if f"blk.{i}.ffn_gate_inp.weight" in shapes]
        config["mlp_only_layers"] = [i for i in range(config["num_hidden_layers"] or 0) if i not in moe]
        config["decoder_sparse_step"] = 1
    if model_type == "olmoe":
        config["norm_topk_prob"] = bool(kv("expert_weights_norm", False))
    if model_type in ("mixtral", "phimoe", "granitemoe", "gpt_oss"):
        if kv("expert_feed_forward_length"):
            config["intermediate_size"] = kv("expert_feed_forward_length")
    if model_type in ("deepseek_v2", "deepseek_v3"):
        rope_dim = kv("rope.dimension_count")
        key_mla, value_mla = kv("attention.key_length_mla"), kv("attention.value_length_mla")
        kv_rank = kv("attention.kv_lora_rank")
        if key_mla is None:  # older files: key_length/value_length are the MLA head sizes
            key_mla, value_mla = key_length, kv("attention.value_length")
        config.update({
            "num_key_value_heads": heads,  # llama.cpp's MQA view of MLA; HF counts every head
            "moe_intermediate_size": kv("expert_feed_forward_length"),
            "n_shared_experts": kv("expert_shared_count", 0),
            "first_k_dense_replace": kv("leading_dense_block_count", 0),
            "q_lora_rank": kv("attention.q_lora_rank"),
            "kv_lora_rank": kv_rank,
            "qk_rope_head_dim": rope_dim,
            "qk_nope_head_dim": (key_mla - rope_dim) if key_mla is not None and rope_dim is not None else None,
            "v_head_dim": value_mla,
            "routed_scaling_factor": kv("expert_weights_scale", 1.0),
            "norm_topk_prob": bool(kv("expert_weights_norm", False)),
            "n_group": kv("expert_group_count", 1),
            "topk_group": kv("expert_group_used_count", 1),
            "scoring_func": _GATING.get(kv("expert_gating_func", 1), "softmax"),
        })
        if model_type == "deepseek_v3":
            config["topk_method"] = "noaux_tc"
            config["num_nextn_predict_layers"] = kv("nextn_predict_layers", 0)
    if model_type == "gpt_oss":
        window = kv("attention.sliding_window")
        if window:
            config["sliding_window"] = window
            config["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention"
                                     for i in range(config["num_hidden_layers"] or 0)]
    if model_type == "granitemoe":
        for key, name in (("attention.scale", "attention_multiplier"), ("embedding_scale", "embedding_multiplier"),
                          ("residual_scale", "residual_multiplier"), ("logit_scale", "logits_scaling")):
            value = kv(key)
            if value is not None:
                config[name] = value
    if model_type == "phimoe":
        config["lm_head_bias"] = "output.bias" in shapes
    if model_type in _FAMILY_KEYS:
        _FAMILY_KEYS[model_type](config, kv, shapes)
    return {k: v for k, v in config.items() if v is not None}


def _deepseek_style_routing(config: dict, kv) -> None:
    """Sigmoid routing with a correction bias, groups, shared experts and leading dense layers (GLM-4.5, dots.llm1)."""
    config.update({
        "moe_intermediate_size": kv("expert_feed_forward_length"),
        "n_shared_experts": kv("expert_shared_count", 0),
        "first_k_dense_replace": kv("leading_dense_block_count", 0),
        "routed_scaling_factor": kv("expert_weights_scale", 1.0),
        "norm_topk_prob": bool(kv("expert_weights_norm", False)),
        "n_group": kv("expert_group_count", 1),
        "topk_group": kv("expert_group_used_count", 1),
    })


def _glm4_moe(config: dict, kv, shapes: dict) -> None:
    _deepseek_style_routing(config, kv)
    nextn = kv("nextn_predict_layers", 0)
    if config.get("num_hidden_layers") is not None:
        config["num_hidden_layers"] -= nextn  # llama.cpp counts the multi-token-prediction layers as blocks
    config["num_nextn_predict_layers"] = nextn
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    if kv("rope.dimension_count"):
        config["partial_rotary_factor"] = kv("rope.dimension_count") / head_dim
    config["use_qk_norm"] = "blk.0.attn_q_norm.weight" in shapes
    config["attention_bias"] = "blk.0.attn_q.bias" in shapes  # q, k and v only


def _dots1(config: dict, kv, shapes: dict) -> None:
    _deepseek_style_routing(config, kv)


def _minimax_m2(config: dict, kv, shapes: dict) -> None:
    config["intermediate_size"] = kv("expert_feed_forward_length", config.get("intermediate_size"))
    config["rotary_dim"] = kv("rope.dimension_count")


def _hunyuan_v1_moe(config: dict, kv, shapes: dict) -> None:
    # llama.cpp writes the NTK-alpha-scaled base as rope.freq_base, so no alpha is needed here
    config["intermediate_size"] = kv("expert_feed_forward_length", config.get("intermediate_size"))
    config["moe_topk"] = config.pop("num_experts_per_tok", None)
    config["num_shared_expert"] = kv("expert_shared_count", 1)
    config["num_experts"] = config.pop("num_local_experts", None)


def _ernie4_5_moe(config: dict, kv, shapes: dict) -> None:
    config.update({
        "moe_num_experts": config.pop("num_local_experts", None),
        "moe_k": config.pop("num_experts_per_tok", None),
        "moe_intermediate_size": kv("expert_feed_forward_length"),
        "moe_num_shared_experts": kv("expert_shared_count", 0),
        "moe_layer_start_index": kv("leading_dense_block_count", 0),
        "moe_layer_interval": kv("interleave_moe_layer_step", 1),
        "moe_layer_end_index": -1,
    })


def _dbrx(config: dict, kv, shapes: dict) -> None:
    # DBRX's own (MPT-style) config names; llama.cpp always renormalizes the top-k weights by their sum
    for gguf_name, dbrx_name in (("hidden_size", "d_model"), ("num_hidden_layers", "n_layers"),
                                 ("num_attention_heads", "n_heads"), ("max_position_embeddings", "max_seq_len")):
        config[dbrx_name] = config.pop(gguf_name, None)
    config["attn_config"] = {k: v for k, v in (("kv_n_heads", config.pop("num_key_value_heads", None)),
                                               ("clip_qkv", kv("attention.clamp_kqv")),
                                               ("rope_theta", config.get("rope_theta"))) if v is not None}
    config["ffn_config"] = {k: v for k, v in (("ffn_hidden_size", kv("expert_feed_forward_length",
                                                                       config.pop("intermediate_size", None))),
                                              ("moe_num_experts", config.pop("num_local_experts", None)),
                                              ("moe_top_k", config.pop("num_experts_per_tok", None)),
                                              ("moe_normalize_expert_weights", 1.0)) if v is not None}
    config.pop("head_dim", None)
    config.pop("rms_norm_eps", None)


def _llama4_text(config: dict, kv, shapes: dict) -> None:
    # llama.cpp's fixed Llama 4 settings: RoPE skipped every 4th layer, chunks of 8192 positions on the others,
    # temperature tuning from 8192, q/k norms unless there are 128 experts (Maverick); a sliding_window of 0
    # switches chunks and NoPE layers off
    config["intermediate_size_mlp"] = config.get("intermediate_size")
    config["intermediate_size"] = kv("expert_feed_forward_length")
    config["interleave_moe_layer_step"] = kv("interleave_moe_layer_step", 1)
    config["use_qk_norm"] = config.get("num_local_experts") != 128
    if kv("attention.sliding_window") == 0:
        config["attention_chunk_size"] = None
        config["no_rope_layers"] = [1] * (config.get("num_hidden_layers") or 0)
    else:
        config.update({"attention_chunk_size": 8192, "no_rope_layer_interval": 4, "attn_temperature_tuning": True,
                       "floor_scale": 8192, "attn_scale": 0.1})


_FAMILY_KEYS = {"glm4_moe": _glm4_moe, "dots1": _dots1, "minimax_m2": _minimax_m2, "hunyuan_v1_moe": _hunyuan_v1_moe,
                "ernie4_5_moe": _ernie4_5_moe, "dbrx": _dbrx, "llama4_text": _llama4_text}


_HF_CLASS = {"qwen2_moe": "Qwen2MoeForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM", "mixtral": "MixtralForCausalLM",
             "olmoe": "OlmoeForCausalLM", "deepseek_v2": "DeepseekV2ForCausalLM",
             "deepseek_v3": "DeepseekV3ForCausalLM", "gpt_oss": "GptOssForCausalLM",
             "granitemoe": "GraniteMoeForCausalLM", "phimoe": "PhimoeForCausalLM", "llama": "LlamaForCausalLM",
             "qwen2": "Qwen2ForCausalLM", "glm4_moe": "Glm4MoeForCausalLM", "dots1": "Dots1ForCausalLM",
             "minimax_m2": "MiniMaxM2ForCausalLM", "hunyuan_v1_moe": "HunYuanMoEV1ForCausalLM",
             "ernie4_5_moe": "Ernie4_5_MoeForCausalLM", "dbrx": "DbrxForCausalLM", "llama4_text": "Llama4ForCausalLM"}
