"""zipmoe.chat_template renders exactly what transformers' apply_chat_template(tokenize=False) renders."""

from __future__ import annotations

import pathlib

import pytest

import zipmoe
from conftest import data_file, data_files
from zipmoe.chat_template import ChatTemplate, render_chat_template, special_tokens_from_config

pytest.importorskip("jinja2")

# Published models' templates, as llama.cpp ships them (tests/data/README.md): relative paths of the test data.
TEMPLATES = sorted(data_files("chat_templates", ".jinja"))

CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello there!"}],
    "system_user": [{"role": "system", "content": "You are a terse assistant."},
                    {"role": "user", "content": "What is 2+2?"}],
    "multi_turn": [{"role": "system", "content": "Answer in French."},
                   {"role": "user", "content": "Good morning"},
                   {"role": "assistant", "content": "Bonjour !"},
                   {"role": "user", "content": "And \"good night\", with ünïcödé ✓?"}],
    "ends_with_assistant": [{"role": "user", "content": "Say hi"},
                            {"role": "assistant", "content": "Hi.\nTwo lines."}],
}

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


@pytest.fixture(scope="module")
def hf_tokenizer():
    pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>", "hello"]
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)},
                                                                  unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def render_both(hf_tokenizer, source, messages, add_generation_prompt, **kwargs):
    """(ours, theirs): each the rendered text, or ("rejected", message) / ("error", class name)."""
    try:
        theirs = hf_tokenizer.apply_chat_template(messages, chat_template=source, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)
    except Exception as error:  # noqa: BLE001 - the template's own rejection, compared below
        theirs = ("error", type(error).__name__)
    try:
        ours = ChatTemplate(source, hf_tokenizer.special_tokens_map).render(
            messages, add_generation_prompt=add_generation_prompt, **kwargs)
    except zipmoe.InvalidArgumentError as error:
        ours = ("rejected", str(error))
    return ours, theirs


@pytest.mark.parametrize("template_path", TEMPLATES, ids=lambda p: pathlib.PurePath(p).stem)
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_templates_render_like_transformers(hf_tokenizer, template_path, conversation, add_generation_prompt):
    source = data_file(template_path).read_text(encoding="utf-8")
    messages = CONVERSATIONS[conversation]
    ours, theirs = render_both(hf_tokenizer, source, messages, add_generation_prompt)
    if isinstance(ours, tuple):
        # the template rejected the conversation: transformers must have rejected it too
        assert isinstance(theirs, tuple), (ours, theirs)
        return
    assert ours == theirs


@pytest.mark.parametrize("template_path", [p for p in TEMPLATES if "Qwen" in p or "gpt-oss" in p],
                         ids=lambda p: pathlib.PurePath(p).stem)
def test_tools_and_extra_variables_render_like_transformers(hf_tokenizer, template_path):
    source = data_file(template_path).read_text(encoding="utf-8")
    messages = CONVERSATIONS["system_user"]
    ours, theirs = render_both(hf_tokenizer, source, messages, True, tools=TOOLS)
    assert ours == theirs
    ours, theirs = render_both(hf_tokenizer, source, messages, True, enable_thinking=False)
    assert ours == theirs


def test_transformers_environment_features(hf_tokenizer):
    source = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{{ m.content | tojson }}"
              "{% else %}{{ m | tojson(indent=2, sort_keys=True) }}{% endif %}\n"
              "{% if loop.index > 1 %}{% break %}{% endif %}{% endfor %}"
              "{% set ns = namespace(n=0) %}{% set ns.n = ns.n + 1 %}{{ ns.n }}"
              "{% generation %}[{{ eos_token }}]{% endgeneration %}{{ dict(a=1) | tojson }}"
              "{{ tools is none }}{{ documents is none }}{{ add_generation_prompt }}")
    messages = [{"role": "user", "content": "<b>é</b>"}, {"role": "assistant", "content": "x", "tool_calls": None},
                {"role": "user", "content": "never shown"}]
    for add in (True, False):
        ours, theirs = render_both(hf_tokenizer, source, messages, add)
        assert ours == theirs
    assert "\"<b>é</b>\"" in ours  # no HTML escaping, no \u escapes


def test_raise_exception_and_reasoning_aliases(hf_tokenizer):
    source = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}" \
             "{% for m in messages %}{{ m.thinking }}|{{ m.reasoning_content }};{% endfor %}"
    with pytest.raises(zipmoe.InvalidArgumentError, match="first must be user"):
        ChatTemplate(source).render([{"role": "system", "content": "x"}])
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning": "because"}]
    ours, theirs = render_both(hf_tokenizer, source, messages, False)
    assert ours == theirs == "|;because|because;"


def test_sandbox_and_bad_input():
    with pytest.raises(zipmoe.InvalidArgumentError):
        ChatTemplate("{{ messages.__class__.__mro__ }}").render([{"role": "user", "content": "x"}])
    with pytest.raises(zipmoe.InvalidArgumentError):
        ChatTemplate("{% set ns = namespace(_x=1) %}").render([{"role": "user", "content": "x"}])
    with pytest.raises(zipmoe.FormatError):
        ChatTemplate("{% for m in messages %}")
    with pytest.raises(zipmoe.InvalidArgumentError):
        ChatTemplate("x").render([])
    with pytest.raises(zipmoe.InvalidArgumentError):
        ChatTemplate("x").render("hello")
    with pytest.raises(zipmoe.InvalidArgumentError):
        ChatTemplate("x").render(["hello"])
    with pytest.raises(zipmoe.InvalidArgumentError):
        ChatTemplate("")


def test_special_tokens_from_tokenizer_config():
    config = {"bos_token": {"content": "<s>", "lstrip": False}, "eos_token": "</s>", "pad_token": None,
              "chat_template": "x"}
    assert special_tokens_from_config(config) == {"bos_token": "<s>", "eos_token": "</s>"}
    assert render_chat_template("{{ bos_token }}{{ messages[0].content }}{{ eos_token }}",
                                [{"role": "user", "content": "hi"}],
                                special_tokens=special_tokens_from_config(config)) == "<s>hi</s>"
