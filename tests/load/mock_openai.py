#!/usr/bin/env python3
"""A mock OpenAI-compatible streaming server for `perfwatt load`'s tests (standard library).

usage: mock_openai.py [--ttft-ms 50] [--itl-ms 10] [--tokens 5] [--mode ok|error|stall]
Prints "PORT n" once listening on 127.0.0.1 (an ephemeral port). ok: after --ttft-ms the
first chunk, then one chunk per --itl-ms up to min(--tokens, max_tokens), a usage chunk and
[DONE]; error: HTTP 503 with an OpenAI error body; stall: the first chunk, then silence.
"""
import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

a = argparse.ArgumentParser()
a.add_argument("--ttft-ms", type=float, default=50)
a.add_argument("--itl-ms", type=float, default=10)
a.add_argument("--tokens", type=int, default=5)
a.add_argument("--mode", default="ok", choices=["ok", "error", "stall"])
args = a.parse_args()


class H(BaseHTTPRequestHandler):
    def log_message(self, *_):
        pass

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "mock-model", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def chunk(self, obj):
        self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
        self.wfile.flush()

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if args.mode == "error":
            body = json.dumps({"error": {"message": "overloaded", "type": "server_error"}}).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        chat = self.path.endswith("/chat/completions")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        n = min(args.tokens, req.get("max_tokens", args.tokens))
        obj = "chat.completion.chunk" if chat else "text_completion"
        time.sleep(args.ttft_ms / 1e3)
        for i in range(n):
            if i:
                time.sleep(args.itl_ms / 1e3)
            text = f"t{i} "
            last = i == n - 1
            choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
            choice["finish_reason"] = "length" if last else None
            self.chunk({"id": "cmpl-mock", "object": obj, "created": 0, "model": req["model"], "choices": [choice]})
            if args.mode == "stall":
                time.sleep(30)
                return
        self.chunk({"id": "cmpl-mock", "object": obj, "created": 0, "model": req["model"], "choices": [],
                    "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}})
        self.wfile.write(b"data: [DONE]\n\n")


srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
print(f"PORT {srv.server_address[1]}", flush=True)
srv.serve_forever()
