"""Run lifecycle with the echo provider, run lookup, organization isolation and idempotency keys."""

import datetime
import re
import unittest
import urllib.parse
import uuid

from harness import RFC3339_MS_RE, UUID_V4_RE, ServerTestCase, kpi_agent, parse_timestamp

RUN_FIELDS = {"run_id", "agent_id", "status", "created_at", "started_at", "completed_at",
              "output", "error", "usage"}


class RunLifecycleTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)
        cls.agent_id = cls.server.import_agents(cls.org, kpi_agent())[0]
        cls.bindings = {"region": "EU"}
        cls.expected_output = "Summarize the KPIs for EU in week last."

    def test_create_returns_202_pending(self):
        response = self.server.create_run(self.key, self.agent_id, self.bindings)
        self.assertEqual(response.status, 202, response.describe())
        self.assertEqual(response.json["status"], "pending")
        self.assertRegex(response.json["run_id"], UUID_V4_RE)

    def test_location_header_names_run(self):
        response = self.server.create_run(self.key, self.agent_id, self.bindings)
        run_id = response.json["run_id"]
        location = response.headers.get("location")
        self.assertIsNotNone(location, response.describe())
        path = urllib.parse.urlsplit(location).path
        self.assertEqual(path, "/api/v1/agents/%d/runs/%s" % (self.agent_id, run_id))
        followed = self.server.request("GET", path, key=self.key)
        self.assertEqual(followed.status, 200, followed.describe())
        self.assertEqual(followed.json["run_id"], run_id)

    def test_run_ids_unique(self):
        ids = {self.server.start_run(self.key, self.agent_id, self.bindings) for _ in range(20)}
        self.assertEqual(len(ids), 20)

    def test_echo_run_succeeds(self):
        run_id = self.server.start_run(self.key, self.agent_id, self.bindings)
        run = self.server.poll_run(self.key, self.agent_id, run_id)
        self.assertEqual(set(run.keys()) & RUN_FIELDS, RUN_FIELDS)
        self.assertEqual(run["run_id"], run_id)
        self.assertEqual(run["agent_id"], self.agent_id)
        self.assertEqual(run["status"], "succeeded")
        self.assertEqual(run["output"], self.expected_output)
        self.assertIsNone(run["error"])
        self.assertIsNone(run["usage"])

    def test_first_get_shows_stored_run(self):
        run_id = self.server.start_run(self.key, self.agent_id, self.bindings)
        response = self.server.get_run(self.key, self.agent_id, run_id)
        self.assertEqual(response.status, 200, response.describe())
        self.assertIn(response.json["status"], ("pending", "running", "succeeded"))
        self.assertRegex(response.json["created_at"], RFC3339_MS_RE)

    def test_timestamps_rfc3339_ordered(self):
        before = datetime.datetime.now(datetime.timezone.utc)
        run = self.server.run_to_end(self.key, self.agent_id, self.bindings)
        for field in ("created_at", "started_at", "completed_at"):
            self.assertRegex(run[field], RFC3339_MS_RE, field)
        created = parse_timestamp(run["created_at"])
        started = parse_timestamp(run["started_at"])
        completed = parse_timestamp(run["completed_at"])
        self.assertLessEqual(created, started)
        self.assertLessEqual(started, completed)
        # Same machine, same clock: the run was created during this test.
        margin = datetime.timedelta(minutes=5)
        self.assertLess(abs(created - before), margin)

    def test_uppercase_run_id_found(self):
        run_id = self.server.start_run(self.key, self.agent_id, self.bindings)
        response = self.server.get_run(self.key, self.agent_id, run_id.upper())
        self.assertEqual(response.status, 200, response.describe())
        self.assertEqual(response.json["run_id"], run_id)

    def test_finished_run_stays_same(self):
        run = self.server.run_to_end(self.key, self.agent_id, self.bindings)
        again = self.server.get_run(self.key, self.agent_id, run["run_id"]).json
        self.assertEqual(again, run)


class RunNotFoundTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)
        cls.agent_id = cls.server.create_agent(cls.org)
        cls.second_agent_id = cls.server.create_agent(cls.org)
        cls.run_id = cls.server.start_run(cls.key, cls.agent_id)

        cls.other_org = cls.server.create_org()
        cls.other_key = cls.server.create_key(cls.other_org)
        cls.other_agent_id = cls.server.create_agent(cls.other_org)
        cls.other_run_id = cls.server.start_run(cls.other_key, cls.other_agent_id)

    def test_unknown_uuid(self):
        response = self.server.get_run(self.key, self.agent_id, uuid.uuid4())
        self.assertError(response, 404, "run_not_found")

    def test_not_a_uuid(self):
        for run_id in ("abc", "1", self.run_id.replace("-", ""), self.run_id + "0", self.run_id[:-1],
                       "{%s}" % self.run_id, "zzzzzzzz-zzzz-4zzz-8zzz-zzzzzzzzzzzz", "%20" + self.run_id):
            with self.subTest(run_id=run_id):
                response = self.server.get_run(self.key, self.agent_id, run_id)
                self.assertError(response, 404, "run_not_found")

    def test_run_of_other_agent(self):
        response = self.server.get_run(self.key, self.second_agent_id, self.run_id)
        self.assertError(response, 404, "run_not_found")

    def test_run_of_other_org(self):
        response = self.server.get_run(self.key, self.agent_id, self.other_run_id)
        self.assertError(response, 404, "run_not_found")

    def test_other_org_run_same_reply_as_unknown(self):
        unknown_id = str(uuid.uuid4())
        unknown = self.server.get_run(self.key, self.agent_id, unknown_id)
        other = self.server.get_run(self.key, self.agent_id, self.other_run_id)
        self.assertError(unknown, 404, "run_not_found")
        self.assertError(other, 404, "run_not_found")
        self.assertEqual(unknown.json["error"]["message"].replace(unknown_id, "ID"),
                         other.json["error"]["message"].replace(self.other_run_id, "ID"))

    def test_own_run_found(self):
        response = self.server.get_run(self.key, self.agent_id, self.run_id)
        self.assertEqual(response.status, 200, response.describe())


class OrgIsolationTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org_a = cls.server.create_org()
        cls.key_a = cls.server.create_key(cls.org_a)
        cls.agent_a = cls.server.create_agent(cls.org_a)
        cls.run_a = cls.server.start_run(cls.key_a, cls.agent_a)
        cls.org_b = cls.server.create_org()
        cls.key_b = cls.server.create_key(cls.org_b)
        cls.agent_b = cls.server.create_agent(cls.org_b)

    def test_other_org_agent_not_found(self):
        response = self.server.create_run(self.key_b, self.agent_a, body={})
        self.assertError(response, 404, "agent_not_found")
        unknown = self.server.create_run(self.key_b, 999999, body={})
        self.assertEqual(re.sub(r"\d+", "N", response.json["error"]["message"]),
                         re.sub(r"\d+", "N", unknown.json["error"]["message"]))

    def test_other_org_dry_run_not_found(self):
        response = self.server.create_run(self.key_b, self.agent_a, body={}, dry_run="true")
        self.assertError(response, 404, "agent_not_found")

    def test_other_org_run_via_its_agent(self):
        response = self.server.get_run(self.key_b, self.agent_a, self.run_a)
        self.assertEqual(response.status, 404, response.describe())
        self.assertIn(response.error_code, ("agent_not_found", "run_not_found"))

    def test_other_org_run_via_own_agent(self):
        response = self.server.get_run(self.key_b, self.agent_b, self.run_a)
        self.assertError(response, 404, "run_not_found")

    def test_owner_still_sees_run(self):
        response = self.server.get_run(self.key_a, self.agent_a, self.run_a)
        self.assertEqual(response.status, 200, response.describe())

    def test_other_org_agents_not_listed(self):
        ids = [agent["id"] for agent in self.server.list_agents(self.key_b).json["agents"]]
        self.assertEqual(ids, [self.agent_b])


class IdempotencyTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)
        cls.agent_id = cls.server.import_agents(cls.org, kpi_agent())[0]

    def create(self, idempotency_key, region="EU", key=None):
        return self.server.create_run(key or self.key, self.agent_id, {"region": region},
                                      headers={"Idempotency-Key": idempotency_key})

    def test_replay_returns_same_run(self):
        idempotency_key = str(uuid.uuid4())
        first = self.create(idempotency_key)
        second = self.create(idempotency_key)
        self.assertEqual(first.status, 202, first.describe())
        self.assertEqual(second.status, 202, second.describe())
        self.assertEqual(second.json["run_id"], first.json["run_id"])

    def test_replay_after_run_finished(self):
        idempotency_key = str(uuid.uuid4())
        run_id = self.create(idempotency_key).json["run_id"]
        self.server.poll_run(self.key, self.agent_id, run_id)
        replay = self.create(idempotency_key)
        self.assertEqual(replay.status, 202, replay.describe())
        self.assertEqual(replay.json["run_id"], run_id)

    def test_different_body_conflicts(self):
        idempotency_key = str(uuid.uuid4())
        self.assertEqual(self.create(idempotency_key, "EU").status, 202)
        self.assertError(self.create(idempotency_key, "US"), 409, "idempotency_key_reused")

    def test_keys_scoped_per_api_key(self):
        idempotency_key = str(uuid.uuid4())
        other_key = self.server.create_key(self.org)
        first = self.create(idempotency_key)
        second = self.create(idempotency_key, key=other_key)
        self.assertEqual(second.status, 202, second.describe())
        self.assertNotEqual(second.json["run_id"], first.json["run_id"])

    def test_without_header_runs_differ(self):
        first = self.server.create_run(self.key, self.agent_id, {"region": "EU"})
        second = self.server.create_run(self.key, self.agent_id, {"region": "EU"})
        self.assertNotEqual(first.json["run_id"], second.json["run_id"])

    def test_distinct_keys_distinct_runs(self):
        first = self.create(str(uuid.uuid4()))
        second = self.create(str(uuid.uuid4()))
        self.assertNotEqual(first.json["run_id"], second.json["run_id"])


if __name__ == "__main__":
    unittest.main()
