"""Chat templates: a conversation rendered to prompt text with a model's Jinja template.

    from zipmoe.chat_template import ChatTemplate
    template = ChatTemplate(source, special_tokens={"bos_token": "<s>", "eos_token": "</s>"})
    text = template.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)

The rendering gives what Hugging Face transformers' ``tokenizer.apply_chat_template(messages,
tokenize=False)`` gives for the same template, because templates are written against what
that function provides:

- a sandboxed Jinja environment (``ImmutableSandboxedEnvironment``: templates come with
  models and are untrusted) with ``trim_blocks`` and ``lstrip_blocks`` on, the
  ``loopcontrols`` extension (``{% break %}``, ``{% continue %}``) and the
  ``{% generation %}...{% endgeneration %}`` block (rendered as its body);
- ``raise_exception(message)`` (the template rejects the conversation), ``strftime_now(format)``
  (the local time), a ``tojson`` filter that is ``json.dumps`` with ``ensure_ascii=False`` and
  the optional ``indent``, ``separators`` and ``sort_keys`` (not Jinja's HTML-escaping one),
  ``dict(...)``, and a ``namespace`` that refuses names starting with an underscore;
- the variables ``messages``, ``tools`` (None unless given), ``documents`` (None),
  ``add_generation_prompt``, the tokenizer's named special tokens (``bos_token``,
  ``eos_token``, ``unk_token``, ``sep_token``, ``pad_token``, ``cls_token``,
  ``mask_token``, where the tokenizer has them) and any extra keyword (e.g.
  ``enable_thinking=False``), which overrides a special token of the same name;
- messages as plain JSON data: keys whose value is None are dropped, and a message's
  reasoning given as ``reasoning_content``, ``thinking`` or ``reasoning`` is also made
  available as ``thinking`` and ``reasoning_content``.

A template that rejects the conversation (``raise_exception``) or fails while rendering raises
:class:`zipmoe.InvalidArgumentError`; a template that does not parse raises
:class:`zipmoe.FormatError`. Requires jinja2 >= 3.1.6 (earlier versions have known sandbox
escapes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from datetime import datetime
from typing import Any, Mapping

from . import _core

__all__ = ["ChatTemplate", "render_chat_template", "SPECIAL_TOKEN_NAMES"]

# The named special tokens transformers hands to templates (SPECIAL_TOKENS_ATTRIBUTES).
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")
_MINIMUM_JINJA = (3, 1, 6)


def _jinja():
    try:
        import jinja2
    except ImportError:  # pragma: no cover - a runtime dependency
        raise _core.ZipMoEError("chat templates need the jinja2 package (pip install 'jinja2>=3.1.6')") from None
    parts = []
    for piece in jinja2.__version__.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    if tuple(parts) < _MINIMUM_JINJA:
        raise _core.ZipMoEError(f"chat templates need jinja2 >= 3.1.6 (sandbox fixes); this is {jinja2.__version__}")
    return jinja2


@functools.lru_cache(maxsize=16)
def _compile(source: str):
    jinja2 = _jinja()
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """``{% generation %}`` marks the assistant's part for training masks; rendering keeps its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class SafeNamespace(jinja2.utils.Namespace):
        """namespace() without underscore names, which could reach interpreter internals."""

        def __init__(*args, **kwargs):  # noqa: N805 - the same signature trick as Jinja's Namespace
            self, args = args[0], args[1:]
            attributes = dict(*args, **kwargs)
            for name in attributes:
                SafeNamespace._check(name)
            jinja2.utils.Namespace.__init__(self, attributes)

        def __setitem__(self, name, value):
            SafeNamespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"a chat template cannot set the namespace attribute {name!r} (underscore names are refused)")

    class DictMaker:
        """dict(...) and dict.fromkeys(...) for templates, without the type itself."""

        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):  # noqa: A002 - the name templates use
        return datetime.now().strftime(format)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[GenerationBlock, loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = strftime_now
    environment.globals["dict"] = DictMaker()
    environment.globals["namespace"] = SafeNamespace
    try:
        return environment.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as error:
        raise _core.FormatError(f"chat template does not parse (line {error.lineno}): {error.message}") from None
    except SyntaxError as error:  # jinja2 compiles to Python: e.g. {% break %} outside a loop
        raise _core.FormatError(f"chat template does not parse (line {error.lineno}): {error.msg}") from None


def _plain(value: Any) -> Any:
    """``value`` rebuilt from JSON types only, so a template never reaches an object's methods."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return _plain(item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


def _messages(messages) -> list:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise _core.InvalidArgumentError("messages must be a list of {'role': ..., 'content': ...} dicts")
    if not messages:
        raise _core.InvalidArgumentError("cannot render an empty conversation; give at least one message")
    out = []
    for index, message in enumerate(messages):
        if dataclasses.is_dataclass(message) and not isinstance(message, type):
            message = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
        elif callable(getattr(message, "model_dump", None)):
            message = message.model_dump()
        if not isinstance(message, Mapping):
            raise _core.InvalidArgumentError(f"message {index} is not a dict: {message!r}")
        message = _plain({k: v for k, v in message.items() if v is not None})
        reasoning = next((message[k] for k in _REASONING_KEYS if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


class ChatTemplate:
    """A compiled chat template with the special tokens it sees (a dict of SPECIAL_TOKEN_NAMES)."""

    def __init__(self, source: str, special_tokens: Mapping | None = None):
        if not isinstance(source, str) or not source:
            raise _core.InvalidArgumentError("a chat template must be a non-empty string")
        self.source = source
        self.special_tokens = {k: str(v) for k, v in (special_tokens or {}).items()
                               if k in SPECIAL_TOKEN_NAMES and v is not None}
        self._template = _compile(source)

    def render(self, messages, add_generation_prompt: bool = False, tools=None, documents=None, **kwargs) -> str:
        """The prompt text of ``messages`` (a list of {"role", "content", ...} dicts).

        add_generation_prompt: end with the header that opens the assistant's reply.
        tools, documents: lists of dicts for templates that take them (None: none).
        kwargs: extra template variables, e.g. enable_thinking=False.
        """
        jinja2 = _jinja()
        if tools is not None:
            if not isinstance(tools, (list, tuple)) or not all(isinstance(t, Mapping) for t in tools):
                raise _core.InvalidArgumentError("tools must be a list of JSON-schema dicts")
        if documents is not None:
            if not isinstance(documents, (list, tuple)) or not all(isinstance(d, Mapping) for d in documents):
                raise _core.InvalidArgumentError("documents must be a list of dicts with 'title' and 'text'")
        variables = _plain({**self.special_tokens, **kwargs})
        try:
            return self._template.render(messages=_messages(messages), tools=_plain(tools),
                                         documents=_plain(documents), add_generation_prompt=bool(add_generation_prompt),
                                         **variables)
        except jinja2.exceptions.TemplateError as error:
            raise _core.InvalidArgumentError(f"chat template: {error}") from None
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, ArithmeticError) as error:
            raise _core.InvalidArgumentError(f"chat template failed on this conversation: "
                                             f"{type(error).__name__}: {error}") from None

    def __repr__(self) -> str:
        return f"zipmoe.ChatTemplate(<{len(self.source)} characters>)"


def render_chat_template(source: str, messages, add_generation_prompt: bool = False, special_tokens=None,
                         tools=None, documents=None, **kwargs) -> str:
    """ChatTemplate(source, special_tokens).render(messages, add_generation_prompt, tools, documents, **kwargs)."""
    return ChatTemplate(source, special_tokens).render(messages, add_generation_prompt, tools=tools,
                                                       documents=documents, **kwargs)


def special_tokens_from_config(tokenizer_config) -> dict:
    """The named special tokens of a tokenizer_config.json object (strings or {"content": ...} records)."""
    out = {}
    if not isinstance(tokenizer_config, Mapping):
        return out
    for name in SPECIAL_TOKEN_NAMES:
        value = tokenizer_config.get(name)
        if isinstance(value, Mapping):
            value = value.get("content")
        if isinstance(value, str):
            out[name] = value
    return out
