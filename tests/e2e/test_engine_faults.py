"""The run engine against provider quirks and faults: one test per stream quirk, per retry rule and per time limit."""

import os
import unittest

from harness import (ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, E2ETestCase, MockProvider, Server, ServerTestCase,
                     wait_until)

PROMPT_TEMPLATE = "Say {{topic}} now."
PROMPT = "Say hello now."
ATTEMPTS = 4  # the engine's attempts per run before it gives up


class EngineTestCase(ServerTestCase):
    with_mock = True
    serve_args = ["--rate-limit", "0"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)

    def setUp(self):
        self.mock.reset()

    def run_model(self, provider, model, timeout=120, **fields):
        definition = dict(
            provider=provider, model=model, prompt=PROMPT_TEMPLATE,
            parameters=[{"name": "topic", "required": False, "description": "Topic", "default": "hello"}],
            timeout_seconds=60)
        definition.update(fields)
        definition = {name: value for name, value in definition.items() if value is not None}
        agent_id = self.server.create_agent(self.org, **definition)
        return self.server.run_to_end(self.key, agent_id, timeout=timeout)

    def assert_failed_with(self, run, error):
        self.assertEqual(run["status"], "failed", run)
        self.assertEqual(run["error"], error, run)
        self.assertIsNone(run["output"], run)
        for secret in (OPENAI_TEST_KEY, ANTHROPIC_TEST_KEY):
            self.assertNotIn(secret, run["error"])


class StreamQuirkTest(EngineTestCase):
    """Each reply fixture of tests/fixtures, through the real engine."""

    def test_azure_empty_choices_first_chunk(self):
        run = self.run_model("openai", "mock-fixture-openai_stream_azure_filter")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "Filtered first chunk.")

    def test_llamacpp_timings_and_usage(self):
        run = self.run_model("openai", "mock-fixture-openai_stream_llamacpp")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "Timings are extra fields.")
        self.assertEqual(run["usage"], {"input_tokens": 12, "output_tokens": 5})

    def test_crlf_lines(self):
        run = self.run_model("openai", "mock-fixture-openai_stream_crlf")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "Hello from a CRLF stream.")

    def test_comments_and_keepalives(self):
        run = self.run_model("openai", "mock-fixture-openai_stream_keepalive")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "Comments are not content.")

    def test_split_utf8_and_usage_chunk(self):
        run = self.run_model("openai", "mock-fixture-openai_stream_usage")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "Usage arrives last: \u4e16\u754c.")
        self.assertEqual(run["usage"], {"input_tokens": 11, "output_tokens": 7})

    def test_split_events_from_mock(self):
        # The mock sends every content event in two writes cut in the middle of its JSON.
        run = self.run_model("openai", "mock-ok")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "echo: " + PROMPT)

    def test_stream_without_done_marker(self):
        run = self.run_model("openai", "mock-fixture-openai_stream_no_done")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "No done marker here.")

    def test_stream_without_finish_reason_fails(self):
        run = self.run_model("openai", "mock-fixture-openai_stream_no_finish")
        self.assert_failed_with(run, "provider stream ended before a finish reason")
        self.assertEqual(len(self.mock.requests()), 1)

    def test_error_event_midway_retried_then_failed(self):
        run = self.run_model("openai", "mock-fixture-openai_stream_error_midway")
        self.assert_failed_with(run, "provider sent an error server_error after 4 attempts: The server had an error"
                                     " while processing your request. Sorry about that!")
        self.assertEqual(len(self.mock.requests()), ATTEMPTS)

    def test_plain_json_reply_openai(self):
        run = self.run_model("openai", "mock-fixture-openai_json_reply")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "A plain JSON reply.")
        self.assertEqual(run["usage"], {"input_tokens": 7, "output_tokens": 4})

    def test_plain_json_reply_anthropic(self):
        run = self.run_model("anthropic", "mock-fixture-anthropic_json_reply")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "Plain message body.")
        self.assertEqual(run["usage"], {"input_tokens": 8, "output_tokens": 3})

    def test_anthropic_ping_and_stream(self):
        run = self.run_model("anthropic", "mock-fixture-anthropic_stream")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "Anthropic replay works.")

    def test_anthropic_overloaded_event(self):
        run = self.run_model("anthropic", "mock-fixture-anthropic_stream_overloaded")
        self.assert_failed_with(run, "provider sent an error overloaded_error after 4 attempts: Overloaded")
        self.assertEqual(len(self.mock.requests()), ATTEMPTS)

    def test_anthropic_without_message_stop_fails(self):
        run = self.run_model("anthropic", "mock-fixture-anthropic_stream_no_stop")
        self.assert_failed_with(run, "provider stream ended before a finish reason")
        self.assertEqual(len(self.mock.requests()), 1)

    def test_html_error_page_from_proxy(self):
        run = self.run_model("openai", "mock-html")
        self.assert_failed_with(run, "provider returned 502 with a non-JSON body after 4 attempts")
        self.assertEqual(len(self.mock.requests()), ATTEMPTS)

    def test_truncated_stream_not_retried(self):
        run = self.run_model("openai", "mock-truncate")
        self.assert_failed_with(run, "provider stream ended before a finish reason")
        self.assertEqual(len(self.mock.requests()), 1)

    def test_key_in_provider_message_redacted(self):
        run = self.run_model("openai", "mock-fixture-openai_401_key_echo")
        self.assertEqual(run["status"], "failed", run)
        self.assertTrue(run["error"].startswith("provider returned 401 invalid_api_key after 1 attempt: "
                                                "Incorrect API key provided: [redacted]."), run)
        self.assertNotIn(OPENAI_TEST_KEY, run["error"])


class RetryRuleTest(EngineTestCase):
    """Which statuses are retried, how Retry-After is honoured, and the error once attempts run out."""

    def test_5xx_and_529_retried(self):
        for status in (500, 502, 503, 504, 529):
            for provider in ("openai", "anthropic"):
                with self.subTest(status=status, provider=provider):
                    self.mock.reset()
                    model = "mock-flaky-1-%d" % status
                    run = self.run_model(provider, model)
                    self.assertEqual(run["status"], "succeeded", run)
                    self.assertEqual(run["output"], "echo: " + PROMPT)
                    self.assertEqual(len(self.mock.requests(model=model)), 2)

    def test_4xx_not_retried(self):
        for status in (400, 401, 403, 404):
            with self.subTest(status=status):
                self.mock.reset()
                model = "mock-status-%d" % status
                run = self.run_model("openai", model)
                self.assertEqual(run["status"], "failed", run)
                self.assertTrue(run["error"].startswith("provider returned %d " % status), run)
                self.assertIn("after 1 attempt: Mock failure with status %d." % status, run["error"])
                self.assertEqual(len(self.mock.requests(model=model)), 1)

    def test_429_retry_after_honoured(self):
        run = self.run_model("openai", "mock-flaky-2-429")
        self.assertEqual(run["status"], "succeeded", run)
        requests = self.mock.requests(model="mock-flaky-2-429")
        self.assertEqual(len(requests), 3)
        # Each 429 said Retry-After: 1. A lower bound cannot fail on a slow machine.
        for earlier, later in zip(requests, requests[1:]):
            self.assertGreaterEqual(later["time"] - earlier["time"], 0.95)

    def test_429_exhausted_error_text(self):
        run = self.run_model("openai", "mock-status-429-retry-1")
        self.assert_failed_with(run, "provider returned 429 rate_limit_exceeded after 4 attempts: "
                                     "Rate limit reached for requests.")
        self.assertEqual(len(self.mock.requests()), ATTEMPTS)

    def test_503_exhausted_error_text(self):
        run = self.run_model("openai", "mock-status-503")
        self.assert_failed_with(run, "provider returned 503 server_error after 4 attempts: "
                                     "Mock failure with status 503.")
        self.assertEqual(len(self.mock.requests()), ATTEMPTS)

    def test_anthropic_529_exhausted_error_text(self):
        run = self.run_model("anthropic", "mock-status-529")
        self.assert_failed_with(run, "provider returned 529 overloaded_error after 4 attempts: "
                                     "Mock failure with status 529.")

    def test_connection_reset_retried(self):
        run = self.run_model("openai", "mock-reset")
        self.assertEqual(run["status"], "failed", run)
        self.assertTrue(run["error"].startswith("connection to provider failed: "), run)
        self.assertTrue(run["error"].endswith("(after 4 attempts)"), run)
        # libcurl itself sends a request again once when a reused keep-alive
        # connection turns out to be closed, so the mock may count one more.
        self.assertIn(len(self.mock.requests()), (ATTEMPTS, ATTEMPTS + 1))

    def test_retry_wait_past_deadline_not_taken(self):
        # The 429 asks for 30 s, the run may take 3: it fails at once with the 429.
        run = self.run_model("openai", "mock-status-429-retry-30", timeout_seconds=3)
        self.assert_failed_with(run, "provider returned 429 rate_limit_exceeded after 1 attempt: "
                                     "Rate limit reached for requests.")
        self.assertEqual(len(self.mock.requests()), 1)


class DeadlineTest(EngineTestCase):
    """The run's total deadline: the agent's timeout_seconds, else the server's --run-timeout."""

    serve_args = ["--rate-limit", "0", "--run-timeout", "3"]

    def test_agent_deadline(self):
        run = self.run_model("openai", "mock-slow-30000", timeout_seconds=2)
        self.assert_failed_with(run, "provider timed out after 2 s")
        self.assertEqual(len(self.mock.requests()), 1)

    def test_server_default_deadline(self):
        run = self.run_model("anthropic", "mock-slow-30000", timeout_seconds=None)
        self.assert_failed_with(run, "provider timed out after 3 s")


class IdleTimeoutTest(EngineTestCase):
    """A transfer that receives nothing for --provider-idle-timeout seconds fails and is retried."""

    serve_args = ["--rate-limit", "0", "--provider-idle-timeout", "1"]

    def test_idle_timeout_retried_then_failed(self):
        run = self.run_model("openai", "mock-stall-30000", timeout_seconds=60)
        self.assert_failed_with(run, "provider sent no data for 1 s (after 4 attempts)")
        self.assertEqual(len(self.mock.requests()), ATTEMPTS)


class UnreachableProviderTest(E2ETestCase):
    """Connect errors are retried, and the error names the failure in plain words."""

    def test_connection_refused(self):
        with Server(["--rate-limit", "0"]) as server:  # providers point at a closed local port
            org = server.create_org()
            key = server.create_key(org)
            agent_id = server.create_agent(org, provider="openai", model="gpt-4o-mini", timeout_seconds=60)
            run = server.run_to_end(key, agent_id, timeout=120)
            self.assertEqual(run["status"], "failed", run)
            self.assertEqual(run["error"], "connection to provider failed: Connection refused (after 4 attempts)")


class NamedProvidersTest(E2ETestCase):
    """Providers from a file: routing, keys from the environment, and the errors of a bad file."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mock = MockProvider()
        cls.mock.start()
        cls.addClassCleanup(cls.mock.close)

    def providers_file(self, server, providers):
        return server.write_file(providers)

    def test_named_providers_route_and_authenticate(self):
        env = {"LOCAL_A_KEY": "sk-local-a-0123456789", "CLAUDE_EU_KEY": "sk-ant-eu-0123456789"}
        with Server(start=False, mock=self.mock, env=env) as server:
            path = self.providers_file(server, [
                {"name": "local-a", "kind": "openai", "base_url": self.mock.url + "/alt/v1",
                 "api_key_env": "LOCAL_A_KEY"},
                {"name": "claude-eu", "kind": "anthropic", "base_url": self.mock.url + "/eu",
                 "api_key_env": "CLAUDE_EU_KEY"},
                {"name": "keyless", "kind": "openai", "base_url": self.mock.url + "/local/v1"},
            ])
            server.extra_env["PUSHAI_PROVIDERS"] = path
            server.start(["--rate-limit", "0"])
            org = server.create_org()
            key = server.create_key(org)
            self.mock.reset()
            for name, path_prefix in (("local-a", "/alt/v1"), ("claude-eu", "/eu/v1"), ("keyless", "/local/v1")):
                with self.subTest(provider=name):
                    agent_id = server.create_agent(org, provider=name, model="mock-ok", prompt="Hi " + name)
                    run = server.run_to_end(key, agent_id)
                    self.assertEqual(run["status"], "succeeded", run)
                    self.assertEqual(run["output"], "echo: Hi " + name)
                    request = self.mock.requests()[-1]
                    suffix = "/messages" if name == "claude-eu" else "/chat/completions"
                    self.assertEqual(request["path"], path_prefix + suffix)
                    headers = request["headers"]
                    if name == "local-a":
                        self.assertEqual(headers.get("authorization"), "Bearer sk-local-a-0123456789")
                    elif name == "claude-eu":
                        self.assertEqual(headers.get("x-api-key"), "sk-ant-eu-0123456789")
                    else:
                        self.assertNotIn("authorization", headers)

    def test_import_flag_and_unknown_name(self):
        with Server(start=False) as server:
            path = self.providers_file(server, [{"name": "vllm-b", "kind": "openai",
                                                 "base_url": "http://127.0.0.1:9/v1"}])
            org = server.create_org()
            agent_file = server.write_file({"name": "b", "published": True, "prompt": "p", "provider": "vllm-b",
                                          "model": "m"})
            rejected = server.cli("admin", "agent", "import", "--org", org, agent_file, check=False)
            self.assertNotEqual(rejected.returncode, 0)
            self.assertIn("vllm-b", rejected.stderr)
            accepted = server.cli("admin", "agent", "import", "--org", org, agent_file, "--providers", path)
            self.assertEqual(len(accepted.stdout.split()), 1, accepted)
            other = server.write_file({"name": "c", "published": True, "prompt": "p", "provider": "vllm-c",
                                     "model": "m"})
            still_rejected = server.cli("admin", "agent", "import", "--org", org, other, "--providers", path,
                                        check=False)
            self.assertNotEqual(still_rejected.returncode, 0)
            self.assertIn("vllm-c", still_rejected.stderr)

    def test_provider_missing_at_run_time(self):
        with Server(start=False) as server:
            path = self.providers_file(server, [{"name": "gone", "kind": "openai"}])
            org = server.create_org()
            key = server.create_key(org)
            agent_file = server.write_file({"name": "g", "published": True, "prompt": "p", "provider": "gone",
                                          "model": "m"})
            agent_id = int(server.cli("admin", "agent", "import", "--org", org, agent_file,
                                      "--providers", path).stdout.split()[0])
            server.start(["--rate-limit", "0"])  # without the file
            run = server.run_to_end(key, agent_id)
            self.assertEqual(run["status"], "failed", run)
            self.assertEqual(run["error"],
                             "unknown provider 'gone': use echo, openai, anthropic or a provider of the config file")

    def test_bad_files_stop_serve(self):
        cases = [
            ("key in the file", [{"name": "x", "kind": "openai", "api_key": "sk-1"}], "api_key_env"),
            ("unknown kind", [{"name": "x", "kind": "gemini"}], "kind"),
            ("unknown member", [{"name": "x", "kind": "openai", "base-url": "http://h"}], "base-url"),
            ("bad url", [{"name": "x", "kind": "openai", "base_url": "ftp://h"}], "base_url"),
            ("duplicate name", [{"name": "x", "kind": "openai"}, {"name": "x", "kind": "anthropic"}], "already"),
            ("unset key variable", [{"name": "x", "kind": "openai", "api_key_env": "PUSHAI_E2E_UNSET_VAR"}],
             "PUSHAI_E2E_UNSET_VAR"),
            ("not an array", {"name": "x"}, "array"),
            ("not JSON", "[{", "line"),
        ]
        with Server(start=False) as server:
            for label, content, fragment in cases:
                with self.subTest(label):
                    path = server.write_file(content)
                    result = server.cli("serve", "--listen", "127.0.0.1:0", "--providers", path, check=False)
                    self.assertEqual(result.returncode, 2, result)
                    self.assertIn(path, result.stderr)
                    self.assertIn(fragment, result.stderr)
                    self.assertNotIn("sk-1", result.stderr)


if __name__ == "__main__":
    unittest.main()
