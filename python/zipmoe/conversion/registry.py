"""The architecture registry: which canonical tensors a model has, and how source names map to them.

Canonical tensors use llama.cpp's naming vocabulary and HF semantics: every
weight matrix is [out_features, in_features] row-major (nn.Linear layout), q/k
rows in HF order, and every routed expert projection is its own tensor
``blk.{i}.ffn_{gate,up,down}_exps.{e}.weight`` with role expert(i, e, projection).
docs/FORMAT.md ("Conversion") lists the names and the transforms per source.

Public functions:
  expected_tensors(metadata)          canonical name -> ExpectedTensor, from the
                                      architecture and config alone
  model_dims(architecture, config)    the numbers those shapes come from
  hf_pieces(...) / gguf_pieces(...)   how each source tensor maps to canonical ones
  role_of(canonical_name)             None (dense) or {"layer", "expert", "projection"}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .. import _core
from . import views

MOE_ARCHITECTURES = ("qwen2_moe", "qwen3_moe", "mixtral", "olmoe", "deepseek_v2", "deepseek_v3", "gpt_oss",
                     "granitemoe", "phimoe", "glm4_moe", "dots1", "minimax_m2", "hunyuan_v1_moe", "ernie4_5_moe",
                     "dbrx", "llama4_text")
SUPPORTED_ARCHITECTURES = MOE_ARCHITECTURES + ("llama", "qwen2")
# Families whose router picks among sigmoid scores plus a correction bias (DeepSeek-V3 style).
_CORRECTION_BIAS = ("deepseek_v3", "glm4_moe", "dots1", "minimax_m2", "ernie4_5_moe")

# GGUF general.architecture -> HF model_type (llama and deepseek2 are refined from the file's contents).
GGUF_ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe",
                      "olmoe": "olmoe", "deepseek2": "deepseek_v2", "gpt-oss": "gpt_oss", "granitemoe": "granitemoe",
                      "phimoe": "phimoe", "glm4moe": "glm4_moe", "dots1": "dots1", "minimax-m2": "minimax_m2",
                      "hunyuan-moe": "hunyuan_v1_moe", "ernie4_5-moe": "ernie4_5_moe", "dbrx": "dbrx",
                      "llama4": "llama4_text"}
# GGUF architectures whose q/k rows llama.cpp's converter permutes (LlamaModel.permute); undone on import.
GGUF_PERMUTED_QK = ("llama", "granitemoe")

PROJECTIONS = ("gate", "up", "down")
_EXPERT_NAME = re.compile(r"blk\.(\d+)\.ffn_(gate|up|down)_exps\.(\d+)\.weight")


def unsupported(message: str) -> Exception:
    return _core.UnsupportedModelError(message)


def mismatch(message: str) -> Exception:
    return _core.FormatError(message)


def supported_list() -> str:
    return ", ".join(SUPPORTED_ARCHITECTURES)


def role_of(canonical: str):
    """None for a dense tensor; {"layer", "expert", "projection"} for a routed expert projection."""
    m = _EXPERT_NAME.fullmatch(canonical)
    if not m:
        return None
    return {"layer": int(m.group(1)), "expert": int(m.group(3)), "projection": m.group(2)}


def expert_name(layer: int, expert: int, projection: str) -> str:
    return f"blk.{layer}.ffn_{projection}_exps.{expert}.weight"


# ------------------------------------------------------------------------------------------ dimensions

def config_get(config: dict, *keys, default=None):
    """The first of ``keys`` present (and not None) in ``config``."""
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def rope_theta(config: dict, default: float = 10000.0) -> float:
    """rope_theta as published configs (top level) and transformers 5 (rope_parameters) write it."""
    theta = config.get("rope_theta")
    if theta is None and isinstance(config.get("rope_parameters"), dict):
        theta = config["rope_parameters"].get("rope_theta")
    return float(theta) if theta is not None else default


@dataclass
class ModelDims:
    architecture: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense FFN
    num_experts: int = 0
    experts_per_token: int = 0
    expert_intermediate_size: int = 0
    shared_intermediate_size: int = 0  # 0: no shared expert
    moe_layers: list = field(default_factory=list)
    tie_word_embeddings: bool = False
    # MLA (deepseek)
    q_lora_rank: int | None = None
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    extra_layers: int = 0  # deepseek_v3 multi-token-prediction layers after num_layers (not checked)


def _required(config: dict, architecture: str, *keys) -> int:
    value = config_get(config, *keys)
    if value is None:
        raise mismatch(f"{architecture} config has no {' / '.join(keys)}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise mismatch(f"{architecture} config: {keys[0]} must be a non-negative integer, not {value!r}")
    return value


def _uniform(config: dict, architecture: str, key: str, default):
    """A value that some configs write once per layer (Hunyuan's moe_topk): the one value of a uniform list."""
    value = config.get(key, default)
    if isinstance(value, list):
        if not value or any(v != value[0] for v in value):
            raise unsupported(f"{architecture} config: {key} varies per layer ({value[:8]}), which zipmoe does not "
                              f"support")
        return value[0]
    return value


def _layer_list(config: dict, key: str, num_layers: int) -> set:
    return {i for i in (config.get(key) or []) if isinstance(i, int) and 0 <= i < num_layers}


def _moe_layers(a: str, config: dict, num_layers: int, num_experts: int) -> list:
    """The MoE layers, by each family's config keys (the engine's rules, cpp/model/config.cpp)."""
    layers = range(num_layers)
    if num_experts == 0:
        return []
    if a in ("qwen2_moe", "qwen3_moe"):
        dense_only = _layer_list(config, "mlp_only_layers", num_layers)
        step = config_get(config, "decoder_sparse_step", default=1) or 1
        return [i for i in layers if i not in dense_only and (i + 1) % step == 0]
    if a in ("deepseek_v2", "deepseek_v3", "glm4_moe", "dots1"):
        first_dense = config_get(config, "first_k_dense_replace", default=1 if a == "glm4_moe" else 0)
        freq = config_get(config, "moe_layer_freq", default=1) or 1
        return [i for i in layers if i >= first_dense and i % freq == 0]
    if a == "ernie4_5_moe":
        start = config_get(config, "moe_layer_start_index", default=1)
        interval = config_get(config, "moe_layer_interval", default=1) or 1
        end = config_get(config, "moe_layer_end_index", default=-1)
        end = num_layers - 1 if end == -1 else end
        return [i for i in layers if (i + 1) % interval == 0 and start <= i <= end]
    if a == "llama4_text":
        if config.get("moe_layers") is not None:
            return sorted(_layer_list(config, "moe_layers", num_layers))
        step = config_get(config, "interleave_moe_layer_step", default=1) or 1
        return [i for i in layers if (i + 1) % step == 0]
    return list(layers)


def _moe_dims(dims: ModelDims, config: dict) -> None:
    """Expert count and widths, shared experts, MoE layers, MLA ranks."""
    a = dims.architecture
    if a == "dbrx":
        ffn = config.get("ffn_config") or {}
        dims.num_experts = config_get(ffn, "moe_num_experts", default=4)
        dims.experts_per_token = config_get(ffn, "moe_top_k", default=1)
        dims.expert_intermediate_size = config_get(ffn, "ffn_hidden_size", default=3584)
    else:
        dims.num_experts = _required(config, a, "num_experts", "num_local_experts", "n_routed_experts",
                                     "moe_num_experts")
        k_key = {"ernie4_5_moe": "moe_k", "hunyuan_v1_moe": "moe_topk"}.get(a, "num_experts_per_tok")
        dims.experts_per_token = _uniform(config, a, k_key, 1 if a == "llama4_text" else 0) or 0
        if a in ("qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "glm4_moe", "dots1", "ernie4_5_moe"):
            dims.expert_intermediate_size = _required(config, a, "moe_intermediate_size")
        else:
            dims.expert_intermediate_size = _required(config, a, "intermediate_size")
    I = dims.expert_intermediate_size
    if a == "qwen2_moe":
        dims.shared_intermediate_size = config_get(config, "shared_expert_intermediate_size", default=0)
    elif a in ("deepseek_v2", "deepseek_v3", "glm4_moe", "dots1"):
        dims.shared_intermediate_size = I * config_get(config, "n_shared_experts", default=1 if a == "glm4_moe" else 0)
    elif a == "ernie4_5_moe":
        dims.shared_intermediate_size = I * config_get(config, "moe_num_shared_experts", default=2)
    elif a in ("hunyuan_v1_moe", "llama4_text"):
        dims.shared_intermediate_size = I
    dims.moe_layers = _moe_layers(a, config, dims.num_layers, dims.num_experts)
    if a in ("deepseek_v2", "deepseek_v3"):
        dims.q_lora_rank = config_get(config, "q_lora_rank")
        dims.kv_lora_rank = _required(config, a, "kv_lora_rank")
        dims.qk_nope_head_dim = _required(config, a, "qk_nope_head_dim")
        dims.qk_rope_head_dim = _required(config, a, "qk_rope_head_dim")
        dims.v_head_dim = _required(config, a, "v_head_dim")
    if a in ("deepseek_v3", "glm4_moe"):
        dims.extra_layers = config_get(config, "num_nextn_predict_layers", default=0)


# Families that read head_dim from the config (others derive it from hidden_size / heads).
_HEAD_DIM_KEY = ("qwen3_moe", "gpt_oss", "llama", "qwen2", "glm4_moe", "dots1", "minimax_m2", "hunyuan_v1_moe",
                 "ernie4_5_moe", "llama4_text")


def model_dims(architecture: str, config: dict) -> ModelDims:
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise unsupported(f"unsupported architecture {architecture!r}; supported: {supported_list()}")
    a = architecture
    dbrx = a == "dbrx"  # MPT-style names, the KV heads in attn_config
    hidden = _required(config, a, "d_model" if dbrx else "hidden_size")
    heads = _required(config, a, "n_heads" if dbrx else "num_attention_heads")
    if heads == 0:
        raise mismatch(f"{a} config: num_attention_heads is 0")
    if dbrx:
        kv_heads = config_get(config.get("attn_config") or {}, "kv_n_heads", default=1)
    else:
        kv_heads = config_get(config, "num_key_value_heads", default=heads)
    head_dim = config_get(config, "head_dim") if a in _HEAD_DIM_KEY else None
    dense_key = "intermediate_size_mlp" if a == "llama4_text" else "intermediate_size"
    dims = ModelDims(
        architecture=a,
        vocab_size=_required(config, a, "vocab_size"),
        hidden_size=hidden,
        num_layers=_required(config, a, "n_layers" if dbrx else "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim if head_dim else hidden // heads,
        intermediate_size=config_get(config, dense_key, default=0),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", a == "ernie4_5_moe")),
    )
    if a not in MOE_ARCHITECTURES:
        return dims
    _moe_dims(dims, config)
    return dims


# ----------------------------------------------------------------------------------- expected tensors

@dataclass(frozen=True)
class ExpectedTensor:
    shape: tuple
    required: bool = True  # False: may be absent (optional biases, tied output, rope factors)


def expected_tensors(metadata_or_architecture, config: dict | None = None) -> dict:
    """Canonical name -> ExpectedTensor for a container's metadata (or an architecture and config).

    Names of deepseek_v3 multi-token-prediction layers (index >= num_hidden_layers)
    are not listed; ``extra_layer_prefixes`` gives their prefixes. A "generic"
    container has no expectations ({}).
    """
    if isinstance(metadata_or_architecture, dict):
        architecture = metadata_or_architecture.get("architecture")
        config = metadata_or_architecture.get("config") or {}
    else:
        architecture = metadata_or_architecture
    if architecture == "generic":
        return {}
    d = model_dims(architecture, config or {})
    a = architecture
    out: dict[str, ExpectedTensor] = {}

    def add(name, *shape, required=True):
        out[name] = ExpectedTensor(tuple(int(s) for s in shape), required)

    H, V = d.hidden_size, d.vocab_size
    add("token_embd.weight", V, H)
    add("output_norm.weight", H)
    add("output.weight", V, H, required=not d.tie_word_embeddings)
    if a == "phimoe":
        add("output_norm.bias", H)
        if config.get("lm_head_bias"):
            add("output.bias", V)
    if a in ("llama", "llama4_text"):
        add("rope_freqs.weight", d.head_dim // 2, required=False)
    attention_bias = bool(config.get("attention_bias", False))
    qkv_bias = a == "qwen2" or (a == "qwen2_moe" and config.get("qkv_bias", True))
    output_bias = attention_bias and a != "glm4_moe"  # GLM-4.5's attention_bias is on q, k and v only
    qk_norm = _qk_norm(a, config)
    for i in range(d.num_layers):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", H)
        add(p + "ffn_norm.weight", H)
        if a == "phimoe":
            add(p + "attn_norm.bias", H)
            add(p + "ffn_norm.bias", H)
        if a in ("deepseek_v2", "deepseek_v3"):
            qk_dim = d.qk_nope_head_dim + d.qk_rope_head_dim
            if d.q_lora_rank:
                add(p + "attn_q_a.weight", d.q_lora_rank, H)
                add(p + "attn_q_a_norm.weight", d.q_lora_rank)
                add(p + "attn_q_b.weight", d.num_heads * qk_dim, d.q_lora_rank)
            else:
                add(p + "attn_q.weight", d.num_heads * qk_dim, H)
            add(p + "attn_kv_a_mqa.weight", d.kv_lora_rank + d.qk_rope_head_dim, H)
            add(p + "attn_kv_a_norm.weight", d.kv_lora_rank)
            add(p + "attn_kv_b.weight", d.num_heads * (d.qk_nope_head_dim + d.v_head_dim), d.kv_lora_rank)
            add(p + "attn_output.weight", H, d.num_heads * d.v_head_dim)
        else:
            q_rows, kv_rows = d.num_heads * d.head_dim, d.num_kv_heads * d.head_dim
            add(p + "attn_q.weight", q_rows, H)
            add(p + "attn_k.weight", kv_rows, H)
            add(p + "attn_v.weight", kv_rows, H)
            add(p + "attn_output.weight", H, q_rows)
            if attention_bias or qkv_bias:
                add(p + "attn_q.bias", q_rows)
                add(p + "attn_k.bias", kv_rows)
                add(p + "attn_v.bias", kv_rows)
            if output_bias:
                add(p + "attn_output.bias", H)
            if qk_norm == "head":
                add(p + "attn_q_norm.weight", d.head_dim)
                add(p + "attn_k_norm.weight", d.head_dim)
            elif qk_norm == "projection":
                add(p + "attn_q_norm.weight", q_rows)
                add(p + "attn_k_norm.weight", kv_rows)
            elif a == "gpt_oss":
                add(p + "attn_sinks.weight", d.num_heads)
        if i in d.moe_layers:
            E, I = d.num_experts, d.expert_intermediate_size
            add(p + "ffn_gate_inp.weight", E, H)
            if a == "gpt_oss":
                add(p + "ffn_gate_inp.bias", E)
                add(p + "ffn_gate_exps.bias", E, I)
                add(p + "ffn_up_exps.bias", E, I)
                add(p + "ffn_down_exps.bias", E, H)
            if a in _CORRECTION_BIAS:
                add(p + "exp_probs_b.bias", E)
            for e in range(E):
                add(expert_name(i, e, "gate"), I, H)
                add(expert_name(i, e, "up"), I, H)
                add(expert_name(i, e, "down"), H, I)
            if d.shared_intermediate_size:
                S = d.shared_intermediate_size
                add(p + "ffn_gate_shexp.weight", S, H)
                add(p + "ffn_up_shexp.weight", S, H)
                add(p + "ffn_down_shexp.weight", H, S)
                if a == "qwen2_moe":
                    add(p + "ffn_gate_inp_shexp.weight", 1, H)
        else:
            add(p + "ffn_gate.weight", d.intermediate_size, H)
            add(p + "ffn_up.weight", d.intermediate_size, H)
            add(p + "ffn_down.weight", H, d.intermediate_size)
    return out


def _qk_norm(a: str, config: dict):
    """"head" (a norm of head_dim per q/k head), "projection" (of the whole q and k), or None."""
    if a in ("qwen3_moe", "dots1", "hunyuan_v1_moe") or (a == "glm4_moe" and config.get("use_qk_norm")):
        return "head"
    if a in ("olmoe", "minimax_m2"):
        return "projection"
    return None


def extra_layer_prefixes(architecture: str, config: dict) -> tuple:
    """Prefixes of layers the registry accepts without checking (deepseek_v3 MTP layers)."""
    if architecture not in SUPPORTED_ARCHITECTURES:
        return ()
    d = model_dims(architecture, config)
    return tuple(f"blk.{i}." for i in range(d.num_layers, d.num_layers + d.extra_layers))


def check_against_config(architecture: str, config: dict, shapes: dict, where: str) -> None:
    """FormatError naming the first disagreement between canonical ``shapes`` and the config."""
    expected = expected_tensors(architecture, config)
    extra_prefixes = extra_layer_prefixes(architecture, config)
    for name, shape in shapes.items():
        want = expected.get(name)
        if want is None:
            if extra_prefixes and name.startswith(extra_prefixes):
                continue
            raise mismatch(f"{where}: tensor {name} is not part of a {architecture} model with this config "
                           f"(config and tensors disagree)")
        if tuple(shape) != want.shape:
            raise mismatch(f"{where}: tensor {name} has shape {list(shape)} but the config implies "
                           f"{list(want.shape)} (config and tensors disagree)")
    missing = [name for name, want in expected.items() if want.required and name not in shapes]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise mismatch(f"{where}: tensor {missing[0]}{more} expected by the {architecture} config is missing")


# --------------------------------------------------------------------------------------- HF mapping

_HF_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "model.norm.bias": "output_norm.bias",
    "lm_head.weight": "output.weight",
    "lm_head.bias": "output.bias",
}
_HF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "input_layernorm.bias": "attn_norm.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "post_attention_layernorm.bias": "ffn_norm.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "self_attn.sinks": "attn_sinks.weight",
    "self_attn.q_a_proj.weight": "attn_q_a.weight",
    "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
    "self_attn.q_b_proj.weight": "attn_q_b.weight",
    "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
    "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight",
    "self_attn.kv_b_proj.weight": "attn_kv_b.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
    "block_sparse_moe.gate.weight": "ffn_gate_inp.weight",
    "mlp.router.weight": "ffn_gate_inp.weight",
    "mlp.router.bias": "ffn_gate_inp.bias",
    "block_sparse_moe.router.layer.weight": "ffn_gate_inp.weight",
    "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
    "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
    "mlp.experts.down_proj_bias": "ffn_down_exps.bias",
    # hunyuan_v1_moe
    "self_attn.query_layernorm.weight": "attn_q_norm.weight",
    "self_attn.key_layernorm.weight": "attn_k_norm.weight",
    "mlp.gate.wg.weight": "ffn_gate_inp.weight",
    # minimax_m2
    "block_sparse_moe.e_score_correction_bias": "exp_probs_b.bias",
    # llama4_text
    "feed_forward.router.weight": "ffn_gate_inp.weight",
    # deepseek_v3 multi-token-prediction layers
    "embed_tokens.weight": "nextn.embed_tokens.weight",
    "enorm.weight": "nextn.enorm.weight",
    "hnorm.weight": "nextn.hnorm.weight",
    "eh_proj.weight": "nextn.eh_proj.weight",
    "shared_head.norm.weight": "nextn.shared_head_norm.weight",
    "shared_head.head.weight": "nextn.shared_head_head.weight",
}
for _hf, _gguf in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("o_proj", "attn_output")):
    _HF_LAYER[f"self_attn.{_hf}.weight"] = f"{_gguf}.weight"
    _HF_LAYER[f"self_attn.{_hf}.bias"] = f"{_gguf}.bias"
for _shared in ("mlp.shared_expert", "mlp.shared_experts", "mlp.shared_mlp", "feed_forward.shared_expert"):
    for _projection in PROJECTIONS:
        _HF_LAYER[f"{_shared}.{_projection}_proj.weight"] = f"ffn_{_projection}_shexp.weight"
for _projection in PROJECTIONS:
    _HF_LAYER[f"feed_forward.{_projection}_proj.weight"] = f"ffn_{_projection}.weight"  # Llama 4's dense layers

_HF_LAYER_PREFIX = re.compile(r"model\.layers\.(\d+)\.(.+)")
_HF_EXPERT = re.compile(r"mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight")
_HF_SPARSE_EXPERT = re.compile(r"block_sparse_moe\.experts\.(\d+)\.(w1|w2|w3)\.weight")
_W_PROJECTION = {"w1": "gate", "w3": "up", "w2": "down"}


@dataclass
class Piece:
    canonical: str
    src: list  # view operations on the source tensor
    dst: list  # view operations on the canonical tensor
    shape: tuple | None = None  # the canonical tensor's shape; needed only when dst is not empty

    def to_json(self) -> dict:
        out = {"tensor": self.canonical}
        if self.src:
            out["src"] = self.src
        if self.dst:
            out["dst"] = self.dst
        return out

    @staticmethod
    def from_json(obj) -> "Piece":
        if not isinstance(obj, dict) or not isinstance(obj.get("tensor"), str):
            raise mismatch(f"malformed piece {obj!r} in the container metadata")
        return Piece(obj["tensor"], obj.get("src") or [], obj.get("dst") or [])

    @property
    def identity(self) -> bool:
        return not self.src and not self.dst


def _split_experts(layer: int, shape, projection_ops) -> list:
    """Pieces for a fused [E, ...] tensor: projection -> function(e) giving the source ops."""
    pieces = []
    for e in range(shape[0]):
        for projection, make_ops in projection_ops.items():
            pieces.append(Piece(expert_name(layer, e, projection), make_ops(e), []))
    return pieces


def _fused_gate_up_rows(name: str, layer: int, shape) -> list:
    """[E, 2I, H]: gate rows first, then up rows (granitemoe input_linear, transformers' fused experts)."""
    if len(shape) != 3 or shape[1] % 2:
        raise mismatch(f"tensor {name}: a fused gate/up expert tensor must be [experts, 2*intermediate, hidden], "
                       f"not {list(shape)}")
    half = shape[1] // 2
    return _split_experts(layer, shape, {
        "gate": lambda e: [views.index(e, slice(0, half, None))],
        "up": lambda e: [views.index(e, slice(half, 2 * half, None))],
    })


def _stacked(name: str, layer: int, shape, projection: str, transposed: bool = False) -> list:
    if len(shape) != 3:
        raise mismatch(f"tensor {name}: stacked expert tensors are 3-D, not {list(shape)}")
    if transposed:
        return _split_experts(layer, shape, {projection: lambda e: [views.index(e), views.transpose(1, 0)]})
    return _split_experts(layer, shape, {projection: lambda e: [views.index(e)]})


_DBRX_GLOBAL = {"transformer.wte.weight": "token_embd.weight", "transformer.norm_f.weight": "output_norm.weight",
                "lm_head.weight": "output.weight"}
_DBRX_LAYER_PREFIX = re.compile(r"transformer\.blocks\.(\d+)\.(.+)")
_DBRX_LAYER = {"norm_attn_norm.norm_1.weight": "attn_norm.weight", "norm_attn_norm.norm_2.weight": "ffn_norm.weight",
               "norm_attn_norm.attn.out_proj.weight": "attn_output.weight",
               "ffn.router.layer.weight": "ffn_gate_inp.weight"}
_DBRX_EXPERTS = {"ffn.experts.mlp.w1": "gate", "ffn.experts.mlp.v1": "up", "ffn.experts.mlp.w2": "down"}


def _dbrx_pieces(name: str, shape, config: dict) -> list:
    """DBRX: a fused Wqkv [q | k | v rows], and experts stacked as [experts * I, hidden] (w2 transposed)."""
    if name in _DBRX_GLOBAL:
        return [Piece(_DBRX_GLOBAL[name], [], [])]
    m = _DBRX_LAYER_PREFIX.fullmatch(name)
    if m:
        layer, rest = int(m.group(1)), m.group(2)
        prefix = f"blk.{layer}."
        if rest in _DBRX_LAYER:
            return [Piece(prefix + _DBRX_LAYER[rest], [], [])]
        d = model_dims("dbrx", config)
        if rest == "norm_attn_norm.attn.Wqkv.weight":
            q_rows, kv_rows = d.num_heads * d.head_dim, d.num_kv_heads * d.head_dim
            if len(shape) != 2 or shape[0] != q_rows + 2 * kv_rows:
                raise mismatch(f"tensor {name}: expected [{q_rows + 2 * kv_rows}, hidden] (q, k, v rows), not "
                               f"{list(shape)} (config and tensors disagree)")
            return [Piece(prefix + "attn_q.weight", [views.index(slice(0, q_rows, None))], []),
                    Piece(prefix + "attn_k.weight", [views.index(slice(q_rows, q_rows + kv_rows, None))], []),
                    Piece(prefix + "attn_v.weight", [views.index(slice(q_rows + kv_rows, None, None))], [])]
        if rest in _DBRX_EXPERTS:
            E, I = d.num_experts, d.expert_intermediate_size
            if len(shape) != 2 or shape[0] != E * I:
                raise mismatch(f"tensor {name}: expected [{E} experts x {I}, hidden], not {list(shape)} (config and "
                               f"tensors disagree)")
            projection = _DBRX_EXPERTS[rest]
            transposed = [views.transpose(1, 0)] if projection == "down" else []
            return [Piece(expert_name(layer, e, projection), [views.index(slice(e * I, (e + 1) * I, None))] + transposed,
                          []) for e in range(E)]
    raise unsupported(f"tensor {name!r} is not part of a dbrx checkpoint that zipmoe knows "
                      f"(use --generic to compress it without expert roles)")


def _llama4_experts(name: str, layer: int, rest: str, shape) -> list:
    """Llama 4's fused experts: gate_up [E, hidden, 2I] (gate columns first), down [E, I, hidden]."""
    if len(shape) != 3:
        raise mismatch(f"tensor {name}: stacked expert tensors are 3-D, not {list(shape)}")
    if rest == "feed_forward.experts.down_proj":
        return _stacked(name, layer, shape, "down", transposed=True)
    if shape[2] % 2:
        raise mismatch(f"tensor {name}: expected [experts, hidden, 2*intermediate], not {list(shape)}")
    half = shape[2] // 2
    return _split_experts(layer, shape, {
        "gate": lambda e: [views.index(e, slice(None, None, None), slice(0, half, None)), views.transpose(1, 0)],
        "up": lambda e: [views.index(e, slice(None, None, None), slice(half, 2 * half, None)), views.transpose(1, 0)],
    })


def hf_pieces(architecture: str, name: str, shape, config: dict | None = None) -> list:
    """The canonical pieces of HF tensor ``name`` (UnsupportedModelError when it is not part of the architecture).

    ``config`` (the folder's config.json) is needed where the tensor shapes alone do not say how to cut a fused
    tensor (dbrx).
    """
    if architecture == "dbrx":
        return _dbrx_pieces(name, shape, config or {})
    if name in _HF_GLOBAL:
        return [Piece(_HF_GLOBAL[name], [], [])]
    m = _HF_LAYER_PREFIX.fullmatch(name)
    if m:
        layer, rest = int(m.group(1)), m.group(2)
        prefix = f"blk.{layer}."
        if rest in _HF_LAYER:
            return [Piece(prefix + _HF_LAYER[rest], [], [])]
        if rest == "mlp.moe_statics.e_score_correction_bias":  # ERNIE 4.5 keeps it as [1, experts]
            if len(shape) != 2 or shape[0] != 1:
                raise mismatch(f"tensor {name}: expected [1, experts], not {list(shape)}")
            return [Piece(prefix + "exp_probs_b.bias", [views.reshape(shape[1])], [])]
        if architecture == "llama4_text" and rest in ("feed_forward.experts.gate_up_proj",
                                                      "feed_forward.experts.down_proj"):
            return _llama4_experts(name, layer, rest, shape)
        e = _HF_EXPERT.fullmatch(rest)
        if e:
            return [Piece(expert_name(layer, int(e.group(1)), e.group(2)), [], [])]
        e = _HF_SPARSE_EXPERT.fullmatch(rest)
        if e:
            return [Piece(expert_name(layer, int(e.group(1)), _W_PROJECTION[e.group(2)]), [], [])]
        if architecture == "gpt_oss":
            if rest == "mlp.experts.gate_up_proj":
                # [E, H, 2I] with gate and up interleaved along the last axis; canonical is [I, H] per expert.
                if len(shape) != 3 or shape[2] % 2:
                    raise mismatch(f"tensor {name}: expected [experts, hidden, 2*intermediate], not {list(shape)}")
                return _split_experts(layer, shape, {
                    "gate": lambda e: [views.index(e, slice(None, None, None), slice(0, None, 2)),
                                       views.transpose(1, 0)],
                    "up": lambda e: [views.index(e, slice(None, None, None), slice(1, None, 2)),
                                     views.transpose(1, 0)],
                })
            if rest == "mlp.experts.down_proj":
                return _stacked(name, layer, shape, "down", transposed=True)  # [E, I, H]
            if rest == "mlp.experts.gate_up_proj_bias":
                if len(shape) != 2 or shape[1] % 2:
                    raise mismatch(f"tensor {name}: expected [experts, 2*intermediate], not {list(shape)}")
                return [Piece(prefix + "ffn_gate_exps.bias", [views.index(slice(None), slice(0, None, 2))], []),
                        Piece(prefix + "ffn_up_exps.bias", [views.index(slice(None), slice(1, None, 2))], [])]
        elif architecture == "granitemoe":
            if rest == "block_sparse_moe.input_linear.weight":
                return _fused_gate_up_rows(name, layer, shape)
            if rest == "block_sparse_moe.output_linear.weight":
                return _stacked(name, layer, shape, "down")  # [E, H, I]
        else:
            # transformers' fused expert layout: gate_up [E, 2I, H], down [E, H, I]
            if rest in ("mlp.experts.gate_up_proj", "mlp.experts.gate_up_proj.weight"):
                return _fused_gate_up_rows(name, layer, shape)
            if rest in ("mlp.experts.down_proj", "mlp.experts.down_proj.weight"):
                return _stacked(name, layer, shape, "down")
    raise unsupported(f"tensor {name!r} is not part of a {architecture} checkpoint that zipmoe knows "
                      f"(use --generic to compress it without expert roles)")


# ------------------------------------------------------------------------------------- GGUF mapping

_GGUF_STACKED = re.compile(r"blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight")
_GGUF_GATE_UP = re.compile(r"blk\.(\d+)\.ffn_gate_up_exps\.weight")
_GGUF_OLD_EXPERT = re.compile(r"blk\.(\d+)\.ffn_(gate|up|down)\.(\d+)\.weight")
_GGUF_QK = re.compile(r"blk\.(\d+)\.attn_(q|k)\.(weight|bias)")
_GGUF_MLA_SPLIT = re.compile(r"blk\.(\d+)\.attn_(k|v)_b\.weight")
_GGUF_POST_ATTENTION_NORM = re.compile(r"blk\.(\d+)\.(post_attention_norm|attn_output_norm)\.weight")
_GGUF_FUSED_QKV = re.compile(r"blk\.(\d+)\.attn_qkv\.weight")
_GGUF_CORRECTION_BIAS = re.compile(r"blk\.(\d+)\.exp_probs_b\.bias")
# GGUF architectures whose pre-FFN norm llama.cpp names after HF's post_attention_layernorm (or DBRX's norm_2)
_GGUF_FFN_NORM_RENAMED = {"gpt-oss": "post_attention_norm", "glm4moe": "post_attention_norm",
                          "dbrx": "attn_output_norm"}


def gguf_pieces(gguf_architecture: str, name: str, shape, shapes: dict, heads: int, kv_heads: int) -> list:
    """The canonical pieces of GGUF tensor ``name`` (numpy-order ``shape``; ``shapes`` of every tensor)."""
    m = _GGUF_STACKED.fullmatch(name)
    if m:
        return _stacked(name, int(m.group(1)), shape, m.group(2))
    m = _GGUF_GATE_UP.fullmatch(name)
    if m:
        return _fused_gate_up_rows(name, int(m.group(1)), shape)
    m = _GGUF_OLD_EXPERT.fullmatch(name)
    if m:
        return [Piece(expert_name(int(m.group(1)), int(m.group(3)), m.group(2)), [], [])]
    m = _GGUF_MLA_SPLIT.fullmatch(name)
    if m:
        # llama.cpp splits kv_b [H*(nope+v), r] into k_b [H, r, nope] (transposed) and v_b [H, v, r].
        layer = int(m.group(1))
        k_shape = shapes.get(f"blk.{layer}.attn_k_b.weight")
        v_shape = shapes.get(f"blk.{layer}.attn_v_b.weight")
        if k_shape is None or v_shape is None or len(k_shape) != 3 or len(v_shape) != 3 \
                or k_shape[0] != v_shape[0] or k_shape[1] != v_shape[2]:
            raise mismatch(f"tensor {name}: attn_k_b {k_shape} and attn_v_b {v_shape} of layer {layer} do not "
                           f"form an MLA kv_b projection")
        n_heads, rank, nope = k_shape
        v_dim = v_shape[1]
        canonical = f"blk.{layer}.attn_kv_b.weight"
        whole = views.reshape(n_heads, nope + v_dim, rank)
        shape = (n_heads * (nope + v_dim), rank)
        if m.group(2) == "k":
            return [Piece(canonical, [], [whole, views.index(slice(None), slice(0, nope, None)),
                                          views.transpose(0, 2, 1)], shape)]
        return [Piece(canonical, [], [whole, views.index(slice(None), slice(nope, nope + v_dim, None))], shape)]
    m = _GGUF_POST_ATTENTION_NORM.fullmatch(name)
    if m and _GGUF_FFN_NORM_RENAMED.get(gguf_architecture) == m.group(2):
        return [Piece(f"blk.{m.group(1)}.ffn_norm.weight", [], [])]
    m = _GGUF_FUSED_QKV.fullmatch(name)
    if m and gguf_architecture == "dbrx":
        # DBRX's Wqkv, kept fused by llama.cpp: q rows, then k, then v
        rows = shape[0]
        if heads <= 0 or kv_heads <= 0 or len(shape) != 2 or rows % (heads + 2 * kv_heads):
            raise mismatch(f"tensor {name}: {list(shape)} cannot hold the q, k and v rows of {heads} heads and "
                           f"{kv_heads} key/value heads")
        q_rows = rows // (heads + 2 * kv_heads) * heads
        kv_rows = (rows - q_rows) // 2
        layer = int(m.group(1))
        return [Piece(f"blk.{layer}.attn_q.weight", [views.index(slice(0, q_rows, None))], []),
                Piece(f"blk.{layer}.attn_k.weight", [views.index(slice(q_rows, q_rows + kv_rows, None))], []),
                Piece(f"blk.{layer}.attn_v.weight", [views.index(slice(q_rows + kv_rows, None, None))], [])]
    m = _GGUF_CORRECTION_BIAS.fullmatch(name)
    if m and len(shape) == 2 and shape[0] == 1:
        # ERNIE 4.5's [1, experts]
        return [Piece(name, [views.reshape(shape[1])], [])]
    m = _GGUF_QK.fullmatch(name)
    if m and gguf_architecture in GGUF_PERMUTED_QK:
        groups = heads if m.group(2) == "q" else kv_heads
        rows = shape[0]
        if groups <= 0 or rows % (2 * groups):
            raise mismatch(f"tensor {name}: {rows} rows cannot hold {groups} heads of even size")
        half = rows // groups // 2
        rest = tuple(shape[1:])
        # llama.cpp stores each head's rows as (half, 2) pairs where HF has (2, half) halves.
        return [Piece(name, [views.reshape(groups, half, 2, *rest)],
                      [views.reshape(groups, 2, half, *rest), views.transpose(0, 2, 1, *range(3, 3 + len(rest)))],
                      tuple(shape))]
    return [Piece(name, [], [])]
