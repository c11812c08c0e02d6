"""A small client for the admin endpoint (standard library only), used by the CLI."""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

import attrs

from ._routes import API_PREFIX


class Unreachable(Exception):
    """The endpoint could not be reached or did not answer like a hotfix endpoint."""


@attrs.frozen
class Reply:
    status: int
    body: dict


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def parse_target(url: str | None, socket_path: str | None) -> tuple[str, str, str, int | None, str]:
    """``(scheme, host_or_path, base_path, port, display)`` for a URL or a socket path.

    URLs: ``http://host:port[/mount]``, ``https://...`` or
    ``http+unix://<percent-encoded socket path>[/mount]``.
    """
    if socket_path is not None:
        path = os.path.abspath(socket_path)
        return "unix", path, "", None, f"unix:{path}"
    if not url:
        raise ValueError("no endpoint address")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "http+unix":
        path = urllib.parse.unquote(parts.netloc)
        return "unix", path, parts.path.rstrip("/"), None, f"unix:{path}{parts.path.rstrip('/')}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"unsupported endpoint URL {url!r}: use http://HOST:PORT or http+unix://ENCODED_PATH")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    return parts.scheme, parts.hostname, parts.path.rstrip("/"), port, url.rstrip("/")


class Client:
    """Calls the admin routes. ``Unreachable`` for network errors and non-hotfix answers."""

    def __init__(self, url: str | None = None, *, socket_path: str | None = None, token: str | None = None,
                 timeout: float = 30.0, headers: Mapping[str, str] | None = None) -> None:
        """``headers``: sent with every request (the CLI's identity and ``traceparent``)."""
        self.scheme, self.host, self.base, self.port, self.target = parse_target(url, socket_path)
        self.token = token
        self.timeout = timeout
        self.headers = dict(headers or {})

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "unix":
            return _UnixConnection(self.host, timeout)
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def call(self, method: str, route: str, body: dict | None = None, *, timeout: float | None = None) -> Reply:
        headers = {**self.headers, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = self._connection(self.timeout if timeout is None else timeout)
        try:
            conn.request(method, f"{self.base}{API_PREFIX}/{route}", body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"{self.target}: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Unreachable(f"{self.target}: answered HTTP {response.status} without JSON; is it a hotfix endpoint?") from None
        if not isinstance(payload, dict) or "schema_version" not in payload:
            raise Unreachable(f"{self.target}: answered HTTP {response.status} with JSON that is not from hotfix")
        return Reply(response.status, payload)

    def health(self) -> Reply:
        return self.call("GET", "health")

    def status(self) -> Reply:
        return self.call("GET", "status")

    def history(self) -> Reply:
        return self.call("GET", "history")

    def dry_run(self, module: str) -> Reply:
        return self.call("POST", "dry-run", {"module": module})

    def apply(self, module: str, *, http_timeout: float | None = None, **fields: Any) -> Reply:
        """``fields``: expect_sha256, allow_risky, probation, timeout (``None`` values are left out)."""
        body = {"module": module, **{k: v for k, v in fields.items() if v is not None}}
        return self.call("POST", "apply", body, timeout=http_timeout)

    def rollback(self, patch_id: str | None = None, *, http_timeout: float | None = None, **fields: Any) -> Reply:
        body = {k: v for k, v in {"patch_id": patch_id, **fields}.items() if v is not None}
        return self.call("POST", "rollback", body, timeout=http_timeout)
