"""The C API's chat templates (zipmoe's own Jinja interpreter, cpp/text/jinja) render exactly what transformers'
apply_chat_template(tokenize=False) and jinja2 render: every shared template with many conversations, and each
Jinja feature the interpreter implements."""

from __future__ import annotations

import json
import pathlib
import random

import pytest

import zipmoe
from capi_ctypes import CApi, CApiError
from conftest import data_file, data_files
from zipmoe.chat_template import ChatTemplate

pytest.importorskip("jinja2")

TEMPLATES = sorted(data_files("chat_templates", ".jinja"))
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string",
                                                                                  "description": "The city"},
                                                                         "unit": {"type": "string",
                                                                                  "enum": ["c", "f"]},
                                                                         "days": {"type": "integer",
                                                                                  "default": 1}},
                                                          "required": ["city"]}}},
         {"type": "function", "function": {"name": "search", "description": "Search the web",
                                           "parameters": {"type": "object",
                                                          "properties": {"query": {"type": "string"},
                                                                         "tags": {"type": "array",
                                                                                  "items": {"type": "string"}}},
                                                          "required": ["query"]}}}]

TOOL_CALL = {"id": "call12345", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}

CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello there!"}],
    "system_user": [{"role": "system", "content": "You are a terse assistant."},
                    {"role": "user", "content": "What is 2+2?"}],
    "multi_turn": [{"role": "system", "content": "Answer in French."},
                   {"role": "user", "content": "Good morning"},
                   {"role": "assistant", "content": "Bonjour !"},
                   {"role": "user", "content": "And \"good night\", with ünïcödé ✓ and 'quotes'?"}],
    "ends_with_assistant": [{"role": "user", "content": "Say hi"},
                            {"role": "assistant", "content": "Hi.\nTwo lines."}],
    "reasoning": [{"role": "user", "content": "Think first."},
                  {"role": "assistant", "content": "Done.", "reasoning_content": "Some thoughts."},
                  {"role": "user", "content": "Again?"}],
    "think_tags": [{"role": "user", "content": "Why?"},
                   {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nBecause."},
                   {"role": "user", "content": "Really?"}],
    "tool_round": [{"role": "user", "content": "Weather in Paris?"},
                   {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
                   {"role": "tool", "tool_call_id": "call12345", "content": "{\"temp\": 21}"},
                   {"role": "assistant", "content": "It is 21 degrees."}],
    "empty_and_whitespace": [{"role": "system", "content": ""},
                             {"role": "user", "content": "  spaced  \n\n"}],
    "null_fields": [{"role": "user", "content": "x", "name": None, "tool_calls": None}],
    "bad_roles": [{"role": "assistant", "content": "I speak first"}, {"role": "assistant", "content": "again"}],
}


@pytest.fixture(scope="module")
def capi():
    return CApi()


@pytest.fixture(scope="module")
def hf_tokenizer():
    pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>", "hello"]
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)},
                                                                  unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL)


def render_c(capi, source, messages, add_generation_prompt, tools=None, **variables):
    try:
        return capi.chat(messages, template=source, add_generation_prompt=add_generation_prompt, tools=tools,
                         variables={**SPECIAL, **variables})
    except CApiError as error:
        return ("error", error.message)


def render_transformers(hf_tokenizer, source, messages, add_generation_prompt, **kwargs):
    try:
        return hf_tokenizer.apply_chat_template(messages, chat_template=source, tokenize=False,
                                                add_generation_prompt=add_generation_prompt, **kwargs)
    except Exception as error:  # noqa: BLE001 - the template's own rejection, compared by the caller
        return ("error", f"{type(error).__name__}: {error}")


def assert_same(ours, theirs, what):
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple), f"{what}: transformers failed ({theirs[1]}) but the C API rendered:\n{ours}"
        return
    assert not isinstance(ours, tuple), f"{what}: the C API failed: {ours[1]}"
    assert ours == theirs, what


def random_conversation(rng: random.Random) -> list:
    words = ["hello", "world", "naïve", "日本", "😀", "\"quoted\"", "it's", "{{ not jinja }}", "<b>", "\n", "  ",
             "tab\tbed", "100%", "\\n", "a-b", "ÉCOLE"]
    messages = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": " ".join(rng.choice(words) for _ in range(rng.randint(0, 6)))})
    for turn in range(rng.randint(1, 4)):
        messages.append({"role": "user", "content": " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))})
        if turn < 3 or rng.random() < 0.5:
            reply = {"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))}
            if rng.random() < 0.3:
                reply["reasoning_content"] = rng.choice(words)
            messages.append(reply)
    if rng.random() < 0.6 and messages[-1]["role"] == "assistant":
        messages.pop()
    return messages


@pytest.mark.parametrize("template_path", TEMPLATES, ids=lambda p: pathlib.PurePath(p).stem)
def test_shared_templates_render_like_transformers(capi, hf_tokenizer, template_path):
    source = data_file(template_path).read_text(encoding="utf-8")
    cases = [(name, messages) for name, messages in CONVERSATIONS.items()]
    rng = random.Random(hash(pathlib.PurePath(template_path).stem) & 0xFFFF)
    cases += [(f"random{i}", random_conversation(rng)) for i in range(25)]
    rendered = 0
    for name, messages in cases:
        for add in (True, False):
            extras = [{}]
            if "Qwen3" in template_path or "DeepSeek" in template_path:
                extras += [{"enable_thinking": False}, {"enable_thinking": True}]
            if "gpt-oss" in template_path:
                extras += [{"reasoning_effort": "high", "builtin_tools": ["browser", "python"]}]
            for extra in extras:
                theirs = render_transformers(hf_tokenizer, source, messages, add, **extra)
                ours = render_c(capi, source, messages, add, **extra)
                assert_same(ours, theirs, f"{name}, add_generation_prompt={add}, {extra}")
                rendered += not isinstance(theirs, tuple)
    assert rendered >= 40  # most conversations render; a few are rejected by the template on purpose


@pytest.mark.parametrize("template_path", [p for p in TEMPLATES if any(n in p for n in ("Qwen", "gpt-oss", "Mistral",
                                                                                        "granite"))],
                         ids=lambda p: pathlib.PurePath(p).stem)
def test_tools_render_like_transformers(capi, hf_tokenizer, template_path):
    source = data_file(template_path).read_text(encoding="utf-8")
    for name in ("user", "system_user", "tool_round", "multi_turn"):
        for add in (True, False):
            messages = CONVERSATIONS[name]
            theirs = render_transformers(hf_tokenizer, source, messages, add, tools=TOOLS)
            ours = render_c(capi, source, messages, add, tools=TOOLS)
            assert_same(ours, theirs, f"{name} with tools, add_generation_prompt={add}")


# Small templates, each exercising features of Jinja that chat templates use, with jinja2 (configured as
# transformers configures it, python/zipmoe/chat_template.py) as the reference.
FEATURES = [
    "{% for m in messages %}{{ loop.index }}/{{ loop.length }} {{ loop.index0 }} {{ loop.first }} {{ loop.last }} "
    "{{ loop.revindex }} {{ loop.revindex0 }} {{ loop.previtem is defined }} {{ loop.cycle('a', 'b') }}\n{% endfor %}",
    "{% for m in messages if m.role == 'user' %}{{ m.content }}{% else %}none{% endfor %}",
    "{% for m in [] %}x{% else %}empty{% endfor %}",
    "[{{ '' * 1000000000000000000 }}] {{ ([] * 1000000000000000000)|length }} {{ 'ab' * -3 }} {{ [1, 2] * 2 }}",
    "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i > 5 %}{% break %}{% endif %}{{ i }}"
    "{% endfor %}",
    "{% for k, v in {'a': 1, 'b': [2, 3]}.items() %}{{ k }}={{ v }};{% endfor %}",
    "{% for a, b in [(1, 2), [3, 4]] %}{{ a + b }}{% endfor %}",
    "{% set x = 1 %}{% for i in range(3) %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}",
    "{% set ns = namespace(n=0, s='') %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}"
    "{% endfor %}{{ ns.n }} {{ ns.s }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = (1, 'x', none) %}{{ t }}",
    "{% set block %}  inner {{ 1 + 1 }}\n{% endset %}[{{ block }}]{% set up | upper %}shout{% endset %}{{ up }}",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} "
    "{{ greet('b', punct='?') }} {{ greet(name='c') }}",
    "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}{% endmacro %}{{ fact(6) }}",
    "{% with a = 2, b = 3 %}{{ a * b }}{% endwith %}{{ a is defined }}",
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} {{ 1 + 2.5 }} {{ 10 - 3 * 2 }} "
    "{{ 2 ** -1 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ (1 + 2) * 3 }}",
    "{{ 1 < 2 < 3 }} {{ 3 > 2 > 4 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 == 1.0 }} {{ true == 1 }} "
    "{{ [1] == (1,) }} {{ none == none }} {{ 'a' != 'b' }} {{ 2 >= 2 }} {{ 1 <= 0 }}",
    "{{ 'ab' in 'cabd' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }} {{ 'x' in undefined_name }}",
    "{{ none }} {{ true }} {{ false }} {{ True }} {{ None }} {{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e-5 }} "
    "{{ 2.5e3 }} {{ 1_000 }} {{ 0x1F }} {{ [1, 'a', none, true, 1.5, [2]] }} {{ {'a': 'b', 1: none} }} {{ (1,) }}",
    "{{ \"it's\" }} {{ ['it\\'s', 'say \"hi\"', 'both \\' \"', 'new\\nline', 'tab\\t', 'é', '\\x01'] }}",
    "{{ 'a\\tb\\\\c\\u00e9\\x41' }} {{ \"\\101\" }} {{ 'unknown \\q escape' }} {{ 'one' 'two' }}",
    "{{ x if x is defined else 'no x' }} {{ 'yes' if messages else 'no' }} {{ ('a' if false) is defined }}",
    "{{ messages[0]['content'] }} {{ messages[0].content }} {{ messages[-1].role }} {{ messages[5] is defined }} "
    "{{ messages[0].missing is defined }} {{ messages[0].content.missing is defined }}",
    "{{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ 'héllo'[1] }} {{ [1, 2, 3, 4][1:] }} {{ [1, 2, 3, 4][::2] }} "
    "{{ [1, 2, 3][-2:] }} {{ 'abc'[5:] }} {{ (1, 2, 3)[:2] }}",
    "{{ messages|length }} {{ 'héllo'|length }} {{ {'a': 1}|length }} {{ undefined_name|length }} "
    "{{ messages|count }}",
    "{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'c']|sort }} {{ ['b', 'A', 'c']|sort(case_sensitive=true) }} "
    "{{ [3, 1, 2]|sort(reverse=true) }} {{ messages|sort(attribute='role')|map(attribute='role')|list }}",
    "{{ [1, 2, 2, 'a', 'A']|unique|list }} {{ [3, 1, 2]|min }} {{ [3, 1, 2]|max }} {{ ['b', 'A']|max }} "
    "{{ [1, 2.5]|sum }} {{ [[1], [2]]|first }} {{ 'abc'|last }} {{ []|first is defined }}",
    "{{ messages|selectattr('role', 'equalto', 'user')|list|length }} "
    "{{ messages|rejectattr('role', 'equalto', 'user')|map(attribute='content')|join(', ') }} "
    "{{ [0, 1, 2, none, '']|select|list }} {{ [1, 2, 3, 4]|select('odd')|list }} "
    "{{ [1, 2, 3]|reject('equalto', 2)|list }} {{ ['a', 'b']|map('upper')|list }} "
    "{{ messages|map(attribute='nope', default='-')|list }} {{ messages|selectattr('content')|list|length }}",
    "{{ [1, 2, 3]|join }} {{ [1, 2, 3]|join('-') }} {{ messages|join(', ', attribute='role') }} "
    "{{ 'abc'|list }} {{ {'a': 1, 'b': 2}|list }} {{ 'x'|string }} {{ 3|string + 'x' }} {{ none|string }}",
    "{{ ' a b '|trim }} {{ 'xxaxx'|trim('x') }} {{ 'Hello World'|lower }} {{ 'hello world'|upper }} "
    "{{ 'hello wORLD-x (y'|title }} {{ 'hELLO'|capitalize }} {{ 'aXbX'|replace('X', '-') }} "
    "{{ 'aaa'|replace('a', 'b', 2) }} {{ 'abc'|reverse }} {{ [1, 2]|reverse|list }}",
    "{{ '42'|int }} {{ ' 7 '|int }} {{ '3.9'|int }} {{ 'x'|int }} {{ 'x'|int(5) }} {{ 3.9|int }} {{ '2.5'|float }} "
    "{{ 'nan'|float }} {{ 'x'|float }} {{ 3|float }} {{ -3|abs }} {{ -2.5|abs }} {{ 2.567|round(2) }} "
    "{{ 2.5|round }} {{ 2.1|round(method='ceil') }} {{ 2.9|round(0, 'floor') }} {{ 7|round }}",
    "{{ undefined_name|default('d') }} {{ ''|default('d') }} {{ ''|default('d', true) }} {{ none|d('x') }} "
    "{{ 0|default(5, boolean=true) }}",
    "{{ {'b': 1, 'a': 2}|dictsort }} {{ {'b': 1, 'a': 2}|dictsort(by='value') }} {{ {'a': 1}|items|list }} "
    "{{ [1, 2, 3, 4, 5]|batch(2)|list }} {{ [1, 2, 3]|batch(2, 'x')|list }}",
    "{{ 'a\\nb\\n\\nc'|indent }} {{ 'a\\nb'|indent(2, true) }} {{ 'a\\n\\nb'|indent('> ', blank=true) }} "
    "{{ 'ab'|center(7) }}|{{ 'ab'|center(8) }}| {{ 'one two, three'|wordcount }} {{ '<a href=\"x\">&'|e }} "
    "{{ '<b>'|escape }} {{ '<b>'|safe }}",
    "{{ messages|tojson }} {{ messages[0]|tojson(indent=2) }} {{ {'b': 1, 'a': [1.5, none, true]}|tojson(sort_keys=true) }} "
    "{{ 'é ✓ \"q\" \\n \\t \\u0001'|tojson }} {{ {'a': 1}|tojson(indent='\\t') }} {{ []|tojson(indent=2) }} "
    "{{ {1: 'x', true: 'y', none: 'z', 2.5: 'w'}|tojson }} {{ (1, 2)|tojson }} {{ 1e16|tojson }} "
    "{{ {'a': 1}|tojson(separators=(',', ':')) }}",
    "{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a,b,c'.rsplit(',', 1) }} "
    "{{ ' x '.strip() }} {{ 'xxhixx'.lstrip('x') }} {{ 'xxhixx'.rstrip('x') }} {{ 'Hi'.lower() }}{{ 'Hi'.upper() }} "
    "{{ 'hello'.startswith('he') }} {{ 'hello'.endswith(('x', 'lo')) }} {{ 'hello'.startswith('l', 2) }} "
    "{{ 'hello'.find('l') }} {{ 'hello'.rfind('l') }} {{ 'héllo'.find('l') }} {{ 'hello'.count('l') }} "
    "{{ 'a-b'.replace('-', '+') }} {{ ', '.join(['a', 'b']) }} {{ 'a\\nb\\r\\nc'.splitlines() }} "
    "{{ '12'.isdigit() }} {{ 'ab'.isalpha() }} {{ 'a1'.isalnum() }} {{ ' '.isspace() }} {{ 'ab'.islower() }} "
    "{{ 'AB'.isupper() }} {{ 'x'.title() }} {{ 'hello world'.capitalize() }} {{ '{} and {}'.format(1, 'b') }} "
    "{{ '{0}{name}'.format('x', name='y') }}",
    "{{ messages[0].get('role') }} {{ messages[0].get('nope', 'dflt') }} {{ messages[0].keys()|list }} "
    "{{ messages[0].values()|list|length }} {{ messages[0].items()|list|length }} {{ [1, 2, 1].count(1) }} "
    "{{ [1, 2].index(2) }}",
    "{{ x is defined }} {{ x is undefined }} {{ none is none }} {{ 1 is number }} {{ true is number }} "
    "{{ true is boolean }} {{ 1 is boolean }} {{ 1 is integer }} {{ true is integer }} {{ 1.5 is float }} "
    "{{ 'a' is string }} {{ {} is mapping }} {{ [] is sequence }} {{ 'a' is iterable }} {{ 3 is iterable }} "
    "{{ false is false }} {{ 0 is false }} {{ true is true }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} "
    "{{ 'ab' is lower }} {{ 'AB' is upper }} {{ 2 is eq 2 }} {{ 2 is equalto 3 }} {{ 2 is ne 3 }} {{ 1 is lt 2 }} "
    "{{ 3 is gt 2 }} {{ 2 is ge 2 }} {{ 2 is le 1 }} {{ 2 is in [1, 2] }} {{ none is sameas none }} "
    "{{ range is callable }} {{ 'upper' is filter }} {{ 'odd' is test }} {{ 'x' is escaped }} {{ 1 is not none }}",
    "{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }} {{ dict(a=1, b='x') }} "
    "{{ dict([('a', 1)]) }} {{ namespace(a=1).a }}",
    "{% if messages %}A{% elif x %}B{% else %}C{% endif %}{% if not messages %}D{% elif messages|length > 0 %}E"
    "{% endif %}{% if false %}F{% else %}G{% endif %}",
    "{{ 'a' ~ 1 ~ none ~ [1] ~ undefined_name }} {{ 'ab' * 3 }} {{ [1] * 2 }} {{ [1] + [2] }} {{ 'x' + 'y' }}",
    "{% for m in messages %}{% generation %}[{{ m.role }}]{% endgeneration %}{% endfor %}{% raw %}{{ raw }}{% endraw %}",
    "{{ messages[0].thinking }}|{{ messages[1].thinking }}|{{ messages[1].reasoning_content }}|"
    "{{ messages[1].keys()|list }}",
    # whitespace control: trim_blocks, lstrip_blocks, -, +
    "  {% if true %}\n    yes\n  {% endif %}\n{%- if true -%}  [tight]  {%- endif -%}\n  {%+ if true %}plus{% endif +%}\n"
    "{# a comment #}\nafter comment\n  {#- lstripped -#}  x\n{{- ' var ' -}}\n  end  \n",
    "line one\r\nline two\rline three {{ 'x' }}\n\n",
    "{% for i in [1, 2] %}\n  item {{ i }}\n{% endfor %}\n{% macro m() %}\n  inside\n{% endmacro %}{{ m() }}",
    "{{ bos_token }}{{ eos_token }}{{ add_generation_prompt }}{{ tools is none }}{{ documents is none }}",
]

FEATURE_MESSAGES = [{"role": "user", "content": "Hi <b>there</b>"},
                    {"role": "assistant", "content": "Hello!", "reasoning": "Be kind.", "name": None},
                    {"role": "user", "content": "Bye"}]


@pytest.mark.parametrize("index", range(len(FEATURES)))
def test_jinja_features_render_like_jinja2(capi, index):
    source = FEATURES[index]
    theirs = ChatTemplate(source, SPECIAL).render(FEATURE_MESSAGES, add_generation_prompt=True)
    ours = capi.chat(FEATURE_MESSAGES, template=source, variables=SPECIAL)
    assert ours == theirs, source


# Templates jinja2 rejects (at parse or render time): the C API rejects them too, never renders something.
ERRORS = [
    ("{% for m in messages %}", "does not parse"),
    ("{% if %}{% endif %}", "does not parse"),
    ("{{ 1 + }}", "does not parse"),
    ("{{ x | no_such_filter }}", "no filter named"),
    ("{{ x is no_such_test }}", "no test named"),
    ("{% endfor %}", "does not parse"),
    ("{% break %}", "outside a loop"),
    ("{{ 'unterminated }}", "does not parse"),
    ("{% frobnicate %}", "unknown tag"),
    ("{{ messages[0].nope.deeper }}", "has no attribute 'nope'"),
    ("{{ undefined_name.attr }}", "undefined"),
    ("{{ 'a' + 1 }}", "concatenate"),
    ("{{ 1 / 0 }}", "division by zero"),
    ("{{ none() }}", "not callable"),
    ("{{ [1, 2] < 'a' }}", "not supported between"),
    ("{{ raise_exception('rejected by the template') }}", "rejected by the template"),
    ("{% set ns = namespace(_x=1) %}", "underscore"),
    ("{% set ns = namespace() %}{% set ns._y = 1 %}", "underscore"),
    ("{% set x = 1 %}{% set x.y = 2 %}", "namespace"),
    ("{{ range(10**6)|length }}", "range"),
    ("{{ messages.append(1) }}", "unsafe"),
    ("{{ messages[0].__class__.__mro__ }}", "unsafe"),
    ("{{ x|tojson }}", "JSON serializable"),
    ("{% for a, b in [1] %}{% endfor %}", "unpack"),
]


@pytest.mark.parametrize("source,message", ERRORS, ids=[e[0][:40] for e in ERRORS])
def test_template_errors_are_clean_and_match_jinja2(capi, source, message):
    with pytest.raises(zipmoe.ZipMoEError):
        ChatTemplate(source, SPECIAL).render(FEATURE_MESSAGES)
    with pytest.raises(CApiError, match=message):
        capi.chat(FEATURE_MESSAGES, template=source, variables=SPECIAL)


# Where the C API is stricter than Python: bounded work and memory, 64-bit integers (jinja2 would run out of memory,
# recurse until Python's limit, or compute with big integers).
LIMITS = [("{{ 'x' * 100000000 }}", "MiB"), ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "nested deeper"),
          ("{{ 2 ** 100 }}", "64-bit"), ("{{ 9223372036854775807 + 1 }}", "64-bit"),
          ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "steps of work"),
          ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "MiB"),
          ("{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", "items"),
          ("{{ ([1] * 100000000)|length }}", "items")]


@pytest.mark.parametrize("source,message", LIMITS, ids=[e[0][:40] for e in LIMITS])
def test_limits_stop_runaway_templates(capi, source, message):
    with pytest.raises(CApiError, match=message) as error:
        capi.chat(FEATURE_MESSAGES, template=source)
    assert error.value.status == "ZIPMOE_ERR_INVALID_ARGUMENT"


UNSUPPORTED = ["{% include 'x.jinja' %}", "{% extends 'base' %}", "{% import 'm' as m %}", "{% call m() %}x{% endcall %}",
               "{% filter upper %}x{% endfilter %}", "{{ x|groupby('a') }}", "{{ x|truncate(3) }}",
               "{% for x in y recursive %}{% endfor %}", "{{ f(*args) }}"]


@pytest.mark.parametrize("source", UNSUPPORTED)
def test_unsupported_features_say_so(capi, source):
    with pytest.raises(CApiError, match="not supported by zipmoe's template engine") as error:
        capi.chat(FEATURE_MESSAGES, template=source)
    assert error.value.status == "ZIPMOE_ERR_UNSUPPORTED_MODEL"


def test_bad_conversations_are_refused(capi):
    source = "{{ messages|length }}"
    for bad, message in (([], "empty conversation"), (["hello"], "not an object"), ({"role": "user"}, "list")):
        with pytest.raises(CApiError, match=message):
            capi.chat(bad, template=source)
    with pytest.raises(CApiError, match="tools"):
        capi.chat(FEATURE_MESSAGES, template=source, tools={"not": "a list"})
    with pytest.raises(CApiError, match="argument of the template"):
        capi.chat(FEATURE_MESSAGES, template=source, variables={"messages": []})


def test_rendering_is_repeatable_and_templates_are_independent(capi):
    source = data_file(TEMPLATES[0]).read_text(encoding="utf-8")
    first = capi.chat(CONVERSATIONS["multi_turn"], template=source, variables=SPECIAL)
    for _ in range(3):
        assert capi.chat(CONVERSATIONS["multi_turn"], template=source, variables=SPECIAL) == first
    assert json.loads(json.dumps(CONVERSATIONS["multi_turn"])) == CONVERSATIONS["multi_turn"]
