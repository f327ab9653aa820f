#!/usr/bin/env python3
"""Write the 20 published agents that the benchmark imports, as a JSON array.

Each agent has one to three parameters, some with options and defaults, and
uses the offline echo provider, so a run completes without a network. The
output is deterministic: the same file on every run and every machine.

Usage: make_agents.py FILE
"""

import json
import sys

REGIONS = ["US", "EU", "APAC", "LATAM"]
LANGUAGES = ["English", "French", "German", "Spanish", "Japanese"]
TONES = ["neutral", "friendly", "formal"]

AGENTS = [
    ("Weekly KPI summary", "Summarizes the key performance indicators of one sales region for one week.",
     [("region", True, "Sales region", REGIONS, None),
      ("week", False, "ISO week, such as 2026-W49", None, "last")],
     "Summarize the KPIs for {{region}} in week {{week}}."),
    ("Translate", "Translates a text into another language and keeps its formatting.",
     [("text", True, "The text to translate", None, None),
      ("language", False, "Target language", LANGUAGES, "French")],
     "Translate into {{language}}:\n\n{{text}}"),
    ("Support reply draft", "Drafts a reply to a customer support ticket in the requested tone.",
     [("ticket", True, "The customer's message", None, None),
      ("tone", False, "Tone of the reply", TONES, "friendly"),
      ("product", False, "Product the ticket is about", None, "Push")],
     "Draft a {{tone}} reply about {{product}} to this ticket:\n{{ticket}}"),
    ("Release notes", "Turns a list of merged pull requests into release notes for users.",
     [("changes", True, "One change per line", None, None),
      ("version", True, "Version being released, such as 2.4.0", None, None)],
     "Write release notes for version {{version}} from these changes:\n{{changes}}"),
    ("Churn risk", "Rates the churn risk of one customer account from its recent activity.",
     [("account", True, "Account name or id", None, None),
      ("segment", False, "Customer segment", ["SMB", "Mid-market", "Enterprise"], "SMB")],
     "Rate the churn risk of {{segment}} account {{account}} and explain why."),
    ("SQL explainer", "Explains what a SQL query does, step by step, for a non-specialist.",
     [("query", True, "The SQL query", None, None)],
     "Explain this SQL query step by step:\n{{query}}"),
    ("Meeting minutes", "Condenses a meeting transcript into decisions, owners and open questions.",
     [("transcript", True, "The raw transcript", None, None),
      ("length", False, "Length of the minutes", ["short", "medium", "long"], "short")],
     "Write {{length}} minutes of this meeting:\n{{transcript}}"),
    ("Incident summary", "Summarizes an incident timeline for the status page.",
     [("timeline", True, "Events with timestamps", None, None),
      ("audience", False, "Who reads the summary", ["customers", "engineers"], "customers")],
     "Summarize this incident for {{audience}}:\n{{timeline}}"),
    ("Job posting", "Writes a job posting for an open role from a few facts.",
     [("role", True, "Job title", None, None),
      ("location", False, "Office or remote", None, "Remote"),
      ("seniority", False, "Seniority level", ["junior", "mid", "senior", "staff"], "mid")],
     "Write a job posting for a {{seniority}} {{role}} in {{location}}."),
    ("Sentiment", "Classifies the sentiment of a short text as positive, neutral or negative.",
     [("text", True, "The text to classify", None, None)],
     "Classify the sentiment of: {{text}}"),
    ("Invoice reminder", "Drafts a polite reminder for an overdue invoice.",
     [("customer", True, "Customer name", None, None),
      ("days_overdue", True, "Days since the due date", None, None),
      ("language", False, "Language of the email", LANGUAGES, "English")],
     "Write a reminder in {{language}} to {{customer}}, invoice {{days_overdue}} days overdue."),
    ("Code review", "Reviews a diff for bugs, unclear names and missing tests.",
     [("diff", True, "Unified diff", None, None),
      ("language", False, "Programming language", ["C", "Go", "Python", "TypeScript"], "C")],
     "Review this {{language}} diff:\n{{diff}}"),
    ("Product description", "Writes a product page description from a list of features.",
     [("features", True, "One feature per line", None, None),
      ("tone", False, "Tone of the copy", TONES, "neutral")],
     "Write a {{tone}} product description from:\n{{features}}"),
    ("Regional forecast", "Forecasts next quarter's revenue for one region from this quarter's numbers.",
     [("region", True, "Sales region", REGIONS, None),
      ("revenue", True, "This quarter's revenue in USD", None, None)],
     "Forecast next quarter for {{region}} given revenue {{revenue}} USD."),
    ("Email subject lines", "Suggests five subject lines for a marketing email.",
     [("topic", True, "What the email announces", None, None)],
     "Suggest five subject lines for an email about {{topic}}."),
    ("Contract clause check", "Flags unusual terms in one contract clause.",
     [("clause", True, "The clause text", None, None),
      ("jurisdiction", False, "Governing law", ["US", "UK", "EU"], "US")],
     "Flag unusual terms under {{jurisdiction}} law in:\n{{clause}}"),
    ("Onboarding checklist", "Builds a first-week checklist for a new team member.",
     [("team", True, "Team name", None, None),
      ("role", False, "Role of the new member", None, "engineer")],
     "Build a first-week checklist for a new {{role}} on the {{team}} team."),
    ("Bug report triage", "Assigns a severity and a component to a bug report.",
     [("report", True, "The bug report", None, None),
      ("severity_scale", False, "Severity scale to use", ["S1-S4", "P0-P3"], "S1-S4")],
     "Triage this bug on the {{severity_scale}} scale:\n{{report}}"),
    ("Survey analysis", "Groups free-text survey answers into themes with counts.",
     [("answers", True, "One answer per line", None, None),
      ("max_themes", False, "Largest number of themes", ["3", "5", "8"], "5")],
     "Group these answers into at most {{max_themes}} themes:\n{{answers}}"),
    ("Haiku of the day", "Writes a haiku about a topic in software operations.",
     [("topic", False, "Topic of the haiku", None, "keeping servers running at night")],
     "Write a haiku about {{topic}}."),
]


def build_agents():
    agents = []
    for name, description, parameters, prompt in AGENTS:
        params = []
        for param_name, required, param_description, options, default in parameters:
            param = {"name": param_name, "required": required, "description": param_description}
            if options is not None:
                param["options"] = options
            if default is not None:
                param["default"] = default
            params.append(param)
        agents.append({
            "name": name,
            "description": description,
            "published": True,
            "parameters": params,
            "system": "You are a concise assistant for an operations team.",
            "prompt": prompt,
            "provider": "echo",
            "temperature": 0.2,
            "max_tokens": 800,
        })
    return agents


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_agents.py FILE")
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        json.dump(build_agents(), out, indent=1)
        out.write("\n")


if __name__ == "__main__":
    main()
