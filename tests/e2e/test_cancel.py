"""POST /api/v1/agents/{id}/runs/{run_id}/cancel in every state of a run, in one process and across two."""

import sqlite3
import time
import unittest

from harness import (E2ETestCase, MockProvider, Server, ServerTestCase, kpi_agent, parse_timestamp, pg_admin_sql,
                     pg_mode, wait_until)

PROMPT_TEMPLATE = "Say {{topic}} now."
STALL_MODEL = "mock-stall-30000"  # the first half of the words, then 30 s of silence
# The mock's default reply is "echo: " and the prompt; a stall sends its first half of the words.
STALLED_PARTIAL = "echo: Say "


def stored_output(db, run_id):
    """Read the output column that the API hides for a cancelled run, straight from the database."""
    if pg_mode():
        # psql prints NULL and "" alike, so the first column tells them apart
        line = pg_admin_sql("SELECT output IS NULL, output FROM runs WHERE id = '%s'" % run_id, url=db)[0]
        is_null, _, text = line.partition("|")
        return None if is_null == "t" else text
    connection = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        return connection.execute("SELECT output FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    finally:
        connection.close()


def stream_agent(server, org, provider, model, **fields):
    definition = dict(
        provider=provider, model=model, prompt=PROMPT_TEMPLATE,
        parameters=[{"name": "topic", "required": False, "description": "Topic", "default": "hello"}],
        timeout_seconds=120)
    definition.update(fields)
    return server.create_agent(org, **definition)


class CancelTest(ServerTestCase):
    with_mock = True
    serve_args = ["--rate-limit", "0"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)
        cls.echo_agent = cls.server.import_agents(cls.org, kpi_agent())[0]

    def cancel(self, agent_id, run_id):
        return self.server.cancel_run(self.key, agent_id, run_id)

    def wait_for_partial(self, model, topic):
        """Wait until the mock got the run's request; the stall's first half follows at once."""
        wait_until(lambda: any(r["body"]["messages"][-1]["content"] == "Say %s now." % topic
                               for r in self.mock.requests(model=model)),
                   60, "the provider request of the run to cancel")
        # The first half of the words leaves the mock right after the request
        # arrives; give the engine a moment to read it.
        time.sleep(0.5)

    def test_cancel_running_keeps_partial_output(self):
        for provider in ("openai", "anthropic"):
            with self.subTest(provider=provider):
                agent_id = stream_agent(self.server, self.org, provider, STALL_MODEL)
                topic = "partial-" + provider
                run_id = self.server.start_run(self.key, agent_id, {"topic": topic})
                self.wait_for_partial(STALL_MODEL, topic)

                response = self.cancel(agent_id, run_id)
                self.assertEqual(response.status, 200, response.describe())
                self.assertEqual(response.json["run_id"], run_id)
                self.assertEqual(response.json["status"], "running", response.describe())
                cancelled_at = time.monotonic()

                run = self.server.poll_run(self.key, agent_id, run_id, timeout=20)
                latency_s = time.monotonic() - cancelled_at
                self.assertEqual(run["status"], "cancelled", run)
                # The API shows output only for succeeded runs; the partial text is kept.
                self.assertIsNone(run["output"], run)
                self.assertEqual(stored_output(self.server.db, run_id), STALLED_PARTIAL)
                self.assertIsNone(run["error"], run)
                self.assertIsNotNone(run["started_at"], run)
                self.assertIsNotNone(run["completed_at"], run)
                # Measured, not asserted: the stall lasts 30 s, so ending before
                # it proves the transfer was aborted.
                print("\n  cancel of a running %s run took %.3f s to land" % (provider, latency_s))

    def test_cancel_repeated_is_harmless(self):
        agent_id = stream_agent(self.server, self.org, "openai", STALL_MODEL)
        run_id = self.server.start_run(self.key, agent_id, {"topic": "twice"})
        self.wait_for_partial(STALL_MODEL, "twice")
        first = self.cancel(agent_id, run_id)
        second = self.cancel(agent_id, run_id)
        self.assertEqual(first.status, 200, first.describe())
        self.assertEqual(second.status, 200, second.describe())
        self.assertIn(second.json["status"], ("running", "cancelled"), second.describe())
        run = self.server.poll_run(self.key, agent_id, run_id, timeout=20)
        self.assertEqual(run["status"], "cancelled", run)
        third = self.cancel(agent_id, run_id)
        self.assertEqual(third.status, 200, third.describe())
        self.assertEqual(third.json, run)

    def test_cancel_during_backoff(self):
        # The 429 asks for 30 s before the next attempt: the run sits in its backoff.
        agent_id = stream_agent(self.server, self.org, "openai", "mock-status-429-retry-30")
        run_id = self.server.start_run(self.key, agent_id, {"topic": "backoff"})
        wait_until(lambda: self.mock.requests(model="mock-status-429-retry-30"), 60, "the first attempt")
        time.sleep(0.3)
        response = self.cancel(agent_id, run_id)
        self.assertEqual(response.status, 200, response.describe())
        run = self.server.poll_run(self.key, agent_id, run_id, timeout=20)
        self.assertEqual(run["status"], "cancelled", run)
        self.assertIsNone(run["output"], run)
        self.assertIsNone(run["error"], run)
        self.assertEqual(len(self.mock.requests(model="mock-status-429-retry-30")), 1)

    def test_cancel_succeeded_run_409(self):
        run = self.server.run_to_end(self.key, self.echo_agent, {"region": "EU"})
        self.assertEqual(run["status"], "succeeded", run)
        response = self.cancel(self.echo_agent, run["run_id"])
        self.assertError(response, 409, "run_not_cancellable", [run["run_id"], "succeeded"])
        after = self.server.get_run(self.key, self.echo_agent, run["run_id"])
        self.assertEqual(after.json, run)

    def test_cancel_failed_run_409(self):
        agent_id = stream_agent(self.server, self.org, "openai", "mock-status-400")
        run = self.server.run_to_end(self.key, agent_id)
        self.assertEqual(run["status"], "failed", run)
        response = self.cancel(agent_id, run["run_id"])
        self.assertError(response, 409, "run_not_cancellable", ["failed"])

    def test_cancel_not_found(self):
        run = self.server.run_to_end(self.key, self.echo_agent, {"region": "US"})
        other_agent = self.server.create_agent(self.org)
        other_org = self.server.create_org()
        other_key = self.server.create_key(other_org)
        cases = [
            ("unknown run", self.key, self.echo_agent, "8a6e0804-2bd0-4672-b79d-d97027f9071a"),
            ("malformed run id", self.key, self.echo_agent, "not-a-uuid"),
            ("another agent", self.key, other_agent, run["run_id"]),
            ("another organization", other_key, self.echo_agent, run["run_id"]),
            ("non-integer agent id", self.key, "abc", run["run_id"]),
        ]
        for label, key, agent_id, run_id in cases:
            with self.subTest(label):
                response = self.server.cancel_run(key, agent_id, run_id)
                self.assertError(response, 404, "run_not_found")

    def test_cancel_uppercase_run_id(self):
        agent_id = stream_agent(self.server, self.org, "openai", STALL_MODEL)
        run_id = self.server.start_run(self.key, agent_id, {"topic": "upper"})
        response = self.cancel(agent_id, run_id.upper())
        self.assertEqual(response.status, 200, response.describe())
        self.assertEqual(response.json["run_id"], run_id)
        run = self.server.poll_run(self.key, agent_id, run_id, timeout=20)
        self.assertEqual(run["status"], "cancelled", run)

    def test_cancel_needs_key_and_post(self):
        run = self.server.run_to_end(self.key, self.echo_agent, {"region": "US"})
        path = "/api/v1/agents/%d/runs/%s/cancel" % (self.echo_agent, run["run_id"])
        self.assertError(self.server.request("POST", path), 401, "missing_api_key")
        self.assertError(self.server.request("POST", path, key="pai_nope"), 401, "invalid_api_key")
        response = self.server.request("GET", path, key=self.key)
        self.assertError(response, 405, "method_not_allowed")
        self.assertEqual(response.headers.get("allow"), "POST")

    def test_cancel_racing_completion(self):
        """Cancels at every moment of short runs: the reply and the final status always agree."""
        agent_id = stream_agent(self.server, self.org, "openai", "mock-slow-150")
        outcomes = {}
        for i in range(24):
            run_id = self.server.start_run(self.key, agent_id, {"topic": "race%d" % i})
            time.sleep((i % 8) * 0.03)
            response = self.cancel(agent_id, run_id)
            run = self.server.poll_run(self.key, agent_id, run_id, timeout=30)
            with self.subTest(run=i, reply=response.status, final=run["status"]):
                self.assertIn(response.status, (200, 409), response.describe())
                if response.status == 409:
                    self.assertEqual(run["status"], "succeeded", run)
                elif response.json["status"] == "pending":
                    self.fail("a cancelled pending run is already cancelled in the reply: %s" % response.describe())
                elif response.json["status"] == "cancelled":
                    self.assertEqual(run["status"], "cancelled", run)
                    self.assertIsNone(run["started_at"], run)
                else:
                    self.assertEqual(response.json["status"], "running", response.describe())
                    # Either the abort came first, or the run had finished (and keeps its status).
                    self.assertIn(run["status"], ("cancelled", "succeeded"), run)
                if run["status"] == "succeeded":
                    self.assertEqual(run["output"], "echo: Say race%d now." % i, run)
                if run["status"] == "cancelled":
                    self.assertIsNone(run["output"], run)
                    partial = stored_output(self.server.db, run_id)
                    self.assertTrue(partial is None or ("echo: Say race%d now." % i).startswith(partial), partial)
            outcomes[run["status"]] = outcomes.get(run["status"], 0) + 1
        print("\n  final statuses of runs cancelled at random moments: %s" % outcomes)


class CancelPendingTest(E2ETestCase):
    """A pending run cancelled while no engine runs never starts, also after one starts."""

    def test_cancel_pending_never_starts(self):
        with MockProvider() as mock, Server(["--no-engine", "--rate-limit", "0"], mock=mock) as server:
            org = server.create_org()
            key = server.create_key(org)
            agent_id = stream_agent(server, org, "openai", "mock-ok")
            cancelled = server.start_run(key, agent_id, {"topic": "never"})
            kept = server.start_run(key, agent_id, {"topic": "kept"})

            response = server.cancel_run(key, agent_id, cancelled)
            self.assertEqual(response.status, 200, response.describe())
            run = response.json
            self.assertEqual(run["status"], "cancelled", run)
            self.assertIsNone(run["started_at"], run)
            self.assertIsNone(run["output"], run)
            self.assertIsNone(run["error"], run)
            self.assertGreaterEqual(parse_timestamp(run["completed_at"]), parse_timestamp(run["created_at"]))
            self.assertEqual(server.get_run(key, agent_id, cancelled).json, run)

            server.restart(["--rate-limit", "0"])
            done = server.poll_run(key, agent_id, kept)
            self.assertEqual(done["status"], "succeeded", done)
            self.assertEqual(server.get_run(key, agent_id, cancelled).json, run)
            prompts = [r["body"]["messages"][-1]["content"] for r in mock.requests()]
            self.assertEqual(prompts, ["Say kept now."])


class CancelAcrossProcessesTest(E2ETestCase):
    """A cancellation recorded by one process stops a run that another process executes."""

    def test_cancel_through_other_node(self):
        with MockProvider() as mock:
            with Server(["--rate-limit", "0"], mock=mock, name="executor") as executor:
                with Server(["--rate-limit", "0", "--no-engine"], mock=mock, db=executor.db,
                            name="api node") as api_node:
                    org = executor.create_org()
                    key = executor.create_key(org)
                    agent_id = stream_agent(executor, org, "openai", STALL_MODEL)
                    run_id = executor.start_run(key, agent_id, {"topic": "remote"})
                    wait_until(lambda: mock.requests(model=STALL_MODEL), 60, "the run's provider request")
                    time.sleep(0.5)

                    response = api_node.cancel_run(key, agent_id, run_id)
                    self.assertEqual(response.status, 200, response.describe())
                    self.assertEqual(response.json["status"], "running", response.describe())
                    run = api_node.poll_run(key, agent_id, run_id, timeout=20)
                    self.assertEqual(run["status"], "cancelled", run)
                    self.assertEqual(stored_output(executor.db, run_id), STALLED_PARTIAL)


if __name__ == "__main__":
    unittest.main()
