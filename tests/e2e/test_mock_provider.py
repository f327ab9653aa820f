"""Self-test of tests/mock_provider.py: every behaviour the end-to-end tests rely on.

Needs no pushaid binary.
"""

import http.client
import json
import os
import socket
import threading
import time
import unittest

from harness import FIXTURES_DIR, E2ETestCase, MockProvider, http_request, raw_request, wait_until


def parse_sse(data):
    """Parse an SSE body into a list of (event name or None, data text); comments are dropped."""
    events = []
    text = data.decode("utf-8").replace("\r\n", "\n")
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name = None
        data_lines = []
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data_lines.append(value)
        if data_lines:
            events.append((name, "\n".join(data_lines)))
    return events


def chat_body(model, text="hello there world", stream=False, include_usage=False, system=None):
    messages = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": text})
    body = {"model": model, "messages": messages}
    if stream:
        body["stream"] = True
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


def messages_body(model, text="hello there world", stream=False, system=None):
    body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    if system is not None:
        body["system"] = system
    return body


class MockProviderTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        cls.mock = MockProvider()
        cls.mock.start()

    @classmethod
    def tearDownClass(cls):
        cls.mock.close()

    def setUp(self):
        self.mock.reset()

    def post(self, path, body, headers=None):
        return self.mock.request("POST", path, body=body, headers=headers)

    def chat(self, body, headers=None):
        return self.post("/v1/chat/completions", body, headers)

    def messages(self, body, headers=ANTHROPIC_HEADERS):
        return self.post("/v1/messages", body, headers)

    # ---- OpenAI ----

    def test_openai_json_reply(self):
        response = self.chat(chat_body("mock-ok", "hello there world", system="be brief"))
        self.assertEqual(response.status, 200, response.describe())
        self.assertEqual(response.json["object"], "chat.completion")
        choice = response.json["choices"][0]
        self.assertEqual(choice["message"], {"role": "assistant", "content": "echo: hello there world"})
        self.assertEqual(choice["finish_reason"], "stop")
        self.assertEqual(response.json["usage"],
                         {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9})

    def test_openai_any_prefix(self):
        response = self.chat(chat_body("mock-ok"))
        self.assertEqual(response.status, 200)
        response = self.post("/openai/deployments/x/chat/completions", chat_body("mock-ok"))
        self.assertEqual(response.status, 200, response.describe())

    def test_openai_content_parts(self):
        body = {"model": "mock-ok",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "two "},
                                                          {"type": "text", "text": "parts"}]}]}
        response = self.chat(body)
        self.assertEqual(response.json["choices"][0]["message"]["content"], "echo: two parts")

    def test_openai_stream_with_usage(self):
        response = self.chat(chat_body("mock-ok", "a b c", stream=True, include_usage=True))
        self.assertEqual(response.status, 200)
        self.assertTrue(response.headers["content-type"].startswith("text/event-stream"))
        events = parse_sse(response.body)
        self.assertEqual(events[-1], (None, "[DONE]"))
        chunks = [json.loads(data) for _, data in events[:-1]]
        self.assertEqual(chunks[0]["choices"][0]["delta"]["role"], "assistant")
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        self.assertEqual(text, "echo: a b c")
        self.assertGreater(len(chunks), 4, "the reply should arrive in several content chunks")
        finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        self.assertEqual(len(finish), 1)
        self.assertEqual(finish[0]["choices"][0]["finish_reason"], "stop")
        usage = chunks[-1]
        self.assertEqual(usage["choices"], [])
        self.assertEqual(usage["usage"], {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})

    def test_openai_stream_without_usage(self):
        response = self.chat(chat_body("mock-ok", "a b", stream=True))
        chunks = [json.loads(data) for _, data in parse_sse(response.body)[:-1]]
        self.assertTrue(all("usage" not in c for c in chunks))
        self.assertTrue(all(c["choices"] for c in chunks))

    def test_openai_invalid_body(self):
        response = self.post("/v1/chat/completions", b"{not json")
        self.assertEqual(response.status, 400)
        self.assertEqual(response.json["error"]["type"], "invalid_request_error")
        response = self.chat({"model": "mock-ok"})
        self.assertEqual(response.status, 400)

    # ---- Anthropic ----

    def test_anthropic_json_reply(self):
        response = self.messages(messages_body("mock-ok", "one two", system="sys word"))
        self.assertEqual(response.status, 200, response.describe())
        self.assertEqual(response.json["type"], "message")
        self.assertEqual(response.json["content"], [{"type": "text", "text": "echo: one two"}])
        self.assertEqual(response.json["stop_reason"], "end_turn")
        self.assertEqual(response.json["usage"], {"input_tokens": 4, "output_tokens": 3})

    def test_anthropic_stream_events(self):
        response = self.messages(messages_body("mock-ok", "one two three", stream=True))
        self.assertEqual(response.status, 200)
        events = parse_sse(response.body)
        names = [name for name, _ in events]
        self.assertEqual(names[:3], ["message_start", "content_block_start", "ping"])
        self.assertEqual(names[-3:], ["content_block_stop", "message_delta", "message_stop"])
        self.assertEqual(set(names[3:-3]), {"content_block_delta"})
        payloads = [json.loads(data) for _, data in events]
        for (name, _), payload in zip(events, payloads):
            self.assertEqual(payload["type"], name)
        text = "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
        self.assertEqual(text, "echo: one two three")
        self.assertEqual(payloads[0]["message"]["usage"]["input_tokens"], 3)
        self.assertEqual(payloads[-2]["delta"]["stop_reason"], "end_turn")
        self.assertEqual(payloads[-2]["usage"]["output_tokens"], 4)

    def test_anthropic_requires_api_key(self):
        response = self.messages(messages_body("mock-ok"), headers={"anthropic-version": "2023-06-01"})
        self.assertEqual(response.status, 401)
        self.assertEqual(response.json["type"], "error")
        self.assertEqual(response.json["error"]["type"], "authentication_error")

    def test_anthropic_requires_version(self):
        response = self.messages(messages_body("mock-ok"), headers={"x-api-key": "k"})
        self.assertEqual(response.status, 400)
        self.assertEqual(response.json["error"]["type"], "invalid_request_error")

    def test_anthropic_requires_max_tokens(self):
        body = messages_body("mock-ok")
        del body["max_tokens"]
        response = self.messages(body)
        self.assertEqual(response.status, 400)
        self.assertIn("max_tokens", response.json["error"]["message"])

    # ---- faults ----

    def test_slow_waits_then_replies(self):
        started = time.monotonic()
        response = self.chat(chat_body("mock-slow-300"))
        # A lower bound on the mock's own sleep, which cannot flake.
        self.assertGreaterEqual(time.monotonic() - started, 0.3)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json["choices"][0]["message"]["content"], "echo: hello there world")

    def test_status_openai_error_body(self):
        response = self.chat(chat_body("mock-status-503"))
        self.assertEqual(response.status, 503)
        self.assertEqual(response.json["error"]["type"], "server_error")
        response = self.chat(chat_body("mock-status-429"))
        self.assertEqual(response.status, 429)
        self.assertEqual(response.json["error"]["code"], "rate_limit_exceeded")

    def test_status_anthropic_error_body(self):
        response = self.messages(messages_body("mock-status-529"))
        self.assertEqual(response.status, 529)
        self.assertEqual(response.json, {"type": "error", "error": {
            "type": "overloaded_error", "message": "Mock failure with status 529."}})

    def test_status_429_retry_after(self):
        response = self.chat(chat_body("mock-status-429-retry-7"))
        self.assertEqual(response.status, 429)
        self.assertEqual(response.headers["retry-after"], "7")
        self.assertEqual(response.json["error"]["code"], "rate_limit_exceeded")

    def test_flaky_fails_then_succeeds(self):
        statuses = [self.chat(chat_body("mock-flaky-2", "first")).status for _ in range(4)]
        self.assertEqual(statuses, [500, 500, 200, 200])
        # Another prompt has its own counter.
        self.assertEqual(self.chat(chat_body("mock-flaky-2", "second")).status, 500)

    def test_flaky_429_carries_retry_after(self):
        response = self.chat(chat_body("mock-flaky-1-429"))
        self.assertEqual(response.status, 429)
        self.assertEqual(response.headers["retry-after"], "1")
        self.assertEqual(self.chat(chat_body("mock-flaky-1-429")).status, 200)

    def test_reset_closes_without_reply(self):
        payload = json.dumps(chat_body("mock-reset")).encode()
        request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
        self.assertIsNone(raw_request("127.0.0.1", self.mock.port, request))

    def test_truncate_stream_stops_before_finish(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.mock.port, timeout=10)
        connection.request("POST", "/v1/chat/completions",
                           body=json.dumps(chat_body("mock-truncate", stream=True, include_usage=True)),
                           headers={"Content-Type": "application/json"})
        reply = connection.getresponse()
        self.assertEqual(reply.status, 200)
        with self.assertRaises(http.client.IncompleteRead) as caught:
            reply.read()
        connection.close()
        partial = caught.exception.partial
        self.assertIn(b"echo: ", partial)
        self.assertNotIn(b"finish_reason\": \"stop", partial)
        self.assertNotIn(b"[DONE]", partial)

    def test_truncate_json_short_body(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.mock.port, timeout=10)
        connection.request("POST", "/v1/chat/completions", body=json.dumps(chat_body("mock-truncate")))
        reply = connection.getresponse()
        with self.assertRaises(http.client.IncompleteRead):
            reply.read()
        connection.close()

    def test_html_502(self):
        response = self.chat(chat_body("mock-html"))
        self.assertEqual(response.status, 502)
        self.assertEqual(response.headers["content-type"], "text/html")
        self.assertIn(b"<html>", response.body)

    def test_fixture_replayed_verbatim(self):
        for name in ("openai_stream_crlf", "openai_stream_keepalive", "openai_stream_usage",
                     "openai_stream_no_done", "anthropic_stream"):
            with self.subTest(fixture=name):
                with open(os.path.join(FIXTURES_DIR, name + ".http"), "rb") as f:
                    expected = f.read()
                payload = json.dumps(chat_body("mock-fixture-" + name, stream=True)).encode()
                sock = socket.create_connection(("127.0.0.1", self.mock.port), timeout=10)
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
                received = b""
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    received += data
                sock.close()
                self.assertEqual(received, expected)

    def test_fixture_missing_is_404(self):
        response = self.chat(chat_body("mock-fixture-no_such_fixture"))
        self.assertEqual(response.status, 404)
        self.assertIn("no_such_fixture", response.json["error"]["message"])

    def test_unknown_mock_model_404(self):
        response = self.chat(chat_body("mock-unknown"))
        self.assertEqual(response.status, 404)
        self.assertEqual(response.json["error"]["code"], "model_not_found")
        self.assertIn("mock-unknown", response.json["error"]["message"])
        response = self.messages(messages_body("mock-unknown"))
        self.assertEqual(response.status, 404)
        self.assertEqual(response.json["error"]["type"], "not_found_error")

    def test_other_model_behaves_ok(self):
        response = self.chat(chat_body("gpt-4o-mini", "x"))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json["choices"][0]["message"]["content"], "echo: x")

    # ---- recording and HTTP handling ----

    def test_records_requests(self):
        self.chat(chat_body("mock-ok", "recorded"), headers={"Authorization": "Bearer sk-test-123",
                                                            "X-Custom": "v"})
        self.post("/v1/chat/completions", b"plain text body", headers={"Content-Type": "text/plain"})
        recorded = self.mock.requests()
        self.assertEqual(len(recorded), 2)
        first = recorded[0]
        self.assertEqual(first["method"], "POST")
        self.assertEqual(first["path"], "/v1/chat/completions")
        self.assertEqual(first["headers"]["authorization"], "Bearer sk-test-123")
        self.assertEqual(first["headers"]["x-custom"], "v")
        self.assertEqual(first["body"]["messages"][0]["content"], "recorded")
        self.assertIsInstance(first["time"], float)
        self.assertEqual(recorded[1]["body"], "plain text body")

    def test_request_log_filter_and_reset(self):
        self.chat(chat_body("mock-ok"))
        self.chat(chat_body("mock-status-400"))
        self.assertEqual([r["body"]["model"] for r in self.mock.requests(model="mock-status-400")],
                         ["mock-status-400"])
        self.mock.reset()
        self.assertEqual(self.mock.requests(), [])

    def test_chunked_request_body(self):
        payload = json.dumps(chat_body("mock-ok", "sent in chunks")).encode()
        response = http_request("127.0.0.1", self.mock.port, "POST", "/v1/chat/completions",
                                body=iter([payload[:10], payload[10:]]),
                                headers={"Content-Type": "application/json"})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json["choices"][0]["message"]["content"], "echo: sent in chunks")
        self.assertEqual(self.mock.requests()[0]["body"]["messages"][0]["content"], "sent in chunks")

    def test_expect_100_continue(self):
        payload = json.dumps(chat_body("mock-ok", "continue")).encode()
        sock = socket.create_connection(("127.0.0.1", self.mock.port), timeout=10)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(payload))
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(payload)
        reply = http.client.HTTPResponse(sock)
        reply.begin()
        self.assertEqual(reply.status, 200)
        self.assertIn(b"echo: continue", reply.read())
        sock.close()

    def test_keep_alive(self):
        connections_before = self.mock.stats()["connections_total"]
        connection = http.client.HTTPConnection("127.0.0.1", self.mock.port, timeout=10)
        for text in ("one", "two", "three"):
            connection.request("POST", "/v1/chat/completions", body=json.dumps(chat_body("mock-ok", text)))
            reply = connection.getresponse()
            self.assertEqual(json.loads(reply.read())["choices"][0]["message"]["content"], "echo: " + text)
        connection.close()
        # One connection for the three requests, one for the stats request below.
        self.assertEqual(self.mock.stats()["connections_total"] - connections_before, 2)

    def test_oversized_head_gets_431(self):
        request = b"GET /v1/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
        response = raw_request("127.0.0.1", self.mock.port, request)
        self.assertIsNotNone(response)
        self.assertEqual(response.status, 431)

    def test_unknown_path_404_and_recorded(self):
        response = self.post("/v1/embeddings", {"x": 1})
        self.assertEqual(response.status, 404)
        self.assertEqual(self.mock.requests()[0]["path"], "/v1/embeddings")

    def test_many_concurrent_slow_requests(self):
        count = 1000
        payload = json.dumps(chat_body("mock-slow-1000", "held")).encode()
        request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
        sockets = []
        try:
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", self.mock.port), timeout=30)
                sock.sendall(request)
                sockets.append(sock)
            wait_until(lambda: self.mock.stats()["in_flight_peak"] >= count, 20,
                       "all %d slow requests in flight at once" % count)
            for sock in sockets:
                reply = http.client.HTTPResponse(sock)
                reply.begin()
                self.assertEqual(reply.status, 200)
                self.assertIn(b"echo: held", reply.read())
        finally:
            for sock in sockets:
                sock.close()
        self.assertEqual(self.mock.stats()["in_flight"], 0)

    def test_stats_counts_in_flight(self):
        results = []

        def call():
            results.append(self.chat(chat_body("mock-slow-500")).status)

        threads = [threading.Thread(target=call) for _ in range(5)]
        for thread in threads:
            thread.start()
        wait_until(lambda: self.mock.stats()["in_flight"] == 5, 10, "five requests in flight")
        for thread in threads:
            thread.join()
        self.assertEqual(results, [200] * 5)
        stats = self.mock.stats()
        self.assertEqual(stats["in_flight"], 0)
        self.assertGreaterEqual(stats["in_flight_peak"], 5)


if __name__ == "__main__":
    unittest.main()
