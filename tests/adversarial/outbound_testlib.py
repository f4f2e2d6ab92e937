"""What the outbound-address tests share: sockets that record every connection made to them, a
loopback HTTP stub (a hostile peer's callback endpoint, an upstream, a redirector), and the
address matrix of URLs that must never be connected to."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The hosts of the loopback data space's roles in these tests: the connectors listen on
# 127.0.0.1 (the devspace); what the policy under test allows listens on ALLOWED_HOST only.
ALLOWED_HOST = "127.0.0.3"
ALLOWED = (f"{ALLOWED_HOST}/32",)


class Recorder:
    """A listening socket that records, and closes, every connection made to it: the proof that
    nothing connected to a forbidden address that points at it."""

    def __init__(self, host: str, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(64)
        self._sock.settimeout(0.05)
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self.connections: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections.append(peer)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


class Stub:
    """A threaded HTTP server on `host`: a peer the policy allows.

    * `/redirect/<n>/...` (any method) answers 307 to `targets[n]`;
    * `GET /data` answers some bytes (an upstream);
    * any other POST/PUT is recorded (`messages[path]`, the JSON body or None) and answered 200
      with `{}` (a DSP callback endpoint that acknowledges every message).
    """

    def __init__(self, host: str = ALLOWED_HOST) -> None:
        self.targets: list[str] = []
        self.messages: dict[str, Any] = {}
        self._lock = threading.Condition()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes = b"{}", **headers: str) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = self.path.split("/")
                if len(parts) > 2 and parts[1] == "redirect":
                    self._answer(307, Location=stub.targets[int(parts[2])])
                    return
                if self.command == "GET" and self.path == "/data":
                    self._answer(200, b"upstream data\n")
                    return
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                with stub._lock:
                    stub.messages[self.path] = body
                    stub._lock.notify_all()
                self._answer(200)

            do_GET = do_POST = do_PUT = _handle

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def redirect(self, target: str) -> str:
        """A URL on this stub that redirects to `target` (whatever path is appended to it)."""
        self.targets.append(target)
        return f"{self.url}/redirect/{len(self.targets) - 1}"

    def wait_for(self, path: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        with self._lock:
            while path not in self.messages:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no message at {path}; got {sorted(self.messages)}")
                self._lock.wait(left)
            return self.messages[path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def forbidden(r4: Recorder, r6: Recorder) -> list[tuple[str, str, str]]:
    """(name, base URL, what the refusal says) for addresses no policy in these tests allows:
    those on loopback point at the recorders, so a connection would be seen."""
    p4, p6 = r4.port, r6.port
    return [
        ("loopback", f"http://127.0.0.1:{p4}", "127.0.0.1 is a loopback address"),
        ("ipv6-loopback", f"http://[::1]:{p6}", "::1 is a loopback address"),
        ("unspecified", f"http://0.0.0.0:{p4}", "0.0.0.0 is a unspecified address"),
        ("dns-to-loopback", f"http://localhost:{p4}", "localhost resolves to 127.0.0.1, a loopback"),
        ("mapped", f"http://[::ffff:127.0.0.1]:{p4}", "::ffff:7f00:1 is a loopback address"),
        ("mapped-hex", f"http://[::ffff:7f00:1]:{p4}", "::ffff:7f00:1 is a loopback address"),
        ("decimal", f"http://2130706433:{p4}", "is the IPv4 address 127.0.0.1 (loopback) in a non-canonical"),
        ("octal", f"http://0177.0.0.1:{p4}", "is the IPv4 address 127.0.0.1 (loopback) in a non-canonical"),
        ("hex", f"http://0x7f.0.0.1:{p4}", "is the IPv4 address 127.0.0.1 (loopback) in a non-canonical"),
        ("short", f"http://127.1:{p4}", "is the IPv4 address 127.0.0.1 (loopback) in a non-canonical"),
        ("private-10", "http://10.0.0.1:9", "10.0.0.1 is a private address"),
        ("private-172", "http://172.16.0.1:9", "172.16.0.1 is a private address"),
        ("private-192", "http://192.168.0.1:9", "192.168.0.1 is a private address"),
        ("metadata", "http://169.254.169.254", "169.254.169.254 is a link-local address"),
        ("link-local-6", "http://[fe80::1]:9", "fe80::1 is a link-local address"),
    ]


# URLs that are no URL this connector calls at all (syntax), and what the refusal says
MALFORMED = [
    ("not-a-url", "not a callback address", "not an absolute URL"),
    ("empty", "", "not an absolute URL"),
    ("file", "file:///etc/passwd", "scheme 'file' is not allowed"),
    ("ftp", "ftp://example.org/x", "scheme 'ftp' is not allowed"),
    ("no-host", "http:///negotiations", "not an absolute URL"),
    ("host-300", "https://" + "a" * 300 + "/", "longer than 253 characters"),
    ("label-64", "https://" + "a" * 64 + ".example/", "longer than 63 characters"),
    ("idna-label-70", "https://" + "\u00e9" * 70 + ".example/", "not a valid internationalized"),
    ("credentials", f"http://user:pw@{ALLOWED_HOST}/cb", "credentials"),
    ("fragment", f"http://{ALLOWED_HOST}/cb#x", "fragment"),
]
