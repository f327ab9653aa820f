"""Per-key rate limits, failed-authentication throttling, the per-key run cap and body size limits."""

import json
import unittest

from harness import ServerTestCase, kpi_agent

MIB = 1024 * 1024


def assert_retry_after(test, response):
    test.assertIn("retry-after", response.headers, response.describe())
    test.assertRegex(response.headers["retry-after"], r"^\d+$")
    test.assertGreaterEqual(int(response.headers["retry-after"]), 1)


class RateLimitTest(ServerTestCase):
    serve_args = ["--rate-limit", "5"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()

    def test_limit_headers_then_429(self):
        key = self.server.create_key(self.org)
        remaining = []
        for _ in range(5):
            response = self.server.list_agents(key)
            self.assertEqual(response.status, 200, response.describe())
            self.assertEqual(response.headers.get("ratelimit-limit"), "5", response.describe())
            self.assertRegex(response.headers.get("ratelimit-reset", ""), r"^\d+$")
            remaining.append(int(response.headers["ratelimit-remaining"]))
        self.assertEqual(remaining, [4, 3, 2, 1, 0])
        limited = self.server.list_agents(key)
        self.assertError(limited, 429, "rate_limited")
        assert_retry_after(self, limited)
        self.assertEqual(limited.headers.get("ratelimit-limit"), "5")
        self.assertEqual(limited.headers.get("ratelimit-remaining"), "0")
        self.assertRegex(limited.headers.get("ratelimit-reset", ""), r"^\d+$")

    def test_limit_is_per_key(self):
        exhausted = self.server.create_key(self.org)
        fresh = self.server.create_key(self.org)
        for _ in range(5):
            self.server.list_agents(exhausted)
        self.assertError(self.server.list_agents(exhausted), 429, "rate_limited")
        self.assertEqual(self.server.list_agents(fresh).status, 200)

    def test_limit_covers_every_route(self):
        key = self.server.create_key(self.org)
        agent_id = self.server.create_agent(self.org)
        for _ in range(5):
            self.server.list_agents(key)
        self.assertError(self.server.create_run(key, agent_id, body={}), 429, "rate_limited")
        self.assertError(self.server.get_run(key, agent_id, "00000000-0000-4000-8000-000000000000"),
                         429, "rate_limited")


class DefaultRateLimitHeadersTest(ServerTestCase):
    def test_default_limit_headers(self):
        org = self.server.create_org()
        key = self.server.create_key(org)
        response = self.server.list_agents(key)
        self.assertEqual(response.headers.get("ratelimit-limit"), "600", response.describe())
        self.assertEqual(response.headers.get("ratelimit-remaining"), "599", response.describe())
        self.assertIn("ratelimit-reset", response.headers)

    def test_headers_on_authenticated_error(self):
        org = self.server.create_org()
        key = self.server.create_key(org)
        response = self.server.create_run(key, 999999, body={})
        self.assertError(response, 404, "agent_not_found")
        self.assertEqual(response.headers.get("ratelimit-limit"), "600", response.describe())
        self.assertIn("ratelimit-remaining", response.headers)


class RateLimitOffTest(ServerTestCase):
    serve_args = ["--rate-limit", "0"]

    def test_no_limit_when_off(self):
        org = self.server.create_org()
        key = self.server.create_key(org)
        for _ in range(50):
            response = self.server.list_agents(key)
            self.assertEqual(response.status, 200, response.describe())


class AuthThrottleTest(ServerTestCase):
    serve_args = ["--auth-rate-limit", "3"]
    bad_key = "pai_abcdefghijkl_" + "0" * 32

    def fail_auth(self, address):
        return self.server.request("GET", "/api/v1/agents", key=self.bad_key, source_address=(address, 0))

    def test_failed_auth_throttled(self):
        for _ in range(3):
            self.assertError(self.fail_auth("127.0.0.3"), 401, "invalid_api_key")
        throttled = self.fail_auth("127.0.0.3")
        self.assertError(throttled, 429, "rate_limited")
        assert_retry_after(self, throttled)

    def test_throttle_is_per_address(self):
        for _ in range(3):
            self.fail_auth("127.0.0.4")
        self.assertError(self.fail_auth("127.0.0.4"), 429, "rate_limited")
        self.assertError(self.fail_auth("127.0.0.5"), 401, "invalid_api_key")


class ConcurrencyCapTest(ServerTestCase):
    serve_args = ["--no-engine", "--max-runs-per-key", "3"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.agent_id = cls.server.import_agents(cls.org, kpi_agent())[0]

    def fill(self, key):
        for _ in range(3):
            response = self.server.create_run(key, self.agent_id, {"region": "EU"})
            self.assertEqual(response.status, 202, response.describe())

    def test_cap_rejects_next_run(self):
        key = self.server.create_key(self.org)
        self.fill(key)
        response = self.server.create_run(key, self.agent_id, {"region": "EU"})
        self.assertError(response, 429, "concurrency_limit_exceeded")
        assert_retry_after(self, response)

    def test_cap_is_per_key(self):
        full = self.server.create_key(self.org)
        self.fill(full)
        other = self.server.create_key(self.org)
        self.assertEqual(self.server.create_run(other, self.agent_id, {"region": "EU"}).status, 202)

    def test_dry_run_allowed_at_cap(self):
        key = self.server.create_key(self.org)
        self.fill(key)
        response = self.server.create_run(key, self.agent_id, {"region": "EU"}, dry_run="true")
        self.assertEqual(response.status, 200, response.describe())

    def test_dry_runs_store_nothing(self):
        key = self.server.create_key(self.org)
        for _ in range(5):
            response = self.server.create_run(key, self.agent_id, {"region": "EU"}, dry_run="true")
            self.assertEqual(response.status, 200, response.describe())
        self.fill(key)

    def test_rejected_runs_not_counted(self):
        key = self.server.create_key(self.org)
        for _ in range(5):
            response = self.server.create_run(key, self.agent_id, {"region": "Mars"})
            self.assertError(response, 400, "invalid_parameter_value")
        self.fill(key)

    def test_runs_stay_pending_without_engine(self):
        key = self.server.create_key(self.org)
        run_id = self.server.start_run(key, self.agent_id, {"region": "EU"})
        for _ in range(3):
            run = self.server.get_run(key, self.agent_id, run_id).json
            self.assertEqual(run["status"], "pending")
            self.assertIsNone(run["started_at"])
            self.assertIsNone(run["completed_at"])
            self.assertIsNone(run["output"])
            self.assertIsNone(run["error"])
            self.assertIsNone(run["usage"])


def bindings_body(size):
    """Return a JSON body of exactly size bytes that binds parameter text."""
    empty = json.dumps({"parameter_bindings": [{"name": "text", "value": ""}]}).encode()
    body = json.dumps({"parameter_bindings": [{"name": "text", "value": "x" * (size - len(empty))}]}).encode()
    assert len(body) == size
    return body


def chunked_request(path, key, body, chunk_size=65536):
    head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: %s\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" % (path, key)).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + chunk_size]), body[i:i + chunk_size])
                      for i in range(0, len(body), chunk_size))
    return head + chunks + b"0\r\n\r\n"


def length_request(path, key, body):
    head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\nConnection: close\r\n\r\n" % (path, key, len(body))).encode()
    return head + body


class BodyLimitTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)
        cls.agent_id = cls.server.create_agent(
            cls.org, parameters=[{"name": "text", "required": True, "description": "Any text"}],
            prompt="{{text}}")
        cls.path = "/api/v1/agents/%d/runs?dry_run=true" % cls.agent_id

    def test_over_limit_content_length(self):
        response = self.server.raw(length_request(self.path, self.key, bindings_body(MIB + 1)))
        self.assertIsNotNone(response, "the server closed the connection without a reply")
        self.assertError(response, 413, "payload_too_large")

    def test_over_limit_chunked(self):
        response = self.server.raw(chunked_request(self.path, self.key, bindings_body(MIB + 1)))
        self.assertIsNotNone(response, "the server closed the connection without a reply")
        self.assertError(response, 413, "payload_too_large")

    def test_far_over_limit_content_length(self):
        response = self.server.raw(length_request(self.path, self.key, bindings_body(8 * MIB)))
        self.assertIsNotNone(response, "the server closed the connection without a reply")
        self.assertError(response, 413, "payload_too_large")

    def test_exactly_limit_accepted(self):
        body = bindings_body(MIB)
        response = self.server.raw(length_request(self.path, self.key, body))
        self.assertEqual(response.status, 200, response.describe())
        self.assertEqual(len(response.json["prompt"]), len(json.loads(body)["parameter_bindings"][0]["value"]))

    def test_exactly_limit_chunked_accepted(self):
        response = self.server.raw(chunked_request(self.path, self.key, bindings_body(MIB)))
        self.assertEqual(response.status, 200, response.describe())

    def test_server_alive_after_large_bodies(self):
        self.server.raw(chunked_request(self.path, self.key, bindings_body(2 * MIB)))
        self.assertEqual(self.server.request("GET", "/healthz").status, 200)


class SmallBodyLimitTest(ServerTestCase):
    serve_args = ["--max-body-bytes", "1024"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)
        cls.agent_id = cls.server.create_agent(
            cls.org, parameters=[{"name": "text", "required": True, "description": "Any text"}],
            prompt="{{text}}")
        cls.path = "/api/v1/agents/%d/runs?dry_run=true" % cls.agent_id

    def test_configured_limit(self):
        self.assertEqual(self.server.raw(length_request(self.path, self.key, bindings_body(1024))).status, 200)
        self.assertError(self.server.raw(length_request(self.path, self.key, bindings_body(1025))),
                         413, "payload_too_large")

    def test_configured_limit_chunked(self):
        self.assertEqual(self.server.raw(chunked_request(self.path, self.key, bindings_body(1024), 100)).status, 200)
        self.assertError(self.server.raw(chunked_request(self.path, self.key, bindings_body(1025), 100)),
                         413, "payload_too_large")


if __name__ == "__main__":
    unittest.main()
