"""A tiny OpenAI-compatible chat-completions server for tests and benchmarks (no model, no network).

``StubBackend`` runs raw asyncio HTTP/1.1 (keep-alive, ``content-length`` bodies of any size, UTF-8)
in a background thread, answers in microseconds, and records every request it receives, so a test
can assert on exactly what the gateway sent upstream and compare what the client got with what the
stub answered. What it does is chosen by the request's ``model`` field (the backend's remote model
id); anything after an ``@`` is ignored for the choice (``echo@m0`` behaves as ``echo``), so tests can
give each pyramid model its own remote id.

Modes:

``echo``
    "echo: <last user message>"; a usage chunk ends a stream only if the request asks for it
    (``stream_options.include_usage``), as OpenAI does.
``fail`` / ``ratelimit``
    HTTP 500 / HTTP 429, each with an OpenAI error body.
``reject-400``, ``reject-404``, ``reject-413``, ``reject-422``
    That status with ``{"error": {"message": "stub rejects: ...", "type": "invalid_request_error",
    "param": None, "code": "stub_rejected"}}`` (:meth:`StubBackend.reject_body`).
``stall`` / ``stall-after-first`` / ``slow-<ms>``
    Never answers / streams one piece then never continues / waits ``ms`` then answers like echo.
``confident`` / ``unsure``
    Like echo; when the request asks for ``logprobs``, adds ``logprobs.content`` at -0.05 / -3.0 per
    token (one token per word), in the body or in each streamed chunk (drives the cascade).
``tools``
    With ``tools`` in the request (and ``tool_choice`` not ``"none"``): an assistant message with
    ``content: None`` and one ``tool_calls`` entry calling the tool named by ``tool_choice``, else
    the first tool, with arguments built from its JSON schema (:func:`schema_example`), and
    ``finish_reason: "tool_calls"``. Streamed like OpenAI: a first delta with the call's
    ``index``/``id``/``type``/``name`` and ``arguments: ""``, then argument fragments. With a
    ``response_format`` of type ``json_schema``: content is an instance of the schema; of type
    ``json_object``: ``{"echo": <last user message>}``. Otherwise like echo.
``rich``
    Echo plus every field a pass-through gateway must keep: ``system_fingerprint: "fp_stub"``,
    ``service_tier: "default"``, ``logprobs.content`` (always), ``usage`` with
    ``prompt_tokens_details`` / ``completion_tokens_details``, and on the message ``refusal: None``,
    ``annotations: []`` and an unknown ``x_stub_extra: 1`` (on streamed deltas too).

Other paths: ``POST /v1/embeddings`` answers deterministic 8-dimensional unit vectors made from a
hash of each input, and legacy ``POST /v1/completions`` echoes the prompt (streamed too), in
OpenAI's shapes (``stub_text``); ``fail``, ``ratelimit``, ``reject-*``, ``stall``,
``stall-after-first`` and ``slow-<ms>`` work there as on chat, every other mode answers normally.

Recording: ``stub.requests`` is a list (a thread-safe snapshot) of ``{"method", "path", "headers",
"body", "response"}`` dicts in arrival order; ``response`` is what the stub answered: ``{"status",
"body"}`` for a JSON answer, ``{"status": 200, "chunks": [...]}`` for a stream (each chunk object in
order, ``[DONE]`` not included), ``None`` while nothing was answered (a stall). ``stub.calls`` counts
requests per ``model`` value. ``stub.reset()`` clears both.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from typing import Any

from . import stub_text

__all__ = ["StubBackend", "schema_example", "tool_call_arguments"]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large",
            422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error"}


# -- JSON schema -> an instance ---------------------------------------------------------------------


def _resolve(schema: dict, root: dict) -> dict:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        ref = schema["$ref"]
        node: Any = root
        if ref.startswith("#"):
            for part in [p for p in ref[1:].split("/") if p]:
                node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, dict) else {}
        else:
            node = {}
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**node, **extra} if isinstance(node, dict) else extra
        seen += 1
    return schema if isinstance(schema, dict) else {}


_STRING_FORMATS = {"date": "2024-05-01", "date-time": "2024-05-01T12:00:00Z", "time": "12:00:00",
                   "email": "stub@example.com", "uri": "https://example.com", "uuid":
                   "123e4567-e89b-12d3-a456-426614174000"}


def schema_example(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A small value valid against a JSON schema: strings "Paris", integers 3, numbers 2.5, ``True``,
    one-item arrays, objects with their required properties (all properties when ``required`` is
    absent). Follows ``$ref`` (``#/$defs/...``), ``anyOf``/``oneOf``/``allOf`` (first non-null
    branch), ``enum``, ``const``, ``default``, type lists, ``minimum``, ``minLength`` and ``minItems``.
    Deterministic, so tests can assert the exact arguments."""
    if root is None:
        root = schema
    if not isinstance(schema, dict) or depth > 12:
        return None
    schema = _resolve(schema, root)
    if "const" in schema:
        return copy.deepcopy(schema["const"])
    if schema.get("enum"):
        return copy.deepcopy(schema["enum"][0])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            branches = [_resolve(b, root) for b in schema[key]]
            pick = next((b for b in branches if b.get("type") != "null"), branches[0])
            return schema_example(pick, root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict = {}
        for b in schema["allOf"]:
            b = _resolve(b, root)
            for k, v in b.items():
                if k == "properties":
                    merged.setdefault("properties", {}).update(v)
                elif k == "required":
                    merged.setdefault("required", []).extend(v)
                else:
                    merged.setdefault(k, v)
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return schema_example({**merged, **rest}, root, depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ is None:
        typ = "object" if "properties" in schema else ("array" if "items" in schema else
                                                       ("default" if "default" in schema else "string"))
    if typ == "default":
        return copy.deepcopy(schema["default"])
    if typ == "object":
        props = schema.get("properties") or {}
        names = schema["required"] if isinstance(schema.get("required"), list) else list(props)
        return {n: schema_example(props.get(n, {"type": "string"}), root, depth + 1) for n in names}
    if typ == "array":
        items = schema.get("items")
        if isinstance(schema.get("prefixItems"), list):
            return [schema_example(s, root, depth + 1) for s in schema["prefixItems"]]
        n = max(1, int(schema.get("minItems") or 0))
        return [schema_example(items if isinstance(items, dict) else {"type": "string"}, root, depth + 1)
                for _ in range(n)]
    if typ == "integer":
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        v = 3
        if isinstance(lo, (int, float)) and v < lo:
            v = int(lo) + 1
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        if isinstance(hi, (int, float)) and v > hi:
            v = int(hi) - (1 if "exclusiveMaximum" in schema else 0)
        return v
    if typ == "number":
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        v = 2.5
        if isinstance(lo, (int, float)) and v < lo:
            v = float(lo) + 1
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        if isinstance(hi, (int, float)) and v > hi:
            v = float(hi) - (0.5 if "exclusiveMaximum" in schema else 0)
        return v
    if typ == "boolean":
        return True
    if typ == "null":
        return None
    s = _STRING_FORMATS.get(schema.get("format"), "Paris")
    if isinstance(schema.get("minLength"), int) and len(s) < schema["minLength"]:
        s = s + "x" * (schema["minLength"] - len(s))
    return s


def _tool_to_call(body: dict) -> dict | None:
    """The tool the stub calls for this request: ``tool_choice``'s, else the first; None for none."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        for t in tools:
            if (t.get("function") or {}).get("name") == name:
                return t
    return tools[0]


def tool_call_arguments(tool: dict) -> dict:
    """The arguments the ``tools`` mode passes to ``tool`` (an OpenAI ``{"type": "function", ...}``)."""
    params = (tool.get("function") or {}).get("parameters") or {"type": "object", "properties": {}}
    args = schema_example(params)
    return args if isinstance(args, dict) else {}


# -- the server -------------------------------------------------------------------------------------


class StubBackend:
    """A tiny recording OpenAI-compatible HTTP/1.1 server in a background thread (see the module doc)."""

    LOGPROB = {"confident": -0.05, "unsure": -3.0}
    REJECT = {"reject-400": 400, "reject-404": 404, "reject-413": 413, "reject-422": 422}
    FINGERPRINT = "fp_stub"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = 0
        self.port_wanted = port
        self.calls: dict[str, int] = {}
        self._requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._seq = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="stub-backend")
        self._server: asyncio.AbstractServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "StubBackend":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stub backend did not start within 10 s")
        return self

    def stop(self) -> None:
        async def _close() -> None:
            if self._server is not None:
                self._server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> "StubBackend":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- recording ----------------------------------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request received so far, oldest first (a snapshot: safe to read from any thread)."""
        with self._lock:
            return list(self._requests)

    def bodies(self, path: str | None = "/v1/chat/completions") -> list[dict[str, Any]]:
        """The JSON bodies received (on ``path``; every path if None), oldest first."""
        return [r["body"] for r in self.requests if path is None or r["path"] == path]

    def reset(self) -> None:
        """Forget every call and recorded request."""
        with self._lock:
            self.calls.clear()
            self._requests.clear()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The recorded requests once there are at least ``n`` (or whatever arrived by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.requests
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.01)

    def _record(self, method: str, path: str, headers: dict[str, str], body: Any) -> dict[str, Any]:
        entry = {"method": method, "path": path, "headers": headers, "body": body, "response": None}
        with self._lock:
            self._requests.append(entry)
            if isinstance(body, dict):
                model = str(body.get("model", "echo"))
                self.calls[model] = self.calls.get(model, 0) + 1
        return entry

    @classmethod
    def reject_body(cls, mode: str) -> dict[str, Any]:
        """The error body a ``reject-<status>`` mode answers with."""
        return {"error": {"message": f"stub rejects: {mode} (HTTP {cls.REJECT.get(mode, 400)})",
                          "type": "invalid_request_error", "param": None, "code": "stub_rejected"}}

    # -- HTTP ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def boot() -> None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port_wanted, backlog=256)
            self.port = self._server.sockets[0].getsockname()[1]

        self._loop.run_until_complete(boot())
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on the same connection
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, path = "GET", "/"
                parts = lines[0].decode("latin-1").split(" ")
                if len(parts) >= 2:
                    method, path = parts[0], parts[1]
                headers: dict[str, str] = {}
                length = 0
                for line in lines[1:]:
                    k, sep, v = line.partition(b":")
                    if not sep:
                        continue
                    key = k.strip().lower().decode("latin-1")
                    headers[key] = v.strip().decode("latin-1")
                    if key == "content-length":
                        length = int(v)
                raw = await reader.readexactly(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else {}
                except ValueError:
                    body = raw.decode("utf-8", errors="replace")
                entry = self._record(method, path, headers, body)
                if not isinstance(body, dict):
                    err = {"error": {"message": "stub: body is not a JSON object", "type": "invalid_request_error",
                                     "param": None, "code": "invalid_json"}}
                    await self._json(writer, entry, 400, err)
                    continue
                await self._answer(body, entry, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _json(self, writer: asyncio.StreamWriter, entry: dict, status: int, obj: dict,
                    raw: bytes | None = None) -> None:
        entry["response"] = {"status": status, "body": obj}
        payload = raw if raw is not None else json.dumps(obj).encode()
        writer.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (status, _REASONS.get(status, "Error").encode(), len(payload), payload))
        await writer.drain()

    async def _answer(self, body: dict, entry: dict, writer: asyncio.StreamWriter) -> None:
        model = str(body.get("model", "echo"))
        mode = model.split("@", 1)[0]
        msgs = body.get("messages") or [{}]
        user = next((m.get("content") for m in reversed(msgs) if isinstance(m, dict) and m.get("role") == "user"), "")
        text = f"echo: {user}"
        if mode == "fail":
            payload = b'{"error":{"message":"stub failure","type":"server_error"}}'
            await self._json(writer, entry, 500, json.loads(payload), raw=payload)
            return
        if mode == "ratelimit":
            await self._json(writer, entry, 429, {"error": {
                "message": "stub rate limit reached", "type": "requests", "param": None, "code": "rate_limit_exceeded"}})
            return
        if mode in self.REJECT:
            await self._json(writer, entry, self.REJECT[mode], self.reject_body(mode))
            return
        if mode == "stall":
            await asyncio.sleep(3600)
        if mode.startswith("slow-"):
            await asyncio.sleep(int(mode[5:]) / 1000)
        path = entry["path"]
        if path.endswith("/embeddings"):
            await self._json(writer, entry, 200, stub_text.embeddings_body(body, model))
            return
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            whole, chunks = stub_text.completion_chunks(body, model, f"cmpl-stub{self._next()}")
            if body.get("stream"):
                await self._sse(writer, entry, chunks, stall_after=1 if mode == "stall-after-first" else None)
            else:
                await self._json(writer, entry, 200, whole)
            return
        if mode == "tools":
            await self._tools(body, entry, writer, model, user, text)
            return
        if mode == "rich":
            await self._rich(body, entry, writer, model, text)
            return
        tin, tout = max(1, len(str(msgs)) // 4), max(1, len(text) // 4)
        lp = self.LOGPROB.get(mode) if body.get("logprobs") else None

        def logprobs(pieces: list[str]) -> dict | None:
            if lp is None:
                return None
            tops = int(body.get("top_logprobs") or 0)
            return {"content": [{"token": p, "logprob": lp, "bytes": list(p.encode()),
                                 "top_logprobs": [{"token": p, "logprob": lp, "bytes": list(p.encode())}][:tops]}
                                for p in pieces]}

        pieces = _words(text)
        if body.get("stream"):
            base = {"id": f"chatcmpl-stub{self._next()}", "object": "chat.completion.chunk",
                    "created": 1700000000, "model": model}
            chunks = [{**base, "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": piece} if i == 0 else {"content": piece},
                 "logprobs": logprobs([piece]), "finish_reason": None}]} for i, piece in enumerate(pieces)]
            chunks.append({**base, "choices": [
                {"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if _wants_usage(body):
                chunks.append({**base, "choices": [],
                               "usage": {"prompt_tokens": tin, "completion_tokens": tout}})
            await self._sse(writer, entry, chunks, stall_after=1 if mode == "stall-after-first" else None)
            return
        await self._json(writer, entry, 200, {
            "id": f"chatcmpl-stub{self._next()}", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs(pieces),
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout},
        })

    async def _sse(self, writer: asyncio.StreamWriter, entry: dict, chunks: list[dict],
                   stall_after: int | None = None) -> None:
        """Send ``chunks`` as server-sent events (chunked transfer), then ``[DONE]``."""

        def event(obj: dict | str) -> bytes:
            data = b"data: " + (obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()) + b"\n\n"
            return b"%x\r\n%s\r\n" % (len(data), data)

        entry["response"] = {"status": 200, "chunks": chunks if stall_after is None else chunks[:stall_after]}
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for i, c in enumerate(chunks):
            writer.write(event(c))
            await writer.drain()
            if stall_after is not None and i + 1 >= stall_after:
                await asyncio.sleep(3600)
        writer.write(event("[DONE]") + b"0\r\n\r\n")
        await writer.drain()

    # -- the OpenAI-shaped modes ----------------------------------------------------------------------

    async def _tools(self, body: dict, entry: dict, writer: asyncio.StreamWriter, model: str, user: Any,
                     text: str) -> None:
        base = {"id": f"chatcmpl-stub{self._next()}", "created": 1700000000, "model": model}
        tool = _tool_to_call(body)
        fmt = body.get("response_format") if isinstance(body.get("response_format"), dict) else {}
        usage_in = max(1, len(json.dumps(body.get("messages"))) // 4)
        if tool is not None:
            name = (tool.get("function") or {}).get("name") or "tool"
            args = json.dumps(tool_call_arguments(tool))
            call_id = f"call_stub{self._seq}"
            usage = {"prompt_tokens": usage_in, "completion_tokens": max(1, len(args) // 4)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            if body.get("stream"):
                ch = {"object": "chat.completion.chunk", **base}
                chunks = [{**ch, "choices": [{"index": 0, "delta": {
                    "role": "assistant", "content": None,
                    "tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                    "function": {"name": name, "arguments": ""}}]},
                    "logprobs": None, "finish_reason": None}]}]
                for frag in _fragments(args):
                    chunks.append({**ch, "choices": [{"index": 0, "delta": {
                        "tool_calls": [{"index": 0, "function": {"arguments": frag}}]},
                        "logprobs": None, "finish_reason": None}]})
                chunks.append({**ch, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                                  "finish_reason": "tool_calls"}]})
                if _wants_usage(body):
                    chunks.append({**ch, "choices": [], "usage": usage})
                await self._sse(writer, entry, chunks)
                return
            await self._json(writer, entry, 200, {
                "object": "chat.completion", **base,
                "choices": [{"index": 0, "message": {
                    "role": "assistant", "content": None, "refusal": None,
                    "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
                    "logprobs": None, "finish_reason": "tool_calls"}],
                "usage": usage})
            return
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
            content = json.dumps(schema_example(schema))
        elif fmt.get("type") == "json_object":
            content = json.dumps({"echo": user})
        else:
            content = text
        usage = {"prompt_tokens": usage_in, "completion_tokens": max(1, len(content) // 4)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if body.get("stream"):
            ch = {"object": "chat.completion.chunk", **base}
            chunks = [{**ch, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                          "logprobs": None, "finish_reason": None}]}]
            for frag in _fragments(content):
                chunks.append({**ch, "choices": [{"index": 0, "delta": {"content": frag},
                                                  "logprobs": None, "finish_reason": None}]})
            chunks.append({**ch, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
            if _wants_usage(body):
                chunks.append({**ch, "choices": [], "usage": usage})
            await self._sse(writer, entry, chunks)
            return
        await self._json(writer, entry, 200, {
            "object": "chat.completion", **base,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage})

    async def _rich(self, body: dict, entry: dict, writer: asyncio.StreamWriter, model: str, text: str) -> None:
        base = {"id": f"chatcmpl-stub{self._next()}", "created": 1700000000, "model": model,
                "service_tier": "default", "system_fingerprint": self.FINGERPRINT}
        pieces = _words(text)
        tops = int(body.get("top_logprobs") or 0)

        def lp(piece: str, i: int) -> dict:
            alts = [{"token": piece, "logprob": -0.25, "bytes": list(piece.encode())},
                    {"token": piece.upper(), "logprob": -1.5, "bytes": list(piece.upper().encode())}]
            return {"token": piece, "logprob": round(-0.25 - 0.01 * i, 4), "bytes": list(piece.encode()),
                    "top_logprobs": alts[:tops]}

        tin = max(1, len(json.dumps(body.get("messages"))) // 4)
        tout = len(pieces)
        usage = {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout,
                 "prompt_tokens_details": {"cached_tokens": 1, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
        if body.get("stream"):
            ch = {"object": "chat.completion.chunk", **base}
            chunks = [{**ch, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                                          "logprobs": None, "finish_reason": None}]}]
            for i, p in enumerate(pieces):
                delta: dict[str, Any] = {"content": p}
                if i == 0:
                    delta["x_stub_extra"] = 1
                chunks.append({**ch, "choices": [{"index": 0, "delta": delta,
                                                  "logprobs": {"content": [lp(p, i)], "refusal": None},
                                                  "finish_reason": None}]})
            chunks.append({**ch, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
            if _wants_usage(body):
                chunks.append({**ch, "choices": [], "usage": usage})
            await self._sse(writer, entry, chunks)
            return
        await self._json(writer, entry, 200, {
            "object": "chat.completion", **base,
            "choices": [{"index": 0,
                         "message": {"role": "assistant", "content": text, "refusal": None, "annotations": [],
                                     "x_stub_extra": 1},
                         "logprobs": {"content": [lp(p, i) for i, p in enumerate(pieces)], "refusal": None},
                         "finish_reason": "stop"}],
            "usage": usage})

    def _next(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq


def _words(text: str) -> list[str]:
    return [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]


def _fragments(s: str, size: int = 7) -> list[str]:
    """``s`` in pieces of ``size`` characters (at least one piece), as a model streams it."""
    return [s[i:i + size] for i in range(0, len(s), size)] or [""]


def _wants_usage(body: dict) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))
