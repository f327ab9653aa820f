#!/usr/bin/env python3
"""HTTP helpers for bench/run.sh, on the standard library alone.

  fixture.py free-port
      Print a TCP port on 127.0.0.1 that is free right now (nginx cannot
      listen on port 0 and report the port it got).
  fixture.py get URL KEY OUT
      GET URL with the x-api-key header, require 200 and write the exact body
      bytes to OUT.
  fixture.py echo-run BASE_URL KEY AGENT_LIST_FILE OUT
      Start a run of the first agent in AGENT_LIST_FILE (a saved
      GET /api/v1/agents reply), binding each required parameter that has no
      default. Poll the run until it succeeds (at most 15 s), write the exact
      body of the final poll to OUT and print the run's path on stdout.

  fixture.py proc-ticks OUT
      Write the CPU time (user + system clock ticks) of every process now
      running but this one, with its name, to OUT as JSON.
  fixture.py proc-ticks-top BEFORE AFTER SECONDS [PID...]
      Print the three processes, other than the PIDs given, that used the
      most CPU between two proc-ticks files, in percent of one core over
      SECONDS. Processes that started and ended between the two are missed.

Errors go to stderr with a non-zero exit status.
"""

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request

TIMEOUT_S = 5
RUN_WAIT_S = 15


def fail(message):
    sys.stderr.write("fixture.py: %s\n" % message)
    sys.exit(1)


def request(method, url, key, body=None):
    """Send one request and return (status, headers, body bytes)."""
    headers = {"x-api-key": key}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()
    except (urllib.error.URLError, OSError) as err:
        fail("%s %s failed: %s" % (method, url, err))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        print(sock.getsockname()[1])


def get(url, key, out_path):
    status, _, body = request("GET", url, key)
    if status != 200:
        fail("GET %s returned %d, expected 200: %s" % (url, status, body[:300].decode("utf-8", "replace")))
    with open(out_path, "wb") as out:
        out.write(body)


def binding_value(param):
    if param.get("options"):
        return param["options"][0]
    return "benchmark input for %s" % param["name"]


def echo_run(base_url, key, agent_list_path, out_path):
    with open(agent_list_path, "rb") as f:
        agents = json.load(f)["agents"]
    if not agents:
        fail("the agent list in %s is empty" % agent_list_path)
    agent = agents[0]
    bindings = [{"name": p["name"], "value": binding_value(p)}
                for p in agent["parameters"] if p["required"] and p.get("default") is None]

    create_url = "%s/api/v1/agents/%d/runs" % (base_url, agent["id"])
    status, _, body = request("POST", create_url, key, {"parameter_bindings": bindings})
    if status != 202:
        fail("POST %s returned %d, expected 202: %s" % (create_url, status, body[:300].decode("utf-8", "replace")))
    run_id = json.loads(body)["run_id"]
    path = "/api/v1/agents/%d/runs/%s" % (agent["id"], run_id)

    deadline = time.monotonic() + RUN_WAIT_S
    while True:
        status, _, body = request("GET", base_url + path, key)
        if status != 200:
            fail("GET %s returned %d, expected 200" % (path, status))
        run = json.loads(body)
        if run["status"] == "succeeded":
            break
        if run["status"] in ("failed", "cancelled"):
            fail("run %s ended as %s: %s" % (run_id, run["status"], run.get("error")))
        if time.monotonic() > deadline:
            fail("run %s still %s after %d s" % (run_id, run["status"], RUN_WAIT_S))
        time.sleep(0.05)

    with open(out_path, "wb") as out:
        out.write(body)
    print(path)


def proc_ticks(out_path):
    ticks = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open("/proc/%s/stat" % name, encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # the name is in parentheses and may contain spaces, so split only after the last ")"
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        ticks[name] = [comm, int(fields[11]) + int(fields[12])]
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump(ticks, out)


def proc_ticks_top(before_path, after_path, seconds, excluded_pids):
    with open(before_path, encoding="utf-8") as f:
        before = json.load(f)
    with open(after_path, encoding="utf-8") as f:
        after = json.load(f)
    hz = os.sysconf("SC_CLK_TCK")
    used = []
    for pid, (comm, ticks) in after.items():
        if pid in excluded_pids:
            continue
        delta = ticks - before.get(pid, [comm, 0])[1]
        if delta > 0:
            used.append((delta, comm))
    used.sort(reverse=True)
    print(", ".join("%s %.1f" % (comm, 100.0 * delta / (hz * seconds)) for delta, comm in used[:3]))


def main():
    args = sys.argv[1:]
    if args == ["free-port"]:
        free_port()
    elif len(args) == 4 and args[0] == "get":
        get(args[1], args[2], args[3])
    elif len(args) == 5 and args[0] == "echo-run":
        echo_run(args[1], args[2], args[3], args[4])
    elif len(args) == 2 and args[0] == "proc-ticks":
        proc_ticks(args[1])
    elif len(args) >= 4 and args[0] == "proc-ticks-top":
        proc_ticks_top(args[1], args[2], float(args[3]), set(args[4:]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
