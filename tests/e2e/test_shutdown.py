"""Graceful shutdown on SIGTERM and SIGINT: stop accepting, finish within the grace period, hand back the rest."""

import signal
import socket
import unittest

from harness import E2ETestCase, MockProvider, Server, wait_until


def slow_agent(server, org, model):
    return server.create_agent(org, provider="openai", model=model, prompt="Say {{topic}} now.",
                               parameters=[{"name": "topic", "required": False, "description": "Topic",
                                            "default": "hello"}],
                               timeout_seconds=120)


def refuses_connections(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True


class ShutdownTest(E2ETestCase):
    def setUp(self):
        self.mock = MockProvider()
        self.mock.start()
        self.addCleanup(self.mock.close)

    def start_server(self, grace_seconds):
        server = Server(["--rate-limit", "0", "--shutdown-grace", str(grace_seconds)], mock=self.mock)
        server.__enter__()
        self.addCleanup(server.close)
        org = server.create_org()
        key = server.create_key(org)
        return server, key, org

    def requests_per_prompt(self, model):
        counts = {}
        for request in self.mock.requests(model=model):
            prompt = request["body"]["messages"][-1]["content"]
            counts[prompt] = counts.get(prompt, 0) + 1
        return counts

    def check_finish_within_grace(self, signum):
        server, key, org = self.start_server(grace_seconds=20)
        agent_id = slow_agent(server, org, "mock-slow-2000")
        run_ids = [server.start_run(key, agent_id, {"topic": "t%d" % i}) for i in range(6)]
        wait_until(lambda: self.mock.stats()["in_flight"] >= 6, 60, "all six runs at the provider")
        host, port = server.host, server.port

        status = server.stop_with_signal(signum, timeout=60)
        self.assertEqual(status, 0)
        self.assertTrue(refuses_connections(host, port))
        # Every run finished inside the grace period, so none went to the provider twice.
        server.start(["--rate-limit", "0", "--no-engine"])
        for run_id in run_ids:
            run = server.get_run(key, agent_id, run_id).json
            self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(set(self.requests_per_prompt("mock-slow-2000").values()), {1})

    def test_sigterm_lets_runs_finish(self):
        self.check_finish_within_grace(signal.SIGTERM)

    def test_sigint_lets_runs_finish(self):
        self.check_finish_within_grace(signal.SIGINT)

    def check_hand_back(self, signum):
        server, key, org = self.start_server(grace_seconds=1)
        agent_id = slow_agent(server, org, "mock-slow-6000")
        run_ids = [server.start_run(key, agent_id, {"topic": "t%d" % i}) for i in range(4)]
        wait_until(lambda: self.mock.stats()["in_flight"] >= 4, 60, "all four runs at the provider")

        status = server.stop_with_signal(signum, timeout=30)
        self.assertEqual(status, 0)
        # Handed back: pending again, as if never started.
        server.start(["--rate-limit", "0", "--no-engine"])
        for run_id in run_ids:
            run = server.get_run(key, agent_id, run_id).json
            self.assertEqual(run["status"], "pending", run)
            self.assertIsNone(run["started_at"], run)
        # The next start takes them up and finishes them.
        server.restart(["--rate-limit", "0"])
        for run_id in run_ids:
            run = server.poll_run(key, agent_id, run_id, timeout=120)
            self.assertEqual(run["status"], "succeeded", run)
            self.assertEqual(run["output"], "echo: Say %s now." % ("t%d" % run_ids.index(run_id)))
        self.assertEqual(set(self.requests_per_prompt("mock-slow-6000").values()), {2})

    def test_sigterm_hands_back_unfinished(self):
        self.check_hand_back(signal.SIGTERM)

    def test_sigint_hands_back_unfinished(self):
        self.check_hand_back(signal.SIGINT)

    def test_stops_accepting_during_grace(self):
        server, key, org = self.start_server(grace_seconds=8)
        agent_id = slow_agent(server, org, "mock-slow-5000")
        run_id = server.start_run(key, agent_id)
        wait_until(lambda: self.mock.stats()["in_flight"] >= 1, 60, "the run at the provider")
        host, port = server.host, server.port
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: refuses_connections(host, port), 10, "the listener closed after SIGTERM")
        self.assertTrue(server.is_running(), "the run in flight should still be finishing")
        self.assertEqual(server.stop_with_signal(signal.SIGTERM, timeout=60), 0)
        server.start(["--rate-limit", "0", "--no-engine"])
        self.assertEqual(server.get_run(key, agent_id, run_id).json["status"], "succeeded")


if __name__ == "__main__":
    unittest.main()
