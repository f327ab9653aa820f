"""HTTP-level robustness: oversized and malformed requests, keep-alive, pipelining, many connections."""

import http.client
import socket
import threading
import unittest

from harness import ServerTestCase, read_response


class HttpRobustnessTest(ServerTestCase):
    serve_args = ["--rate-limit", "0"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.org = cls.server.create_org()
        cls.key = cls.server.create_key(cls.org)

    def assert_alive(self):
        self.assertTrue(self.server.is_running(), "pushaid exited:\n" + self.server.log_tail(40))
        response = self.server.list_agents(self.key)
        self.assertEqual(response.status, 200, response.describe())

    def request_bytes(self, extra_headers=b"", request_line=b"GET /api/v1/agents HTTP/1.1"):
        return (request_line + b"\r\nHost: 127.0.0.1\r\nx-api-key: " + self.key.encode() + b"\r\n"
                + extra_headers + b"Connection: close\r\n\r\n")

    def test_huge_header_value(self):
        response = self.server.raw(self.request_bytes(b"X-Big: " + b"a" * (256 * 1024) + b"\r\n"))
        if response is not None:
            self.assertGreaterEqual(response.status, 400, response.describe())
            self.assertLess(response.status, 500, response.describe())
        self.assert_alive()

    def test_huge_api_key_header(self):
        data = (b"GET /api/v1/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: pai_" + b"a" * 100000
                + b"\r\nConnection: close\r\n\r\n")
        response = self.server.raw(data)
        if response is not None:
            self.assertGreaterEqual(response.status, 400, response.describe())
            self.assertLess(response.status, 500, response.describe())
        self.assert_alive()

    def test_many_headers(self):
        headers = b"".join(b"X-Header-%d: value\r\n" % i for i in range(2000))
        response = self.server.raw(self.request_bytes(headers))
        if response is not None:
            self.assertLess(response.status, 500, response.describe())
        self.assert_alive()

    def test_huge_url(self):
        response = self.server.raw(self.request_bytes(
            request_line=b"GET /api/v1/agents?limit=" + b"9" * 200000 + b" HTTP/1.1"))
        if response is not None:
            self.assertGreaterEqual(response.status, 400, response.describe())
            self.assertLess(response.status, 500, response.describe())
        self.assert_alive()

    def test_malformed_request_lines(self):
        for line in (b"GARBAGE", b"GET", b"GET /api/v1/agents HTTP/9.9", b"\x00\x01\x02 / HTTP/1.1",
                     b"GET /api/v1/agents HTTP/1.1 extra"):
            with self.subTest(line=line):
                response = self.server.raw(line + b"\r\nHost: x\r\n\r\n")
                if response is not None:
                    self.assertGreaterEqual(response.status, 400, response.describe())
                    self.assertLess(response.status, 600, response.describe())
        self.assert_alive()

    def test_invalid_content_length(self):
        response = self.server.raw(b"POST /api/v1/agents/1/runs HTTP/1.1\r\nHost: x\r\nx-api-key: "
                                   + self.key.encode() + b"\r\nContent-Length: abc\r\n\r\n{}")
        if response is not None:
            self.assertEqual(response.status, 400, response.describe())
        self.assert_alive()

    def test_body_shorter_than_content_length(self):
        sock = socket.create_connection((self.server.host, self.server.port), timeout=10)
        sock.sendall(b"POST /api/v1/agents/1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"x-api-key: " + self.key.encode() + b"\r\nContent-Length: 100\r\n\r\n{}")
        sock.close()
        self.assert_alive()

    def test_header_names_case_insensitive(self):
        data = (b"GET /api/v1/agents HTTP/1.1\r\nHOST: 127.0.0.1\r\nX-API-KEY: " + self.key.encode()
                + b"\r\nCONNECTION: close\r\n\r\n")
        response = self.server.raw(data)
        self.assertEqual(response.status, 200, response.describe())

    def test_keep_alive_several_requests(self):
        connection = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
        try:
            for _ in range(5):
                connection.request("GET", "/api/v1/agents", headers={"x-api-key": self.key})
                reply = connection.getresponse()
                reply.read()
                self.assertEqual(reply.status, 200)
            connection.request("GET", "/api/v1/nope", headers={"x-api-key": self.key})
            reply = connection.getresponse()
            reply.read()
            self.assertEqual(reply.status, 404)
            connection.request("GET", "/api/v1/agents", headers={"x-api-key": self.key})
            reply = connection.getresponse()
            reply.read()
            self.assertEqual(reply.status, 200)
        finally:
            connection.close()

    def test_pipelined_requests(self):
        single = b"GET /api/v1/agents HTTP/1.1\r\nHost: x\r\nx-api-key: " + self.key.encode() + b"\r\n\r\n"
        last = (b"GET /api/v1/agents?limit=1 HTTP/1.1\r\nHost: x\r\nx-api-key: " + self.key.encode()
                + b"\r\nConnection: close\r\n\r\n")
        sock = socket.create_connection((self.server.host, self.server.port), timeout=10)
        try:
            sock.sendall(single + single + last)
            stream = sock.makefile("rb")
            limits = []
            for _ in range(3):
                response = read_response(stream)
                self.assertIsNotNone(response, "fewer than three replies")
                self.assertEqual(response.status, 200, response.describe())
                limits.append(response.json["pagination"]["limit"])
            self.assertEqual(limits, [20, 20, 1])
        finally:
            sock.close()

    def test_concurrent_connections(self):
        statuses = []
        lock = threading.Lock()

        def call():
            response = self.server.list_agents(self.key)
            with lock:
                statuses.append(response.status)

        threads = [threading.Thread(target=call) for _ in range(100)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(statuses, [200] * 100)

    def test_client_disconnects_early(self):
        for _ in range(20):
            sock = socket.create_connection((self.server.host, self.server.port), timeout=10)
            sock.sendall(b"GET /api/v1/agents HTTP/1.1\r\nHost: x\r\n")
            sock.close()
        self.assert_alive()


if __name__ == "__main__":
    unittest.main()
