"""The built-in default model: it ships inside the package, loads with no path, and is a language model of
Shakespeare, not noise. The passage scored here is from Twelfth Night, a play held out of its training data
(tools/train_tiny_moe.py, docs/DEFAULT_MODEL.md)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import zipmoe

HELD_OUT = """ACT I.

SCENE I. An Apartment in the DUKE'S Palace.

[Enter DUKE, CURIO, Lords; Musicians attending.]

DUKE.
If music be the food of love, play on,
Give me excess of it; that, surfeiting,
The appetite may sicken and so die.--
That strain again;--it had a dying fall;
O, it came o'er my ear like the sweet south,
That breathes upon a bank of violets,
Stealing and giving odour.--Enough; no more;
'Tis not so sweet now as it was before.
O spirit of love, how quick and fresh art thou!
That, notwithstanding thy capacity
Receiveth as the sea, nought enters there,
Of what validity and pitch soever,
But falls into abatement and low price
Even in a minute! so full of shapes is fancy,
That it alone is high-fantastical.

CURIO.
Will you go hunt, my lord?

DUKE.
What, Curio?

CURIO.
The hart.

DUKE.
Why, so I do, the noblest that I have:
O, when mine eyes did see Olivia first,
Methought she purg'd the air of pestilence;
That instant was I turn'd into a hart;
And my desires, like fell and cruel hounds,
E'er since pursue me.--How now! what news from her?
"""


@pytest.fixture(scope="module")
def default_model():
    return zipmoe.load(threads=2)


def test_ships_inside_the_package():
    path = zipmoe.default_model_path()
    assert os.path.isfile(path)
    assert os.path.getsize(path) < 16 << 20  # a few MB, as the README promises
    container = zipmoe.open_container(path)
    assert container.metadata["architecture"] == "qwen3_moe"
    experts = [t for t in container.tensors if t.role == "expert"]
    assert len(experts) == 4 * 8 * 3  # layers x experts x (gate, up, down), each fetchable on its own


def test_held_out_perplexity(default_model):
    ids = default_model.tokenize(HELD_OUT)
    assert 100 < len(ids) < 1024
    logits = default_model.logits(ids).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nll = -np.mean([logp[i, ids[i + 1]] for i in range(len(ids) - 1)])
    perplexity = math.exp(nll)
    vocab = default_model.config["vocab_size"]
    # A uniform guess scores the vocabulary size (4096); the trained model reaches about 50-100 on held-out
    # plays (docs/DEFAULT_MODEL.md). A broken model file, tokenizer or engine lands far above the bound.
    assert perplexity < 200, (perplexity, vocab)


def test_writes_words(default_model):
    text = default_model.generate("DUKE.\n", max_new_tokens=48, temperature=0)
    words = [w.strip(".,;:!?'-").lower() for w in text.split()]
    common = {"the", "and", "i", "to", "of", "a", "my", "you", "that", "in", "is", "not", "me", "it", "with",
              "be", "your", "his", "for", "this", "thou", "thy", "have", "he", "what", "so", "will", "lord"}
    assert sum(w in common for w in words) >= 3, text


def test_cli_run_without_a_model():
    done = subprocess.run([sys.executable, "-m", "zipmoe", "run", "-p", "ROMEO.\n", "-n", "24", "--seed", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) > 20


EXACT_RUN = """
import hashlib, json, sys
import zipmoe
model = zipmoe.load(threads=int(sys.argv[1]), precision="exact")
ids = model.tokenize("ROMEO.\\nBut soft, what light through yonder window breaks?")
logits = model.logits(ids)
# Seeds where, before exact mode was made canonical, scalar, AVX2 and AVX-512 sampled different text.
texts = [model.generate(prompt, max_new_tokens=48, temperature=1.0, seed=seed)
         for prompt, seed in (("ROMEO.\\n", 11), ("JULIET.\\n", 20), ("JULIET.\\n", 84), ("KING.\\n", 26),
                              ("KING.\\n", 1))]
print(json.dumps({"isa": model.isa, "logits": hashlib.sha256(logits.tobytes()).hexdigest(), "texts": texts}))
"""


def test_exact_precision_gives_the_same_logits_and_text_on_every_isa_path():
    # Issue: ZIPMOE_ISA=avx2 and ZIPMOE_ISA=scalar sampled different text from the same seed. With
    # precision="exact" every kernel path computes the same bits, so logits and text agree everywhere (the
    # aarch64/NEON path is held to the same bits by the C++ golden tests under qemu).
    results = {}
    for isa in zipmoe.available_isas():
        env = dict(os.environ, ZIPMOE_ISA=isa)
        threads = "1" if isa == "scalar" else "2"
        done = subprocess.run([sys.executable, "-c", EXACT_RUN, threads], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        results[isa] = json.loads(done.stdout)
        assert results[isa]["isa"] == isa
    reference = results["scalar"]
    assert len(set(reference["texts"])) > 1  # the seeds matter
    for isa, result in results.items():
        assert result["texts"] == reference["texts"], f"{isa} text differs from scalar"
        assert result["logits"] == reference["logits"], f"{isa} logits differ from scalar"
