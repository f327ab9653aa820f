"""API key authentication: missing, unknown, malformed, revoked and regenerated keys."""

import unittest
import uuid

from harness import API_KEY_RE, ServerTestCase, kpi_agent


class AuthTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)
        cls.agent_id = cls.server.import_agents(cls.org, kpi_agent())[0]
        cls.run_path = "/api/v1/agents/%d/runs/%s" % (cls.agent_id, uuid.uuid4())

    def routes(self):
        return [
            ("GET", "/api/v1/agents"),
            ("POST", "/api/v1/agents/%d/runs" % self.agent_id),
            ("GET", self.run_path),
        ]

    def assert_key_accepted(self, key):
        response = self.server.list_agents(key)
        self.assertEqual(response.status, 200, response.describe())

    def assert_key_rejected(self, key):
        self.assertError(self.server.list_agents(key), 401, "invalid_api_key")

    def test_missing_key_every_route(self):
        for method, path in self.routes():
            with self.subTest(method=method, path=path):
                body = {} if method == "POST" else None
                response = self.server.request(method, path, body=body)
                self.assertError(response, 401, "missing_api_key")

    def test_empty_key_is_missing(self):
        self.assertError(self.server.list_agents(""), 401, "missing_api_key")

    def test_bearer_header_is_not_a_key(self):
        response = self.server.request("GET", "/api/v1/agents",
                                       headers={"Authorization": "Bearer " + self.key})
        self.assertError(response, 401, "missing_api_key")

    def test_valid_key_accepted(self):
        self.assert_key_accepted(self.key)

    def test_header_name_case_insensitive(self):
        for name in ("X-API-KEY", "X-Api-Key", "x-Api-kEY"):
            with self.subTest(header=name):
                response = self.server.request("GET", "/api/v1/agents", headers={name: self.key})
                self.assertEqual(response.status, 200, response.describe())

    def test_whitespace_around_key_ignored(self):
        # spaces and tabs around a header value are not part of it (RFC 9110)
        for raw_value in (self.key + " ", self.key + "\t", " " + self.key + " \t"):
            with self.subTest(value=repr(raw_value)):
                request = ("GET /api/v1/agents HTTP/1.1\r\nHost: test\r\nx-api-key: %s\r\n"
                           "Connection: close\r\n\r\n" % raw_value).encode()
                response = self.server.raw(request)
                self.assertEqual(response.status, 200, response.describe())

    def test_unknown_key(self):
        self.assert_key_rejected("pai_abcdefghijkl_" + "A1b2C3d4" * 4)

    def test_malformed_keys(self):
        key_id, secret = API_KEY_RE.match(self.key).groups()
        malformed = [
            "x",
            "pai_",
            "pai__",
            "pai_%s_" % key_id,
            "pai_%s" % key_id,
            "pai_%s_%s" % (key_id, secret[:-1]),
            self.key + "x",
            self.key + "_" + secret,
            "pak_%s_%s" % (key_id, secret),
            "PAI_%s_%s" % (key_id, secret),
            "pai_%s_%s" % (key_id.upper(), secret),
            "pai_%s_%s" % (key_id, secret.swapcase()),
            "%s_%s" % (key_id, secret),
            "pai_%s_%s" % (key_id, "%" * 32),
            "pai_../../%s_%s" % (key_id, secret),
            "Bearer " + self.key,
        ]
        for candidate in malformed:
            if candidate == self.key:
                continue
            with self.subTest(key=candidate):
                self.assert_key_rejected(candidate)

    def test_wrong_secret_for_real_key_id(self):
        key_id, secret = API_KEY_RE.match(self.key).groups()
        wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        self.assert_key_rejected("pai_%s_%s" % (key_id, wrong))

    def test_other_keys_secret_rejected(self):
        other = self.server.create_key(self.org)
        key_id = API_KEY_RE.match(self.key).group(1)
        other_secret = API_KEY_RE.match(other).group(2)
        self.assert_key_rejected("pai_%s_%s" % (key_id, other_secret))

    def test_revoked_key_rejected_at_once(self):
        key = self.server.create_key(self.org)
        self.assert_key_accepted(key)
        self.server.admin("key", "revoke", API_KEY_RE.match(key).group(1))
        self.assert_key_rejected(key)

    def test_revoke_by_full_key(self):
        key = self.server.create_key(self.org)
        self.assert_key_accepted(key)
        self.server.admin("key", "revoke", key)
        self.assert_key_rejected(key)

    def test_revoke_leaves_other_keys(self):
        active_key = self.server.create_key(self.org)
        revoked = self.server.create_key(self.org)
        self.server.admin("key", "revoke", revoked)
        self.assert_key_accepted(active_key)

    def test_regenerated_key_replaces_old(self):
        old = self.server.create_key(self.org)
        self.assert_key_accepted(old)
        lines = self.server.admin("key", "regenerate", API_KEY_RE.match(old).group(1))
        self.assertEqual(len(lines), 1, lines)
        new = lines[0]
        self.assertRegex(new, API_KEY_RE)
        self.assertEqual(API_KEY_RE.match(new).group(1), API_KEY_RE.match(old).group(1))
        self.assertNotEqual(new, old)
        self.assert_key_rejected(old)
        self.assert_key_accepted(new)

    def test_regenerate_by_full_key(self):
        old = self.server.create_key(self.org)
        new = self.server.admin("key", "regenerate", old)[0]
        self.assert_key_rejected(old)
        self.assert_key_accepted(new)

    def test_missing_key_before_agent_lookup(self):
        response = self.server.request("POST", "/api/v1/agents/999999/runs", body={})
        self.assertError(response, 401, "missing_api_key")

    def test_invalid_key_before_body_validation(self):
        response = self.server.request("POST", "/api/v1/agents/%d/runs" % self.agent_id,
                                       key="pai_nope", body=b"{not json",
                                       headers={"Content-Type": "application/json"})
        self.assertError(response, 401, "invalid_api_key")

    def test_invalid_key_every_route(self):
        for method, path in self.routes():
            with self.subTest(method=method, path=path):
                body = {} if method == "POST" else None
                response = self.server.request(method, path, key="pai_abcdefghijkl_" + "0" * 32, body=body)
                self.assertError(response, 401, "invalid_api_key")

    def test_error_does_not_echo_key(self):
        candidate = "pai_abcdefghijkl_" + "Zq9" * 10 + "xy"
        response = self.server.list_agents(candidate)
        self.assertError(response, 401, "invalid_api_key")
        self.assertNotIn(candidate[17:], response.body.decode())


if __name__ == "__main__":
    unittest.main()
