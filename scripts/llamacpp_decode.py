#!/usr/bin/env python3
"""Greedy decode with llama.cpp (llama-cpp-python) timed as `perfwatt infer` times it: the
prompt's pass and first token (TTFT), then one eval per new token; decode tokens/s =
(T - 1) / (total - TTFT). The prompt is built like perfwatt's build_batch: the chat head,
the first prompt of the set long enough, cut so the whole is LEN tokens, the chat tail.

Usage: llamacpp_decode.py MODEL.gguf --threads 2 --prompt-len 40 --new-tokens 64 --repeats 5
Prints one JSON line: decode tokens/s of each measured run.
"""
import argparse
import json
import time

import llama_cpp
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--prompt-len", type=int, default=40)
ap.add_argument("--new-tokens", type=int, default=64)
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--prompts", default="experiments/prompts.jsonl")
a = ap.parse_args()

llm = llama_cpp.Llama(model_path=a.model, n_ctx=1024, n_threads=a.threads, n_threads_batch=a.threads, verbose=False)
tok = lambda t: llm.tokenize(t.encode(), add_bos=False, special=True)
head, tail = tok("<bos><start_of_turn>user\n"), tok("<end_of_turn>\n<start_of_turn>model\n")
need = a.prompt_len - len(head) - len(tail)
user = next(u for u in (tok(json.loads(l)["text"]) for l in open(a.prompts)) if len(u) >= need)
prompt = head + user[:need] + tail


def run():
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    nxt = int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))))
    ttft = time.perf_counter() - t0
    for _ in range(a.new_tokens - 1):
        llm.eval([nxt])
        nxt = int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))))
    total = time.perf_counter() - t0
    return (a.new_tokens - 1) / (total - ttft)


run()  # warm-up, as perfwatt's --warmup 1
print(json.dumps({"llama_cpp": llama_cpp.__version__, "prompt_tokens": len(prompt), "decode_tok_s": [run() for _ in range(a.repeats)]}))
