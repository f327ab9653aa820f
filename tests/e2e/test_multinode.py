"""Several pushaid nodes on one PostgreSQL database, and that database going away.

These tests run only in PostgreSQL mode (PUSHAI_E2E_PG_URL, see harness.py);
the restart tests also need PUSHAI_E2E_PG_DIR. Each test starts its own
nodes on a database of its own; the nodes share nothing but that database.
"""

import re
import threading
import time
import unittest
import http.client

from harness import (E2ETestCase, MockProvider, Server, kpi_agent, pg_cluster, pg_create_database,
                     pg_drop_database, pg_mode, wait_until)

ECHO_OUTPUT = "Summarize the KPIs for EU in week last."
SLOW_OUTPUT = "echo: slow run"
SLOW_MODEL = "mock-slow-1500"


def logged_run_ids(server, event):
    """Return the ids of the runs that server's engine logged as event ("started", "succeeded")."""
    with open(server.log_path, "rb") as log:
        text = log.read().decode("utf-8", errors="replace")
    return set(re.findall(r'msg="run %s" run_id=([0-9a-f-]{36})' % event, text))


def started_run_ids(server):
    return logged_run_ids(server, "started")


@unittest.skipUnless(pg_mode(), "multi-node tests need PostgreSQL: set PUSHAI_E2E_PG_URL")
class MultiNodeTestCase(E2ETestCase):
    """Starts a mock provider and nodes that share one new database."""

    def setUp(self):
        self.mock = MockProvider()
        self.mock.start()
        self.addCleanup(self.mock.close)
        self.database, self.db_url = pg_create_database()
        self.addCleanup(pg_drop_database, self.database)
        self.nodes = []

    def start_node(self, index, *serve_args):
        node = Server(["--node-id", "node%d" % index] + list(serve_args), mock=self.mock, db=self.db_url,
                      name="node %d" % index)
        node.__enter__()
        self.addCleanup(node.close)
        self.nodes.append(node)
        return node

    def new_tenant(self, node):
        org = node.create_org()
        key = node.create_key(org)
        echo_agent = node.import_agents(org, kpi_agent())[0]
        slow_agent = node.create_agent(org, provider="openai", model=SLOW_MODEL, prompt="slow run", parameters=[],
                                       timeout_seconds=60)
        return key, echo_agent, slow_agent


class RunsAcrossNodesTest(MultiNodeTestCase):
    def test_runs_created_on_one_node_run_on_others(self):
        # node 1 serves the API only; nodes 2 and 3 execute, at most 3 runs at a time each
        node1 = self.start_node(1, "--no-engine", "--rate-limit", "0")
        node2 = self.start_node(2, "--rate-limit", "0", "--max-runs-in-flight", "3")
        node3 = self.start_node(3, "--rate-limit", "0", "--max-runs-in-flight", "3")
        key, echo_agent, slow_agent = self.new_tenant(node1)

        runs = [(slow_agent, node1.start_run(key, slow_agent), SLOW_OUTPUT) for _ in range(12)]
        runs += [(echo_agent, node1.start_run(key, echo_agent, {"region": "EU"}), ECHO_OUTPUT) for _ in range(6)]
        for agent_id, run_id, output in runs:
            run = node1.poll_run(key, agent_id, run_id, timeout=120)
            self.assertEqual(run["status"], "succeeded", run)
            self.assertEqual(run["output"], output, run)

        on_node2, on_node3 = started_run_ids(node2), started_run_ids(node3)
        all_ids = {run_id for _, run_id, _ in runs}
        self.assertEqual(started_run_ids(node1), set())
        self.assertEqual(on_node2 | on_node3, all_ids)
        self.assertEqual(on_node2 & on_node3, set(), "a run was started by both engines")
        self.assertTrue(on_node2, "node 2 executed no run")
        self.assertTrue(on_node3, "node 3 executed no run")

    def test_killed_node_runs_finished_by_others(self):
        # each node executes at most 4 runs at once, so all three get some
        node_args = ["--rate-limit", "0", "--lease-seconds", "3", "--max-runs-in-flight", "4"]
        node1 = self.start_node(1, *node_args)
        node2 = self.start_node(2, *node_args)
        node3 = self.start_node(3, *node_args)
        key, _, slow_agent = self.new_tenant(node1)

        runs = [node1.start_run(key, slow_agent) for _ in range(24)]
        wait_until(lambda: started_run_ids(node2), 60, "node 2 running some of the runs")
        node2.kill9()
        cut_off = started_run_ids(node2) - logged_run_ids(node2, "succeeded")
        self.assertTrue(cut_off, "node 2 finished its runs before the kill")

        for run_id in runs:
            run = node3.poll_run(key, slow_agent, run_id, timeout=120)
            self.assertEqual(run["status"], "succeeded", run)
            self.assertEqual(run["output"], SLOW_OUTPUT, run)
        # each run cut off on node 2 was started again by node 1 or node 3
        taken_over = started_run_ids(node1) | started_run_ids(node3)
        self.assertEqual(cut_off - taken_over, set())


class KeysAcrossNodesTest(MultiNodeTestCase):
    def test_revoked_key_rejected_by_every_node_at_once(self):
        node1 = self.start_node(1, "--no-engine")
        node2 = self.start_node(2, "--no-engine")
        node3 = self.start_node(3, "--no-engine")
        key, _, _ = self.new_tenant(node1)
        for node in (node1, node2, node3):
            self.assertEqual(node.list_agents(key).status, 200)

        # the admin command runs against node 3's database, as an operator on that box would
        node3.admin("key", "revoke", key)
        for node in (node1, node2, node3):
            self.assertError(node.list_agents(key), 401, "invalid_api_key")

    def test_regenerated_key_replaced_on_every_node(self):
        node1 = self.start_node(1, "--no-engine")
        node2 = self.start_node(2, "--no-engine")
        key, _, _ = self.new_tenant(node1)
        self.assertEqual(node1.list_agents(key).status, 200)
        self.assertEqual(node2.list_agents(key).status, 200)

        new_key = node2.admin("key", "regenerate", key)[0]
        self.assertError(node1.list_agents(key), 401, "invalid_api_key")
        self.assertEqual(node1.list_agents(new_key).status, 200)
        self.assertEqual(node2.list_agents(new_key).status, 200)

    def test_agent_published_on_one_node_listed_by_another(self):
        node1 = self.start_node(1, "--no-engine")
        node2 = self.start_node(2, "--no-engine")
        key, echo_agent, slow_agent = self.new_tenant(node1)
        self.assertEqual([a["id"] for a in node2.list_agents(key).json["agents"]], [echo_agent, slow_agent])
        node1.admin("agent", "unpublish", str(echo_agent))
        self.assertEqual([a["id"] for a in node2.list_agents(key).json["agents"]], [slow_agent])


class RateLimitAcrossNodesTest(MultiNodeTestCase):
    RATE_PER_MIN = 600
    WINDOW_S = 10.0
    CLIENTS_PER_NODE = 3

    def hammer(self, node, key, stop_at, counts, lock):
        """Send GET /agents on one keep-alive connection until stop_at; count replies by status."""
        local = {}
        connection = http.client.HTTPConnection(node.host, node.port, timeout=30)
        try:
            while time.monotonic() < stop_at:
                connection.request("GET", "/api/v1/agents?limit=1", headers={"x-api-key": key})
                reply = connection.getresponse()
                reply.read()
                local[reply.status] = local.get(reply.status, 0) + 1
        finally:
            connection.close()
            with lock:
                for status, n in local.items():
                    counts[status] = counts.get(status, 0) + n

    def test_key_limit_holds_across_three_nodes(self):
        args = ["--no-engine", "--rate-limit", str(self.RATE_PER_MIN)]
        nodes = [self.start_node(i, *args) for i in (1, 2, 3)]
        key, _, _ = self.new_tenant(nodes[0])

        counts, lock = {}, threading.Lock()
        started = time.monotonic()
        stop_at = started + self.WINDOW_S
        threads = [threading.Thread(target=self.hammer, args=(node, key, stop_at, counts, lock))
                   for node in nodes for _ in range(self.CLIENTS_PER_NODE)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        elapsed = time.monotonic() - started

        # every token the bucket held or earned while the load lasted is spent,
        # and not one more: the burst plus the rate over the window
        expected = self.RATE_PER_MIN + self.RATE_PER_MIN / 60.0 * elapsed
        accepted = counts.get(200, 0)
        self.assertEqual(set(counts) - {200, 429}, set(), counts)
        self.assertGreater(counts.get(429, 0), accepted, "the load did not exceed the limit: %s" % counts)
        self.assertLessEqual(abs(accepted - expected), expected * 0.01,
                             "accepted %d in %.2f s, expected %.1f within 1%% (%s)"
                             % (accepted, elapsed, expected, counts))


class InFlightCapAcrossNodesTest(MultiNodeTestCase):
    def test_run_cap_holds_across_nodes(self):
        args = ["--no-engine", "--rate-limit", "0", "--max-runs-per-key", "10"]
        nodes = [self.start_node(i, *args) for i in (1, 2, 3)]
        key, echo_agent, _ = self.new_tenant(nodes[0])
        statuses = []
        lock = threading.Lock()

        def create(node):
            for _ in range(8):
                response = node.create_run(key, echo_agent, {"region": "EU"})
                with lock:
                    statuses.append(response.status)

        threads = [threading.Thread(target=create, args=(node,)) for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(statuses.count(202), 10, statuses)
        self.assertEqual(statuses.count(429), 14, statuses)


@unittest.skipUnless(pg_mode(), "database restart tests need PostgreSQL: set PUSHAI_E2E_PG_URL")
class DatabaseRestartTest(MultiNodeTestCase):
    def restart_database(self, down_s=1.0):
        pg_cluster("halt")
        try:
            time.sleep(down_s)
        finally:
            pg_cluster("resume")

    def test_readyz_follows_database(self):
        node = self.start_node(1)
        self.assertEqual(node.request("GET", "/readyz").status, 200)
        pg_cluster("halt")
        try:
            response = node.request("GET", "/readyz")
            self.assertEqual(response.status, 503, response.describe())
            self.assertEqual(node.request("GET", "/healthz").status, 200)
        finally:
            pg_cluster("resume")
        wait_until(lambda: node.request("GET", "/readyz").status == 200, 30, "/readyz back to 200")

    def test_database_restart_loses_no_accepted_run(self):
        node1 = self.start_node(1, "--rate-limit", "0")
        node2 = self.start_node(2, "--rate-limit", "0", "--no-engine")
        key, echo_agent, slow_agent = self.new_tenant(node1)
        runs = [(slow_agent, node2.start_run(key, slow_agent), SLOW_OUTPUT) for _ in range(10)]
        runs += [(echo_agent, node2.start_run(key, echo_agent, {"region": "EU"}), ECHO_OUTPUT) for _ in range(10)]
        wait_until(lambda: self.mock.stats()["in_flight"] >= 1, 60, "a slow run in flight")

        self.restart_database()

        # the nodes keep serving once the database is back, and every run that
        # got its 202 before the restart finishes
        wait_until(lambda: node2.request("GET", "/readyz").status == 200, 30, "node 2 ready again")
        runs += [(echo_agent, node2.start_run(key, echo_agent, {"region": "EU"}), ECHO_OUTPUT) for _ in range(5)]
        for agent_id, run_id, output in runs:
            run = node2.poll_run(key, agent_id, run_id, timeout=120)
            self.assertEqual(run["status"], "succeeded", run)
            self.assertEqual(run["output"], output, run)


if __name__ == "__main__":
    unittest.main()
