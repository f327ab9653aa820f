"""Dry runs and prompt compilation, checked both by dry_run=true and through the echo provider."""

import unittest

from harness import ServerTestCase, kpi_agent


def params(*specs):
    """Build parameter definitions from (name, required, default) tuples."""
    result = []
    for name, required, default in specs:
        parameter = {"name": name, "required": required, "description": "Parameter " + name}
        if default is not None:
            parameter["default"] = default
        result.append(parameter)
    return result


class DryRunTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)
        cls.kpi_id = cls.server.import_agents(cls.org, kpi_agent())[0]

    def test_dry_run_reply(self):
        response = self.server.create_run(self.key, self.kpi_id, {"region": "EU"}, dry_run="true")
        self.assertEqual(response.status, 200, response.describe())
        body = response.json
        self.assertIs(body["dry_run"], True)
        self.assertEqual(body["agent_id"], self.kpi_id)
        self.assertEqual(body["prompt"], "Summarize the KPIs for EU in week last.")
        self.assertEqual(body["system"], "You are a concise analyst.")
        self.assertNotIn("run_id", body)
        by_name = {p["name"]: p for p in body["parameters"]}
        self.assertEqual(by_name["region"], {"name": "region", "value": "EU", "source": "binding"})
        self.assertEqual(by_name["week"], {"name": "week", "value": "last", "source": "default"})

    def test_dry_run_sources(self):
        response = self.server.create_run(self.key, self.kpi_id, {"region": "US", "week": "2026-W49"},
                                          dry_run="true")
        self.assertEqual(response.json["prompt"], "Summarize the KPIs for US in week 2026-W49.")
        by_name = {p["name"]: p for p in response.json["parameters"]}
        self.assertEqual(by_name["week"], {"name": "week", "value": "2026-W49", "source": "binding"})
        for parameter in response.json["parameters"]:
            self.assertIn(parameter["source"], ("binding", "default"))

    def test_dry_run_system_null(self):
        agent_id = self.server.create_agent(self.org)
        response = self.server.create_run(self.key, agent_id, body={}, dry_run="true")
        self.assertEqual(response.status, 200, response.describe())
        self.assertIn("system", response.json)
        self.assertIsNone(response.json["system"])

    def test_dry_run_false_creates_run(self):
        response = self.server.create_run(self.key, self.kpi_id, {"region": "EU"}, dry_run="false")
        self.assertEqual(response.status, 202, response.describe())
        self.assertEqual(response.json["status"], "pending")

    def test_dry_run_creates_no_run(self):
        response = self.server.create_run(self.key, self.kpi_id, {"region": "EU"}, dry_run="true")
        self.assertEqual(response.status, 200, response.describe())
        self.assertNotIn("location", response.headers)
        self.assertNotIn("run_id", response.json)


class TemplateTest(ServerTestCase):
    """Each case compiles a prompt by dry run and by an echo run; both must give the expected text."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)

    def check_compiles(self, prompt, parameters, bindings, expected):
        agent_id = self.server.create_agent(self.org, prompt=prompt, parameters=parameters)
        response = self.server.create_run(self.key, agent_id, bindings, dry_run="true")
        self.assertEqual(response.status, 200, response.describe())
        self.assertEqual(response.json["prompt"], expected)
        run = self.server.run_to_end(self.key, agent_id, bindings)
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], expected)

    def test_plain_placeholder(self):
        self.check_compiles("Hello {{name}}!", params(("name", True, None)), {"name": "Ada"}, "Hello Ada!")

    def test_spaces_inside_braces(self):
        self.check_compiles("[{{ a }}][{{a}}][{{  a  }}][{{a }}][{{ a}}]", params(("a", True, None)),
                            {"a": "x"}, "[x][x][x][x][x]")

    def test_repeated_placeholder(self):
        self.check_compiles("{{a}}-{{a}}-{{a}}", params(("a", True, None)), {"a": "yo"}, "yo-yo-yo")

    def test_default_used_when_unbound(self):
        self.check_compiles("week {{week}}", params(("week", False, "last")), {}, "week last")

    def test_binding_overrides_default(self):
        self.check_compiles("week {{week}}", params(("week", False, "last")), {"week": "W1"}, "week W1")

    def test_unbound_without_default_is_empty(self):
        self.check_compiles("a[{{opt}}]b", params(("opt", False, None)), {}, "a[]b")

    def test_empty_string_binding(self):
        self.check_compiles("a[{{opt}}]b", params(("opt", False, "dflt")), {"opt": ""}, "a[]b")

    def test_values_not_reexpanded(self):
        self.check_compiles("{{a}} and {{b}}", params(("a", True, None), ("b", False, "B")),
                            {"a": "{{b}}"}, "{{b}} and B")

    def test_values_inserted_literally(self):
        value = "quote \" backslash \\ dollar $1 percent %s newline\nunicode \u00e9\u4e16\U0001F600 <b>&amp;"
        self.check_compiles("<{{v}}>", params(("v", True, None)), {"v": value}, "<" + value + ">")

    def test_single_braces_untouched(self):
        self.check_compiles("{x} {a} }} {{a}}", params(("a", True, None)), {"a": "A"}, "{x} {a} }} A")

    def test_adjacent_placeholders(self):
        self.check_compiles("{{a}}{{b}}", params(("a", True, None), ("b", True, None)),
                            {"a": "1", "b": "2"}, "12")

    def test_no_placeholders(self):
        self.check_compiles("Static prompt.", [], {}, "Static prompt.")

    def test_long_value(self):
        value = "v" * 100000
        self.check_compiles("<{{v}}>", params(("v", True, None)), {"v": value}, "<" + value + ">")


class EchoOutputTest(ServerTestCase):
    def test_echo_output_equals_dry_run_prompt(self):
        org = self.server.create_org()
        key = self.server.create_key(org)
        agent_id = self.server.import_agents(org, kpi_agent())[0]
        bindings = {"region": "APAC", "week": "2026-W01"}
        prompt = self.server.create_run(key, agent_id, bindings, dry_run="true").json["prompt"]
        run = self.server.run_to_end(key, agent_id, bindings)
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["output"], prompt)
        self.assertIsNone(run["usage"])
        self.assertIsNone(run["error"])


if __name__ == "__main__":
    unittest.main()
