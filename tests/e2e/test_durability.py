"""Crash and restart: runs that got a 202 survive kill -9 and SIGTERM and reach a terminal status."""

import unittest

from harness import E2ETestCase, MockProvider, Server, kpi_agent, wait_until

ECHO_OUTPUT = "Summarize the KPIs for EU in week last."
SLOW_OUTPUT = "echo: slow run"


class DurabilityTest(E2ETestCase):
    def setUp(self):
        self.mock = MockProvider()
        self.mock.start()
        self.addCleanup(self.mock.close)
        self.server = Server(["--rate-limit", "0"], mock=self.mock)
        self.server.__enter__()
        self.addCleanup(self.server.close)
        self.org = self.server.create_org()
        self.key = self.server.create_key(self.org)
        self.echo_agent = self.server.import_agents(self.org, kpi_agent())[0]
        self.slow_agent = self.server.create_agent(
            self.org, provider="openai", model="mock-slow-1500", prompt="slow run", parameters=[],
            timeout_seconds=60)

    def create_runs(self, echo_count, slow_count):
        runs = []
        for _ in range(slow_count):
            runs.append((self.slow_agent, self.server.start_run(self.key, self.slow_agent), SLOW_OUTPUT))
        for _ in range(echo_count):
            runs.append((self.echo_agent, self.server.start_run(self.key, self.echo_agent, {"region": "EU"}),
                         ECHO_OUTPUT))
        return runs

    def assert_all_terminal(self, runs, require_success=False):
        for agent_id, run_id, expected_output in runs:
            run = self.server.poll_run(self.key, agent_id, run_id, timeout=180)
            with self.subTest(run_id=run_id):
                if require_success or run["status"] == "succeeded":
                    self.assertEqual(run["status"], "succeeded", run)
                    self.assertEqual(run["output"], expected_output, run)
                else:
                    # A run cut off mid-execution may be failed, with a reason.
                    self.assertEqual(run["status"], "failed", run)
                    self.assertTrue(run["error"], run)

    def test_kill9_during_runs_loses_none(self):
        runs = self.create_runs(echo_count=20, slow_count=40)
        wait_until(lambda: self.mock.stats()["in_flight"] >= 1, 60,
                   "a slow run in flight at the provider")
        # These runs get their 202 just before the crash.
        runs += self.create_runs(echo_count=10, slow_count=10)
        self.server.kill9()
        self.server.start()
        self.assert_all_terminal(runs)

    def test_kill9_twice_during_recovery(self):
        runs = self.create_runs(echo_count=10, slow_count=30)
        wait_until(lambda: self.mock.stats()["in_flight"] >= 1, 60, "a slow run in flight")
        self.server.kill9()
        self.mock.reset()
        self.server.start()
        wait_until(lambda: self.mock.requests(model="mock-slow-1500"), 60, "a slow run resumed after restart")
        self.server.kill9()
        self.server.start()
        self.assert_all_terminal(runs)

    def test_sigterm_with_runs_in_flight(self):
        runs = self.create_runs(echo_count=10, slow_count=20)
        wait_until(lambda: self.mock.stats()["in_flight"] >= 1, 60, "a slow run in flight")
        status = self.server.stop(timeout=60)
        self.assertEqual(status, 0, "exit status after SIGTERM")
        self.server.start()
        self.assert_all_terminal(runs)


class PendingRunsSurviveTest(E2ETestCase):
    def test_pending_runs_survive_kill9(self):
        with Server(["--no-engine", "--rate-limit", "0"]) as server:
            org = server.create_org()
            key = server.create_key(org)
            agent_id = server.import_agents(org, kpi_agent())[0]
            run_ids = [server.start_run(key, agent_id, {"region": "EU"}) for _ in range(30)]
            server.kill9()
            server.start(["--rate-limit", "0"])
            for run_id in run_ids:
                run = server.poll_run(key, agent_id, run_id)
                # Never started, so never cut off: each must succeed.
                self.assertEqual(run["status"], "succeeded", run)
                self.assertEqual(run["output"], ECHO_OUTPUT)

    def test_restart_keeps_keys_agents_runs(self):
        with Server() as server:
            org = server.create_org()
            key = server.create_key(org)
            agent_id = server.import_agents(org, kpi_agent())[0]
            run = server.run_to_end(key, agent_id, {"region": "EU"})
            server.restart()
            response = server.get_run(key, agent_id, run["run_id"])
            self.assertEqual(response.status, 200, response.describe())
            self.assertEqual(response.json, run)
            self.assertEqual([a["id"] for a in server.list_agents(key).json["agents"]], [agent_id])

    def test_revoked_key_stays_revoked_after_restart(self):
        with Server() as server:
            org = server.create_org()
            key = server.create_key(org)
            server.admin("key", "revoke", key)
            server.restart()
            response = server.list_agents(key)
            self.assertError(response, 401, "invalid_api_key")

    def test_sigterm_idle_exits_zero(self):
        with Server() as server:
            self.assertEqual(server.stop(), 0)

    def test_admin_while_serving(self):
        with Server() as server:
            org = server.create_org()
            key = server.create_key(org)
            self.assertEqual(server.list_agents(key).status, 200)
            agent_id = server.create_agent(org)
            self.assertEqual([a["id"] for a in server.list_agents(key).json["agents"]], [agent_id])


if __name__ == "__main__":
    unittest.main()
