"""OpenAI's HTTP API as ``zipmoe serve`` speaks it: requests read field by field (a bad one is an error naming it),
responses, stream chunks and error objects written in OpenAI's shapes."""

from __future__ import annotations

import dataclasses
import json
import math

# Limits of the request fields (OpenAI's where it states them, a little wider where vLLM is).
MAX_CHOICES = 16           # n, and n times the prompts of one completions request
MAX_STOP_STRINGS = 16
MAX_TOP_LOGPROBS = 20
MAX_MESSAGES = 4096
SEED_RANGE = (-(2**63), 2**64 - 1)
# OpenAI writes a log-probability of -inf (a token the model rules out) as -9999.0; JSON has no infinity.
MINUS_INFINITY_LOGPROB = -9999.0
ROLES = ("system", "developer", "user", "assistant")


class ApiError(Exception):
    """An answer other than 200, as OpenAI writes it: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def invalid(param: str, message: str, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def unsupported(param: str, what: str) -> ApiError:
    return ApiError(400, f"'{param}' is not supported by zipmoe serve ({what}); leave it out", param=param,
                    code="unsupported_parameter")


@dataclasses.dataclass
class GenerationRequest:
    """A chat or completions request, checked. prompts: chat, one list of {"role", "content"} messages;
    completions, strings and/or token id lists (one choice group each)."""

    kind: str  # "chat" or "completion"
    prompts: list
    model: str | None
    max_tokens: int | None
    n: int
    stream: bool
    include_usage: bool
    echo: bool
    logprobs: int | None  # None: off; N: the N likeliest alternatives per token too
    sampling: dict        # SamplingParams fields other than max_tokens, seed and logprobs
    seed: int | None
    cache_key: str | None
    max_tokens_param: str = "max_tokens"  # the field max_tokens came from, for messages


# ---- reading fields ----------------------------------------------------------------------------------------------
def _type_name(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def _integer(body: dict, name: str, minimum: int, maximum: int):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"'{name}' must be an integer, not {_type_name(value)}")
    if not minimum <= value <= maximum:
        raise invalid(name, f"'{name}' must be from {minimum} to {maximum}, not {value}")
    return value


def _number(body: dict, name: str, minimum: float, maximum: float, *, above_minimum: bool = False):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(name, f"'{name}' must be a number, not {_type_name(value)}")
    value = float(value)
    low_ok = value > minimum if above_minimum else value >= minimum
    if not (math.isfinite(value) and low_ok and value <= maximum):
        interval = f"{'(' if above_minimum else '['}{minimum:g}, {maximum:g}]"
        raise invalid(name, f"'{name}' must be in {interval}, not {value!r}")
    return value


def boolean_field(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(name, f"'{name}' must be true or false, not {_type_name(value)}")
    return value


def string_field(body: dict, name: str):
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(name, f"'{name}' must be a string, not {_type_name(value)}")
    return value


def _stop(body: dict) -> tuple:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise invalid("stop", "'stop' must be a string or an array of strings")
    if len(stop) > MAX_STOP_STRINGS:
        raise invalid("stop", f"'stop' may hold at most {MAX_STOP_STRINGS} strings, not {len(stop)}")
    if any(not s for s in stop):
        raise invalid("stop", "a stop string cannot be empty")
    return tuple(stop)


def _refuse_guided_decoding(body: dict) -> None:
    # vLLM's structured-output extras: they constrain the text, so ignoring them would change its meaning.
    for name in ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs", "grammar",
                 "json_schema"):
        if body.get(name) is not None:
            raise unsupported(name, "constrained decoding")
    if body.get("logit_bias"):
        raise unsupported("logit_bias", "biasing token probabilities")


def _common(body: dict, kind: str) -> dict:
    """The fields chat and completions share."""
    model = string_field(body, "model")
    n = _integer(body, "n", 1, MAX_CHOICES) or 1
    stream = boolean_field(body, "stream", False)
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise invalid("stream_options", "'stream_options' must be an object")
        if not stream:
            raise invalid("stream_options", "'stream_options' is only allowed with \"stream\": true")
        include_usage = boolean_field(options, "include_usage", False)
    top_k = _integer(body, "top_k", -1, 2**31 - 1)
    sampling = {
        "temperature": _number(body, "temperature", 0.0, 2.0),
        "top_p": _number(body, "top_p", 0.0, 1.0, above_minimum=True),
        "top_k": None if top_k is None else max(top_k, 0),  # vLLM's -1 and 0 both mean off
        "min_p": _number(body, "min_p", 0.0, 1.0),
        "repetition_penalty": _number(body, "repetition_penalty", 0.0, 100.0, above_minimum=True),
        "presence_penalty": _number(body, "presence_penalty", -2.0, 2.0) or 0.0,
        "frequency_penalty": _number(body, "frequency_penalty", -2.0, 2.0) or 0.0,
        "stop": _stop(body),
    }
    seed = _integer(body, "seed", *SEED_RANGE)
    user = string_field(body, "user")
    cache_key = string_field(body, "prompt_cache_key") or user
    _refuse_guided_decoding(body)
    return dict(kind=kind, model=model, n=n, stream=stream, include_usage=include_usage, sampling=sampling,
                seed=None if seed is None else seed % 2**64, cache_key=cache_key)


def _expect_object(body) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {_type_name(body)}")
    return body


# ---- chat --------------------------------------------------------------------------------------------------------
def parse_chat(body) -> GenerationRequest:
    body = _expect_object(body)
    for name, what in (("tools", "function calling"), ("functions", "function calling")):
        if body.get(name):
            raise unsupported(name, what)
    for name in ("tool_choice", "function_call"):
        if body.get(name) not in (None, "none"):
            raise unsupported(name, "function calling")
    response_format = body.get("response_format")
    if response_format is not None:
        if not isinstance(response_format, dict):
            raise invalid("response_format", "'response_format' must be an object")
        if response_format.get("type", "text") != "text":
            raise unsupported("response_format", f"{response_format.get('type')!s} output; only \"text\" is")
    for name, what in (("audio", "audio output"), ("prediction", "predicted outputs"),
                       ("web_search_options", "web search")):
        if body.get(name) is not None:
            raise unsupported(name, what)
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise unsupported("modalities", "outputs other than text")
    common = _common(body, "chat")
    messages = chat_messages(body.get("messages"))
    max_tokens_param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(body, max_tokens_param, 1, 2**31 - 1)
    logprobs = boolean_field(body, "logprobs", False)
    top_logprobs = _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if top_logprobs is not None and not logprobs:
        raise invalid("top_logprobs", "'top_logprobs' needs \"logprobs\": true")
    return GenerationRequest(prompts=[messages], max_tokens=max_tokens, echo=False,
                             logprobs=(top_logprobs or 0) if logprobs else None, max_tokens_param=max_tokens_param,
                             **common)


def chat_messages(messages) -> list:
    """The conversation as the chat template takes it: {"role", "content": str} dicts."""
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "'messages' must be a non-empty array of {\"role\", \"content\"} objects")
    if len(messages) > MAX_MESSAGES:
        raise invalid("messages", f"'messages' may hold at most {MAX_MESSAGES} messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(where, f"'{where}' must be an object with \"role\" and \"content\"")
        role = message.get("role")
        if role == "tool" or message.get("tool_calls") or message.get("function_call"):
            raise unsupported(f"{where}.role" if role == "tool" else f"{where}.tool_calls", "function calling")
        if role not in ROLES:
            raise invalid(f"{where}.role", f"'{where}.role' must be one of {', '.join(ROLES)}, not {role!r}")
        content = _content(message.get("content"), where, role)
        # OpenAI's newer name for the system role; chat templates know "system"
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def _content(content, where: str, role: str) -> str:
    if isinstance(content, str):
        return content
    if content is None and role == "assistant":
        return ""
    if not isinstance(content, list):
        raise invalid(f"{where}.content", f"'{where}.content' must be a string or an array of text parts")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise invalid(f"{where}.content[{j}]", f"'{where}.content[{j}]' must be an object")
        kind = part.get("type")
        if kind in ("image_url", "input_audio", "file", "image", "audio", "video"):
            raise unsupported(f"{where}.content[{j}].type", f"{kind} input; the model reads text")
        if kind not in ("text", "refusal") or not isinstance(part.get(kind), str):
            raise invalid(f"{where}.content[{j}]", f"'{where}.content[{j}]' must be {{\"type\": \"text\", "
                                                   f"\"text\": \"...\"}}")
        texts.append(part[kind])
    return "\n".join(texts)


# ---- completions -------------------------------------------------------------------------------------------------
def parse_completion(body) -> GenerationRequest:
    body = _expect_object(body)
    if body.get("suffix"):
        raise unsupported("suffix", "inserting text before a suffix")
    best_of = _integer(body, "best_of", 1, MAX_CHOICES)
    if best_of not in (None, 1):
        raise unsupported("best_of", "choosing the best of several generations")
    common = _common(body, "completion")
    prompts = _prompts(body.get("prompt"))
    if len(prompts) * common["n"] > MAX_CHOICES:
        raise invalid("n", f"{len(prompts)} prompts times n={common['n']} choices is more than the "
                           f"{MAX_CHOICES} choices one request may ask for")
    logprobs = _integer(body, "logprobs", 0, MAX_TOP_LOGPROBS)
    echo = boolean_field(body, "echo", False)
    if echo and logprobs is not None:
        raise unsupported("echo", "log-probabilities of the prompt (echo with logprobs)")
    return GenerationRequest(prompts=prompts, max_tokens=_integer(body, "max_tokens", 1, 2**31 - 1), echo=echo,
                             logprobs=logprobs, **common)


def _is_token_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool)
                                                            for t in value)


def _prompts(prompt) -> list:
    """A completions prompt as a list of prompts (strings and token id lists)."""
    if isinstance(prompt, str):
        return [prompt]
    if _is_token_list(prompt):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if isinstance(prompt, list) and prompt and all(_is_token_list(p) for p in prompt):
        return list(prompt)
    raise invalid("prompt", "'prompt' must be a string, an array of strings, an array of token ids or an array of "
                            "token id arrays (none of them empty)")


# ---- responses ---------------------------------------------------------------------------------------------------
def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def sse(data) -> bytes:
    """One server-sent event: ``data: <json>`` (or a literal such as [DONE]) and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode("utf-8")


def _logprob(value: float) -> float:
    return value if math.isfinite(value) else MINUS_INFINITY_LOGPROB


class LogprobWriter:
    """Writes sampled tokens' log-probabilities in OpenAI's two shapes (chat: ``content`` entries; completions:
    parallel ``tokens``/``token_logprobs``/``top_logprobs``/``text_offset`` arrays)."""

    def __init__(self, tokenizer, skipped_ids=()):
        self._tokenizer = tokenizer
        self._skipped = set(skipped_ids)  # end-of-sequence ids: they end the text, they are not part of it
        self._texts: dict[int, tuple] = {}

    def _token(self, token_id: int) -> tuple:
        known = self._texts.get(token_id)
        if known is None:
            raw = self._tokenizer.token_bytes(token_id)
            known = self._texts[token_id] = (raw.decode("utf-8", errors="replace"), list(raw))
        return known

    def _kept(self, token_ids, logprobs):
        return [(t, entry) for t, entry in zip(token_ids, logprobs) if t not in self._skipped]

    def chat(self, token_ids, logprobs) -> list:
        out = []
        for token_id, (value, top) in self._kept(token_ids, logprobs):
            text, raw = self._token(token_id)
            out.append({"token": text, "logprob": _logprob(value), "bytes": raw,
                        "top_logprobs": [{"token": self._token(i)[0], "logprob": _logprob(v),
                                          "bytes": self._token(i)[1]} for i, v in top]})
        return out

    def completion(self, token_ids, logprobs, offset: int) -> tuple:
        """(the arrays, the text offset after the last token)."""
        tokens, values, tops, offsets = [], [], [], []
        for token_id, (value, top) in self._kept(token_ids, logprobs):
            text = self._token(token_id)[0]
            tokens.append(text)
            values.append(_logprob(value))
            tops.append({self._token(i)[0]: _logprob(v) for i, v in top})
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}, offset


def merge_completion_logprobs(into: dict | None, more: dict) -> dict:
    if into is None:
        return {key: list(value) for key, value in more.items()}
    for key, value in more.items():
        into[key].extend(value)
    return into
