#!/usr/bin/env python3
"""Measure the run engine with many runs in flight at once against the mock provider.

Usage::

    bench/engine.py [--runs 1000,2000,5000,10000] [--repeat 3] [--hold-ms 5000]
                    [--tokens 200] [--clients 8] [--log-level info] [--out DIR]

For each run count N it:

1. makes a fresh SQLite database with one organization, one API key and one
   published agent on the ``openai`` provider, model
   ``mock-hold-<hold-ms>-tokens-<tokens>``: the mock provider
   (tests/mock_provider.py) holds each request that long, then streams that
   many words, one server-sent event each;
2. creation phase: starts ``pushaid serve --no-engine`` and creates N runs
   over ``--clients`` keep-alive connections, then stops it. Every creation
   is its own fsync'ed SQLite transaction;
3. execution phase: starts ``pushaid serve`` with ``--max-runs-in-flight N``
   on that database, so the engine claims the whole backlog at once, and
   waits until every run is terminal (read from the database every 0.25 s).

Creating the runs first is what puts all N in flight at the same moment: the
engine claims them in batches within a fraction of a second, while creating
10,000 runs over HTTP takes longer than the 5 s hold. The mock's
``in_flight_peak`` shows how many requests it held at once.

Recorded per phase, from /proc of the pushaid process just before it is
stopped: wall time, CPU seconds (utime + stime) and CPU per run, peak RSS
(VmHWM). The execution phase also records the runs by final status and the
mock's peak of requests in flight. With ``--repeat K`` the sizes take turns K
times and the summary shows the median of each measure. Results go to ``bench/results/<UTC date
and time>-engine/`` (``results.json``, ``summary.md``, ``machine.txt`` and the
logs), and the summary is printed.

Everything listens on 127.0.0.1 only, and every process started here is
stopped on exit. Build ``build/pushaid`` first (``make``).
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PUSHAID = os.environ.get("PUSHAID", str(REPO / "build" / "pushaid"))
MOCK = REPO / "tests" / "mock_provider.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 30
RUN_TIMEOUT_S = 900

started = []  # every Popen started here, stopped by stop_all()


def stop_all():
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_line(process, stream, pattern, what):
    """Read stream until a line contains pattern; return that line."""
    deadline = time.monotonic() + START_TIMEOUT_S
    buffer = b""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("%s exited with status %s" % (what, process.returncode))
        ready, _, _ = select.select([stream], [], [], 0.2)
        if not ready:
            continue
        data = os.read(stream.fileno(), 65536)
        buffer += data
        for line in buffer.split(b"\n"):
            if pattern in line:
                return line.decode()
    raise RuntimeError("%s printed no %r within %d s" % (what, pattern, START_TIMEOUT_S))


def start_mock(log_path):
    log = open(log_path, "ab")
    process = subprocess.Popen([sys.executable, str(MOCK), "--port", "0"], stdout=subprocess.PIPE, stderr=log,
                               stdin=subprocess.DEVNULL)
    started.append(process)
    line = wait_for_line(process, process.stdout, b"listening on", "mock provider")
    return process, int(line.rsplit(":", 1)[1])


def mock_call(port, method, path):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path)
        return json.loads(connection.getresponse().read() or b"null")
    finally:
        connection.close()


def cli(db, *args, env=None):
    result = subprocess.run([PUSHAID, "--db", db] + list(args), capture_output=True, text=True, env=env,
                            check=True, timeout=60)
    return result.stdout.strip()


class Pushaid:
    """A pushaid serve process whose stderr goes to log_path."""

    def __init__(self, db, args, env, log_path):
        self.log = open(log_path, "ab")
        argv = [PUSHAID, "--db", db, "serve", "--listen", "127.0.0.1:0"] + args
        self.log.write(("===== %s =====\n" % " ".join(argv)).encode())
        self.log.flush()
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, env=env)
        started.append(self.process)
        self.started_at = time.monotonic()
        self.port = None
        self.lines = []
        ready = threading.Event()

        def drain():
            for line in iter(self.process.stderr.readline, b""):
                self.log.write(line)
                match = re.search(rb"listening on http://[^\s:/]+:(\d+)", line)
                if not ready.is_set() and match:
                    self.port = int(match.group(1))
                    ready.set()
            self.log.flush()

        self.thread = threading.Thread(target=drain, daemon=True)
        self.thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise RuntimeError("pushaid did not start; see %s" % log_path)

    def usage(self):
        """Return (CPU seconds, peak RSS in KiB, current RSS in KiB) from /proc."""
        with open("/proc/%d/stat" % self.process.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
        peak_kib = rss_kib = 0
        with open("/proc/%d/status" % self.process.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak_kib = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss_kib = int(line.split()[1])
        return cpu_s, peak_kib, rss_kib

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.thread.join(5)
        self.log.close()


def create_runs(port, key, agent_id, n, clients):
    """POST n runs over `clients` keep-alive connections; return the count of 202 replies."""
    accepted = [0] * clients
    errors = []

    def worker(index):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        count = n // clients + (1 if index < n % clients else 0)
        try:
            for _ in range(count):
                connection.request("POST", "/api/v1/agents/%d/runs" % agent_id, body=b"",
                                   headers={"x-api-key": key})
                reply = connection.getresponse()
                body = reply.read()
                if reply.status == 202:
                    accepted[index] += 1
                elif len(errors) < 5:
                    errors.append("%d %s" % (reply.status, body[:200]))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        print("run creation errors (first few): %s" % errors, file=sys.stderr)
    return sum(accepted)


def status_counts(db):
    connection = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=30)
    try:
        return dict(connection.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
    finally:
        connection.close()


def measure(n, repeat, args, mock_port, workdir):
    db = os.path.join(workdir, "bench-%d-%d.db" % (n, repeat))
    log_path = os.path.join(workdir, "pushaid-%d.log" % n)
    env = {name: value for name, value in os.environ.items() if not name.startswith("PUSHAI_")}
    env["PUSHAI_OPENAI_BASE_URL"] = "http://127.0.0.1:%d/v1" % mock_port
    env["PUSHAI_OPENAI_API_KEY"] = "sk-bench-not-a-secret"
    model = "mock-hold-%d-tokens-%d" % (args.hold_ms, args.tokens)

    cli(db, "admin", "org", "create", "bench", env=env)
    key = cli(db, "admin", "key", "create", "--org", "bench", env=env)
    agent_file = os.path.join(workdir, "agent.json")
    with open(agent_file, "w") as f:
        json.dump({"name": "bench", "published": True, "prompt": "Write a few words.", "provider": "openai",
                   "model": model, "timeout_seconds": 600}, f)
    agent_id = int(cli(db, "admin", "agent", "import", "--org", "bench", agent_file, env=env))
    common = ["--rate-limit", "0", "--max-runs-per-key", "0", "--no-access-log", "--log-level", args.log_level]

    # creation phase
    server = Pushaid(db, common + ["--no-engine"], env, log_path)
    cpu_before, _, _ = server.usage()
    t0 = time.monotonic()
    accepted = create_runs(server.port, key, agent_id, n, args.clients)
    create_wall_s = time.monotonic() - t0
    cpu_after, create_peak_kib, _ = server.usage()
    server.stop()
    if accepted != n:
        raise RuntimeError("only %d of %d runs were accepted" % (accepted, n))

    # execution phase
    mock_call(mock_port, "POST", "/_mock/reset")
    server = Pushaid(db, common + ["--max-runs-in-flight", str(n)], env, log_path)
    t0 = server.started_at
    rss_samples = []
    while True:
        time.sleep(0.25)
        counts = status_counts(db)
        cpu_s, peak_kib, rss_kib = server.usage()
        rss_samples.append((round(time.monotonic() - t0, 2), rss_kib))
        terminal = sum(counts.get(status, 0) for status in ("succeeded", "failed", "cancelled"))
        if terminal >= n:
            break
        if time.monotonic() - t0 > RUN_TIMEOUT_S:
            raise RuntimeError("runs not terminal after %d s: %s" % (RUN_TIMEOUT_S, counts))
    wall_s = time.monotonic() - t0
    cpu_s, peak_kib, _ = server.usage()
    stats = mock_call(mock_port, "GET", "/_mock/stats")
    server.stop()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)

    return {
        "runs": n,
        "model": model,
        "create": {"accepted": accepted, "wall_s": round(create_wall_s, 2),
                   "runs_per_s": round(n / create_wall_s, 1),
                   "cpu_s": round(cpu_after - cpu_before, 2),
                   "cpu_ms_per_run": round((cpu_after - cpu_before) * 1000 / n, 3),
                   "peak_rss_mib": round(create_peak_kib / 1024, 1)},
        "execute": {"statuses": counts, "wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2),
                    "cpu_ms_per_run": round(cpu_s * 1000 / n, 3), "peak_rss_mib": round(peak_kib / 1024, 1),
                    "mock_in_flight_peak": stats["in_flight_peak"],
                    "rss_mib_samples": [(t, round(kib / 1024, 1)) for t, kib in rss_samples[::4]]},
    }


def machine_text():
    lines = ["date: %s" % datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "cores: %d" % os.cpu_count(), "kernel: %s" % platform.release()]
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
        lines.append("cpu: %s" % model)
        with open("/proc/meminfo") as f:
            lines.append("memory: %s" % f.readline().split(":", 1)[1].strip())
        lines.append("load average: %s" % open("/proc/loadavg").read().strip())
    except OSError:
        pass
    lines.append("pushaid: %s" % subprocess.run([PUSHAID, "--version"], capture_output=True,
                                                text=True).stdout.strip())
    return "\n".join(lines) + "\n"


def summary_markdown(results, args):
    """One row per run count: medians over the repeats, and every repeat's engine CPU ms/run."""
    lines = ["| runs | all succeeded | created/s | create CPU ms/run | engine wall s | engine CPU s |"
             " engine CPU ms/run | peak RSS MiB | mock peak in flight | engine CPU ms/run, each repeat |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for n in sorted({r["runs"] for r in results}):
        rows = [r for r in results if r["runs"] == n]
        succeeded = [r["execute"]["statuses"].get("succeeded", 0) for r in rows]
        lines.append("| %d | %s (%s) | %.0f | %.3f | %.1f | %.2f | %.3f | %.1f | %d | %s |" % (
            n, "yes" if all(ok == n for ok in succeeded) else "NO", "/".join(str(ok) for ok in succeeded),
            statistics.median(r["create"]["runs_per_s"] for r in rows),
            statistics.median(r["create"]["cpu_ms_per_run"] for r in rows),
            statistics.median(r["execute"]["wall_s"] for r in rows),
            statistics.median(r["execute"]["cpu_s"] for r in rows),
            statistics.median(r["execute"]["cpu_ms_per_run"] for r in rows),
            statistics.median(r["execute"]["peak_rss_mib"] for r in rows),
            statistics.median(r["execute"]["mock_in_flight_peak"] for r in rows),
            ", ".join("%.3f" % r["execute"]["cpu_ms_per_run"] for r in rows)))
    lines.append("")
    lines.append("Medians over %d repeat(s). Hold %d ms, %d tokens per run, log level %s, %d creating connections."
                 % (args.repeat, args.hold_ms, args.tokens, args.log_level, args.clients))
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="1000,2000,5000,10000", help="comma-separated run counts")
    parser.add_argument("--repeat", type=int, default=1, help="times each run count is measured")
    parser.add_argument("--hold-ms", type=int, default=5000, help="milliseconds the mock waits before each reply")
    parser.add_argument("--tokens", type=int, default=200, help="words the mock streams per run")
    parser.add_argument("--clients", type=int, default=8, help="connections that create runs")
    parser.add_argument("--log-level", default="info", help="pushaid --log-level")
    parser.add_argument("--out", help="results directory (default bench/results/<date>-engine)")
    args = parser.parse_args()
    if not os.access(PUSHAID, os.X_OK):
        sys.exit("bench: %s not found; run make first" % PUSHAID)

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d_%H%M%SZ")
    out = Path(args.out or REPO / "bench" / "results" / (stamp + "-engine"))
    out.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="pushai-bench-engine-")
    (out / "machine.txt").write_text(machine_text())
    results = []
    try:
        mock, mock_port = start_mock(os.path.join(workdir, "mock.log"))
        sizes = [int(part) for part in args.runs.split(",")]
        for repeat in range(args.repeat):
            for n in sizes:
                print("== %d runs, repeat %d of %d" % (n, repeat + 1, args.repeat), file=sys.stderr, flush=True)
                result = measure(n, repeat + 1, args, mock_port, workdir)
                result["load_average"] = open("/proc/loadavg").read().split()[:3]
                print(json.dumps(result), file=sys.stderr, flush=True)
                results.append(result)
                (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    finally:
        stop_all()
        for name in os.listdir(workdir):
            if name.endswith(".log"):
                shutil.copy(os.path.join(workdir, name), out / name)
        shutil.rmtree(workdir, ignore_errors=True)
    summary = summary_markdown(results, args)
    (out / "summary.md").write_text(summary)
    print(summary)
    print("results in %s" % out)


if __name__ == "__main__":
    main()
