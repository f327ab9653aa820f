"""POST /api/v1/agents/{id}/runs: body and query validation, its order, and agent_not_found."""

import re
import unittest

from harness import ServerTestCase, agent_definition, kpi_agent

JSON = {"Content-Type": "application/json"}


class RunValidationTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)
        cls.kpi_id = cls.server.import_agents(cls.org, kpi_agent())[0]
        cls.optional_id = cls.server.create_agent(cls.org)
        cls.two_required_id = cls.server.create_agent(
            cls.org,
            parameters=[
                {"name": "region", "required": True, "description": "Region", "options": ["US", "EU"]},
                {"name": "quarter", "required": True, "description": "Quarter"},
            ],
            prompt="{{region}} {{quarter}}")
        cls.unpublished_id = cls.server.import_agents(cls.org, agent_definition(published=False))[0]
        other_org = cls.server.create_org()
        cls.other_org_agent_id = cls.server.create_agent(other_org)

    def post_raw(self, agent_id, body, headers=JSON, query=None):
        return self.server.request("POST", "/api/v1/agents/%s/runs" % agent_id, key=self.key,
                                   body=body, headers=headers, query=query)

    def dry_run(self, agent_id, body):
        return self.server.create_run(self.key, agent_id, body=body, dry_run="true")

    # ---- accepted bodies ----

    def test_no_body_accepted(self):
        response = self.server.request("POST", "/api/v1/agents/%d/runs" % self.optional_id,
                                       key=self.key, query={"dry_run": "true"})
        self.assertEqual(response.status, 200, response.describe())

    def test_empty_object_accepted(self):
        self.assertEqual(self.dry_run(self.optional_id, {}).status, 200)

    def test_null_bindings_accepted(self):
        response = self.dry_run(self.optional_id, {"parameter_bindings": None})
        self.assertEqual(response.status, 200, response.describe())

    def test_empty_bindings_accepted(self):
        response = self.dry_run(self.optional_id, {"parameter_bindings": []})
        self.assertEqual(response.status, 200, response.describe())

    def test_json_charset_accepted(self):
        response = self.post_raw(self.optional_id, b"{}", headers={"Content-Type": "application/json; charset=utf-8"},
                                 query={"dry_run": "true"})
        self.assertEqual(response.status, 200, response.describe())

    def test_media_type_case_insensitive(self):
        response = self.post_raw(self.optional_id, b"{}", headers={"Content-Type": "Application/JSON"},
                                 query={"dry_run": "true"})
        self.assertEqual(response.status, 200, response.describe())

    # ---- invalid_request ----

    def test_malformed_json(self):
        for body in (b"{", b"{\"parameter_bindings\": [}", b"{} {}", b"nul", b"{'a': 1}",
                     b"{\"parameter_bindings\": [{\"name\": \"region\", \"value\": \"\xff\"}]}"):
            with self.subTest(body=body):
                self.assertError(self.post_raw(self.kpi_id, body), 400, "invalid_request")

    def test_body_not_object(self):
        for body in (b"[]", b"\"text\"", b"42", b"true"):
            with self.subTest(body=body):
                self.assertError(self.post_raw(self.kpi_id, body), 400, "invalid_request")

    def test_bindings_not_array(self):
        for bindings in ({}, "region=EU", 5, True, {"region": "EU"}):
            with self.subTest(bindings=bindings):
                response = self.server.create_run(self.key, self.kpi_id, body={"parameter_bindings": bindings})
                self.assertError(response, 400, "invalid_request", message_contains=["parameter_bindings"])

    def test_binding_entry_not_object(self):
        for entry in ("region", ["region", "EU"], None, 3):
            with self.subTest(entry=entry):
                response = self.server.create_run(self.key, self.kpi_id, bindings=[entry])
                self.assertError(response, 400, "invalid_request")

    def test_binding_without_string_name(self):
        for entry in ({"value": "EU"}, {"name": 5, "value": "EU"}, {"name": None, "value": "EU"},
                      {"name": ["region"], "value": "EU"}):
            with self.subTest(entry=entry):
                response = self.server.create_run(self.key, self.kpi_id, bindings=[entry])
                self.assertError(response, 400, "invalid_request", message_contains=["name"])

    def test_binding_value_not_string(self):
        for value in (5, None, True, ["EU"], {"v": "EU"}, 1.5):
            with self.subTest(value=value):
                response = self.server.create_run(self.key, self.kpi_id,
                                                   bindings=[{"name": "region", "value": value}])
                self.assertError(response, 400, "invalid_request", message_contains=["region"])

    def test_duplicate_binding(self):
        response = self.server.create_run(self.key, self.kpi_id, bindings=[
            {"name": "region", "value": "EU"}, {"name": "region", "value": "EU"}])
        self.assertError(response, 400, "invalid_request", message_contains=["region"])

    def test_bad_dry_run_values(self):
        for value in ("maybe", "", "1", "yes", "true1"):
            with self.subTest(dry_run=value):
                response = self.post_raw(self.optional_id, b"{}", query="dry_run=" + value)
                self.assertError(response, 400, "invalid_request", message_contains=["dry_run"])

    # ---- unknown_parameter, invalid_parameter_value, missing_parameter ----

    def test_unknown_parameter(self):
        response = self.server.create_run(self.key, self.kpi_id, {"region": "EU", "nope": "x"})
        self.assertError(response, 400, "unknown_parameter", message_contains=["nope"])

    def test_parameter_names_case_sensitive(self):
        response = self.server.create_run(self.key, self.kpi_id, {"Region": "EU"})
        self.assertError(response, 400, "unknown_parameter", message_contains=["Region"])

    def test_invalid_value_lists_options(self):
        response = self.server.create_run(self.key, self.kpi_id, {"region": "Mars"})
        self.assertError(response, 400, "invalid_parameter_value",
                         message_contains=["region", "US", "EU", "APAC"])

    def test_options_match_exactly(self):
        for value in ("eu", "EU ", " EU", "E", "EUR", ""):
            with self.subTest(value=value):
                response = self.server.create_run(self.key, self.kpi_id, {"region": value})
                self.assertError(response, 400, "invalid_parameter_value", message_contains=["region"])

    def test_missing_required(self):
        for body in (None, {}, {"parameter_bindings": None}, {"parameter_bindings": [{"name": "week", "value": "1"}]}):
            with self.subTest(body=body):
                response = self.server.request("POST", "/api/v1/agents/%d/runs" % self.kpi_id,
                                               key=self.key, body=body)
                self.assertError(response, 400, "missing_parameter", message_contains=["region"])

    # ---- validation order ----

    def test_shape_checked_before_names(self):
        response = self.server.create_run(self.key, self.kpi_id, bindings=[
            {"name": "nope", "value": "x"}, {"name": "region", "value": 5}])
        self.assertError(response, 400, "invalid_request")

    def test_duplicate_checked_before_names(self):
        response = self.server.create_run(self.key, self.kpi_id, bindings=[
            {"name": "nope", "value": "x"}, {"name": "nope", "value": "y"}])
        self.assertError(response, 400, "invalid_request")

    def test_unknown_checked_before_values(self):
        response = self.server.create_run(self.key, self.kpi_id, bindings=[
            {"name": "region", "value": "Mars"}, {"name": "nope", "value": "x"}])
        self.assertError(response, 400, "unknown_parameter", message_contains=["nope"])

    def test_unknown_checked_before_missing(self):
        response = self.server.create_run(self.key, self.kpi_id, {"nope": "x"})
        self.assertError(response, 400, "unknown_parameter", message_contains=["nope"])

    def test_values_checked_before_missing(self):
        response = self.server.create_run(self.key, self.two_required_id, {"region": "Mars"})
        self.assertError(response, 400, "invalid_parameter_value", message_contains=["region"])

    def test_missing_names_the_parameter(self):
        response = self.server.create_run(self.key, self.two_required_id, {"region": "EU"})
        self.assertError(response, 400, "missing_parameter", message_contains=["quarter"])

    def test_validation_same_for_dry_run(self):
        response = self.server.create_run(self.key, self.kpi_id, {"region": "Mars"}, dry_run="true")
        self.assertError(response, 400, "invalid_parameter_value")

    # ---- media type ----

    def test_non_json_content_type(self):
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml",
                             "multipart/form-data; boundary=x"):
            with self.subTest(content_type=content_type):
                response = self.post_raw(self.optional_id, b"{}", headers={"Content-Type": content_type})
                self.assertError(response, 415, "unsupported_media_type")

    # ---- agent_not_found ----

    def test_agent_not_found_cases(self):
        cases = {
            "unknown": "999999",
            "unpublished": str(self.unpublished_id),
            "other org": str(self.other_org_agent_id),
            "zero": "0",
            "negative": "-1",
            "letters": "abc",
            "decimal": "1.5",
            "suffix": "%dabc" % self.kpi_id,
            "exponent": "1e3",
            "huge": "99999999999999999999999",
            "leading space": "%20" + str(self.kpi_id),
        }
        for name, agent_id in cases.items():
            with self.subTest(case=name):
                response = self.server.create_run(self.key, agent_id, {"region": "EU"})
                self.assertError(response, 404, "agent_not_found")

    def test_agent_not_found_reply_does_not_leak(self):
        def normalized(agent_id):
            response = self.server.create_run(self.key, agent_id, body={})
            self.assertError(response, 404, "agent_not_found")
            return re.sub(r"\b%d\b" % agent_id, "ID", response.json["error"]["message"])

        unknown = normalized(999999)
        self.assertEqual(normalized(self.unpublished_id), unknown)
        self.assertEqual(normalized(self.other_org_agent_id), unknown)

    def test_unpublish_rejects_new_runs(self):
        agent_id = self.server.create_agent(self.org)
        self.assertEqual(self.server.create_run(self.key, agent_id, body={}).status, 202)
        self.server.admin("agent", "unpublish", agent_id)
        self.assertError(self.server.create_run(self.key, agent_id, body={}), 404, "agent_not_found")


if __name__ == "__main__":
    unittest.main()
