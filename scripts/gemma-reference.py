#!/usr/bin/env python3
"""Reference ids for perfwatt's Gemma 3 support, from llama.cpp (llama-cpp-python), a
Gemma implementation nobody here wrote: how its tokenizer splits a set of texts, and the
greedy continuation of chat prompts (one short, one past the 512-position sliding window),
with each step's margin between the two best logits.

Usage: python3 scripts/gemma-reference.py [models/gemma-3-270m-q4_k_m.gguf] > tests/data/gemma-reference.json
Needs: pip install llama-cpp-python==0.3.36 (builds llama.cpp; a few minutes on 2 cores).
"""
import json
import sys

import llama_cpp
import numpy as np

path = sys.argv[1] if len(sys.argv) > 1 else "models/gemma-3-270m-q4_k_m.gguf"
prompts = [json.loads(l)["text"] for l in open("experiments/prompts.jsonl")]
texts = [
    "The capital of France is",
    "Hello world!  Two spaces,   three, and a tab:\there.\nNew line\n\n\nthree newlines.",
    "Numbers 12345 and 3.14159; unicode: naïve café, 日本語, emoji 🙂 and math ∑x².",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "  leading spaces and trailing ones   ",
] + prompts
llm = llama_cpp.Llama(model_path=path, n_ctx=2048, n_threads=2, n_batch=512, verbose=False)
tok = lambda t: llm.tokenize(t.encode(), add_bos=False, special=True)


def chat(user):
    return tok("<bos><start_of_turn>user\n") + tok(user) + tok("<end_of_turn>\n<start_of_turn>model\n")


def greedy(ids, n):
    llm.reset()
    llm.eval(ids)
    out, margins = [], []
    for _ in range(n):
        # Only the batch's last position has logits (logits_all off).
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()
        top2 = np.argsort(logits)[-2:]
        out.append(int(top2[1]))
        margins.append(float(logits[top2[1]] - logits[top2[0]]))
        llm.eval([out[-1]])
    return out, margins


# A long prompt: the shipped prompts concatenated (real text, not padding), cut to 600 ids.
long_user = tok("\n\n".join(prompts))[:600]
cases = []
for name, ids, n in [
    ("short", chat("The capital of France is"), 24),
    ("long-600", tok("<bos><start_of_turn>user\n") + long_user + tok("<end_of_turn>\n<start_of_turn>model\n"), 16),
]:
    out, margins = greedy(ids, n)
    cases.append({"name": name, "prompt": ids, "greedy": out, "margins": margins})
json.dump(
    {
        "source": f"llama-cpp-python {llama_cpp.__version__} (llama.cpp) on {path}, CPU, greedy (argmax of logits)",
        "command": "python3 scripts/gemma-reference.py > tests/data/gemma-reference.json",
        "tokenize": [{"text": t, "ids": tok(t)} for t in texts],
        "cases": cases,
    },
    sys.stdout,
    indent=None,
)
print()
