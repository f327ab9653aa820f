"""Routing, the error envelope, request ids and the health endpoints."""

import unittest
import uuid

from harness import ServerTestCase, kpi_agent


class RoutingTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)
        cls.agent_id = cls.server.import_agents(cls.org, kpi_agent())[0]
        cls.runs_path = "/api/v1/agents/%d/runs" % cls.agent_id
        cls.run_path = "%s/%s" % (cls.runs_path, uuid.uuid4())

    def test_unknown_routes_not_found(self):
        paths = [
            "/api/v1/nope",
            "/api/v1/agent",
            "/api/v1/agents/%d/nope" % self.agent_id,
            "/api/v1/agents/%d/runs/%s/extra/path" % (self.agent_id, uuid.uuid4()),
            "/api/v2/agents",
        ]
        for path in paths:
            with self.subTest(path=path):
                self.assertError(self.server.request("GET", path, key=self.key), 404, "not_found")

    def test_unknown_route_post_not_found(self):
        response = self.server.request("POST", "/api/v1/nope", key=self.key, body={})
        self.assertError(response, 404, "not_found")

    def assert_method_not_allowed(self, method, path, allowed):
        response = self.server.request(method, path, key=self.key)
        self.assertError(response, 405, "method_not_allowed")
        self.assertIn("allow", response.headers, response.describe())
        methods = {m.strip().upper() for m in response.headers["allow"].split(",")}
        self.assertIn(allowed, methods, response.describe())
        self.assertNotIn(method, methods, response.describe())

    def test_agents_method_not_allowed(self):
        for method in ("PUT", "DELETE", "PATCH"):
            with self.subTest(method=method):
                self.assert_method_not_allowed(method, "/api/v1/agents", "GET")

    def test_runs_method_not_allowed(self):
        for method in ("PUT", "PATCH"):
            with self.subTest(method=method):
                self.assert_method_not_allowed(method, self.runs_path, "POST")

    def test_run_method_not_allowed(self):
        for method in ("PUT", "PATCH"):
            with self.subTest(method=method):
                self.assert_method_not_allowed(method, self.run_path, "GET")

    def test_request_ids_unique(self):
        ids = set()
        for _ in range(5):
            response = self.server.request("GET", "/api/v1/nope", key=self.key)
            self.assertError(response, 404, "not_found")
            ids.add(response.json["error"]["request_id"])
        self.assertEqual(len(ids), 5)

    def test_request_id_on_success(self):
        responses = {
            "list": self.server.list_agents(self.key),
            "dry run": self.server.create_run(self.key, self.agent_id, {"region": "EU"}, dry_run="true"),
            "create": self.server.create_run(self.key, self.agent_id, {"region": "EU"}),
            "healthz": self.server.request("GET", "/healthz"),
        }
        for name, response in responses.items():
            with self.subTest(route=name):
                self.assertLess(response.status, 300, response.describe())
                self.assertTrue(response.headers.get("x-request-id"), response.describe())
        ids = {response.headers["x-request-id"] for response in responses.values()}
        self.assertEqual(len(ids), len(responses))

    def test_success_content_type_json(self):
        response = self.server.list_agents(self.key)
        self.assertEqual(response.headers["content-type"].split(";")[0].strip(), "application/json")

    def test_healthz_without_key(self):
        response = self.server.request("GET", "/healthz")
        self.assertEqual(response.status, 200, response.describe())

    def test_readyz_without_key(self):
        response = self.server.request("GET", "/readyz")
        self.assertEqual(response.status, 200, response.describe())

    def test_query_string_ignored_by_router(self):
        response = self.server.request("GET", "/api/v1/agents?", key=self.key)
        self.assertEqual(response.status, 200, response.describe())


if __name__ == "__main__":
    unittest.main()
