"""Runs through the OpenAI and Anthropic providers against the mock provider: requests, replies, faults."""

import unittest

from harness import (ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, ServerTestCase, agent_definition,
                     wait_until)

SYSTEM = "You are terse."
PROMPT_TEMPLATE = "Say {{topic}} now."
PROMPT = "Say hello now."
# The mock counts whitespace-separated words as tokens.
INPUT_TOKENS = len(SYSTEM.split()) + len(PROMPT.split())
OUTPUT_TOKENS = len(("echo: " + PROMPT).split())


class ProviderTestCase(ServerTestCase):
    with_mock = True
    serve_args = ["--rate-limit", "0"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)

    def setUp(self):
        self.mock.reset()

    def agent(self, provider, model, **fields):
        definition = dict(
            provider=provider, model=model, system=SYSTEM, prompt=PROMPT_TEMPLATE,
            parameters=[{"name": "topic", "required": False, "description": "Topic", "default": "hello"}],
            temperature=0.2, max_tokens=50, timeout_seconds=30)
        definition.update(fields)
        return self.server.create_agent(self.org, **definition)

    def run_model(self, provider, model, timeout=90, **fields):
        agent_id = self.agent(provider, model, **fields)
        return self.server.run_to_end(self.key, agent_id, timeout=timeout)

    def assert_failed_clearly(self, run):
        self.assertEqual(run["status"], "failed", run)
        self.assertIsNone(run["output"], run)
        self.assertIsInstance(run["error"], str, run)
        self.assertTrue(run["error"].strip(), run)
        for secret in (OPENAI_TEST_KEY, ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY[8:], ANTHROPIC_TEST_KEY[12:]):
            self.assertNotIn(secret, run["error"])
        self.assertNotIn("Bearer", run["error"])
        self.assertIsNotNone(run["completed_at"], run)


class OpenAIProviderTest(ProviderTestCase):
    def test_output_and_usage(self):
        run = self.run_model("openai", "mock-ok")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "echo: " + PROMPT)
        self.assertEqual(run["usage"], {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS})
        self.assertIsNone(run["error"])

    def test_request_sent(self):
        self.run_model("openai", "mock-ok")
        requests = self.mock.requests(model="mock-ok")
        self.assertEqual(len(requests), 1, requests)
        request = requests[0]
        self.assertEqual(request["method"], "POST")
        self.assertEqual(request["path"], "/v1/chat/completions")
        self.assertEqual(request["headers"].get("authorization"), "Bearer " + OPENAI_TEST_KEY)
        self.assertTrue(request["headers"].get("content-type", "").startswith("application/json"))
        body = request["body"]
        self.assertEqual(body["model"], "mock-ok")
        self.assertEqual(body["messages"], [{"role": "system", "content": SYSTEM},
                                            {"role": "user", "content": PROMPT}])
        self.assertEqual(body["temperature"], 0.2)
        # Newer OpenAI models take max_completion_tokens; either name carries the limit.
        self.assertEqual(body.get("max_tokens", body.get("max_completion_tokens")), 50)
        self.assertIs(body.get("stream"), True)
        self.assertIs(body.get("stream_options", {}).get("include_usage"), True)

    def test_without_system_and_options(self):
        agent_id = self.server.create_agent(self.org, provider="openai", model="mock-ok", prompt="Just this.",
                                            parameters=[])
        run = self.server.run_to_end(self.key, agent_id)
        self.assertEqual(run["output"], "echo: Just this.")
        body = self.mock.requests()[0]["body"]
        self.assertEqual(body["messages"], [{"role": "user", "content": "Just this."}])
        self.assertNotIn("temperature", body)

    def test_bindings_reach_provider(self):
        agent_id = self.agent("openai", "mock-ok")
        run_id = self.server.start_run(self.key, agent_id, {"topic": "goodbye"})
        run = self.server.poll_run(self.key, agent_id, run_id)
        self.assertEqual(run["output"], "echo: Say goodbye now.")

    def test_unknown_model_fails_clearly(self):
        run = self.run_model("openai", "mock-nope")
        self.assert_failed_clearly(run)
        error = run["error"]
        self.assertTrue("mock-nope" in error or "404" in error or "not found" in error.lower(), error)
        self.assertEqual(len(self.mock.requests(model="mock-nope")), 1)

    def test_400_not_retried(self):
        run = self.run_model("openai", "mock-status-400")
        self.assert_failed_clearly(run)
        self.assertEqual(len(self.mock.requests(model="mock-status-400")), 1)

    def test_401_not_retried(self):
        run = self.run_model("openai", "mock-status-401")
        self.assert_failed_clearly(run)
        self.assertEqual(len(self.mock.requests(model="mock-status-401")), 1)

    def test_500_retried_then_failed(self):
        run = self.run_model("openai", "mock-status-500", timeout=180)
        self.assert_failed_clearly(run)
        self.assertGreaterEqual(len(self.mock.requests(model="mock-status-500")), 2)

    def test_flaky_500_retried_to_success(self):
        run = self.run_model("openai", "mock-flaky-2", timeout=120)
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "echo: " + PROMPT)
        self.assertEqual(len(self.mock.requests(model="mock-flaky-2")), 3)

    def test_429_retry_after_honoured(self):
        run = self.run_model("openai", "mock-flaky-1-429", timeout=120)
        self.assertEqual(run["status"], "succeeded", run)
        requests = self.mock.requests(model="mock-flaky-1-429")
        self.assertEqual(len(requests), 2)
        # The 429 reply carried Retry-After: 1. A lower bound cannot fail because of a slow machine.
        self.assertGreaterEqual(requests[1]["time"] - requests[0]["time"], 0.9)

    def test_429_always_fails_eventually(self):
        run = self.run_model("openai", "mock-status-429-retry-1", timeout=180)
        self.assert_failed_clearly(run)
        self.assertGreaterEqual(len(self.mock.requests(model="mock-status-429-retry-1")), 2)

    def test_connection_reset_fails_run(self):
        run = self.run_model("openai", "mock-reset", timeout=180)
        self.assert_failed_clearly(run)

    def test_truncated_stream_fails_run(self):
        run = self.run_model("openai", "mock-truncate", timeout=180)
        self.assert_failed_clearly(run)

    def test_html_error_page_not_in_error(self):
        run = self.run_model("openai", "mock-html", timeout=180)
        self.assert_failed_clearly(run)
        self.assertNotIn("<html", run["error"].lower())
        self.assertNotIn("<center>", run["error"].lower())

    def test_timeout_fails_run(self):
        run = self.run_model("openai", "mock-slow-30000", timeout_seconds=1)
        self.assert_failed_clearly(run)
        self.assertRegex(run["error"].lower(), r"time(d)?[ -]?out")

    def test_model_override_on_import(self):
        ids = self.server.import_agents(self.org, agent_definition(provider="echo", model="other"),
                                        provider="openai", model="mock-ok")
        run = self.server.run_to_end(self.key, ids[0])
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "echo: Write about nothing.")
        self.assertEqual(self.mock.requests()[0]["body"]["model"], "mock-ok")

    def test_many_runs_in_flight(self):
        agent_id = self.agent("openai", "mock-slow-3000")
        run_ids = [self.server.start_run(self.key, agent_id) for _ in range(100)]
        wait_until(lambda: self.mock.stats()["in_flight_peak"] >= 50, 60,
                   "50 of 100 slow runs in flight at once at the provider")
        for run_id in run_ids:
            run = self.server.poll_run(self.key, agent_id, run_id, timeout=120)
            self.assertEqual(run["status"], "succeeded", run)


class OpenAIFixtureTest(ProviderTestCase):
    def test_crlf_stream(self):
        run = self.run_model("openai", "mock-fixture-openai_stream_crlf")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "Hello from a CRLF stream.")
        self.assertIsNone(run["usage"])

    def test_keepalive_comments(self):
        run = self.run_model("openai", "mock-fixture-openai_stream_keepalive")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "Comments are not content.")

    def test_usage_chunk_and_split_utf8(self):
        run = self.run_model("openai", "mock-fixture-openai_stream_usage")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "Usage arrives last: \u4e16\u754c.")
        self.assertEqual(run["usage"], {"input_tokens": 11, "output_tokens": 7})

    def test_stream_without_done(self):
        run = self.run_model("openai", "mock-fixture-openai_stream_no_done")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "No done marker here.")


class AnthropicProviderTest(ProviderTestCase):
    def test_output_and_usage(self):
        run = self.run_model("anthropic", "mock-ok")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "echo: " + PROMPT)
        self.assertEqual(run["usage"], {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS})

    def test_request_sent(self):
        self.run_model("anthropic", "mock-ok")
        requests = self.mock.requests(model="mock-ok")
        self.assertEqual(len(requests), 1, requests)
        request = requests[0]
        self.assertEqual(request["path"], "/v1/messages")
        self.assertEqual(request["headers"].get("x-api-key"), ANTHROPIC_TEST_KEY)
        self.assertTrue(request["headers"].get("anthropic-version"))
        self.assertNotIn("authorization", request["headers"])
        body = request["body"]
        self.assertEqual(body["model"], "mock-ok")
        system = body.get("system")
        if isinstance(system, list):
            system = "".join(block.get("text", "") for block in system)
        self.assertEqual(system, SYSTEM)
        self.assertEqual(len(body["messages"]), 1)
        message = body["messages"][0]
        self.assertEqual(message["role"], "user")
        content = message["content"]
        if isinstance(content, list):
            content = "".join(block.get("text", "") for block in content)
        self.assertEqual(content, PROMPT)
        self.assertEqual(body["max_tokens"], 50)
        self.assertEqual(body["temperature"], 0.2)
        self.assertIs(body.get("stream"), True)

    def test_default_max_tokens(self):
        agent_id = self.server.create_agent(self.org, provider="anthropic", model="mock-ok", prompt="Hi.",
                                            parameters=[])
        run = self.server.run_to_end(self.key, agent_id)
        self.assertEqual(run["status"], "succeeded", run)
        self.assertIsInstance(self.mock.requests()[0]["body"].get("max_tokens"), int)

    def test_unknown_model_fails_clearly(self):
        run = self.run_model("anthropic", "mock-nope")
        self.assert_failed_clearly(run)
        self.assertEqual(len(self.mock.requests(model="mock-nope")), 1)

    def test_overloaded_retried_to_success(self):
        run = self.run_model("anthropic", "mock-flaky-1-529", timeout=120)
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(len(self.mock.requests(model="mock-flaky-1-529")), 2)

    def test_truncated_stream_fails_run(self):
        run = self.run_model("anthropic", "mock-truncate", timeout=180)
        self.assert_failed_clearly(run)

    def test_fixture_stream(self):
        run = self.run_model("anthropic", "mock-fixture-anthropic_stream")
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], "Anthropic replay works.")
        self.assertEqual(run["usage"], {"input_tokens": 9, "output_tokens": 4})


class UnreachableProviderTest(ServerTestCase):
    """Without a mock the harness points providers at a closed local port."""

    def test_connect_error_fails_run(self):
        org = self.server.create_org()
        key = self.server.create_key(org)
        agent_id = self.server.create_agent(org, provider="openai", model="gpt-4o-mini", timeout_seconds=30)
        run = self.server.run_to_end(key, agent_id, timeout=180)
        self.assertEqual(run["status"], "failed", run)
        self.assertTrue(run["error"], run)
        self.assertNotIn(OPENAI_TEST_KEY, run["error"])


if __name__ == "__main__":
    unittest.main()
