"""GET /api/v1/agents: fields, visibility, ordering and pagination."""

import unittest

from harness import ServerTestCase, agent_definition, kpi_agent


class AgentsListTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)
        # Published and unpublished agents interleaved, so ordering and
        # filtering are both visible in the ids.
        agents = []
        for index in range(7):
            agents.append(agent_definition(name="Agent %d" % index, published=index not in (1, 4)))
        agents[0] = kpi_agent()
        cls.ids = cls.server.import_agents(cls.org, agents)
        cls.published_ids = [agent_id for index, agent_id in enumerate(cls.ids) if index not in (1, 4)]

        cls.other_org = cls.server.create_org()
        cls.other_key = cls.server.create_key(cls.other_org)
        cls.other_ids = cls.server.import_agents(cls.other_org, [agent_definition(name="Other")] * 2)

    def list_ids(self, **query):
        response = self.server.list_agents(self.key, **query)
        self.assertEqual(response.status, 200, response.describe())
        return [agent["id"] for agent in response.json["agents"]]

    def test_import_ids_increase(self):
        self.assertEqual(self.ids, sorted(self.ids))
        self.assertEqual(len(set(self.ids)), len(self.ids))

    def test_only_published_ordered_by_id(self):
        response = self.server.list_agents(self.key)
        self.assertEqual(response.status, 200, response.describe())
        self.assertEqual([agent["id"] for agent in response.json["agents"]], self.published_ids)
        self.assertEqual(response.json["pagination"],
                         {"total": len(self.published_ids), "limit": 20, "offset": 0})

    def test_other_org_not_listed(self):
        ids = self.list_ids()
        for agent_id in self.other_ids:
            self.assertNotIn(agent_id, ids)
        response = self.server.list_agents(self.other_key)
        self.assertEqual([agent["id"] for agent in response.json["agents"]], self.other_ids)

    def test_agent_fields(self):
        response = self.server.list_agents(self.key, limit=1)
        agent = response.json["agents"][0]
        self.assertEqual(agent["id"], self.ids[0])
        self.assertEqual(agent["name"], "Weekly KPI summary")
        self.assertEqual(agent["description"], "KPIs for one region")
        self.assertEqual(agent["parameters"], [
            {"name": "region", "required": True, "description": "Sales region",
             "options": ["US", "EU", "APAC"], "default": None},
            {"name": "week", "required": False, "description": "ISO week",
             "options": None, "default": "last"},
        ])

    def test_agent_fields_types(self):
        response = self.server.list_agents(self.key)
        for agent in response.json["agents"]:
            with self.subTest(agent=agent.get("id")):
                self.assertIsInstance(agent["id"], int)
                self.assertIsInstance(agent["name"], str)
                self.assertIn("description", agent)
                self.assertIsInstance(agent["parameters"], list)
                for parameter in agent["parameters"]:
                    self.assertIsInstance(parameter["required"], bool)

    def test_limit_one(self):
        response = self.server.list_agents(self.key, limit=1)
        self.assertEqual([a["id"] for a in response.json["agents"]], self.published_ids[:1])
        self.assertEqual(response.json["pagination"],
                         {"total": len(self.published_ids), "limit": 1, "offset": 0})

    def test_limit_hundred(self):
        response = self.server.list_agents(self.key, limit=100)
        self.assertEqual([a["id"] for a in response.json["agents"]], self.published_ids)
        self.assertEqual(response.json["pagination"]["limit"], 100)

    def test_offset_pages_in_order(self):
        seen = []
        for offset in range(0, len(self.published_ids), 2):
            response = self.server.list_agents(self.key, limit=2, offset=offset)
            self.assertEqual(response.json["pagination"],
                             {"total": len(self.published_ids), "limit": 2, "offset": offset})
            seen += [a["id"] for a in response.json["agents"]]
        self.assertEqual(seen, self.published_ids)

    def test_offset_past_end(self):
        for offset in (len(self.published_ids), 1000):
            with self.subTest(offset=offset):
                response = self.server.list_agents(self.key, offset=offset)
                self.assertEqual(response.status, 200, response.describe())
                self.assertEqual(response.json["agents"], [])
                self.assertEqual(response.json["pagination"],
                                 {"total": len(self.published_ids), "limit": 20, "offset": offset})

    def test_bad_limit_rejected(self):
        for value in ("0", "101", "-1", "abc", "1.5", "", "1e1", "10abc"):
            with self.subTest(limit=value):
                response = self.server.request("GET", "/api/v1/agents", key=self.key, query="limit=" + value)
                self.assertError(response, 400, "invalid_request", message_contains=["limit"])

    def test_bad_offset_rejected(self):
        for value in ("-1", "abc", "1.5", "", "1e1", "10abc"):
            with self.subTest(offset=value):
                response = self.server.request("GET", "/api/v1/agents", key=self.key, query="offset=" + value)
                self.assertError(response, 400, "invalid_request", message_contains=["offset"])

    def test_default_limit_twenty(self):
        org = self.server.create_org()
        key = self.server.create_key(org)
        ids = self.server.import_agents(org, [agent_definition(name="Bulk %d" % i) for i in range(25)])
        response = self.server.list_agents(key)
        self.assertEqual([a["id"] for a in response.json["agents"]], ids[:20])
        self.assertEqual(response.json["pagination"], {"total": 25, "limit": 20, "offset": 0})
        response = self.server.list_agents(key, offset=20)
        self.assertEqual([a["id"] for a in response.json["agents"]], ids[20:])

    def test_publish_changes_list_at_once(self):
        org = self.server.create_org()
        key = self.server.create_key(org)
        agent_id = self.server.import_agents(org, agent_definition(published=False))[0]
        self.assertEqual(self.server.list_agents(key).json["agents"], [])
        self.server.admin("agent", "publish", agent_id)
        self.assertEqual([a["id"] for a in self.server.list_agents(key).json["agents"]], [agent_id])
        self.server.admin("agent", "unpublish", agent_id)
        response = self.server.list_agents(key)
        self.assertEqual(response.json["agents"], [])
        self.assertEqual(response.json["pagination"]["total"], 0)

    def test_import_appears_at_once(self):
        org = self.server.create_org()
        key = self.server.create_key(org)
        first = self.server.import_agents(org, agent_definition())[0]
        self.assertEqual([a["id"] for a in self.server.list_agents(key).json["agents"]], [first])
        second = self.server.import_agents(org, agent_definition())[0]
        self.assertEqual([a["id"] for a in self.server.list_agents(key).json["agents"]], [first, second])

    def test_empty_org(self):
        org = self.server.create_org()
        key = self.server.create_key(org)
        response = self.server.list_agents(key)
        self.assertEqual(response.status, 200, response.describe())
        self.assertEqual(response.json, {"agents": [], "pagination": {"total": 0, "limit": 20, "offset": 0}})


if __name__ == "__main__":
    unittest.main()
