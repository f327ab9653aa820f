"""Fair order across organizations and the per-organization and per-agent limits on runs in flight."""

import datetime
import unittest

from harness import E2ETestCase, MockProvider, Server, parse_timestamp, wait_until

SLOW_MODEL = "mock-slow-800"


def slow_agent(server, org, model=SLOW_MODEL):
    return server.create_agent(org, provider="openai", model=model, prompt="Say {{topic}} now.",
                               parameters=[{"name": "topic", "required": False, "description": "Topic",
                                            "default": "hello"}],
                               timeout_seconds=120)


def times(run):
    return parse_timestamp(run["created_at"]), parse_timestamp(run["started_at"]), parse_timestamp(
        run["completed_at"])


class FairnessTestCase(E2ETestCase):
    serve_args = []

    def setUp(self):
        self.mock = MockProvider()
        self.mock.start()
        self.addCleanup(self.mock.close)
        self.server = Server(["--rate-limit", "0"] + self.serve_args, mock=self.mock)
        self.server.__enter__()
        self.addCleanup(self.server.close)

    def tenant(self, model=SLOW_MODEL):
        org = self.server.create_org()
        key = self.server.create_key(org)
        return org, key, slow_agent(self.server, org, model)

    def finish_all(self, key, agent_id, run_ids):
        runs = [self.server.poll_run(key, agent_id, run_id, timeout=180) for run_id in run_ids]
        for run in runs:
            self.assertEqual(run["status"], "succeeded", run)
        return runs

    def assert_never_overlap(self, runs, what):
        """Each run started at or after the previous one (by start time) completed."""
        ordered = sorted(runs, key=lambda run: run["started_at"])
        for earlier, later in zip(ordered, ordered[1:]):
            self.assertGreaterEqual(parse_timestamp(later["started_at"]), parse_timestamp(earlier["completed_at"]),
                                    "%s ran at once: %s and %s" % (what, earlier, later))


class TurnOrderTest(FairnessTestCase):
    """With every slot taken by one organization, the next free slot goes to a waiting other one."""

    serve_args = ["--max-runs-in-flight", "2"]

    def test_flooding_org_does_not_delay_other(self):
        _, busy_key, busy_agent = self.tenant()
        _, quiet_key, quiet_agent = self.tenant()
        busy_ids = [self.server.start_run(busy_key, busy_agent, {"topic": "busy%d" % i}) for i in range(10)]
        wait_until(lambda: self.mock.stats()["in_flight"] >= 2, 60, "both slots taken by the busy organization")
        quiet_id = self.server.start_run(quiet_key, quiet_agent, {"topic": "quiet"})

        quiet = self.finish_all(quiet_key, quiet_agent, [quiet_id])[0]
        busy = self.finish_all(busy_key, busy_agent, busy_ids)
        quiet_created, quiet_started, _ = times(quiet)
        jumped = [run for run in busy if quiet_created < parse_timestamp(run["started_at"]) < quiet_started]
        self.assertEqual(jumped, [], "busy runs started while the quiet organization's run waited")
        waiting_after = [run for run in busy if parse_timestamp(run["started_at"]) > quiet_started]
        self.assertGreaterEqual(len(waiting_after), 5, "the quiet run should start before most of the backlog")


class PerOrgLimitTest(FairnessTestCase):
    serve_args = ["--max-runs-in-flight", "6", "--max-runs-per-org", "1"]

    def test_org_limit_holds_and_leaves_room(self):
        _, busy_key, busy_agent = self.tenant()
        _, quiet_key, quiet_agent = self.tenant()
        busy_ids = [self.server.start_run(busy_key, busy_agent, {"topic": "busy%d" % i}) for i in range(4)]
        quiet_id = self.server.start_run(quiet_key, quiet_agent, {"topic": "quiet"})
        quiet = self.finish_all(quiet_key, quiet_agent, [quiet_id])[0]
        busy = self.finish_all(busy_key, busy_agent, busy_ids)
        self.assert_never_overlap(busy, "two runs of the limited organization")
        last_busy_start = max(parse_timestamp(run["started_at"]) for run in busy)
        self.assertLess(parse_timestamp(quiet["started_at"]), last_busy_start)


class PerAgentLimitTest(FairnessTestCase):
    serve_args = ["--max-runs-per-agent", "1"]

    def test_agent_limit(self):
        org, key, busy_agent = self.tenant()
        other_agent = slow_agent(self.server, org)
        busy_ids = [self.server.start_run(key, busy_agent, {"topic": "busy%d" % i}) for i in range(3)]
        other_ids = [self.server.start_run(key, other_agent, {"topic": "other%d" % i}) for i in range(2)]
        busy = self.finish_all(key, busy_agent, busy_ids)
        other = self.finish_all(key, other_agent, other_ids)
        self.assert_never_overlap(busy, "two runs of one agent")
        self.assert_never_overlap(other, "two runs of one agent")
        # The agents' runs did overlap each other: the limit is per agent.
        first_other_start = min(parse_timestamp(run["started_at"]) for run in other)
        last_busy_end = max(parse_timestamp(run["completed_at"]) for run in busy)
        self.assertLess(first_other_start, last_busy_end)


class LimitAcrossNodesTest(E2ETestCase):
    """The per-organization limit counts the runs of every process on the database."""

    def test_org_limit_over_two_nodes(self):
        args = ["--rate-limit", "0", "--max-runs-per-org", "1"]
        with MockProvider() as mock, Server(args, mock=mock, name="node a") as node_a:
            with Server(args, mock=mock, db=node_a.db, name="node b") as node_b:
                org = node_a.create_org()
                key = node_a.create_key(org)
                agent_id = slow_agent(node_a, org, "mock-slow-500")
                run_ids = [node_a.start_run(key, agent_id, {"topic": "a%d" % i}) for i in range(3)]
                run_ids += [node_b.start_run(key, agent_id, {"topic": "b%d" % i}) for i in range(3)]
                runs = [node_a.poll_run(key, agent_id, run_id, timeout=120) for run_id in run_ids]
                for run in runs:
                    self.assertEqual(run["status"], "succeeded", run)
                # The provider never had two of the organization's requests at once.
                self.assertEqual(mock.stats()["in_flight_peak"], 1)
                # A node reads its clock for started_at before it waits for the
                # other node's write lock, so the times may cross by that wait.
                tolerance = datetime.timedelta(milliseconds=200)
                ordered = sorted(runs, key=lambda run: run["started_at"])
                for earlier, later in zip(ordered, ordered[1:]):
                    self.assertGreaterEqual(parse_timestamp(later["started_at"]) + tolerance,
                                            parse_timestamp(earlier["completed_at"]),
                                            "two runs of the organization ran at once: %s and %s"
                                            % (earlier, later))


if __name__ == "__main__":
    unittest.main()
