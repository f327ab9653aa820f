"""Run leases between processes on one database: renewal, takeover after a crash, and the attempt limit."""

import unittest

from harness import E2ETestCase, MockProvider, Server, wait_until

LEASE_ARGS = ["--rate-limit", "0", "--lease-seconds", "2"]


def slow_agent(server, org, model):
    return server.create_agent(org, provider="openai", model=model, prompt="Say {{topic}} now.",
                               parameters=[{"name": "topic", "required": False, "description": "Topic",
                                            "default": "hello"}],
                               timeout_seconds=120)


class LeaseTest(E2ETestCase):
    def setUp(self):
        self.mock = MockProvider()
        self.mock.start()
        self.addCleanup(self.mock.close)

    def node(self, name, db=None, args=LEASE_ARGS):
        server = Server(args, mock=self.mock, db=db, name=name)
        server.__enter__()
        self.addCleanup(server.close)
        return server

    def requests_per_prompt(self, model):
        counts = {}
        for request in self.mock.requests(model=model):
            prompt = request["body"]["messages"][-1]["content"]
            counts[prompt] = counts.get(prompt, 0) + 1
        return counts

    def test_second_node_takes_over_killed_node(self):
        node_a = self.node("node a")
        org = node_a.create_org()
        key = node_a.create_key(org)
        agent_id = slow_agent(node_a, org, "mock-slow-3000")
        run_ids = [node_a.start_run(key, agent_id, {"topic": "t%d" % i}) for i in range(5)]
        wait_until(lambda: self.mock.stats()["in_flight"] >= 5, 60, "node a's five runs at the provider")
        node_a.kill9()

        node_b = self.node("node b", db=node_a.db)
        for i, run_id in enumerate(run_ids):
            run = node_b.poll_run(key, agent_id, run_id, timeout=120)
            self.assertEqual(run["status"], "succeeded", run)
            self.assertEqual(run["output"], "echo: Say t%d now." % i)
        # Each run reached the provider once from node a and once more from node b.
        self.assertEqual(self.requests_per_prompt("mock-slow-3000"), {"Say t%d now." % i: 2 for i in range(5)})

    def test_live_node_keeps_its_runs(self):
        node_a = self.node("node a")
        org = node_a.create_org()
        key = node_a.create_key(org)
        agent_id = slow_agent(node_a, org, "mock-slow-7000")
        run_ids = [node_a.start_run(key, agent_id, {"topic": "t%d" % i}) for i in range(3)]
        wait_until(lambda: self.mock.stats()["in_flight"] >= 3, 60, "node a's runs at the provider")
        # Node b polls the same database for more than three lease periods meanwhile.
        node_b = self.node("node b", db=node_a.db)
        for run_id in run_ids:
            run = node_b.poll_run(key, agent_id, run_id, timeout=120)
            self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(set(self.requests_per_prompt("mock-slow-7000").values()), {1})

    def test_run_interrupted_too_often_fails_clearly(self):
        node = self.node("node")
        org = node.create_org()
        key = node.create_key(org)
        agent_id = slow_agent(node, org, "mock-slow-60000")
        run_id = node.start_run(key, agent_id, {"topic": "doomed"})
        # Each start takes the run up again once its lease has expired, then dies.
        for attempt in range(1, 4):
            wait_until(lambda: len(self.mock.requests(model="mock-slow-60000")) >= attempt, 60,
                       "claim number %d of the run" % attempt)
            node.kill9()
            node.start()
        run = node.poll_run(key, agent_id, run_id, timeout=60)
        self.assertEqual(run["status"], "failed", run)
        self.assertEqual(run["error"], "The run was interrupted 3 times before it could finish. "
                                       "Create a new run to try again.")
        self.assertIsNone(run["output"], run)


if __name__ == "__main__":
    unittest.main()
