"""The admin command line: output for scripts, exit statuses and error messages."""

import json
import os
import re
import subprocess
import unittest

from harness import API_KEY_RE, E2ETestCase, Server, agent_definition, kpi_agent, unique_name

RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class AdminCliTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = Server(start=False)
        cls.addClassCleanup(cls.server.close)
        cls.server.__enter__()
        cls.org = cls.server.create_org()

    def assert_fails(self, *args, mentions=(), input=None):
        """Run an admin command that must fail; return its stderr."""
        result = self.server.cli("admin", *args, input=input, check=False)
        self.assertNotEqual(result.returncode, 0, "`admin %s` succeeded: %s" % (" ".join(map(str, args)),
                                                                             result.stdout))
        self.assertTrue(result.stderr.strip(), "no message on stderr for `admin %s`" % " ".join(map(str, args)))
        for fragment in mentions:
            self.assertIn(fragment.lower(), result.stderr.lower(), result.stderr)
        return result.stderr

    def agent_lines(self, org):
        return [line.split("\t") for line in self.server.admin("agent", "list", "--org", org)]

    # ---- organizations ----

    def test_org_create_prints_slug(self):
        slug = unique_name("acme")
        self.assertEqual(self.server.admin("org", "create", slug), [slug])

    def test_org_create_with_name(self):
        slug = unique_name("named")
        self.assertEqual(self.server.admin("org", "create", slug, "--name", "Named Org Inc."), [slug])

    def test_org_create_duplicate_fails(self):
        slug = self.server.create_org()
        self.assert_fails("org", "create", slug, mentions=[slug])

    # ---- keys ----

    def test_key_create_format(self):
        result = self.server.cli("admin", "key", "create", "--org", self.org)
        lines = result.stdout.splitlines()
        self.assertEqual(len(lines), 1, result.stdout)
        self.assertRegex(lines[0], API_KEY_RE)
        self.assertNotIn(API_KEY_RE.match(lines[0]).group(2), result.stderr)

    def test_keys_differ(self):
        keys = [self.server.create_key(self.org) for _ in range(5)]
        self.assertEqual(len(set(keys)), 5)
        self.assertEqual(len({API_KEY_RE.match(key).group(1) for key in keys}), 5)
        self.assertEqual(len({API_KEY_RE.match(key).group(2) for key in keys}), 5)

    def test_key_create_unknown_org_fails(self):
        self.assert_fails("key", "create", "--org", "no-such-org-x", mentions=["no-such-org-x"])

    def test_key_list_format(self):
        org = self.server.create_org()
        labelled = self.server.create_key(org, label="cron job")
        plain = self.server.create_key(org)
        self.server.admin("key", "revoke", plain)
        lines = self.server.admin("key", "list", "--org", org)
        self.assertEqual(len(lines), 2, lines)
        rows = {line.split("\t")[0]: line.split("\t") for line in lines}
        labelled_id = API_KEY_RE.match(labelled).group(1)
        plain_id = API_KEY_RE.match(plain).group(1)
        self.assertEqual(set(rows), {labelled_id, plain_id})
        self.assertEqual(len(rows[labelled_id]), 4, lines)
        self.assertEqual(rows[labelled_id][1], "active")
        self.assertRegex(rows[labelled_id][2], RFC3339_RE)
        self.assertEqual(rows[labelled_id][3], "cron job")
        self.assertEqual(rows[plain_id][1], "revoked")
        self.assertRegex(rows[plain_id][2], RFC3339_RE)
        self.assertIn(rows[plain_id][3:], ([], [""]))

    def test_key_list_shows_no_secret(self):
        org = self.server.create_org()
        key = self.server.create_key(org)
        output = "\n".join(self.server.admin("key", "list", "--org", org))
        self.assertNotIn(API_KEY_RE.match(key).group(2), output)
        self.assertNotIn(key, output)

    def test_key_list_unknown_org_fails(self):
        self.assert_fails("key", "list", "--org", "no-such-org-y", mentions=["no-such-org-y"])

    def test_key_regenerate_same_id(self):
        org = self.server.create_org()
        old = self.server.create_key(org)
        lines = self.server.admin("key", "regenerate", old)
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], API_KEY_RE)
        self.assertEqual(API_KEY_RE.match(lines[0]).group(1), API_KEY_RE.match(old).group(1))
        self.assertNotEqual(lines[0], old)
        listed = self.server.admin("key", "list", "--org", org)
        self.assertEqual(len(listed), 1, listed)
        self.assertEqual(listed[0].split("\t")[1], "active")

    def test_key_regenerate_unknown_fails(self):
        self.assert_fails("key", "regenerate", "zzzzzzzzzzzz")

    def test_key_regenerate_revoked_fails(self):
        key = self.server.create_key(self.org)
        self.server.admin("key", "revoke", key)
        self.assert_fails("key", "regenerate", key)

    def test_key_revoke_unknown_fails(self):
        self.assert_fails("key", "revoke", "zzzzzzzzzzzz")

    def test_key_revoke_by_id_and_by_key(self):
        by_id = self.server.create_key(self.org)
        by_key = self.server.create_key(self.org)
        self.server.admin("key", "revoke", API_KEY_RE.match(by_id).group(1))
        self.server.admin("key", "revoke", by_key)
        statuses = {line.split("\t")[0]: line.split("\t")[1]
                    for line in self.server.admin("key", "list", "--org", self.org)}
        self.assertEqual(statuses[API_KEY_RE.match(by_id).group(1)], "revoked")
        self.assertEqual(statuses[API_KEY_RE.match(by_key).group(1)], "revoked")

    # ---- agents ----

    def test_import_prints_ids(self):
        org = self.server.create_org()
        ids = self.server.import_agents(org, [agent_definition(name="One"), agent_definition(name="Two")])
        self.assertEqual(len(ids), 2)
        self.assertLess(ids[0], ids[1])
        names = {int(row[0]): row[2] for row in self.agent_lines(org)}
        self.assertEqual(names, {ids[0]: "One", ids[1]: "Two"})

    def test_import_single_object(self):
        org = self.server.create_org()
        self.assertEqual(len(self.server.import_agents(org, kpi_agent())), 1)

    def test_import_from_stdin(self):
        org = self.server.create_org()
        result = self.server.cli("admin", "agent", "import", "--org", org, "-",
                                 input=json.dumps([agent_definition(name="Piped")]))
        self.assertEqual(result.returncode, 0, result.stderr)
        ids = [int(line) for line in result.stdout.splitlines()]
        self.assertEqual(len(ids), 1)
        self.assertEqual(self.agent_lines(org), [[str(ids[0]), "published", "Piped"]])

    def test_import_defaults_to_draft(self):
        org = self.server.create_org()
        definition = agent_definition(name="Draft agent")
        del definition["published"]
        agent_id = self.server.import_agents(org, definition)[0]
        self.assertEqual(self.agent_lines(org), [[str(agent_id), "draft", "Draft agent"]])

    def test_agent_list_format(self):
        org = self.server.create_org()
        ids = self.server.import_agents(org, [agent_definition(name="Shown"),
                                              agent_definition(name="Hidden", published=False)])
        self.assertEqual(self.agent_lines(org), [[str(ids[0]), "published", "Shown"],
                                                 [str(ids[1]), "draft", "Hidden"]])

    def test_publish_and_unpublish(self):
        org = self.server.create_org()
        agent_id = self.server.import_agents(org, agent_definition(name="Toggle", published=False))[0]
        self.server.admin("agent", "publish", agent_id)
        self.assertEqual(self.agent_lines(org)[0][1], "published")
        self.server.admin("agent", "unpublish", agent_id)
        self.assertEqual(self.agent_lines(org)[0][1], "draft")

    def test_publish_unknown_agent_fails(self):
        self.assert_fails("agent", "publish", "999999")
        self.assert_fails("agent", "unpublish", "999999")
        self.assert_fails("agent", "publish", "abc")

    def test_import_unknown_org_fails(self):
        path = self.server.write_file(agent_definition())
        self.assert_fails("agent", "import", "--org", "no-such-org-z", path, mentions=["no-such-org-z"])

    def test_import_missing_file_fails(self):
        self.assert_fails("agent", "import", "--org", self.org, "/nonexistent/agents.json")

    def test_import_invalid_json_fails(self):
        path = self.server.write_file('{"name": "broken",')
        self.assert_fails("agent", "import", "--org", self.org, path)

    def assert_import_rejected(self, definition, mentions):
        org = self.server.create_org()
        path = self.server.write_file(definition)
        self.assert_fails("agent", "import", "--org", org, path, mentions=mentions)
        self.assertEqual(self.agent_lines(org), [])

    def test_reject_unknown_placeholder(self):
        self.assert_import_rejected(agent_definition(prompt="About {{topic}} and {{nosuchparam}}."),
                                    ["nosuchparam"])

    def test_reject_duplicate_parameter(self):
        parameter = {"name": "dupname", "required": False, "description": "x"}
        self.assert_import_rejected(agent_definition(parameters=[parameter, dict(parameter)], prompt="{{dupname}}"),
                                    ["dupname"])

    def test_reject_default_outside_options(self):
        parameter = {"name": "region", "required": False, "description": "x", "options": ["US", "EU"],
                     "default": "Mars"}
        self.assert_import_rejected(agent_definition(parameters=[parameter], prompt="{{region}}"),
                                    ["default"])

    def test_reject_missing_fields(self):
        for field in ("name", "prompt", "provider"):
            with self.subTest(field=field):
                definition = agent_definition()
                del definition[field]
                self.assert_import_rejected(definition, [field])

    def test_reject_unknown_provider(self):
        self.assert_import_rejected(agent_definition(provider="nosuchprovider"), ["provider"])

    def test_reject_non_integer_timeout(self):
        self.assert_import_rejected(agent_definition(timeout_seconds="soon"), ["timeout_seconds"])

    def test_reject_is_all_or_nothing(self):
        self.assert_import_rejected([agent_definition(name="Fine"), agent_definition(provider="nosuchprovider")],
                                    ["provider"])

    def test_provider_override_flag(self):
        org = self.server.create_org()
        ids = self.server.import_agents(org, agent_definition(provider="nosuchprovider"), provider="echo")
        self.assertEqual(len(ids), 1)

    # ---- command line ----

    def test_unknown_command_fails(self):
        self.assert_fails("frobnicate")
        self.assert_fails("org", "frobnicate")

    def test_missing_argument_fails(self):
        self.assert_fails("org", "create")
        self.assert_fails("key", "create")

    def test_db_from_environment(self):
        db = os.path.join(self.server.tmpdir, "from-env.db")
        env = dict(self.server.environment(), PUSHAI_DB=db)
        slug = unique_name("envdb")
        result = subprocess.run([self.server.binary, "admin", "org", "create", slug], env=env,
                                capture_output=True, text=True, cwd=self.server.tmpdir, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(os.path.exists(db))
        keyed = subprocess.run([self.server.binary, "--db", db, "admin", "key", "create", "--org", slug],
                               env=self.server.environment(), capture_output=True, text=True, timeout=60)
        self.assertEqual(keyed.returncode, 0, keyed.stderr)

    def test_db_default_in_working_directory(self):
        workdir = os.path.join(self.server.tmpdir, "workdir")
        os.makedirs(workdir, exist_ok=True)
        result = subprocess.run([self.server.binary, "admin", "org", "create", unique_name("cwd")],
                                env=self.server.environment(), capture_output=True, text=True, cwd=workdir,
                                timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(os.path.exists(os.path.join(workdir, "pushai.db")))


if __name__ == "__main__":
    unittest.main()
