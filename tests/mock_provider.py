#!/usr/bin/env python3
"""Mock LLM provider for pushai's end-to-end tests and benchmarks.

An asyncio HTTP/1.1 server (standard library only) that implements enough of
the OpenAI chat completions API and the Anthropic Messages API for pushaid's
run engine. It records every request it receives. It injects faults chosen by
the request's ``model`` string, so tests running at the same time do not
interfere with each other.

Usage::

    python3 tests/mock_provider.py --port 0 [--fixtures DIR]

Once ready it prints ``mock provider listening on http://127.0.0.1:PORT`` on
stdout and writes nothing more there, so a parent that reads only that line
never blocks on a full pipe. Diagnostics go to stderr. It listens on
127.0.0.1 only.

Routes:

* ``POST <any prefix>/chat/completions``: OpenAI format. ``"stream": true``
  streams server-sent events: a role chunk, content chunks, a chunk with
  ``finish_reason: "stop"``, a usage chunk with empty ``choices`` when
  ``stream_options.include_usage`` is true, then ``data: [DONE]``. Otherwise a
  ``chat.completion`` object.
* ``POST <any prefix>/messages``: Anthropic format, streaming or not. The
  ``x-api-key`` and ``anthropic-version`` headers are required (401 and 400
  otherwise), and so is ``max_tokens`` in the body, as the real API does.
* ``GET /_mock/requests[?model=NAME]``: a JSON array of the recorded
  requests, oldest first, each ``{"method", "path", "headers", "body",
  "time"}``. Header names are lowercase. ``body`` is the parsed JSON when the
  body is JSON, else the text. ``time`` is the Unix time in seconds at which
  the request's body was read. Requests to ``/_mock/`` are not recorded.
* ``POST /_mock/reset``: clears the recorded requests, the counters of
  ``mock-flaky-*`` and the in-flight peak.
* ``GET /_mock/stats``: ``{"requests_total", "open_connections",
  "connections_total", "in_flight", "in_flight_peak"}``. ``in_flight`` counts provider requests
  whose response has not been fully written yet.

The default reply text is ``echo: `` followed by the last user message's text.
Usage counts whitespace-separated words: input tokens are the words of every
message (and the Anthropic ``system``), output tokens the words of the reply.

Behaviour by model:

* ``mock-ok``, and any model that does not start with ``mock-``: the default.
* ``mock-slow-<ms>``: waits ms milliseconds, then replies as the default.
* ``mock-hold-<ms>-tokens-<n>``: waits ms milliseconds, then replies with n
  words (``w1 w2 ... wn``, n output tokens). A stream sends each word as its
  own event in its own write, as a model producing tokens would; the
  benchmarks use this to hold many requests open at once.
* ``mock-stall-<ms>``: a stream that sends the first half of the default
  reply's words (at least one), then nothing for ms milliseconds, then the
  rest. Without streaming it behaves as ``mock-slow-<ms>``.
* ``mock-status-<code>``: that status with the provider's usual JSON error.
* ``mock-status-429-retry-<seconds>``: 429 with ``Retry-After: <seconds>``.
* ``mock-flaky-<n>[-<code>]``: the first n requests with the same model and
  messages get status code (500 unless given; a 429 carries
  ``Retry-After: 1``), the following ones succeed.
* ``mock-reset``: closes the connection with a TCP reset and no reply.
* ``mock-truncate``: starts the reply, then closes the connection before the
  finish reason (streaming) or before the promised Content-Length.
* ``mock-html``: a 502 with an HTML page, as a broken proxy sends.
* ``mock-fixture-<name>``: writes the bytes of ``<fixtures>/<name>.http``
  verbatim as the whole response, then closes the connection.
* any other ``mock-*`` model: 404 ``model_not_found`` (OpenAI) or
  ``not_found_error`` (Anthropic).
"""

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import socket
import struct
import sys
import time
import urllib.parse

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
LISTEN_BACKLOG = 16384
DEFAULT_FIXTURES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")

REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large",
    422: "Unprocessable Entity", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 529: "Overloaded",
}

# OpenAI error bodies: status -> (type, code).
OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}

# Anthropic error types by status.
ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

HTML_PAGE = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
             b"<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
             b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


class BadRequest(Exception):
    """A request that cannot be parsed: the mock replies with status and closes the connection."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    def __init__(self, method, target, version, headers, body):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # list of (lowercase name, value)
        self.body = body
        parts = urllib.parse.urlsplit(target)
        self.path = parts.path
        self.query = urllib.parse.parse_qs(parts.query)

    def header(self, name):
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def headers_dict(self):
        merged = {}
        for key, value in self.headers:
            merged[key] = merged[key] + ", " + value if key in merged else value
        return merged

    def wants_close(self):
        connection = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" not in connection
        return "close" in connection


def count_words(text):
    return len(text.split())


def content_text(content):
    """Return the text of a message content: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "".join(texts)
    return ""


def split_reply(text):
    """Split a reply into streaming pieces: one word with its trailing spaces each."""
    pieces = re.findall(r"\S+\s*|\s+", text)
    return pieces or [""]


class MockProvider:
    def __init__(self, fixtures_dir):
        self.fixtures_dir = fixtures_dir
        self.recorded = []
        self.flaky_counts = {}
        self.requests_total = 0
        self.open_connections = 0
        self.connections_total = 0
        self.in_flight = 0
        self.in_flight_peak = 0
        self.next_id = 1

    # ---- connection handling ----

    async def handle_connection(self, reader, writer):
        self.open_connections += 1
        self.connections_total += 1
        try:
            while True:
                try:
                    request = await self.read_request(reader, writer)
                except BadRequest as err:
                    await self.send_simple(writer, err.status, "text/plain",
                                           (err.message + "\n").encode(), close=True)
                    return
                if request is None:
                    return
                keep_open = await self.dispatch(request, writer)
                if not keep_open or request.wants_close():
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            self.open_connections -= 1
            if not writer.is_closing():
                writer.close()

    async def read_request(self, reader, writer):
        """Read one request; return None when the client closed the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as err:
            if err.partial.strip():
                raise BadRequest(400, "incomplete request head")
            return None
        except asyncio.LimitOverrunError:
            raise BadRequest(431, "request head over %d bytes" % MAX_HEADER_BYTES)

        lines = head[:-4].decode("latin-1").split("\r\n")
        request_line = lines[0].split(" ")
        if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
            raise BadRequest(400, "malformed request line")
        method, target, version = request_line
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise BadRequest(400, "malformed header line")
            headers.append((name.lower(), value.strip()))

        request = Request(method, target, version, headers, b"")
        if (request.header("expect") or "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()

        transfer_encoding = (request.header("transfer-encoding") or "").lower()
        if transfer_encoding:
            if transfer_encoding != "chunked":
                raise BadRequest(501, "unsupported transfer-encoding")
            request.body = await self.read_chunked(reader)
        else:
            length_text = request.header("content-length")
            if length_text is not None:
                if not length_text.isdigit():
                    raise BadRequest(400, "invalid content-length")
                length = int(length_text)
                if length > MAX_BODY_BYTES:
                    raise BadRequest(413, "body over %d bytes" % MAX_BODY_BYTES)
                request.body = await reader.readexactly(length)
        return request

    async def read_chunked(self, reader):
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size_text = size_line[:-2].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadRequest(400, "invalid chunk size")
            if size == 0:
                # Trailer fields end with an empty line.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                raise BadRequest(413, "body over %d bytes" % MAX_BODY_BYTES)
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise BadRequest(400, "chunk not followed by CRLF")

    # ---- writing ----

    @staticmethod
    def response_head(status, headers):
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status"))]
        lines += ["%s: %s" % (name, value) for name, value in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send_simple(self, writer, status, content_type, body, close=False, extra_headers=()):
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        headers += list(extra_headers)
        if close:
            headers.append(("Connection", "close"))
        writer.write(self.response_head(status, headers) + body)
        await writer.drain()

    async def send_json(self, writer, status, obj, extra_headers=()):
        body = json.dumps(obj).encode()
        await self.send_simple(writer, status, "application/json", body, extra_headers=extra_headers)

    # ---- routing ----

    async def dispatch(self, request, writer):
        """Serve one request; return False when the connection must close."""
        if request.path.startswith("/_mock/"):
            return await self.dispatch_control(request, writer)

        self.requests_total += 1
        body = self.parse_body(request.body)
        self.recorded.append({
            "method": request.method,
            "path": request.path,
            "headers": request.headers_dict(),
            "body": body,
            "time": time.time(),
        })

        if request.path.endswith("/chat/completions"):
            api = "openai"
        elif request.path.endswith("/messages"):
            api = "anthropic"
        else:
            await self.send_json(writer, 404, {"error": {
                "message": "Unknown request URL: %s %s" % (request.method, request.path),
                "type": "invalid_request_error", "param": None, "code": "unknown_url"}})
            return True
        if request.method != "POST":
            await self.send_simple(writer, 405, "application/json",
                                   b'{"error":{"message":"method not allowed","type":"invalid_request_error"}}',
                                   extra_headers=[("Allow", "POST")])
            return True

        self.in_flight += 1
        self.in_flight_peak = max(self.in_flight_peak, self.in_flight)
        try:
            return await self.serve_completion(api, request, body, writer)
        finally:
            self.in_flight -= 1

    async def dispatch_control(self, request, writer):
        if request.path == "/_mock/requests" and request.method == "GET":
            model_filter = request.query.get("model")
            selected = self.recorded
            if model_filter:
                selected = [r for r in self.recorded
                            if isinstance(r["body"], dict) and r["body"].get("model") in model_filter]
            await self.send_json(writer, 200, selected)
        elif request.path == "/_mock/reset" and request.method == "POST":
            self.recorded = []
            self.flaky_counts = {}
            self.in_flight_peak = self.in_flight
            await self.send_json(writer, 200, {"reset": True})
        elif request.path == "/_mock/stats" and request.method == "GET":
            await self.send_json(writer, 200, {
                "requests_total": self.requests_total,
                "open_connections": self.open_connections,
                "connections_total": self.connections_total,
                "in_flight": self.in_flight,
                "in_flight_peak": self.in_flight_peak,
            })
        else:
            await self.send_json(writer, 404, {"error": "no such mock control route"})
        return True

    @staticmethod
    def parse_body(raw):
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", errors="replace")

    # ---- provider behaviour ----

    async def serve_completion(self, api, request, body, writer):
        if api == "anthropic":
            if not request.header("x-api-key"):
                await self.send_error(api, writer, 401, "x-api-key header is required")
                return True
            if not request.header("anthropic-version"):
                await self.send_error(api, writer, 400, "anthropic-version: header is required")
                return True

        if not isinstance(body, dict):
            await self.send_error(api, writer, 400, "We could not parse the JSON body of your request.")
            return True
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            await self.send_error(api, writer, 400, "model: Field required")
            return True
        if not isinstance(messages, list) or not messages:
            await self.send_error(api, writer, 400, "messages: Field required")
            return True
        if api == "anthropic" and not isinstance(body.get("max_tokens"), int):
            await self.send_error(api, writer, 400, "max_tokens: Field required")
            return True

        match = re.fullmatch(r"mock-slow-(\d+)", model)
        if match:
            await asyncio.sleep(int(match.group(1)) / 1000.0)
            if writer.is_closing():
                return False
            return await self.send_reply(api, body, writer)

        match = re.fullmatch(r"mock-hold-(\d+)-tokens-(\d+)", model)
        if match:
            await asyncio.sleep(int(match.group(1)) / 1000.0)
            if writer.is_closing():
                return False
            words = " ".join("w%d" % (i + 1) for i in range(int(match.group(2))))
            return await self.send_reply(api, body, writer, text=words, pace=True)

        match = re.fullmatch(r"mock-stall-(\d+)", model)
        if match:
            stall_s = int(match.group(1)) / 1000.0
            if body.get("stream") is not True:
                await asyncio.sleep(stall_s)
                if writer.is_closing():
                    return False
                return await self.send_reply(api, body, writer)
            return await self.send_reply(api, body, writer, stall_s=stall_s)

        match = re.fullmatch(r"mock-status-429-retry-(\d+)", model)
        if match:
            await self.send_error(api, writer, 429, "Rate limit reached for requests.",
                                  extra_headers=[("Retry-After", match.group(1))])
            return True

        match = re.fullmatch(r"mock-status-(\d{3})", model)
        if match:
            status = int(match.group(1))
            await self.send_error(api, writer, status, "Mock failure with status %d." % status)
            return True

        match = re.fullmatch(r"mock-flaky-(\d+)(?:-(\d{3}))?", model)
        if match:
            failures = int(match.group(1))
            status = int(match.group(2) or 500)
            prompt_key = json.dumps([api, model, body.get("system"), messages], sort_keys=True)
            seen = self.flaky_counts.get(prompt_key, 0)
            self.flaky_counts[prompt_key] = seen + 1
            if seen < failures:
                extra = [("Retry-After", "1")] if status == 429 else []
                await self.send_error(api, writer, status,
                                      "Mock flaky failure %d of %d." % (seen + 1, failures),
                                      extra_headers=extra)
                return True
            return await self.send_reply(api, body, writer)

        if model == "mock-reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # Linger 0 makes close() send RST instead of FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False

        if model == "mock-truncate":
            await self.send_truncated(api, body, writer)
            return False

        if model == "mock-html":
            await self.send_simple(writer, 502, "text/html", HTML_PAGE)
            return True

        match = re.fullmatch(r"mock-fixture-([A-Za-z0-9_.-]+)", model)
        if match and ".." not in match.group(1):
            path = os.path.join(self.fixtures_dir, match.group(1) + ".http")
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                await self.send_error(api, writer, 404, "Mock fixture %s not found in %s."
                                      % (match.group(1), self.fixtures_dir))
                return True
            writer.write(data)
            await writer.drain()
            return False

        if model == "mock-ok" or not model.startswith("mock-"):
            return await self.send_reply(api, body, writer)

        if api == "openai":
            message = "The model `%s` does not exist or you do not have access to it." % model
        else:
            message = "model: %s" % model
        await self.send_error(api, writer, 404, message)
        return True

    async def send_error(self, api, writer, status, message, extra_headers=()):
        if api == "openai":
            error_type, code = OPENAI_ERRORS.get(status, ("server_error" if status >= 500
                                                          else "invalid_request_error", None))
            obj = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
        else:
            error_type = ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500
                                              else "invalid_request_error")
            obj = {"type": "error", "error": {"type": error_type, "message": message}}
        await self.send_json(writer, status, obj, extra_headers=extra_headers)

    def new_id(self, prefix):
        value = "%s%06d" % (prefix, self.next_id)
        self.next_id += 1
        return value

    @staticmethod
    def reply_for(api, body):
        """Return (reply text, input tokens, output tokens) for the default reply."""
        messages = body["messages"]
        last_user = ""
        input_words = 0
        if api == "anthropic" and body.get("system") is not None:
            input_words += count_words(content_text(body["system"]))
        for message in messages:
            if not isinstance(message, dict):
                continue
            text = content_text(message.get("content"))
            input_words += count_words(text)
            if message.get("role") == "user":
                last_user = text
        reply = "echo: " + last_user
        return reply, input_words, count_words(reply)

    async def send_reply(self, api, body, writer, text=None, pace=False, stall_s=None):
        """Send the default reply, or text in its place.

        pace=True writes each streamed event on its own (no splitting);
        stall_s waits that long after the first half of the streamed words.
        """
        reply, input_tokens, output_tokens = self.reply_for(api, body)
        if text is not None:
            reply, output_tokens = text, count_words(text)
        stream = body.get("stream") is True
        if api == "openai" and stream:
            include_usage = (isinstance(body.get("stream_options"), dict)
                             and body["stream_options"].get("include_usage") is True)
            await self.stream_openai(writer, body["model"], reply, input_tokens, output_tokens,
                                     include_usage, pace=pace, stall_s=stall_s)
        elif api == "openai":
            await self.send_json(writer, 200, {
                "id": self.new_id("chatcmpl-mock"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0,
                             "message": {"role": "assistant", "content": reply},
                             "logprobs": None,
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                          "total_tokens": input_tokens + output_tokens},
            })
        elif stream:
            await self.stream_anthropic(writer, body["model"], reply, input_tokens, output_tokens,
                                        pace=pace, stall_s=stall_s)
        else:
            await self.send_json(writer, 200, {
                "id": self.new_id("msg_mock"),
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": reply}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            })
        return True

    # ---- streaming ----

    @staticmethod
    async def write_chunk(writer, data):
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await writer.drain()

    async def start_stream(self, writer):
        writer.write(self.response_head(200, [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", "no-cache"),
            ("Transfer-Encoding", "chunked"),
        ]))
        await writer.drain()

    async def write_event(self, writer, event, split=False):
        """Write one SSE event; split=True sends it in two HTTP chunks, cut mid-JSON."""
        data = event.encode()
        if split and len(data) > 8:
            middle = len(data) // 2
            await self.write_chunk(writer, data[:middle])
            await self.write_chunk(writer, data[middle:])
        else:
            await self.write_chunk(writer, data)

    @staticmethod
    def openai_event(obj):
        return "data: " + json.dumps(obj) + "\n\n"

    def openai_chunks(self, model, reply):
        """Return the role, content and finish chunks of an OpenAI stream."""
        chunk_id = self.new_id("chatcmpl-mock")
        created = int(time.time())

        def chunk(delta, finish_reason):
            return {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish_reason}]}

        chunks = [chunk({"role": "assistant", "content": ""}, None)]
        chunks += [chunk({"content": piece}, None) for piece in split_reply(reply)]
        chunks.append(chunk({}, "stop"))
        return chunk_id, created, chunks

    async def write_events(self, writer, events, split_when, is_text, pace, stall_s):
        """Write stream events, split as split_when(event) says unless pace.

        With stall_s, wait that long after the first half of the events for
        which is_text(event) is true. Return False when the client left.
        """
        content = [i for i, event in enumerate(events) if is_text(event)]
        stall_after = content[max(len(content) // 2, 1) - 1] if content and stall_s is not None else None
        for i, event in enumerate(events):
            if pace:
                # One write per event and no wait for the buffer, so a slow
                # reader costs the mock memory rather than a stalled stream.
                data = event.encode()
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                if i % 32 == 31:
                    await writer.drain()
            else:
                await self.write_event(writer, event, split=split_when(event))
            if i == stall_after:
                await writer.drain()
                await asyncio.sleep(stall_s)
                if writer.is_closing():
                    return False
        return True

    async def stream_openai(self, writer, model, reply, input_tokens, output_tokens, include_usage,
                            pace=False, stall_s=None):
        chunk_id, created, chunks = self.openai_chunks(model, reply)
        await self.start_stream(writer)
        events = [self.openai_event(chunk) for chunk in chunks]
        if not await self.write_events(writer, events, lambda event: '"content"' in event,
                                       lambda event: '"content"' in event and '"content": ""' not in event,
                                       pace, stall_s):
            return
        if include_usage:
            await self.write_event(writer, self.openai_event({
                "id": chunk_id, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [],
                "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                          "total_tokens": input_tokens + output_tokens}}))
        await self.write_event(writer, "data: [DONE]\n\n")
        await self.write_chunk(writer, b"")

    @staticmethod
    def anthropic_event(name, obj):
        return "event: %s\ndata: %s\n\n" % (name, json.dumps(obj))

    def anthropic_events(self, model, reply, input_tokens, output_tokens):
        events = [self.anthropic_event("message_start", {
            "type": "message_start",
            "message": {"id": self.new_id("msg_mock"), "type": "message", "role": "assistant",
                        "content": [], "model": model, "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": input_tokens, "output_tokens": 1}}})]
        events.append(self.anthropic_event("content_block_start", {
            "type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}))
        events.append(self.anthropic_event("ping", {"type": "ping"}))
        for piece in split_reply(reply):
            events.append(self.anthropic_event("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": piece}}))
        events.append(self.anthropic_event("content_block_stop",
                                           {"type": "content_block_stop", "index": 0}))
        events.append(self.anthropic_event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": output_tokens}}))
        events.append(self.anthropic_event("message_stop", {"type": "message_stop"}))
        return events

    async def stream_anthropic(self, writer, model, reply, input_tokens, output_tokens, pace=False,
                               stall_s=None):
        await self.start_stream(writer)
        events = self.anthropic_events(model, reply, input_tokens, output_tokens)
        is_delta = lambda event: "content_block_delta" in event  # noqa: E731
        if not await self.write_events(writer, events, is_delta, is_delta, pace, stall_s):
            return
        await self.write_chunk(writer, b"")

    async def send_truncated(self, api, body, writer):
        """Start a reply and stop before its end; the caller closes the connection."""
        reply, input_tokens, output_tokens = self.reply_for(api, body)
        if body.get("stream") is True:
            await self.start_stream(writer)
            if api == "openai":
                chunks = self.openai_chunks(body["model"], reply)[2]
                events = [self.openai_event(chunk) for chunk in chunks[:2]]
            else:
                events = self.anthropic_events(body["model"], reply, input_tokens, output_tokens)[:4]
            for event in events:
                await self.write_event(writer, event)
        else:
            payload = json.dumps({"id": "truncated", "choices": [{"message": {"content": reply}}]}).encode()
            writer.write(self.response_head(200, [("Content-Type", "application/json"),
                                                  ("Content-Length", str(len(payload)))]))
            writer.write(payload[: len(payload) // 2])
            await writer.drain()


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as err:
            print("mock provider: cannot raise the file descriptor limit: %s" % err, file=sys.stderr)


async def serve(port, fixtures_dir):
    provider = MockProvider(fixtures_dir)
    server = await asyncio.start_server(provider.handle_connection, "127.0.0.1", port,
                                        backlog=LISTEN_BACKLOG, limit=MAX_HEADER_BYTES)
    bound_port = server.sockets[0].getsockname()[1]
    print("mock provider listening on http://127.0.0.1:%d" % bound_port, flush=True)

    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(
            signum, lambda: stop.done() or stop.set_result(None))
    async with server:
        await stop


def main():
    parser = argparse.ArgumentParser(description="Mock OpenAI and Anthropic provider for pushai tests.")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--fixtures", default=DEFAULT_FIXTURES_DIR,
                        help="directory of <name>.http files that mock-fixture-<name> replays "
                             "(default: %(default)s)")
    args = parser.parse_args()
    raise_fd_limit()
    asyncio.run(serve(args.port, args.fixtures))


if __name__ == "__main__":
    main()
