"""The C API (include/zipmoe.h) from Python through ctypes, for tests that compare it with the Python API.

The library is the one zipmoe.get_library_dir() names: the installed package's, or a development build's
(ZIPMOE_DEV_BUILD). Structures mirror the header's; a failing call raises CApiError(status name, message).
"""

from __future__ import annotations

import ctypes
import json
import pathlib
import sys

import zipmoe

INT32_MIN = -(2**31)
SEED_RANDOM = 2**64 - 1
FINISH_REASONS = ["none", "eos", "stop", "length", "context", "callback", "cancelled", "error"]


class CApiError(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ModelParams(ctypes.Structure):
    _fields_ = [("threads", ctypes.c_int32), ("memory_budget", ctypes.c_uint64), ("io", ctypes.c_char_p),
                ("cache_policy", ctypes.c_char_p), ("precision", ctypes.c_char_p), ("isa", ctypes.c_char_p),
                ("kv_cache_dtype", ctypes.c_char_p), ("tiers", ctypes.c_char_p),
                ("routing_profile", ctypes.c_char_p), ("prefetch", ctypes.c_bool), ("io_threads", ctypes.c_int32)]


class ContextParams(ctypes.Structure):
    _fields_ = [("max_context", ctypes.c_int32), ("max_sequences", ctypes.c_int32), ("batch", ctypes.c_int32)]


class ChatMessage(ctypes.Structure):
    _fields_ = [("role", ctypes.c_char_p), ("content", ctypes.c_char_p)]


class ChatParams(ctypes.Structure):
    _fields_ = [("add_generation_prompt", ctypes.c_bool), ("tools_json", ctypes.c_char_p),
                ("documents_json", ctypes.c_char_p), ("variables_json", ctypes.c_char_p)]


class SamplingParams(ctypes.Structure):
    _fields_ = [("max_new_tokens", ctypes.c_int32), ("temperature", ctypes.c_float), ("top_k", ctypes.c_int32),
                ("top_p", ctypes.c_float), ("min_p", ctypes.c_float), ("repetition_penalty", ctypes.c_float),
                ("presence_penalty", ctypes.c_float), ("frequency_penalty", ctypes.c_float),
                ("penalty_last_n", ctypes.c_int32),
                ("seed", ctypes.c_uint64), ("stop", ctypes.POINTER(ctypes.c_char_p)), ("n_stop", ctypes.c_int32),
                ("add_special", ctypes.c_bool), ("skip_special", ctypes.c_bool)]


class GenerationStats(ctypes.Structure):
    _fields_ = [("prompt_tokens", ctypes.c_int32), ("generated_tokens", ctypes.c_int32),
                ("prompt_seconds", ctypes.c_double), ("generation_seconds", ctypes.c_double),
                ("prompt_tokens_per_second", ctypes.c_double), ("generation_tokens_per_second", ctypes.c_double),
                ("finish_reason", ctypes.c_int), ("seed", ctypes.c_uint64)]


PIECE_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)


def library_path() -> pathlib.Path:
    folder = pathlib.Path(zipmoe.get_library_dir())
    names = {"darwin": "libzipmoe.dylib", "win32": "zipmoe.dll"}
    return folder / names.get(sys.platform, "libzipmoe.so")


def _declare(lib):
    c = ctypes
    P = c.c_void_p
    signatures = {
        "zipmoe_last_error": (c.c_char_p, []),
        "zipmoe_status_name": (c.c_char_p, [c.c_int]),
        "zipmoe_last_status": (c.c_int, []),
        "zipmoe_version": (c.c_char_p, []),
        "zipmoe_api_version": (c.c_int32, []),
        "zipmoe_model_default_params": (ModelParams, []),
        "zipmoe_model_load": (c.c_int, [c.c_char_p, c.POINTER(ModelParams), c.POINTER(P)]),
        "zipmoe_model_free": (None, [P]),
        "zipmoe_model_n_vocab": (c.c_int32, [P]),
        "zipmoe_model_chat_template": (c.c_char_p, [P]),
        "zipmoe_model_eos_tokens": (c.c_int32, [P, c.POINTER(c.c_int32), c.c_int32]),
        "zipmoe_tokenize_special": (c.c_int32, [P, c.c_char_p, c.c_size_t, c.c_bool, c.c_bool,
                                                c.POINTER(c.c_int32), c.c_int32]),
        "zipmoe_detokenize_special": (c.c_int32, [P, c.POINTER(c.c_int32), c.c_int32, c.c_bool, c.c_char_p,
                                                  c.c_int32]),
        "zipmoe_chat_default_params": (ChatParams, []),
        "zipmoe_chat_apply_template_json": (c.c_int32, [P, c.c_char_p, c.c_char_p, c.POINTER(ChatParams),
                                                        c.c_char_p, c.c_int32]),
        "zipmoe_context_default_params": (ContextParams, []),
        "zipmoe_context_new": (c.c_int, [P, c.POINTER(ContextParams), c.POINTER(P)]),
        "zipmoe_context_free": (None, [P]),
        "zipmoe_eval": (c.c_int, [P, c.POINTER(c.c_int32), c.c_int32, c.POINTER(c.c_float)]),
        "zipmoe_context_reset": (c.c_int, [P]),
        "zipmoe_sampling_default_params": (SamplingParams, []),
        "zipmoe_model_sampling_defaults": (c.c_int, [P, c.POINTER(SamplingParams)]),
        "zipmoe_generate": (c.c_int, [P, c.c_char_p, c.c_size_t, c.POINTER(SamplingParams), PIECE_CALLBACK, P]),
        "zipmoe_generate_chat": (c.c_int, [P, c.POINTER(ChatMessage), c.c_size_t, c.POINTER(SamplingParams),
                                           PIECE_CALLBACK, P]),
        "zipmoe_generation_stats_get": (c.c_int, [P, c.c_int32, c.POINTER(GenerationStats)]),
    }
    for name, (result, arguments) in signatures.items():
        function = getattr(lib, name)
        function.restype = result
        function.argtypes = arguments


class CApi:
    """The functions the tests need, with Python types."""

    def __init__(self, path: pathlib.Path | None = None):
        self.lib = ctypes.CDLL(str(path or library_path()))
        _declare(self.lib)

    # ---- errors -----------------------------------------------------------------------------------
    def error(self, status: int) -> CApiError:
        return CApiError(self.lib.zipmoe_status_name(status).decode(), self.lib.zipmoe_last_error().decode())

    def check(self, status: int) -> None:
        if status != 0:
            raise self.error(status)

    def _count(self, count: int) -> int:
        if count == INT32_MIN:
            raise self.error(self.lib.zipmoe_last_status())
        return count

    # ---- models -----------------------------------------------------------------------------------
    def load(self, path, **params) -> ctypes.c_void_p:
        p = self.lib.zipmoe_model_default_params()
        for name, value in params.items():
            setattr(p, name, value.encode() if isinstance(value, str) else value)
        model = ctypes.c_void_p()
        self.check(self.lib.zipmoe_model_load(str(path).encode(), ctypes.byref(p), ctypes.byref(model)))
        return model

    def free(self, model) -> None:
        self.lib.zipmoe_model_free(model)

    def eos_tokens(self, model) -> list:
        needed = -self._count(self.lib.zipmoe_model_eos_tokens(model, None, 0))
        out = (ctypes.c_int32 * max(needed, 1))()
        return list(out[:self._count(self.lib.zipmoe_model_eos_tokens(model, out, needed))])

    def tokenize(self, model, text: bytes, add_special: bool = True, parse_special: bool = False) -> list:
        needed = self._count(self.lib.zipmoe_tokenize_special(model, text, len(text), add_special, parse_special,
                                                              None, 0))
        if needed == 0:
            return []
        out = (ctypes.c_int32 * -needed)()
        n = self._count(self.lib.zipmoe_tokenize_special(model, text, len(text), add_special, parse_special, out,
                                                         -needed))
        return list(out[:n])

    def detokenize(self, model, ids, skip_special: bool = False) -> str:
        array = (ctypes.c_int32 * max(len(ids), 1))(*ids)
        needed = self._count(self.lib.zipmoe_detokenize_special(model, array, len(ids), skip_special, None, 0))
        if needed == 0:
            return ""
        out = ctypes.create_string_buffer(-needed)
        n = self._count(self.lib.zipmoe_detokenize_special(model, array, len(ids), skip_special, out, -needed))
        return out.raw[:n].decode("utf-8")

    def chat(self, messages, template: str | None = None, model=None, add_generation_prompt: bool = True,
             tools=None, documents=None, variables=None) -> str:
        params = self.lib.zipmoe_chat_default_params()
        params.add_generation_prompt = add_generation_prompt
        keep = []
        for field, value in (("tools_json", tools), ("documents_json", documents), ("variables_json", variables)):
            if value is not None:
                keep.append(json.dumps(value).encode())
                setattr(params, field, keep[-1])
        source = template.encode() if template is not None else None
        messages_json = json.dumps(messages).encode()
        needed = self._count(self.lib.zipmoe_chat_apply_template_json(model, source, messages_json,
                                                                      ctypes.byref(params), None, 0))
        if needed == 0:
            return ""
        out = ctypes.create_string_buffer(-needed)
        n = self._count(self.lib.zipmoe_chat_apply_template_json(model, source, messages_json, ctypes.byref(params),
                                                                 out, -needed))
        return out.raw[:n].decode("utf-8")

    # ---- contexts and generation --------------------------------------------------------------------
    def context(self, model, **params) -> ctypes.c_void_p:
        p = self.lib.zipmoe_context_default_params()
        for name, value in params.items():
            setattr(p, name, value)
        ctx = ctypes.c_void_p()
        self.check(self.lib.zipmoe_context_new(model, ctypes.byref(p), ctypes.byref(ctx)))
        return ctx

    def free_context(self, ctx) -> None:
        self.lib.zipmoe_context_free(ctx)

    def eval(self, ctx, ids, vocab: int):
        import numpy as np

        array = (ctypes.c_int32 * len(ids))(*ids)
        logits = np.zeros(vocab, dtype=np.float32)
        self.check(self.lib.zipmoe_eval(ctx, array, len(ids), logits.ctypes.data_as(ctypes.POINTER(ctypes.c_float))))
        return logits

    def sampling(self, **values) -> SamplingParams:
        params = self.lib.zipmoe_sampling_default_params()
        stop = values.pop("stop", None)
        for name, value in values.items():
            setattr(params, name, value)
        if stop:
            stops = (ctypes.c_char_p * len(stop))(*[s.encode() for s in stop])
            params.stop = stops
            params.n_stop = len(stop)
            params._keep = stops  # noqa: SLF001 - keeps the array alive with the structure
        return params

    def generate(self, ctx, prompt=None, messages=None, **sampling):
        """(text, pieces, stats dict) of zipmoe_generate (or zipmoe_generate_chat with messages)."""
        params = self.sampling(**sampling)
        pieces = []

        def on_piece(data, length, user):
            pieces.append(ctypes.string_at(data, length).decode("utf-8"))
            return True

        callback = PIECE_CALLBACK(on_piece)
        if messages is not None:
            array = (ChatMessage * len(messages))(*[ChatMessage(m["role"].encode(), m["content"].encode())
                                                    for m in messages])
            status = self.lib.zipmoe_generate_chat(ctx, array, len(messages), ctypes.byref(params), callback, None)
        else:
            data = prompt.encode()
            status = self.lib.zipmoe_generate(ctx, data, len(data), ctypes.byref(params), callback, None)
        self.check(status)
        stats = GenerationStats()
        self.check(self.lib.zipmoe_generation_stats_get(ctx, 0, ctypes.byref(stats)))
        return "".join(pieces), pieces, {"prompt_tokens": stats.prompt_tokens,
                                         "generated_tokens": stats.generated_tokens,
                                         "finish_reason": FINISH_REASONS[stats.finish_reason], "seed": stats.seed}
