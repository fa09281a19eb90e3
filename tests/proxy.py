"""A fault-injecting HTTP proxy for engine tests, on 127.0.0.1 only.

It answers the first `fail_first` requests with `fail_status` (500, 429, ...) and forwards
every later one to the upstream server unchanged, recording each request's method, path,
requested model and the status it returned. The log (what a test asserts on) keeps no
headers: whether the expected API key arrived is counted in memory, never written.
"""
from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
              "proxy-authenticate", "host", "content-length"}


def summary(body: bytes) -> dict:
    """What a test asserts on in a request body: the model, the fields sent, the stops,
    and the length of a token-id prompt (the prompt itself is not kept)."""
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        return {}
    prompt = data.get("prompt")
    ids = len(prompt) if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt) else None
    return {"model": data.get("model"), "fields": sorted(data), "stop": data.get("stop"), "prompt_ids": ids}


class FaultProxy:
    def __init__(self, upstream_port: int, *, fail_first: int = 0, fail_status: int = 500,
                 expected_key: str | None = None, log_path: Path | None = None, upstream_timeout: float = 120):
        self.upstream_port = upstream_port
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.expected_key = expected_key
        self.log_path = log_path
        self.upstream_timeout = upstream_timeout
        self.entries: list[dict] = []
        self.keys_seen = 0  # requests that carried `Authorization: Bearer <expected_key>`
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def reset(self, *, fail_first: int = 0, fail_status: int = 500) -> None:
        with self._lock:
            self.entries.clear()
            self.keys_seen = 0
            self.fail_first, self.fail_status = fail_first, fail_status

    def paths(self) -> list[str]:
        return [e["path"] for e in self.entries]

    def _record(self, entry: dict, key_ok: bool) -> bool:
        """Log one request; True if it must get the injected failure."""
        with self._lock:
            entry["n"] = len(self.entries) + 1
            fail = entry["n"] <= self.fail_first
            entry["status"] = self.fail_status if fail else None
            self.entries.append(entry)
            self.keys_seen += key_ok
            if self.log_path is not None:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(entry) + "\n")
            return fail

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet, and no headers anywhere
                pass

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization")
                key_ok = bool(proxy.expected_key) and auth == f"Bearer {proxy.expected_key}"
                if proxy._record({"method": self.command, "path": self.path, **summary(body)}, key_ok):
                    self._answer(proxy.fail_status, b'{"error": {"message": "injected fault", "code": %d}}'
                                 % proxy.fail_status, {"Content-Type": "application/json"})
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=proxy.upstream_timeout)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    upstream = conn.getresponse()
                    data = upstream.read()
                    passed = {k: v for k, v in upstream.getheaders() if k.lower() not in HOP_BY_HOP}
                    self._answer(upstream.status, data, passed)
                except OSError as err:
                    self._answer(502, json.dumps({"error": {"message": f"proxy: {err}"}}).encode(),
                                 {"Content-Type": "application/json"})
                finally:
                    conn.close()

            def _answer(self, status: int, data: bytes, headers: dict) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
