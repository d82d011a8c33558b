#!/usr/bin/env python3
"""Train zipmoe's built-in default model: a small Qwen3-MoE language model on the works of Shakespeare.

The result is a transformers checkpoint (BF16 safetensors, tokenizer, generation config) that
`zipmoe.convert` turns into the .zmoe shipped inside the package, so that `zipmoe run` and `zipmoe chat` work on a
fresh machine with no downloads. Everything runs on CPU with torch; a seed makes a run repeatable (up to the
nondeterminism of multi-threaded float reductions).

    nice -n 5 python3 tools/train_tiny_moe.py --corpus ../shared/data/corpus/shakespeare \
        --output build/tiny-moe --minutes 55

Outputs under --output:
    model/             save_pretrained() of Qwen3MoeForCausalLM in BF16, tokenizer files, generation_config.json
    training_log.csv   step, tokens seen, learning rate, train loss (smoothed and raw), validation loss/perplexity
    summary.json       configuration, data split, sizes, wall time, final held-out metrics
    checkpoint.pt      the latest training state, for --resume

Data: every *.txt play/poem of the corpus directory (Project Gutenberg headers and licence text are removed where
present); --holdout names the works kept for validation. Speeches of the training plays are also written as
ChatML conversations (one speech as the user's turn, the reply as the assistant's) so that the model learns to answer
inside the chat template and to end a turn with <|im_end|>; --chat-fraction sets how many training windows come from
that stream. Held-out metrics are measured on the plain text of the held-out works only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

END_OF_TEXT = "<|endoftext|>"
TURN_START = "<|im_start|>"
TURN_END = "<|im_end|>"
SPECIAL_TOKENS = [END_OF_TEXT, TURN_START, TURN_END]

# ChatML, as Qwen models use it, without tool calls: the engine's template renderer only needs loops, conditions
# and string concatenation to run it.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

DEFAULT_HOLDOUT = ("julius_caesar_gut.txt", "twelfth_night_gut.txt")

GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)
GUTENBERG_END = re.compile(r"^\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)
# A speaker line of these editions: "Ham.", "First Citizen.", "1 Citizen.", "King Henry.", on a line of its own.
SPEAKER_LINE = re.compile(r"^[A-Z0-9][A-Za-z0-9' \-]{0,40}\.$")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=str(Path(__file__).resolve().parents[1] / "../shared/data/corpus/shakespeare"),
                   help="directory of UTF-8 .txt works")
    p.add_argument("--output", default="build/tiny-moe", help="output directory")
    p.add_argument("--holdout", nargs="+", default=list(DEFAULT_HOLDOUT), help="file names kept for validation")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    # tokenizer
    p.add_argument("--vocab-size", type=int, default=4096)
    # model
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--moe-intermediate-size", type=int, default=192)
    p.add_argument("--max-position-embeddings", type=int, default=1024)
    p.add_argument("--router-aux-loss-coef", type=float, default=0.01)
    p.add_argument("--experts-implementation", default="grouped_mm", choices=("eager", "grouped_mm", "batched_mm"),
                   help="transformers' expert kernel used while training (the saved model does not depend on it)")
    # optimisation
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4, help="sequences per step")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (the cosine schedule spans them)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget for training: the schedule then follows elapsed time and training stops "
                        "when it runs out (the step count becomes an upper bound)")
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup-steps", type=int, default=30)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--precision", default="bf16-mixed", choices=("bf16-mixed", "fp32"),
                   help="bf16-mixed: forward and backward with BF16 weights and activations, FP32 master weights and "
                        "optimizer state (about 1.5x faster on CPUs with AVX512-BF16); fp32: everything in FP32")
    p.add_argument("--chat-fraction", type=float, default=0.08)
    # logging
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-windows", type=int, default=16, help="held-out windows in the periodic evaluation")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    p.add_argument("--no-final-eval", action="store_true")
    # reporting on a finished run (no training)
    p.add_argument("--plot", metavar="PNG", help="draw OUTPUT/training_log.csv into PNG and exit")
    p.add_argument("--samples", action="store_true", help="print greedy and sampled text from OUTPUT/model and exit")
    p.add_argument("--prompts", nargs="+", default=["Romeo.\n", "To be, or not", "KING RICHARD.\nNow is the",
                                                    "First Citizen.\n"])
    p.add_argument("--sample-tokens", type=int, default=120)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------- data

def clean_text(raw: str) -> str:
    """Removes Gutenberg framing, normalizes line ends, trailing blanks and runs of empty lines."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    start = GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = GUTENBERG_END.search(text)
    if end:
        text = text[:end.start()]
    # Some Gutenberg files carry the licence after "End of the Project Gutenberg EBook" without the *** marker.
    tail = re.search(r"^\s*End of (the )?Project Gutenberg", text, re.MULTILINE | re.IGNORECASE)
    if tail:
        text = text[:tail.start()]
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


def load_corpus(corpus: Path, holdout: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    files = sorted(p for p in corpus.glob("*.txt") if not p.name.upper().startswith(("COPYING", "LICENSE", "README")))
    if not files:
        sys.exit(f"no .txt works in {corpus}")
    missing = [h for h in holdout if not (corpus / h).is_file()]
    if missing:
        sys.exit(f"held-out works not found in {corpus}: {', '.join(missing)}")
    train, valid = {}, {}
    for path in files:
        text = clean_text(path.read_text(encoding="utf-8"))
        (valid if path.name in holdout else train)[path.name] = text
    return train, valid


def speeches_of(text: str) -> list[list[str]]:
    """Scenes as lists of speech texts (speaker line dropped, stage directions removed)."""
    scenes, speeches = [], []
    for block in text.split("\n\n"):
        lines = block.split("\n")
        if lines[0].startswith(("ACT ", "Scene ", "SCENE ")):
            if speeches:
                scenes.append(speeches)
            speeches = []
            continue
        if len(lines) < 2 or not SPEAKER_LINE.match(lines[0]):
            continue
        body = [line for line in lines[1:] if not line.lstrip().startswith("[")]
        body_text = "\n".join(body).strip()
        if body_text:
            speeches.append(body_text)
    if speeches:
        scenes.append(speeches)
    return scenes


def chat_conversations(train: dict[str, str], rng: np.random.Generator) -> list[str]:
    """Consecutive speeches of a scene as alternating user/assistant turns, 1 to 3 exchanges per conversation."""
    conversations = []
    for name in sorted(train):
        for scene in speeches_of(train[name]):
            i = 0
            while i + 1 < len(scene):
                exchanges = int(rng.integers(1, 4))
                turns = scene[i:i + 2 * exchanges]
                if len(turns) % 2:
                    turns = turns[:-1]
                parts = []
                for j, content in enumerate(turns):
                    role = "user" if j % 2 == 0 else "assistant"
                    parts.append(f"{TURN_START}{role}\n{content}{TURN_END}\n")
                conversations.append("".join(parts))
                i += len(turns)
    return conversations


# ----------------------------------------------------------------------------------------------------- tokenizer

def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    # GPT-2's split (contractions, letters, digits, punctuation, whitespace) and the 256-symbol byte alphabet, so any
    # UTF-8 text is encodable and decodes back byte-exactly.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def wrap_tokenizer(tokenizer):
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT,
                                      additional_special_tokens=[TURN_START, TURN_END], model_max_length=1024)
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def write_portable_tokenizer_config(model_dir: Path) -> None:
    """transformers 5 writes a config that 4.x cannot read (its own class name, extra_special_tokens as a list);
    the 4.x spelling loads in both, and the chat template is also kept inline for readers that do not look for
    chat_template.jinja."""
    path = model_dir / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        config["additional_special_tokens"] = extra
    config["chat_template"] = CHAT_TEMPLATE
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def encode_stream(tokenizer, documents: list[str]) -> np.ndarray:
    """Documents joined by <|endoftext|>, the way the model sees them at training time."""
    eot = tokenizer.token_to_id(END_OF_TEXT)
    ids = [eot]
    for encoding in tokenizer.encode_batch(documents, add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(eot)
    return np.asarray(ids, dtype=np.int32)


# --------------------------------------------------------------------------------------------------------- model

def build_config(args, vocab_size: int, special_ids: dict[str, int]):
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=args.moe_intermediate_size * args.top_k,  # only read by dense layers; there are none
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.head_dim,
        hidden_act="silu",
        max_position_embeddings=args.max_position_embeddings,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        use_cache=True,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        attention_bias=False,
        attention_dropout=0.0,
        decoder_sparse_step=1,
        moe_intermediate_size=args.moe_intermediate_size,
        num_experts_per_tok=args.top_k,
        num_experts=args.experts,
        norm_topk_prob=True,
        output_router_logits=False,
        router_aux_loss_coef=args.router_aux_loss_coef,
        mlp_only_layers=[],
        bos_token_id=None,
        eos_token_id=special_ids[END_OF_TEXT],
        pad_token_id=special_ids[END_OF_TEXT],
    )


def parameter_counts(model, config) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())  # tied weights counted once
    expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    per_expert = expert // (config.num_experts * config.num_hidden_layers)
    active = total - expert + per_expert * config.num_experts_per_tok * config.num_hidden_layers
    return {"total": total, "expert": expert, "dense": total - expert, "active_per_token": active}


def learning_rate(args, progress: float, step: int) -> float:
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return args.lr * (args.min_lr_ratio + (1.0 - args.min_lr_ratio) * cosine)


def evaluate(model, stream: np.ndarray, seq_len: int, max_windows: int | None):
    """Summed next-token NLL and token count over non-overlapping windows of the held-out stream."""
    import torch
    import torch.nn.functional as F

    model.eval()
    windows = (len(stream) - 1) // seq_len
    if max_windows is not None:
        windows = min(windows, max_windows)
    total_nll, total_tokens = 0.0, 0
    batch = 8
    with torch.no_grad():
        for first in range(0, windows, batch):
            count = min(batch, windows - first)
            rows = [stream[(first + i) * seq_len:(first + i) * seq_len + seq_len + 1] for i in range(count)]
            ids = torch.from_numpy(np.stack(rows).astype(np.int64))
            logits = model(input_ids=ids[:, :-1]).logits.float()
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="sum")
            total_nll += nll.item()
            total_tokens += ids[:, 1:].numel()
    model.train()
    return total_nll, total_tokens


# ----------------------------------------------------------------------------------------------------- reporting

def plot_training_curve(log_path: Path, png_path: Path, summary_path: Path | None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path, newline="") as f:
        rows = list(csv.DictReader(f))
    tokens = [int(r["tokens"]) / 1e6 for r in rows]
    train = [float(r["train_loss"]) for r in rows]
    val_rows = [r for r in rows if r["val_loss"]]
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    ax.plot(tokens, train, label="train loss (EMA)", color="#4878a8", linewidth=1.2)
    ax.plot([int(r["tokens"]) / 1e6 for r in val_rows], [float(r["val_loss"]) for r in val_rows], "o-",
            label="held-out loss (periodic subset)", color="#c0504d", markersize=3, linewidth=1.2)
    if summary_path and summary_path.is_file():
        final = json.loads(summary_path.read_text()).get("heldout") or {}
        if final:
            ax.axhline(final["loss_per_token"], color="#c0504d", linestyle=":", linewidth=1,
                       label=f"held-out, full, final: {final['loss_per_token']:.3f} "
                             f"(ppl {final['perplexity_per_token']:.1f})")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title("zipmoe default model: Qwen3-MoE on Shakespeare")
    ax.set_ylim(bottom=min(train + [float(r["val_loss"]) for r in val_rows]) - 0.3, top=min(8.5, max(train) + 0.2))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path)
    print(f"wrote {png_path}")


def print_samples(model_dir: Path, prompts: list[str], max_new_tokens: int, seed: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    for prompt in prompts:
        prompt = prompt.replace("\\n", "\n")  # prompts typed on a command line spell newlines as \n
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        for mode in ("greedy", "sampled"):
            torch.manual_seed(seed)
            kwargs = {"do_sample": False, "repetition_penalty": 1.1} if mode == "greedy" else {}
            with torch.no_grad():
                out = model.generate(ids, max_new_tokens=max_new_tokens, **kwargs)
            text = tokenizer.decode(out[0], skip_special_tokens=False)
            print(f"===== {mode}: {prompt!r}\n{text}\n", flush=True)


# ---------------------------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plot or args.samples:
        output = Path(args.output)
        if args.plot:
            plot_training_curve(output / "training_log.csv", Path(args.plot), output / "summary.json")
        if args.samples:
            print_samples(output / "model", args.prompts, args.sample_tokens, args.seed)
        return 0
    import torch
    import torch.nn.functional as F
    from transformers import GenerationConfig, Qwen3MoeForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    output = Path(args.output)
    model_dir = output / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    corpus = Path(args.corpus).resolve()
    train_texts, valid_texts = load_corpus(corpus, args.holdout)
    conversations = chat_conversations(train_texts, rng)
    print(f"corpus {corpus}: {len(train_texts)} training works ({sum(map(len, train_texts.values()))} chars), "
          f"{len(valid_texts)} held out ({', '.join(valid_texts)}), {len(conversations)} chat conversations",
          flush=True)

    t0 = time.time()
    raw_tokenizer = train_tokenizer([train_texts[k] for k in sorted(train_texts)], args.vocab_size)
    tokenizer = wrap_tokenizer(raw_tokenizer)
    tokenizer.save_pretrained(model_dir)
    special_ids = {t: raw_tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    vocab_size = raw_tokenizer.get_vocab_size()
    train_stream = encode_stream(raw_tokenizer, [train_texts[k] for k in sorted(train_texts)])
    chat_stream = encode_stream(raw_tokenizer, conversations)
    valid_documents = [valid_texts[k] for k in sorted(valid_texts)]
    valid_stream = encode_stream(raw_tokenizer, valid_documents)
    valid_bytes = sum(len(d.encode("utf-8")) for d in valid_documents)
    valid_chars = sum(len(d) for d in valid_documents)
    train_bytes = sum(len(t.encode("utf-8")) for t in train_texts.values())
    print(f"tokenizer: {vocab_size} tokens in {time.time() - t0:.1f}s; train {len(train_stream)} tokens "
          f"({train_bytes / len(train_stream):.2f} bytes/token), chat {len(chat_stream)}, "
          f"held-out {len(valid_stream)} tokens / {valid_bytes} bytes", flush=True)

    config = build_config(args, vocab_size, special_ids)
    config._experts_implementation = args.experts_implementation
    model = Qwen3MoeForCausalLM(config)
    model.train()
    counts = parameter_counts(model, config)
    print(f"model: {counts['total']:,} parameters ({counts['expert']:,} in experts), "
          f"{counts['active_per_token']:,} active per token, BF16 {2 * counts['total'] / 1e6:.1f} MB", flush=True)

    # The optimizer owns FP32 master copies; in bf16-mixed mode the model itself holds their BF16 rounding, which
    # is what forward and backward run on (small updates would vanish if AdamW stepped BF16 weights directly).
    named = list(model.named_parameters())
    if args.precision == "bf16-mixed":
        masters = [torch.nn.Parameter(p.detach().clone()) for _, p in named]
        model.to(torch.bfloat16)
        named = list(model.named_parameters())
    else:
        masters = [p for _, p in named]
    decay = [m for (n, p), m in zip(named, masters) if p.dim() >= 2 and "embed" not in n]
    no_decay = [m for (n, p), m in zip(named, masters) if not (p.dim() >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=False)

    log_path = output / "training_log.csv"
    checkpoint_path = output / "checkpoint.pt"
    step, tokens_seen, train_seconds = 0, 0, 0.0
    if args.resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, weights_only=False)
        with torch.no_grad():
            for master, saved in zip(masters, state["masters"]):
                master.copy_(saved)
            for (_, p), master in zip(named, masters):
                p.copy_(master)
        optimizer.load_state_dict(state["optimizer"])
        step, tokens_seen, train_seconds = state["step"], state["tokens_seen"], state["train_seconds"]
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at step {step}", flush=True)
        log_file = open(log_path, "a", newline="")
        log = csv.writer(log_file)
    else:
        log_file = open(log_path, "w", newline="")
        log = csv.writer(log_file)
        log.writerow(["step", "tokens", "elapsed_s", "lr", "train_loss", "train_loss_raw", "aux_loss",
                      "val_loss", "val_ppl"])

    def sample_batch() -> torch.Tensor:
        rows = []
        for _ in range(args.batch_size):
            stream = chat_stream if rng.random() < args.chat_fraction else train_stream
            start = int(rng.integers(0, len(stream) - args.seq_len - 1))
            rows.append(stream[start:start + args.seq_len + 1])
        return torch.from_numpy(np.stack(rows).astype(np.int64))

    def progress() -> float:
        if args.minutes:
            return max(step / args.steps, train_seconds / (60.0 * args.minutes))
        return step / args.steps

    def periodic_eval() -> tuple[float, float]:
        nll, n = evaluate(model, valid_stream, args.seq_len, args.eval_windows)
        return nll / n, math.exp(nll / n)

    smoothed = None
    segment_start = time.time()
    while step < args.steps and progress() < 1.0:
        lr = learning_rate(args, progress(), step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = sample_batch()
        out = model(input_ids=batch[:, :-1], output_router_logits=True)
        logits = out.logits.float()
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        aux = out.aux_loss.float()
        loss = ce + args.router_aux_loss_coef * aux
        model.zero_grad(set_to_none=True)
        loss.backward()
        if args.precision == "bf16-mixed":
            for (_, p), master in zip(named, masters):
                master.grad = p.grad.float()
        torch.nn.utils.clip_grad_norm_(masters, args.grad_clip)
        optimizer.step()
        if args.precision == "bf16-mixed":
            with torch.no_grad():
                for (_, p), master in zip(named, masters):
                    p.copy_(master)
        step += 1
        tokens_seen += batch[:, 1:].numel()
        now = time.time()
        train_seconds += now - segment_start
        segment_start = now
        smoothed = ce.item() if smoothed is None else 0.95 * smoothed + 0.05 * ce.item()

        val_loss = val_ppl = ""
        last = step >= args.steps or progress() >= 1.0
        if step % args.eval_every == 0 or last:
            eval_start = time.time()
            vl, vp = periodic_eval()
            val_loss, val_ppl = f"{vl:.4f}", f"{vp:.2f}"
            state = {"masters": [m.detach() for m in masters], "optimizer": optimizer.state_dict(), "step": step,
                     "tokens_seen": tokens_seen, "train_seconds": train_seconds,
                     "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
            torch.save(state, checkpoint_path)
            segment_start = time.time()  # evaluation and checkpointing do not count as training time
            print(f"step {step:5d}  val loss {vl:.4f}  ppl {vp:.2f}  (eval {time.time() - eval_start:.0f}s)",
                  flush=True)
        if step % args.log_every == 0 or val_loss:
            log.writerow([step, tokens_seen, f"{train_seconds:.1f}", f"{lr:.6g}", f"{smoothed:.4f}",
                          f"{ce.item():.4f}", f"{aux.item():.4f}", val_loss, val_ppl])
            log_file.flush()
        if step % args.log_every == 0:
            print(f"step {step:5d}  loss {smoothed:.4f}  aux {aux.item():.3f}  lr {lr:.2e}  "
                  f"{tokens_seen / max(train_seconds, 1e-9):.0f} tok/s  {train_seconds / 60:.1f} min", flush=True)
    log_file.close()

    # The shipped weights are the BF16 rounding of the masters; held-out figures are for those weights computed in
    # FP32, the way the engine runs them.
    with torch.no_grad():
        model.to(torch.float32)
        for (_, p), master in zip(named, masters):
            p.copy_(master.to(torch.bfloat16).float())
    result = {}
    if not args.no_final_eval:
        t0 = time.time()
        nll, n = evaluate(model, valid_stream, args.seq_len, None)
        result = {
            "tokens": n,
            "loss_per_token": nll / n,
            "perplexity_per_token": math.exp(nll / n),
            # Tokens scored are all but the first of each window, so per-byte figures scale by the bytes they cover.
            "bytes_scored": valid_bytes * n / (len(valid_stream) - 1),
        }
        result["bits_per_byte"] = nll / math.log(2) / result["bytes_scored"]
        result["perplexity_per_byte"] = math.exp(nll / result["bytes_scored"])
        result["perplexity_per_char"] = math.exp(nll / (valid_chars * n / (len(valid_stream) - 1)))
        print(f"held-out ({n} tokens, {time.time() - t0:.0f}s): loss {result['loss_per_token']:.4f}, "
              f"ppl/token {result['perplexity_per_token']:.2f}, ppl/byte {result['perplexity_per_byte']:.3f}, "
              f"{result['bits_per_byte']:.3f} bits/byte", flush=True)

    model = model.to(torch.bfloat16)
    model.config._experts_implementation = "eager"
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.8, top_p=0.95, top_k=0, repetition_penalty=1.1, max_new_tokens=256,
        eos_token_id=[special_ids[END_OF_TEXT], special_ids[TURN_END]], pad_token_id=special_ids[END_OF_TEXT])
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_portable_tokenizer_config(model_dir)

    summary = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "arguments": vars(args),
        "torch": torch.__version__,
        "corpus": str(corpus),
        "train_works": sorted(train_texts),
        "heldout_works": sorted(valid_texts),
        "train_tokens": int(len(train_stream)),
        "train_bytes": train_bytes,
        "chat_tokens": int(len(chat_stream)),
        "heldout_tokens": int(len(valid_stream)),
        "heldout_bytes": valid_bytes,
        "heldout_chars": valid_chars,
        "vocab_size": vocab_size,
        "parameters": counts,
        "steps": step,
        "tokens_seen": tokens_seen,
        "train_minutes": train_seconds / 60.0,
        "wall_minutes": (time.time() - started) / 60.0,
        "heldout": result,
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved {model_dir} ({summary['wall_minutes']:.1f} min wall, {summary['train_minutes']:.1f} min training)",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
