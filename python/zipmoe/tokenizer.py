"""Text to token ids and back: :class:`Tokenizer` (native, cpp/text).

    import zipmoe
    tok = zipmoe.Tokenizer.from_gguf("model.gguf")           # a GGUF model or vocabulary-only file
    tok = zipmoe.Tokenizer.from_file("tokenizer.json")       # a Hugging Face tokenizer.json
    tok = zipmoe.Tokenizer.from_pretrained("model_dir")      # tokenizer.json + tokenizer_config.json
    tok = zipmoe.Tokenizer.from_metadata(container.metadata) # what a .zmoe container carries
    ids = tok.encode("Hello world")                          # BOS/EOS as the vocabulary asks
    text = tok.decode(ids)
    stream = tok.stream_decoder()
    for i in ids: print(stream.feed(i), end="")              # never a partial UTF-8 character
    print(stream.flush())

Byte-level BPE (GPT-2, Llama 3, Qwen2, DeepSeek, GPT-4o pre-tokenizers) and
SentencePiece-style BPE (Llama 2, Mistral, Mixtral) are supported; anything
else raises :class:`zipmoe.UnsupportedModelError` naming what is missing.

Special tokens: ``encode(text, add_special_tokens=True)`` adds the BOS/EOS the
vocabulary asks for. Special (control) tokens written in the text, such as
``"<|im_start|>"``, are matched as those tokens only with
``parse_special=True`` (for text the application rendered itself, like a chat
template); by default they are encoded as ordinary text, so user input cannot
inject them. Added tokens that are not special are always matched.

Encoding and decoding release the GIL for long inputs; a Tokenizer may be used
from several threads at once.
"""

from __future__ import annotations

import json
import os

import numpy as np

from . import _checks
from . import _core

__all__ = ["Tokenizer", "StreamDecoder"]


class StreamDecoder:
    """Incremental detokenization: :meth:`feed` ids as they are generated, get
    text pieces that are always valid UTF-8 (the bytes of a character split
    across tokens are held back until it completes). The pieces plus
    :meth:`flush` concatenate to ``Tokenizer.decode`` of the same ids."""

    def __init__(self, native: _core.StreamDecoder, vocab_size: int):
        self._native = native
        self._vocab_size = vocab_size

    def feed(self, ids) -> str:
        """Adds one id or a sequence of ids; returns the text that became complete (InvalidArgumentError for an
        id outside the vocabulary)."""
        if isinstance(ids, int) and not isinstance(ids, bool) and 0 <= ids < self._vocab_size:
            return self._native.feed(ids)  # the generation loop's case, kept cheap
        return self._native.feed(_id_list(ids, self._vocab_size))

    def flush(self) -> str:
        """Returns the held-back rest (incomplete bytes as U+FFFD) and starts over."""
        return self._native.flush()

    @property
    def pending_bytes(self) -> int:
        return self._native.pending_bytes


class Tokenizer:
    """A tokenizer built from a GGUF file, a tokenizer.json or container metadata."""

    def __init__(self, native: _core.Tokenizer):
        self._native = native

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, path) -> "Tokenizer":
        """From the tokenizer.ggml.* key/values of a GGUF file (only the key/value section is read)."""
        return cls(_core.Tokenizer.from_gguf(os.fspath(path)))

    @classmethod
    def from_file(cls, path, tokenizer_config=None) -> "Tokenizer":
        """From a Hugging Face tokenizer.json file. ``tokenizer_config`` (a dict, or the
        path of a tokenizer_config.json) supplies the BOS/EOS names and add_bos/add_eos."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as error:
            raise _core.IoError(f"{path}: {error.strerror or error}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise _core.FormatError(f"{path}: not UTF-8 text ({error})") from None
        return cls(_core.Tokenizer.from_json(text, _config_json(tokenizer_config), path))

    @classmethod
    def from_json(cls, tokenizer_json: str, tokenizer_config=None) -> "Tokenizer":
        """From the text of a tokenizer.json (and optionally tokenizer_config, a dict or path)."""
        return cls(_core.Tokenizer.from_json(tokenizer_json, _config_json(tokenizer_config), "tokenizer.json"))

    @classmethod
    def from_pretrained(cls, folder) -> "Tokenizer":
        """From a model folder: tokenizer.json with tokenizer_config.json when present, or a GGUF file path."""
        folder = os.fspath(folder)
        if os.path.isfile(folder) and folder.endswith(".gguf"):
            return cls.from_gguf(folder)
        tokenizer_json = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(tokenizer_json):
            raise _core.UnsupportedModelError(f"{folder}: no tokenizer.json")
        config = os.path.join(folder, "tokenizer_config.json")
        return cls.from_file(tokenizer_json, config if os.path.isfile(config) else None)

    @classmethod
    def from_metadata(cls, metadata: dict) -> "Tokenizer":
        """From a container's metadata (docs/FORMAT.md "Metadata"): the whole metadata dict,
        or its "tokenizer" record ({"tokenizer_json", "tokenizer_config", "gguf"})."""
        if not isinstance(metadata, dict):
            raise _core.InvalidArgumentError("metadata must be a dict")
        record = metadata["tokenizer"] if "tokenizer" in metadata else metadata
        if not isinstance(record, dict):
            raise _core.FormatError("metadata \"tokenizer\" is not an object")
        return cls(_core.Tokenizer.from_metadata(json.dumps(record), "metadata"))

    @classmethod
    def from_container(cls, path) -> "Tokenizer":
        """From the metadata of a .zmoe container."""
        from .container import open_container

        with open_container(os.fspath(path)) as container:
            metadata = container.metadata
        return cls.from_metadata(metadata)

    # ---- encoding and decoding ----------------------------------------------------------------
    def encode(self, text, add_special_tokens: bool = True, parse_special: bool = False) -> list:
        """Token ids of ``text`` (str, or bytes taken as they are). ``add_special_tokens`` adds
        the vocabulary's BOS/EOS; ``parse_special`` matches special tokens written in the text.
        A str with a lone surrogate (how Python keeps bytes it could not decode) has no UTF-8
        form: InvalidArgumentError names it."""
        return self._native.encode(text, _checks.flag("add_special_tokens", add_special_tokens),
                                   _checks.flag("parse_special", parse_special))

    def encode_batch(self, texts, add_special_tokens: bool = True, parse_special: bool = False) -> list:
        """encode() of each text, in one native call."""
        return self._native.encode_batch(list(texts), _checks.flag("add_special_tokens", add_special_tokens),
                                         _checks.flag("parse_special", parse_special))

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """The text of ``ids`` (ill-formed UTF-8, e.g. from ids that end inside a character,
        becomes U+FFFD). An id outside the vocabulary is an InvalidArgumentError."""
        return self._native.decode(_id_list(ids, self.vocab_size),
                                   _checks.flag("skip_special_tokens", skip_special_tokens))

    def decode_bytes(self, ids, skip_special_tokens: bool = False) -> bytes:
        """The exact bytes of ``ids`` (possibly not valid UTF-8)."""
        return self._native.decode_bytes(_id_list(ids, self.vocab_size),
                                         _checks.flag("skip_special_tokens", skip_special_tokens))

    def stream_decoder(self, skip_special_tokens: bool = False, at_start: bool = True) -> StreamDecoder:
        """An incremental decoder. ``at_start``: the first id begins the text (a SentencePiece
        vocabulary's leading dummy space is dropped, as decode() does); pass False when the
        ids continue a prompt."""
        native = _core.StreamDecoder(self._native, _checks.flag("skip_special_tokens", skip_special_tokens),
                                     _checks.flag("at_start", at_start))
        return StreamDecoder(native, self.vocab_size)

    # ---- vocabulary ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._native.vocab_size

    def __len__(self) -> int:
        return self._native.vocab_size

    @property
    def bos_id(self):
        """The BOS token id, or None."""
        return self._native.bos_id

    @property
    def eos_id(self):
        """The EOS token id, or None."""
        return self._native.eos_id

    @property
    def pad_id(self):
        return self._native.pad_id

    @property
    def unk_id(self):
        return self._native.unk_id

    @property
    def add_bos(self) -> bool:
        """Whether encode(add_special_tokens=True) starts with the BOS token."""
        prefix = self._native.prefix_ids
        return bool(prefix) and prefix[0] == self._native.bos_id

    @property
    def add_eos(self) -> bool:
        suffix = self._native.suffix_ids
        return bool(suffix) and suffix[-1] == self._native.eos_id

    def token_to_id(self, token):
        """The id of a token as the vocabulary writes it (e.g. "Ġthe"), or None."""
        return self._native.token_to_id(token)

    def id_to_token(self, token_id: int) -> str:
        """The token as the vocabulary writes it (InvalidArgumentError outside the vocabulary)."""
        return self._native.id_to_token(self._token_id(token_id))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token decodes to."""
        return self._native.token_bytes(self._token_id(token_id))

    def is_special(self, token_id: int) -> bool:
        """Whether the token is special (control or unknown): skipped by skip_special_tokens."""
        return self._native.is_special(self._token_id(token_id))

    def token_attribute(self, token_id: int) -> str:
        """normal, control, user_defined, unknown, unused or byte."""
        return self._native.attribute(self._token_id(token_id))

    def _token_id(self, token_id) -> int:
        return _checks.integer("token id", token_id, 0, self.vocab_size - 1)

    @property
    def memory_bytes(self) -> int:
        """Bytes of memory the native tables hold."""
        return self._native.memory_bytes

    @property
    def description(self) -> str:
        return self._native.description

    def __repr__(self) -> str:
        return f"zipmoe.Tokenizer({self._native.description})"


def _config_json(tokenizer_config):
    if tokenizer_config is None:
        return None
    if isinstance(tokenizer_config, dict):
        return json.dumps(tokenizer_config)
    path = os.fspath(tokenizer_config)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as error:
        raise _core.IoError(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise _core.FormatError(f"{path}: not UTF-8 text ({error})") from None


def _id_list(ids, vocab_size: int) -> list:
    """``ids`` (one id, a sequence or a numpy array) as a list of ints, each in [0, vocab_size)."""
    if isinstance(ids, (int, np.integer)) and not isinstance(ids, (bool, np.bool_)):
        ids = [ids]
    try:
        array = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
    except (TypeError, ValueError) as error:
        raise _core.InvalidArgumentError(f"token ids must be a sequence of integers: {error}") from None
    if array.size == 0:
        return []
    if array.dtype.kind not in "iu":
        raise _core.InvalidArgumentError(f"token ids must be integers, not {array.dtype} ({ids!r:.80})")
    array = array.ravel()
    bad = np.flatnonzero((array < 0) | (array >= vocab_size))
    if bad.size:
        raise _core.InvalidArgumentError(f"token id {int(array[bad[0]])} at index {int(bad[0])} is outside the "
                                         f"vocabulary [0, {vocab_size})")
    return array.astype(np.int64).tolist()
