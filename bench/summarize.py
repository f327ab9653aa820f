#!/usr/bin/env python3
"""Summarize the wrk outputs of one bench/run.sh run as Markdown.

Usage: summarize.py RESULTS_DIR

RESULTS_DIR contains one wrk --latency output per measurement, named
r<ROUND>_<ENDPOINT>_<SERVER>.txt, for example r3_list_pushaid-nolog.txt.
ENDPOINT is "list" (GET /api/v1/agents) or "run" (GET of one run); SERVER is
"nginx" or a pushaid variant. Every pushaid measurement is compared with the
nginx measurement of the same endpoint taken in the same round.

Medians are taken over rounds. The ratio column is the median of the
per-round ratios, so a slow round for both servers does not skew it.
The targets are checked on the agent list of every pushaid variant:
at least 40,000 requests/s, p99 under 5 ms and at least 0.5x nginx.
A file r<ROUND>_<ENDPOINT>_<SERVER>.cpu beside a wrk output, when present,
contains the CPU that other processes and the hypervisor took during that
measurement, and the summary lists the measurements that were disturbed.
"""

import os
import re
import statistics
import sys

ENDPOINTS = [
    ("list", "GET /api/v1/agents (20 agents)"),
    ("run", "GET /api/v1/agents/{id}/runs/{run_id} (succeeded echo run)"),
]
SERVERS = [
    ("nginx", "nginx, the same bytes from a file"),
    ("pushaid", "pushaid, 1 thread, access log on (default)"),
    ("pushaid-nolog", "pushaid, 1 thread, --no-access-log"),
    ("pushaid-t2", "pushaid, --threads 2, access log on"),
]
TARGET_RPS = 40000
TARGET_P99_MS = 5.0
TARGET_RATIO = 0.5
OTHER_CPU_NOTE_PERCENT = 10

FILE_RE = re.compile(r"^r(\d+)_(list|run)_([a-z0-9-]+)\.txt$")
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_latency_ms(text, percentile):
    m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s|m)\s*$" % percentile, text, re.M)
    if m is None:
        return None
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def parse_wrk(path):
    """Return a dict with rps, p50_ms, p99_ms and problems (a list of text)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    result = {"rps": None, "p50_ms": None, "p99_ms": None, "problems": []}
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if m:
        result["rps"] = float(m.group(1))
    result["p50_ms"] = parse_latency_ms(text, 50)
    result["p99_ms"] = parse_latency_ms(text, 99)
    for pattern in (r"Non-2xx or 3xx responses: \d+", r"Socket errors: .*"):
        m = re.search(pattern, text)
        if m:
            result["problems"].append(m.group(0).strip())
    if result["rps"] is None or result["p99_ms"] is None:
        result["problems"].append("no Requests/sec or latency distribution in the output")
    result.update(parse_cpu(path[:-len(".txt")] + ".cpu"))
    return result


def parse_cpu(path):
    """Return other_cpu_percent and steal_cpu_percent (percent of one core, or
    None without a .cpu file) and other_top (the busiest other processes)."""
    values = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                name, _, value = line.rstrip("\n").partition(" ")
                values[name] = value
    except OSError:
        pass

    def number(name):
        try:
            return float(values[name])
        except (KeyError, ValueError):
            return None

    return {"other_cpu_percent": number("other_processes_cpu_percent"),
            "steal_cpu_percent": number("steal_cpu_percent"),
            "other_top": values.get("other_processes_top", "")}


def load(results_dir):
    """Return {(endpoint, server): {round: parsed}}."""
    data = {}
    for name in sorted(os.listdir(results_dir)):
        m = FILE_RE.match(name)
        if m is None:
            continue
        round_no, endpoint, server = int(m.group(1)), m.group(2), m.group(3)
        data.setdefault((endpoint, server), {})[round_no] = parse_wrk(os.path.join(results_dir, name))
    return data


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratios(data, endpoint, server):
    """Per-round ratio of req/s against nginx in the same round."""
    out = {}
    mine = data.get((endpoint, server), {})
    ref = data.get((endpoint, "nginx"), {})
    for round_no, parsed in mine.items():
        base = ref.get(round_no)
        if parsed["rps"] and base and base["rps"]:
            out[round_no] = parsed["rps"] / base["rps"]
    return out


def fmt_rps(value):
    return "-" if value is None else "{:,.0f}".format(value)


def fmt_ms(value):
    return "-" if value is None else "%.2f" % value


def fmt_ratio(value):
    return "-" if value is None else "%.2fx" % value


def server_label(server):
    for key, label in SERVERS:
        if key == server:
            return label
    return server


def present_servers(data, endpoint):
    known = [key for key, _ in SERVERS if (endpoint, key) in data]
    extra = sorted(s for (e, s) in data if e == endpoint and s not in known)
    return known + extra


def render(data):
    lines = []
    rounds = sorted({r for per_round in data.values() for r in per_round})
    lines.append("### Medians over %d round%s" % (len(rounds), "" if len(rounds) == 1 else "s"))
    lines.append("")
    lines.append("| endpoint | server | requests/s | p50 ms | p99 ms | pushaid / nginx |")
    lines.append("|---|---|---:|---:|---:|---:|")
    for endpoint, endpoint_label in ENDPOINTS:
        for server in present_servers(data, endpoint):
            per_round = data[(endpoint, server)].values()
            ratio = "" if server == "nginx" else fmt_ratio(median(ratios(data, endpoint, server).values()))
            lines.append("| %s | %s | %s | %s | %s | %s |" % (
                endpoint_label, server_label(server), fmt_rps(median(p["rps"] for p in per_round)),
                fmt_ms(median(p["p50_ms"] for p in per_round)), fmt_ms(median(p["p99_ms"] for p in per_round)),
                ratio))
    lines.append("")

    for endpoint, endpoint_label in ENDPOINTS:
        servers = present_servers(data, endpoint)
        if not servers:
            continue
        lines.append("### Requests/s per round: %s" % endpoint_label)
        lines.append("")
        header = ["round"]
        for server in servers:
            header.append(server)
            if server != "nginx":
                header.append("/ nginx")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---:|" * len(header))
        per_server_ratios = {s: ratios(data, endpoint, s) for s in servers if s != "nginx"}
        for round_no in rounds:
            row = [str(round_no)]
            for server in servers:
                parsed = data[(endpoint, server)].get(round_no)
                row.append(fmt_rps(parsed["rps"] if parsed else None))
                if server != "nginx":
                    row.append(fmt_ratio(per_server_ratios[server].get(round_no)))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")

    lines.append("### Targets: agent list, 64 connections")
    lines.append("")
    lines.append("| server | >= %s requests/s | p99 < %g ms | >= %.1fx nginx |" % (
        "{:,}".format(TARGET_RPS), TARGET_P99_MS, TARGET_RATIO))
    lines.append("|---|---|---|---|")
    for server in present_servers(data, "list"):
        if server == "nginx":
            continue
        per_round = data[("list", server)].values()
        rps = median(p["rps"] for p in per_round)
        p99 = median(p["p99_ms"] for p in per_round)
        ratio = median(ratios(data, "list", server).values())
        lines.append("| %s | %s (%s) | %s (%s ms) | %s (%s) |" % (
            server_label(server),
            verdict(rps is not None and rps >= TARGET_RPS), fmt_rps(rps),
            verdict(p99 is not None and p99 < TARGET_P99_MS), fmt_ms(p99),
            verdict(ratio is not None and ratio >= TARGET_RATIO), fmt_ratio(ratio)))
    lines.append("")

    lines.extend(render_cpu(data))

    problems = []
    for (endpoint, server), per_round in sorted(data.items()):
        for round_no, parsed in sorted(per_round.items()):
            for problem in parsed["problems"]:
                problems.append("- round %d, %s, %s: %s" % (round_no, endpoint, server, problem))
    lines.append("### Errors reported by wrk")
    lines.append("")
    lines.extend(problems if problems else ["none: every response was 2xx and no socket error occurred"])
    lines.append("")
    return "\n".join(lines)


def render_cpu(data):
    """Describe the CPU that other processes and the hypervisor took while wrk ran."""
    measured = [(round_no, endpoint, server, parsed)
                for (endpoint, server), per_round in sorted(data.items())
                for round_no, parsed in sorted(per_round.items())
                if parsed["other_cpu_percent"] is not None]
    if not measured:
        return []
    other = [m[3]["other_cpu_percent"] for m in measured]
    steal = [m[3]["steal_cpu_percent"] for m in measured if m[3]["steal_cpu_percent"] is not None]
    lines = ["### CPU taken by other processes while wrk ran", ""]
    lines.append("In percent of one core, over %d measurements: other processes median %.1f, max %.1f; "
                 "hypervisor steal median %.1f, max %.1f." % (
                     len(measured), statistics.median(other), max(other),
                     statistics.median(steal) if steal else 0.0, max(steal) if steal else 0.0))
    busy = [(r, e, s, p) for r, e, s, p in measured if p["other_cpu_percent"] > OTHER_CPU_NOTE_PERCENT]
    if busy:
        lines.append("")
        lines.append("Measurements where other processes took more than %d%% of a core (their numbers are "
                     "less reliable), with the busiest other processes still running at the end:" %
                     OTHER_CPU_NOTE_PERCENT)
        lines.append("")
        lines.append("| round | endpoint | server | other CPU % | busiest other processes (% of a core) |")
        lines.append("|---:|---|---|---:|---|")
        for r, e, s, p in busy:
            lines.append("| %d | %s | %s | %.1f | %s |" % (r, e, s, p["other_cpu_percent"], p["other_top"] or "-"))
    lines.append("")
    return lines


def verdict(ok):
    return "met" if ok else "**missed**"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: summarize.py RESULTS_DIR")
    data = load(sys.argv[1])
    if not data:
        sys.exit("summarize.py: no r<ROUND>_<ENDPOINT>_<SERVER>.txt files in %s" % sys.argv[1])
    sys.stdout.write(render(data))


if __name__ == "__main__":
    main()
