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
               "deepseek_v2": "n_routed_experts", "deepseek_v3": "n_routed_experts"}.get(model_type,
                                                                                          "num_local_experts")
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
    return {k: v for k, v in config.items() if v is not None}


_HF_CLASS = {"qwen2_moe": "Qwen2MoeForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM", "mixtral": "MixtralForCausalLM",
             "olmoe": "OlmoeForCausalLM", "deepseek_v2": "DeepseekV2ForCausalLM",
             "deepseek_v3": "DeepseekV3ForCausalLM", "gpt_oss": "GptOssForCausalLM",
             "granitemoe": "GraniteMoeForCausalLM", "phimoe": "PhimoeForCausalLM", "llama": "LlamaForCausalLM",
             "qwen2": "Qwen2ForCausalLM"}
