"""Helpers for pushai's black-box end-to-end tests (Python standard library only).

The tests start the real ``pushaid`` binary on 127.0.0.1 with a temporary
database, drive it through its admin command line and its HTTP API, and point
its providers at ``tests/mock_provider.py``. Nothing here imports the server's
code, so the tests check the behaviour that the product contract promises.

Environment:

* ``PUSHAID``: the server binary (default ``build/pushaid`` under the
  repository root; a relative path is taken from the current directory).
* ``PUSHAI_E2E_START_TIMEOUT``: seconds to wait for the server's
  ``listening on`` line (default 30; sanitizer builds start slowly).
* ``PUSHAI_E2E_KEEP``: when set, temporary directories are kept for reading.
* ``PUSHAI_E2E_PG_URL``: a postgresql:// URL of a role that may create
  databases. When set, every Server gets a new PostgreSQL database instead of
  a SQLite file (dropped when it closes), and the multi-node tests run.
* ``PUSHAI_E2E_PG_DIR``: the directory of that cluster as made by
  ``scripts/pg.sh start``, for the tests that stop and restart the database.
"""

import datetime
import http.client
import itertools
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MOCK_SCRIPT = REPO_ROOT / "tests" / "mock_provider.py"
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"

START_TIMEOUT_S = float(os.environ.get("PUSHAI_E2E_START_TIMEOUT", "30"))
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 60.0

OPENAI_TEST_KEY = "sk-test-pushai-e2e-6f1d0c2b9a8e4d7c"
ANTHROPIC_TEST_KEY = "sk-ant-test-pushai-e2e-3b5a7c9e1f2d4a6b"

TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")

UUID_V4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
RFC3339_MS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
API_KEY_RE = re.compile(r"^pai_([a-z0-9]{12})_([A-Za-z0-9]{32})$")

# Provider base URLs for servers started without a mock: a closed local port,
# so that a test can never reach a real provider by mistake.
UNREACHABLE_OPENAI_URL = "http://127.0.0.1:9/v1"
UNREACHABLE_ANTHROPIC_URL = "http://127.0.0.1:9"

PG_ADMIN_URL = os.environ.get("PUSHAI_E2E_PG_URL") or None
PG_CLUSTER_DIR = os.environ.get("PUSHAI_E2E_PG_DIR") or None
PG_SCRIPT = REPO_ROOT / "scripts" / "pg.sh"


def pushaid_path():
    configured = os.environ.get("PUSHAID")
    if configured:
        return os.path.abspath(configured)
    return str(REPO_ROOT / "build" / "pushaid")


# ---------------------------------------------------------------------------
# Failure logs
# ---------------------------------------------------------------------------

_live_processes = []  # Server and MockProvider objects whose logs a failure prints


def dump_live_logs(test_id, lines=150):
    for process in list(_live_processes):
        tail = process.log_tail(lines)
        sys.stderr.write("\n----- %s log (last %d lines) after %s -----\n%s\n----- end of %s log -----\n"
                         % (process.name, lines, test_id, tail, process.name))
    sys.stderr.flush()


class E2ETestCase(unittest.TestCase):
    """A TestCase that prints the logs of every running server when a test fails."""

    maxDiff = 4000

    def run(self, result=None):
        if result is None:
            return super().run(result)
        failed_before = len(result.failures) + len(result.errors)
        outcome = super().run(result)
        if len(result.failures) + len(result.errors) > failed_before:
            dump_live_logs(self.id())
        return outcome

    def assertError(self, response, status, code, message_contains=()):
        """Assert an error reply: status, code, envelope shape and request id."""
        assert_error_envelope(self, response)
        self.assertEqual(response.status, status, response.describe())
        self.assertEqual(response.error_code, code, response.describe())
        message = response.json["error"]["message"]
        for fragment in message_contains:
            self.assertIn(fragment, message, response.describe())


def assert_error_envelope(test, response):
    """Check the error envelope that every error reply must have."""
    test.assertIsNotNone(response.json, "error body is not JSON: " + response.describe())
    content_type = response.headers.get("content-type", "")
    test.assertEqual(content_type.split(";")[0].strip().lower(), "application/json", response.describe())
    test.assertEqual(set(response.json.keys()), {"error"}, response.describe())
    error = response.json["error"]
    test.assertIsInstance(error, dict, response.describe())
    test.assertIsInstance(error.get("code"), str, response.describe())
    test.assertIsInstance(error.get("message"), str, response.describe())
    test.assertTrue(error["message"], "empty error message: " + response.describe())
    test.assertIsInstance(error.get("request_id"), str, response.describe())
    test.assertTrue(error["request_id"].startswith("req_"), response.describe())
    test.assertEqual(response.headers.get("x-request-id"), error["request_id"], response.describe())


# ---------------------------------------------------------------------------
# HTTP client
# ---------------------------------------------------------------------------

class Response:
    """One HTTP reply: status, headers (lowercase names), raw body and parsed JSON or None."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def error_code(self):
        if isinstance(self.json, dict) and isinstance(self.json.get("error"), dict):
            return self.json["error"].get("code")
        return None

    def __iter__(self):
        return iter((self.status, self.headers, self.body, self.json))

    def describe(self):
        text = self.body[:2000].decode("utf-8", errors="replace")
        return "HTTP %d %s %s" % (self.status, self.headers, text)

    def __repr__(self):
        return "<Response %s>" % self.describe()


def merge_headers(pairs):
    merged = {}
    for name, value in pairs:
        name = name.lower()
        merged[name] = merged[name] + ", " + value if name in merged else value
    return merged


def encode_body(body, headers):
    """Turn a body argument into bytes (or an iterable for chunked), setting Content-Type for JSON."""
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, (dict, list)):
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
        return json.dumps(body).encode()
    return body  # an iterable of bytes: http.client sends it chunked


def http_request(host, port, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT_S,
                 source_address=None):
    """Send one request on a new connection and return a Response.

    body may be bytes, str, a dict or list (sent as JSON), or an iterable of
    bytes (sent with chunked transfer encoding).
    """
    headers = dict(headers or {})
    payload = encode_body(body, headers)
    connection = http.client.HTTPConnection(host, port, timeout=timeout, source_address=source_address)
    try:
        connection.request(method, path, body=payload, headers=headers)
        reply = connection.getresponse()
        data = reply.read()
        return Response(reply.status, merge_headers(reply.getheaders()), data)
    finally:
        connection.close()


def raw_request(host, port, data, timeout=HTTP_TIMEOUT_S):
    """Send raw bytes and parse one reply; return None when the server closed without one.

    The bytes are written from a second thread while this one reads, so a
    reply that the server sends before reading the whole request (a 413 or
    431, say) is read even if the server then closes the connection.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    send_errors = []

    def send_all():
        try:
            sock.sendall(data)
        except OSError as err:
            send_errors.append(err)

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    try:
        reply = http.client.HTTPResponse(sock)
        try:
            reply.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        except http.client.BadStatusLine as err:
            raise AssertionError("reply without an HTTP status line: %r" % err.line[:200])
        try:
            body = reply.read()
        except (http.client.IncompleteRead, ConnectionResetError) as err:
            body = getattr(err, "partial", b"")
        return Response(reply.status, merge_headers(reply.getheaders()), body)
    finally:
        sock.close()
        sender.join(timeout)


def read_response(stream):
    """Read one reply from a binary stream (for pipelined requests); return None at end of stream."""
    status_line = stream.readline()
    if not status_line:
        return None
    parts = status_line.decode("latin-1").split(" ", 2)
    status = int(parts[1])
    pairs = []
    while True:
        line = stream.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        pairs.append((name.strip(), value.strip()))
    headers = merge_headers(pairs)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int(stream.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while stream.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += stream.read(size)
            stream.readline()
    elif "content-length" in headers:
        body = stream.read(int(headers["content-length"]))
    elif status in (204, 304):
        body = b""
    else:
        body = stream.read()
    return Response(status, headers, body)


def chunked(data, chunk_size=65536):
    """Yield data in pieces, for a request body sent with chunked transfer encoding."""
    for start in range(0, len(data), chunk_size):
        yield data[start:start + chunk_size]


def wait_until(predicate, timeout, message, interval_s=0.05):
    """Poll predicate until it returns a true value, which is returned; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0f s: %s" % (timeout, message))
        time.sleep(interval_s)


# ---------------------------------------------------------------------------
# Mock provider process
# ---------------------------------------------------------------------------

class MockProvider:
    """Runs tests/mock_provider.py on 127.0.0.1 with a free port, as a context manager."""

    def __init__(self, fixtures_dir=FIXTURES_DIR):
        self.name = "mock provider"
        self.fixtures_dir = str(fixtures_dir)
        self.process = None
        self.port = None
        self.tmpdir = tempfile.mkdtemp(prefix="pushai-mock-")
        self.log_path = os.path.join(self.tmpdir, "mock.log")

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def openai_base_url(self):
        return self.url + "/v1"

    @property
    def anthropic_base_url(self):
        return self.url

    def start(self):
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [sys.executable, str(MOCK_SCRIPT), "--port", "0", "--fixtures", self.fixtures_dir],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                self.close()
                raise RuntimeError("mock provider did not start: %r\n%s" % (line, self.log_tail()))
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            if ready:
                # os.read, because a buffered read would hide the rest of the line from select.
                data = os.read(self.process.stdout.fileno(), 4096)
                if not data:
                    continue
                line += data
        match = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", line)
        if not match:
            self.close()
            raise RuntimeError("unexpected first line from the mock provider: %r" % line)
        self.port = int(match.group(1))
        _live_processes.append(self)

    def close(self):
        if self in _live_processes:
            _live_processes.remove(self)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        if not os.environ.get("PUSHAI_E2E_KEEP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def log_tail(self, lines=150):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"

    def request(self, method, path, body=None, headers=None):
        return http_request("127.0.0.1", self.port, method, path, body=body, headers=headers)

    def requests(self, model=None):
        """Return the recorded provider requests, oldest first, optionally only those for model."""
        path = "/_mock/requests"
        if model is not None:
            path += "?" + urllib.parse.urlencode({"model": model})
        response = self.request("GET", path)
        if response.status != 200:
            raise AssertionError("mock request log: " + response.describe())
        return response.json

    def reset(self):
        response = self.request("POST", "/_mock/reset")
        if response.status != 200:
            raise AssertionError("mock reset: " + response.describe())

    def stats(self):
        return self.request("GET", "/_mock/stats").json

    def server_env(self):
        """Return the environment that points pushaid's providers at this mock."""
        return {
            "PUSHAI_OPENAI_BASE_URL": self.openai_base_url,
            "PUSHAI_OPENAI_API_KEY": OPENAI_TEST_KEY,
            "PUSHAI_ANTHROPIC_BASE_URL": self.anthropic_base_url,
            "PUSHAI_ANTHROPIC_API_KEY": ANTHROPIC_TEST_KEY,
        }


# ---------------------------------------------------------------------------
# PostgreSQL databases
# ---------------------------------------------------------------------------

def pg_mode():
    """Return True when the servers run on PostgreSQL (PUSHAI_E2E_PG_URL is set)."""
    return PG_ADMIN_URL is not None


def pg_url_with_database(url, dbname):
    """Return url with its database name replaced by dbname (query parameters kept)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def pg_admin_sql(sql, url=None):
    """Run one SQL statement with psql as the admin role (or on url); return its output lines."""
    result = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url or PG_ADMIN_URL,
                             "-c", sql], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError("psql failed on %r: %s" % (sql, result.stderr.strip()))
    return result.stdout.splitlines()


def pg_create_database():
    """Create an empty database; return (name, URL)."""
    name = "pushai_e2e_" + secrets.token_hex(6)
    pg_admin_sql("CREATE DATABASE %s" % name)
    return name, pg_url_with_database(PG_ADMIN_URL, name)


def pg_drop_database(name):
    pg_admin_sql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)


def pg_cluster(action):
    """Run `scripts/pg.sh halt` or `resume` on the test cluster (PUSHAI_E2E_PG_DIR)."""
    if PG_CLUSTER_DIR is None:
        raise unittest.SkipTest("PUSHAI_E2E_PG_DIR is not set, so the database cannot be restarted")
    subprocess.run([str(PG_SCRIPT), action, PG_CLUSTER_DIR], check=True, capture_output=True, timeout=120)


# ---------------------------------------------------------------------------
# pushaid process
# ---------------------------------------------------------------------------

_unique_counter = itertools.count(1)


def unique_name(prefix):
    return "%s-%d-%s" % (prefix, next(_unique_counter), secrets.token_hex(3))


def agent_definition(**fields):
    """Return an importable agent: a published echo agent with one optional parameter, overridden by fields."""
    agent = {
        "name": "Test agent",
        "description": "An agent made by the end-to-end tests",
        "published": True,
        "parameters": [{"name": "topic", "required": False, "description": "What to write about",
                        "default": "nothing"}],
        "prompt": "Write about {{topic}}.",
        "provider": "echo",
    }
    agent.update(fields)
    return agent


class CliError(AssertionError):
    pass


class Server:
    """A pushaid process with its own temporary database, as a context manager.

    The constructor only prepares the directory. Entering the context starts
    `serve` unless start=False (admin-only tests). The server's stderr is
    copied to DIR/server.log, which E2ETestCase prints when a test fails.
    """

    def __init__(self, serve_args=(), mock=None, env=None, start=True, db=None, name="pushaid"):
        """db: the database of another Server to share (several nodes on one database): its file or URL."""
        self.name = name
        self.binary = pushaid_path()
        self.serve_args = list(serve_args)
        self.mock = mock
        self.extra_env = dict(env or {})
        self.autostart = start
        self.tmpdir = tempfile.mkdtemp(prefix="pushai-e2e-")
        # in PostgreSQL mode a server that shares no database gets a new one, dropped by close()
        self.pg_database = None
        if db is None and pg_mode():
            self.pg_database, db = pg_create_database()
        self.db = db or os.path.join(self.tmpdir, "pushai.db")
        self.log_path = os.path.join(self.tmpdir, "server.log")
        self.process = None
        self.host = None
        self.port = None
        self._drain_thread = None
        self._file_counter = itertools.count(1)

    def __enter__(self):
        _live_processes.append(self)
        if self.autostart:
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- process control ----

    def environment(self):
        env = {name: value for name, value in os.environ.items() if not name.startswith("PUSHAI_")}
        env["PUSHAI_OPENAI_BASE_URL"] = UNREACHABLE_OPENAI_URL
        env["PUSHAI_OPENAI_API_KEY"] = OPENAI_TEST_KEY
        env["PUSHAI_ANTHROPIC_BASE_URL"] = UNREACHABLE_ANTHROPIC_URL
        env["PUSHAI_ANTHROPIC_API_KEY"] = ANTHROPIC_TEST_KEY
        if self.mock is not None:
            env.update(self.mock.server_env())
        env.update(self.extra_env)
        return env

    def _append_log(self, text):
        with open(self.log_path, "ab") as log:
            log.write(text.encode())

    def start(self, serve_args=None):
        """Start `pushaid --db DB serve --listen 127.0.0.1:0 ARGS` and wait for its listening line."""
        if not os.path.exists(self.binary):
            raise RuntimeError("pushaid binary not found at %s: build it with `make` or set PUSHAID"
                               % self.binary)
        if serve_args is not None:
            self.serve_args = list(serve_args)
        argv = [self.binary, "--db", self.db, "serve", "--listen", "127.0.0.1:0"] + self.serve_args
        self._append_log("===== %s =====\n" % " ".join(argv))
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, env=self.environment(), cwd=self.tmpdir)
        ready = threading.Event()
        address = {}
        process = self.process

        def drain():
            with open(self.log_path, "ab") as log:
                for line in iter(process.stderr.readline, b""):
                    log.write(line)
                    log.flush()
                    if not ready.is_set():
                        match = re.search(rb"listening on http://([^\s:/]+):(\d+)", line)
                        if match:
                            address["host"] = match.group(1).decode()
                            address["port"] = int(match.group(2))
                            ready.set()
            process.stderr.close()

        self._drain_thread = threading.Thread(target=drain, daemon=True)
        self._drain_thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.wait(0.05):
            if process.poll() is not None or time.monotonic() >= deadline:
                self._drain_thread.join(2)
                state = ("exited with status %s" % process.returncode if process.poll() is not None
                         else "printed no listening line within %.0f s" % START_TIMEOUT_S)
                self.kill9()
                raise RuntimeError("pushaid %s\n%s" % (state, self.log_tail()))
        self.host = address["host"]
        self.port = address["port"]

    def stop(self, timeout=STOP_TIMEOUT_S):
        """Send SIGTERM, wait up to timeout seconds, then SIGKILL; return the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._append_log("===== no exit %.0f s after SIGTERM: sending SIGKILL =====\n" % timeout)
                self.process.kill()
                self.process.wait()
        return self._reap()

    def stop_with_signal(self, signum, timeout=STOP_TIMEOUT_S):
        """Send signum (SIGTERM or SIGINT) and wait up to timeout seconds for the exit; return its status.

        Unlike stop(), a server still running after timeout is an AssertionError
        (it is killed first, so the test leaves nothing behind).
        """
        if self.process is None:
            return None
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self._reap()
            raise AssertionError("pushaid still running %.0f s after signal %d" % (timeout, signum))
        return self._reap()

    def kill9(self):
        """Kill the server with SIGKILL, as a crash would; return the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        return self._reap()

    def _reap(self):
        if self._drain_thread is not None:
            self._drain_thread.join(5)
            self._drain_thread = None
        status = self.process.returncode
        self._append_log("===== exit status %s =====\n" % status)
        self.process = None
        return status

    def restart(self, serve_args=None):
        """Stop gracefully and start again on the same database (the port changes)."""
        self.stop()
        self.start(serve_args)

    def is_running(self):
        return self.process is not None and self.process.poll() is None

    def close(self):
        if self in _live_processes:
            _live_processes.remove(self)
        self.stop()
        if self.pg_database is not None:
            pg_drop_database(self.pg_database)
            self.pg_database = None
        if not os.environ.get("PUSHAI_E2E_KEEP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def log_tail(self, lines=150):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"

    # ---- admin command line ----

    def cli(self, *args, input=None, check=True):
        """Run `pushaid --db DB ARGS`; return the CompletedProcess (text). check=True fails on a non-zero exit."""
        argv = [self.binary, "--db", self.db] + [str(arg) for arg in args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, env=self.environment(),
                                cwd=self.tmpdir, timeout=60)
        if check and result.returncode != 0:
            raise CliError("`%s` exited with %d\nstdout: %s\nstderr: %s"
                           % (" ".join(argv), result.returncode, result.stdout, result.stderr))
        return result

    def admin(self, *args, input=None):
        """Run `pushaid --db DB admin ARGS`, which must succeed; return its stdout lines."""
        return self.cli("admin", *args, input=input).stdout.splitlines()

    def create_org(self, slug=None, name=None):
        slug = slug or unique_name("org")
        args = ["org", "create", slug] + (["--name", name] if name else [])
        self.admin(*args)
        return slug

    def create_key(self, org, label=None):
        args = ["key", "create", "--org", org] + (["--label", label] if label else [])
        lines = self.admin(*args)
        if len(lines) != 1 or not API_KEY_RE.match(lines[0]):
            raise AssertionError("key create printed %r, expected one key pai_<12>_<32>" % lines)
        return lines[0]

    def write_file(self, content, suffix=".json"):
        """Write content (str, or JSON for other types) into the temp dir; return the path."""
        path = os.path.join(self.tmpdir, "file-%d%s" % (next(self._file_counter), suffix))
        with open(path, "w", encoding="utf-8") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        return path

    def import_agents(self, org, agents, provider=None, model=None):
        """Import agents (a list of dicts, one dict, or a file path); return their ids as ints."""
        path = agents if isinstance(agents, (str, Path)) else self.write_file(agents)
        args = ["agent", "import", "--org", org, path]
        if provider:
            args += ["--provider", provider]
        if model:
            args += ["--model", model]
        lines = self.admin(*args)
        return [int(line) for line in lines]

    def create_agent(self, org, **fields):
        """Import one agent built by agent_definition(**fields); return its id."""
        ids = self.import_agents(org, agent_definition(**fields))
        if len(ids) != 1:
            raise AssertionError("import of one agent printed %r" % ids)
        return ids[0]

    def new_tenant(self, **agent_fields):
        """Create an org, a key and one published agent; return (org, key, agent_id)."""
        org = self.create_org()
        key = self.create_key(org)
        agent_id = self.create_agent(org, **agent_fields)
        return org, key, agent_id

    # ---- HTTP ----

    def request(self, method, path, key=None, body=None, headers=None, query=None, source_address=None):
        """Send one request to the server; key sets x-api-key, query is a dict or a raw string."""
        headers = dict(headers or {})
        if key is not None:
            headers["x-api-key"] = key
        if query:
            path += "?" + (query if isinstance(query, str) else urllib.parse.urlencode(query))
        return http_request(self.host, self.port, method, path, body=body, headers=headers,
                            source_address=source_address)

    def raw(self, data):
        return raw_request(self.host, self.port, data)

    def list_agents(self, key, **query):
        return self.request("GET", "/api/v1/agents", key=key, query=query)

    def create_run(self, key, agent_id, bindings=None, dry_run=None, headers=None, body=None):
        """POST a run. bindings is a dict name -> value or a ready list; body overrides both."""
        if body is None and bindings is not None:
            if isinstance(bindings, dict):
                bindings = [{"name": name, "value": value} for name, value in bindings.items()]
            body = {"parameter_bindings": bindings}
        query = None if dry_run is None else {"dry_run": dry_run}
        return self.request("POST", "/api/v1/agents/%s/runs" % agent_id, key=key, body=body,
                            headers=headers, query=query)

    def get_run(self, key, agent_id, run_id):
        return self.request("GET", "/api/v1/agents/%s/runs/%s" % (agent_id, run_id), key=key)

    def cancel_run(self, key, agent_id, run_id):
        return self.request("POST", "/api/v1/agents/%s/runs/%s/cancel" % (agent_id, run_id), key=key)

    def start_run(self, key, agent_id, bindings=None):
        """Create a run that must be accepted; return its run id."""
        response = self.create_run(key, agent_id, bindings)
        if response.status != 202:
            raise AssertionError("run not accepted: " + response.describe())
        return response.json["run_id"]

    def poll_run(self, key, agent_id, run_id, timeout=RUN_TIMEOUT_S, statuses=TERMINAL_STATUSES):
        """Poll a run until its status is one of statuses and return it; raise AssertionError after timeout seconds.

        The interval grows from 20 ms to 250 ms, so a long wait stays well
        under the default per-key rate limit. A rate_limited reply is waited
        out as a client should.
        """
        deadline = time.monotonic() + timeout
        interval_s = 0.02
        last = None
        while True:
            response = self.get_run(key, agent_id, run_id)
            if response.status == 429 and response.error_code == "rate_limited":
                time.sleep(min(float(response.headers.get("retry-after", "1")), 5.0))
            elif response.status != 200:
                raise AssertionError("polling run %s: %s" % (run_id, response.describe()))
            else:
                last = response.json
                if last.get("status") in statuses:
                    return last
            if time.monotonic() >= deadline:
                raise AssertionError("run %s not in %s after %.0f s; last seen: %s"
                                     % (run_id, statuses, timeout, last))
            time.sleep(interval_s)
            interval_s = min(interval_s * 1.5, 0.25)

    def run_to_end(self, key, agent_id, bindings=None, timeout=RUN_TIMEOUT_S):
        """Create a run and poll it to a terminal status; return the run."""
        run_id = self.start_run(key, agent_id, bindings)
        return self.poll_run(key, agent_id, run_id, timeout=timeout)


def kpi_agent(**fields):
    """Return the product contract's example agent (echo provider), overridden by fields."""
    agent = {
        "name": "Weekly KPI summary",
        "description": "KPIs for one region",
        "published": True,
        "parameters": [
            {"name": "region", "required": True, "description": "Sales region",
             "options": ["US", "EU", "APAC"]},
            {"name": "week", "required": False, "description": "ISO week", "default": "last"},
        ],
        "system": "You are a concise analyst.",
        "prompt": "Summarize the KPIs for {{region}} in week {{week}}.",
        "provider": "echo",
    }
    agent.update(fields)
    return agent


def parse_timestamp(text):
    """Parse an RFC 3339 UTC timestamp with milliseconds (2026-12-04T19:08:20.123Z) into a datetime."""
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)


class ServerTestCase(E2ETestCase):
    """A TestCase that starts one server (and a mock provider when with_mock) for all tests of the class."""

    serve_args = ()
    with_mock = False
    start_server = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mock = None
        if cls.with_mock:
            cls.mock = MockProvider()
            cls.mock.start()
            cls.addClassCleanup(cls.mock.close)
        cls.server = Server(cls.serve_args, mock=cls.mock, start=cls.start_server)
        cls.addClassCleanup(cls.server.close)
        cls.server.__enter__()
