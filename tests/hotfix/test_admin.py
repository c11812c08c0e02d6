"""The admin endpoint: routes, auth, every status code, and nothing changed after each error."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import logging
import os
import socket
import stat
import threading

import pytest

import hotfix
import hotfix.admin
import safepoints
from tests.helpers import assert_same, snapshot

TOKEN = "test-token-" + "x" * 24
HEADERS_OK = {"Authorization": f"Bearer {TOKEN}"}

V1 = """
    def f():
        return 1

    def g(x):
        return x
"""
V2_SAFE = """
    def f():
        return 2

    def g(x):
        return x
"""
V2_RISKY = """
    def f():
        return 1

    def g(x):
        try:
            return x + 1
        except KeyError:
            return 0
"""
V2_BLOCKED = """
    def f(:
        return 2
"""


class Http:
    """Raw-ish HTTP calls to an embedded server, with full control of the headers."""

    def __init__(self, server: hotfix.admin.AdminServer) -> None:
        self.server = server
        self.port = int(server.url.rsplit(":", 1)[1])

    def __call__(self, method: str, route: str = "", body=None, *, token: str | None = TOKEN,
                 headers: dict | None = None, raw: bytes | None = None, path: str | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        hdrs = {}
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        try:
            conn.request(method, path or f"/hotfix/v1/{route}", body=data, headers=hdrs)
            response = conn.getresponse()
            payload = json.loads(response.read())
            return response.status, payload, {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()


@pytest.fixture
def make_server(modules):
    servers = []

    def make(**kwargs):
        kwargs.setdefault("token", TOKEN)
        kwargs.setdefault("allowed_roots", [modules.dir])
        # These tests send many wrong tokens on purpose; the limit has its own tests.
        kwargs.setdefault("limits", hotfix.admin.EndpointLimits(auth_failure_burst=1_000_000))
        server = hotfix.admin.serve(**kwargs)
        servers.append(server)
        return server, Http(server)

    yield make
    for s in servers:
        s.close()


def test_health_needs_no_token_everything_else_does(make_server):
    server, call = make_server()
    status, body, _ = call("GET", "health", token=None)
    assert status == 200 and body["status"] == "ok"
    # booleans and counts only (tests/hotfix/test_health.py checks their values)
    assert set(body) == {"schema_version", "status", "in_probation", "patches_in_effect", "stale_modules"}
    for route in ("status", "history", "openapi.json"):  # metrics: tests/hotfix/test_metrics.py
        status, body, headers = call("GET", route, token=None)
        assert (status, body["error"]) == (401, "unauthorized")
        assert headers["www-authenticate"].startswith("Bearer")
        assert call("GET", route, token="wrong-" + TOKEN)[0] == 401
        assert call("GET", route, token=None, headers={"Authorization": f"Basic {TOKEN}"})[0] == 401
        assert call("GET", route)[0] == 200
    # unknown routes do not reveal themselves before auth
    assert call("GET", path="/nope", token=None)[0] == 401
    assert call("POST", "dry-run", {"module": "x"}, token=None)[0] == 401


def test_every_error_status_leaves_the_module_untouched(make_server, modules):
    mod = modules.create(V1)
    _, call = make_server()
    modules.write(mod, V2_SAFE)  # a valid change waits on disk: any accepted apply would show
    code = mod.f.__code__
    before = snapshot(mod)
    body = {"module": mod.__name__, "probation": 0}
    cases = [
        (401, dict(token=None)),
        (401, dict(token="wrong-" + TOKEN)),
        (403, dict(headers={"Host": "evil.example"})),
        (404, dict(path="/hotfix/v1/aply")),
        (404, dict(body={"module": "not_loaded_anywhere_abc", "probation": 0})),
        (405, dict(method="GET")),
        (400, dict(raw=b'{"module": 1}')),
        (413, dict(raw=b" " * (hotfix.admin.MAX_BODY + 1))),
        (415, dict(headers={"Content-Type": "text/plain"})),
        (409, dict(body={**body, "expect_sha256": "0" * 64})),
    ]
    for expected, kwargs in cases:
        method = kwargs.pop("method", "POST")
        status = call(method, "apply", kwargs.pop("body", body) if method == "POST" else None, **kwargs)[0]
        assert status == expected, (expected, kwargs)
        assert mod.f.__code__ is code
        assert_same(before, snapshot(mod))


def test_status_lists_workers_patches_and_stale_modules(make_server, modules):
    mod = modules.create(V1)
    server, call = make_server()
    ready, stop = threading.Event(), threading.Event()

    def worker():
        with safepoints.worker("admin-status-worker"):
            with safepoints.idle():
                ready.set()
                stop.wait(30)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert ready.wait(10)
        status, body, _ = call("GET", "status")
        assert status == 200
        assert body["pid"] == os.getpid()
        assert "admin-status-worker" in [w["name"] for w in body["workers"]]
        assert all(m["module"] != mod.__name__ for m in body["stale_modules"])
        # same size, same mtime: still stale (the stat shortcut uses ctime too)
        modules.write(mod, V1.replace("return 1", "return 7"), keep_stat=True)
        stale = {m["module"]: m for m in call("GET", "status")[1]["stale_modules"]}
        assert mod.__name__ in stale
        assert stale[mod.__name__]["disk_sha256"] != stale[mod.__name__]["running_sha256"]
        status, body, _ = call("POST", "apply", {"module": mod.__name__, "probation": 0})
        assert status == 200, body
        body = call("GET", "status")[1]
        assert all(m["module"] != mod.__name__ for m in body["stale_modules"])
        ours = [p for p in body["patches"] if mod.__name__ in p["modules"]]
        assert ours and ours[-1]["in_effect"] is True
    finally:
        stop.set()
        t.join(10)


def test_dry_run_reports_and_changes_nothing(make_server, modules):
    mod = modules.create(V1)
    server, call = make_server()
    modules.write(mod, V2_SAFE)
    before = snapshot(mod)
    status, body, headers = call("POST", "dry-run", {"module": mod.__name__})
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert body["outcome"] == "safe"
    assert body["report"]["schema_version"] == 1
    assert body["report"]["module"] == mod.__name__
    assert "SAFE" in body["report_text"]
    assert_same(before, snapshot(mod))
    assert mod.f() == 1


def test_apply_then_rollback_restores_the_same_code_objects(make_server, modules):
    mod = modules.create(V1)
    server, call = make_server()
    old_code = mod.f.__code__
    modules.write(mod, V2_SAFE)
    sha = call("POST", "dry-run", {"module": mod.__name__})[1]["report"]["source"]["disk"]["sha256"]
    status, body, _ = call("POST", "apply", {"module": mod.__name__, "expect_sha256": sha, "probation": 0, "timeout": 2})
    assert status == 200, body
    assert body["outcome"] == "applied"
    patch_id = body["patch"]["id"]
    assert mod.f() == 2
    status, body, _ = call("POST", "rollback", {"patch_id": patch_id})
    assert status == 200, body
    assert body["rollback"]["patch_id"] == patch_id
    assert mod.f.__code__ is old_code
    entries = call("GET", "history")[1]["entries"]
    assert [e["kind"] for e in entries if patch_id in (e.get("id"), e.get("patch_id"))] == ["patch", "rollback"]


def test_404_for_modules_not_loaded_or_not_allowed(make_server, modules):
    mod = modules.create(V1)
    other = modules.create(V1)
    modules.write(mod, V2_SAFE)
    modules.write(other, V2_SAFE)
    server, call = make_server(allowed_prefixes=[mod.__name__], allowed_roots=None)
    before, before_other = snapshot(mod), snapshot(other)
    for name in ("not_loaded_anywhere_xyz", other.__name__, "json", "hotfix", "hotfix._transaction",
                 "safepoints", "__main__"):
        for route in ("dry-run", "apply"):
            status, body, _ = call("POST", route, {"module": name, "probation": 0} if route == "apply" else {"module": name})
            assert (status, body["error"]) == (404, "unknown-module"), (name, route, body)
    # hotfix itself is never patchable through the endpoint, even when listed
    _, call2 = make_server(allowed_prefixes=["hotfix", "safepoints"])
    assert call2("POST", "dry-run", {"module": "hotfix._transaction"})[0] == 404
    assert_same(before, snapshot(mod))
    assert_same(before_other, snapshot(other))
    assert call("POST", "dry-run", {"module": mod.__name__})[0] == 200


def test_default_policy_is_application_code(make_server, modules):
    mod = modules.create(V1)
    _, call = make_server(allowed_roots=None)
    assert call("POST", "dry-run", {"module": mod.__name__})[0] == 200
    assert call("POST", "dry-run", {"module": "json"})[0] == 404  # standard library
    assert call("POST", "dry-run", {"module": "attrs"})[0] == 404  # site-packages


BAD_BODIES = [
    b"not json",
    b"[1, 2]",
    b'"module"',
    b"{",
    b'{"module": 1}',
    b'{"module": null}',
    b'{"module": ""}',
    b'{"module": "a..b"}',
    b'{"module": "os; import os"}',
    b'{"module": "MOD", "source": "def f(): return 3"}',
    b'{"module": "MOD", "code": "import os"}',
    b'{"module": "MOD", "allow_risky": "yes"}',
    b'{"module": "MOD", "probation": -1}',
    b'{"module": "MOD", "probation": true}',
    b'{"module": "MOD", "probation": 1e9}',
    b'{"module": "MOD", "probation": NaN}',
    b'{"module": "MOD", "probation": Infinity}',
    b'{"module": "MOD", "timeout": 0}',
    b'{"module": "MOD", "timeout": "2"}',
    b'{"module": "MOD", "expect_sha256": "abc"}',
    b'{"module": "MOD", "expect_sha256": 12}',
    b'{"module": "MOD", "module": "MOD"}',
    b'{"module": "\xff\xfe"}',
    b"[" * 5000 + b"]" * 5000,
]


def test_400_for_bad_input_and_nothing_changes(make_server, modules):
    mod = modules.create(V1)
    _, call = make_server()
    modules.write(mod, V2_SAFE)
    before = snapshot(mod)
    for raw in BAD_BODIES:
        raw = raw.replace(b"MOD", mod.__name__.encode())
        status, body, _ = call("POST", "apply", raw=raw)
        assert (status, body["error"]) == (400, "bad-request"), (raw[:80], body)
        assert_same(before, snapshot(mod))
    assert call("POST", "rollback", raw=b'{"patch_id": 5}')[0] == 400
    assert call("POST", "dry-run", raw=b'{}')[0] == 400  # module is required
    assert_same(before, snapshot(mod))


def test_409_rejected_blocked_risky_and_pinned(make_server, modules):
    mod = modules.create(V1)
    _, call = make_server()
    before = snapshot(mod)

    modules.write(mod, V2_BLOCKED)
    status, body, _ = call("POST", "apply", {"module": mod.__name__, "probation": 0})
    assert (status, body["error"], body["reason"]) == (409, "rejected", "blocked")
    assert body["report"]["verdict"] == "blocked"
    assert "syntax-error" in body["report_text"]
    assert_same(before, snapshot(mod))

    modules.write(mod, V2_RISKY)
    status, body, _ = call("POST", "apply", {"module": mod.__name__, "probation": 0})
    assert (status, body["reason"]) == (409, "risky")
    assert body["report"]["verdict"] == "risky"
    assert_same(before, snapshot(mod))

    modules.write(mod, V2_SAFE)
    status, body, _ = call("POST", "apply", {"module": mod.__name__, "probation": 0, "expect_sha256": "0" * 64})
    assert (status, body["reason"]) == (409, "precondition")
    assert "sha256" in body["message"]
    assert_same(before, snapshot(mod))

    modules.write(mod, V2_RISKY)
    status, body, _ = call("POST", "apply", {"module": mod.__name__, "probation": 0, "allow_risky": True})
    assert status == 200, body
    assert mod.g(2) == 3


def test_409_rolled_back_by_a_server_side_check(make_server, modules):
    mod = modules.create(V1)
    _, call = make_server(checks={mod.__name__: [lambda: mod.f() == 1]})
    before = snapshot(mod)
    modules.write(mod, V2_SAFE)
    status, body, _ = call("POST", "apply", {"module": mod.__name__, "probation": 0})
    assert (status, body["error"], body["reason"]) == (409, "rolled-back", "check-failed")
    assert body["outcome"] == "rolled-back"
    assert body["patch_id"]
    assert_same(before, snapshot(mod))
    assert mod.f() == 1


def test_409_busy_while_another_transaction_runs(make_server, modules):
    mod = modules.create(V1)
    earlier = modules.create(V1)
    entered, release = threading.Event(), threading.Event()

    def slow_check():
        entered.set()
        return release.wait(30)

    _, call = make_server(checks={mod.__name__: [slow_check]})
    modules.write(earlier, V2_SAFE)
    status, body, _ = call("POST", "apply", {"module": earlier.__name__, "probation": 0})
    assert status == 200, body
    modules.write(mod, V2_SAFE)
    results = []
    t = threading.Thread(target=lambda: results.append(call("POST", "apply", {"module": mod.__name__, "probation": 0})))
    t.start()
    try:
        assert entered.wait(30)
        applied_code, earlier_code = mod.f.__code__, earlier.f.__code__
        status, body, _ = call("POST", "apply", {"module": mod.__name__, "probation": 0})
        assert (status, body["error"], body["reason"]) == (409, "rejected", "busy")
        status, body, _ = call("POST", "rollback", {})
        assert (status, body["reason"]) == (409, "busy")
        assert mod.f.__code__ is applied_code and earlier.f.__code__ is earlier_code
    finally:
        release.set()
        t.join(30)
    assert results[0][0] == 200


def test_rollback_errors(make_server, modules):
    mod = modules.create(V1)
    _, call = make_server()
    status, body, _ = call("POST", "rollback", {"patch_id": "hf-0-0-nope"})
    assert (status, body["error"]) == (404, "unknown-patch")
    # only patches of modules this endpoint may touch count
    status, body, _ = call("POST", "rollback", {})
    assert (status, body["reason"]) == (409, "nothing-to-roll-back")
    modules.write(mod, V2_SAFE)
    patch_id = call("POST", "apply", {"module": mod.__name__, "probation": 0})[1]["patch"]["id"]
    assert call("POST", "rollback", {})[1]["rollback"]["patch_id"] == patch_id
    status, body, _ = call("POST", "rollback", {"patch_id": patch_id})
    assert (status, body["error"], body["reason"]) == (409, "rejected", "precondition")


def test_rollback_refuses_patches_outside_the_allowed_modules(make_server, modules):
    mod = modules.create(V1)
    modules.write(mod, V2_SAFE)
    patch = hotfix.apply(mod, probation=0)
    _, call = make_server(allowed_roots=None, allowed_prefixes=["somewhere_else"])
    status, body, _ = call("POST", "rollback", {"patch_id": patch.id})
    assert (status, body["error"]) == (404, "unknown-module")
    assert mod.f() == 2
    hotfix.rollback(patch.id)


def test_404_405_for_routes(make_server):
    _, call = make_server()
    assert call("GET", path="/nope")[:2][0] == 404
    assert call("GET", path="/hotfix/v1/status/")[0] == 404
    assert call("GET", path="/hotfix/v2/status")[0] == 404
    status, body, headers = call("GET", "apply")
    assert (status, headers["allow"]) == (405, "POST")
    status, body, headers = call("DELETE", "status")
    assert (status, headers["allow"]) == (405, "GET")
    assert call("PUT", "dry-run", {"module": "x"})[0] == 405
    assert call("GET", path="/hotfix/v1/status?verbose=1")[0] == 200


def test_413_415_and_framing_errors(make_server, modules):
    mod = modules.create(V1)
    server, call = make_server()
    modules.write(mod, V2_SAFE)
    before = snapshot(mod)
    big = json.dumps({"module": mod.__name__, "pad": "x" * (hotfix.admin.MAX_BODY + 10)}).encode()
    status, body, _ = call("POST", "apply", raw=big)
    assert (status, body["error"]) == (413, "payload-too-large")
    status, body, _ = call("POST", "apply", raw=json.dumps({"module": mod.__name__}).encode(),
                           headers={"Content-Type": "text/plain"})
    assert (status, body["error"]) == (415, "unsupported-media-type")
    # a huge Content-Length is refused before any body is read
    with socket.create_connection(("127.0.0.1", call.port), timeout=10) as s:
        s.sendall(f"POST /hotfix/v1/apply HTTP/1.1\r\nHost: 127.0.0.1:{call.port}\r\n"
                  f"Authorization: Bearer {TOKEN}\r\nContent-Length: 99999999999\r\n\r\n".encode())
        assert b" 413 " in s.recv(65536).split(b"\r\n", 1)[0] + b" "
    for bad in (b"Content-Length: -1\r\n", b"Content-Length: abc\r\n", b"Transfer-Encoding: chunked\r\n",
                b"Content-Length: 2\r\nContent-Length: 2\r\n"):
        with socket.create_connection(("127.0.0.1", call.port), timeout=10) as s:
            s.sendall(b"POST /hotfix/v1/apply HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n%s\r\n{}"
                      % (call.port, TOKEN.encode(), bad))
            s.shutdown(socket.SHUT_WR)
            assert s.recv(65536).startswith(b"HTTP/1.1 400 "), bad
    assert_same(before, snapshot(mod))
    assert call("GET", "health")[0] == 200


def test_host_allowlist_blocks_dns_rebinding(make_server):
    server, call = make_server()
    port = call.port
    for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
        assert call("GET", "status", headers={"Host": host})[0] == 200, host
    for host in ("evil.example", f"evil.example:{port}", f"localhost:{port + 1}", "127.0.0.1:abc", "localhost.evil.example"):
        status, body, _ = call("GET", "status", headers={"Host": host})
        assert (status, body["error"]) == (403, "forbidden"), host
    # HTTP/1.0 without any Host header
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET /hotfix/v1/status HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        assert s.recv(65536).startswith(b"HTTP/1.1 403 ")
    _, relaxed = make_server(allowed_hosts=["*"])
    assert relaxed("GET", "status", headers={"Host": "anything"})[0] == 200
    _, named = make_server(allowed_hosts=["svc.internal"])
    assert named("GET", "status", headers={"Host": f"svc.internal:{named.port}"})[0] == 200
    assert named("GET", "status", headers={"Host": "localhost"})[0] == 403


def test_non_loopback_bind_needs_explicit_consent(make_server):
    with pytest.raises(ValueError, match="non-loopback"):
        hotfix.admin.serve(token=TOKEN, host="0.0.0.0")
    server, call = make_server(host="0.0.0.0", allow_non_loopback=True)
    assert call("GET", "health", token=None)[0] == 200
    assert call("GET", "status", headers={"Host": "evil.example"})[0] == 403


def test_ipv6_loopback(make_server):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server, _ = make_server(host="::1")
    except OSError:
        pytest.skip("IPv6 loopback unavailable")
    client = hotfix.admin.Client(server.url, token=TOKEN)
    assert client.status().status == 200


def test_token_from_env_file_or_generated(tmp_path, monkeypatch):
    monkeypatch.setenv("HOTFIX_TOKEN", "env-token-" + "e" * 20)
    with hotfix.admin.serve() as s:
        assert s.token == "env-token-" + "e" * 20
        assert s.token_file is None
    monkeypatch.delenv("HOTFIX_TOKEN")
    path = tmp_path / "tok"
    with hotfix.admin.serve(token_file=path) as s:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert path.read_text().strip() == s.token
        assert len(s.token) >= 32
        assert hotfix.admin.Client(s.url, token=path.read_text().strip()).status().status == 200
    assert not path.exists()  # a generated token file goes away with the server
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with hotfix.admin.serve() as s:
        assert s.token_file == str(tmp_path / "hotfix" / f"hotfix-{os.getpid()}.token")
        assert stat.S_IMODE(os.stat(tmp_path / "hotfix").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(s.token_file).st_mode) == 0o600
    for weak in ("", "short", "has space in it 1234567"):
        with pytest.raises(ValueError):
            hotfix.admin.serve(token=weak)


def test_audit_trail_never_contains_the_token(make_server, modules, tmp_path, caplog):
    mod = modules.create(V1)
    seen = []
    audit_file = tmp_path / "audit.jsonl"
    _, call = make_server(audit=audit_file)
    _, call2 = make_server(audit=seen.append)
    with caplog.at_level(logging.INFO, logger="hotfix.audit"):
        call("GET", "health", token=None)
        call("GET", "status", token="wrong-token-" + TOKEN)
        call("POST", "dry-run", {"module": mod.__name__})
        call("POST", "dry-run", raw=b"garbage")
        call2("GET", "status")
    records = [json.loads(line) for line in audit_file.read_text().splitlines()]
    assert [(r["method"], r["route"], r["status"]) for r in records] == [
        ("GET", "health", 200), ("GET", None, 401), ("POST", "dry-run", 200), ("POST", "dry-run", 400)]
    assert records[2]["module"] == mod.__name__
    assert records[2]["outcome"] == "unchanged"
    assert records[1]["outcome"] == "unauthorized"
    assert all(r["remote"].startswith("127.0.0.1:") and r["transport"] == "tcp" for r in records)
    assert stat.S_IMODE(os.stat(audit_file).st_mode) == 0o600
    assert seen and seen[0]["route"] == "status"
    assert TOKEN not in audit_file.read_text()
    assert TOKEN not in caplog.text
    assert any(getattr(r, "audit", None) for r in caplog.records)


def test_openapi_document_describes_every_route(make_server):
    _, call = make_server()
    status, doc, _ = call("GET", "openapi.json")
    assert status == 200
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ops == {(r.method, r.path) for r in hotfix.admin.ROUTES}
    assert doc["paths"]["/hotfix/v1/health"]["get"]["security"] == []
    apply_schema = doc["paths"]["/hotfix/v1/apply"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert apply_schema["additionalProperties"] is False
    assert set(apply_schema["properties"]) == {"module", "expect_sha256", "allow_risky", "probation", "timeout"}
    assert apply_schema["required"] == ["module"]
    assert {"200", "400", "401", "404", "409", "413"} <= set(doc["paths"]["/hotfix/v1/apply"]["post"]["responses"])
    json.dumps(doc)  # serialisable as is


def test_unix_socket_is_private_and_serves_the_same_routes(modules, short_dir):
    mod = modules.create(V1)
    d = short_dir()
    path = os.path.join(d, "admin.sock")
    with hotfix.admin.serve(token=TOKEN, unix_socket=path, allowed_roots=[modules.dir]) as server:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert server.url.startswith("http+unix://")
        assert os.listdir(d) == ["admin.sock"]  # the private bind directory is gone
        client = hotfix.admin.Client(socket_path=path, token=TOKEN)
        assert client.health().status == 200
        assert client.dry_run(mod.__name__).body["outcome"] == "unchanged"
        assert hotfix.admin.Client(server.url, token=TOKEN).status().status == 200
        assert hotfix.admin.Client(socket_path=path, token="wrong-" + TOKEN).status().status == 401
        with pytest.raises(OSError, match="in use"):
            hotfix.admin.serve(token=TOKEN, unix_socket=path)
    assert not os.path.exists(path)
    regular = os.path.join(d, "file.sock")
    open(regular, "w").close()
    with pytest.raises(FileExistsError):
        hotfix.admin.serve(token=TOKEN, unix_socket=regular)
    with pytest.raises(ValueError, match="longer"):
        hotfix.admin.serve(token=TOKEN, unix_socket=os.path.join(d, "x" * 120 + ".sock"))


@pytest.mark.skipif(os.name != "posix" or not hasattr(socket, "SO_PEERCRED"), reason="needs SO_PEERCRED")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")  # the child only uses a socket, then _exit
def test_unix_socket_refuses_other_uids(short_dir):
    d = short_dir()
    os.chmod(d, 0o755)
    path = os.path.join(d, "admin.sock")
    with hotfix.admin.serve(token=TOKEN, unix_socket=path):
        os.chmod(path, 0o666)  # simulate a permission slip: the peer check still refuses
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: become nobody, ask for status with the right token
            try:
                os.close(r)
                os.setgid(65534)
                os.setuid(65534)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(10)
                s.connect(path)
                s.sendall(f"GET /hotfix/v1/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
                os.write(w, s.recv(200))
            finally:
                os._exit(0)
        os.close(w)
        with io.FileIO(r) as fh:
            answer = fh.read()
        os.waitpid(pid, 0)
    assert answer.startswith(b"HTTP/1.1 403 "), answer


def test_serve_socket_dir_shares_one_token_and_cleans_stale_sockets(monkeypatch, short_dir):
    monkeypatch.delenv("HOTFIX_TOKEN", raising=False)
    d = short_dir()
    dead = os.path.join(d, "999999999.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(dead)
    s.close()
    with hotfix.admin.serve_socket_dir(d) as server:
        assert server.socket_path == os.path.join(d, f"{os.getpid()}.sock")
        assert not os.path.exists(dead)
        token_path = os.path.join(d, "token")
        assert stat.S_IMODE(os.stat(token_path).st_mode) == 0o600
        assert open(token_path).read().strip() == server.token
        assert sorted(os.listdir(d)) == [f"{os.getpid()}.sock", "token"]
    assert sorted(os.listdir(d)) == ["token"]


# --------------------------------------------------------------------------- one router, three transports


def _wsgi_call(app, method, path, body=b"", headers=None):
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO(body),
               "CONTENT_LENGTH": str(len(body)) if body else "", "REMOTE_ADDR": "10.0.0.1", "REMOTE_PORT": "5"}
    for k, v in (headers or {}).items():
        if k.lower() == "content-type":
            environ["CONTENT_TYPE"] = v
        else:
            environ["HTTP_" + k.upper().replace("-", "_")] = v
    out = {}

    def start_response(status, hdrs):
        out["status"] = int(status.split()[0])
        out["headers"] = dict(hdrs)

    chunks = app(environ, start_response)
    return out["status"], json.loads(b"".join(chunks))


def _asgi_call(app, method, path, body=b"", headers=None, chunks=None):
    sent = []
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)] if chunks else [{"type": "http.request", "body": body}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()], "client": ("10.0.0.2", 6)}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_wsgi_and_asgi_apps_answer_like_the_server(make_server, modules):
    mod = modules.create(V1)
    modules.write(mod, V2_SAFE)
    before = snapshot(mod)
    _, call = make_server()
    wsgi = hotfix.admin.wsgi_app(token=TOKEN, allowed_roots=[modules.dir])
    asgi = hotfix.admin.asgi_app(token=TOKEN, allowed_roots=[modules.dir])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    js = {**auth, "Content-Type": "application/json"}
    dry = json.dumps({"module": mod.__name__}).encode()
    cases = [
        ("GET", "/hotfix/v1/health", b"", {}, 200),
        ("GET", "/hotfix/v1/status", b"", {}, 401),
        ("GET", "/hotfix/v1/status", b"", auth, 200),
        ("POST", "/hotfix/v1/dry-run", dry, js, 200),
        ("POST", "/hotfix/v1/dry-run", b"{", js, 400),
        ("POST", "/hotfix/v1/dry-run", dry, {**auth, "Content-Type": "text/plain"}, 415),
        ("POST", "/hotfix/v1/dry-run", b'{"module": "json"}', js, 404),
        ("GET", "/hotfix/v1/dry-run", b"", auth, 405),
        ("GET", "/elsewhere", b"", auth, 404),
        ("POST", "/hotfix/v1/apply", b"x" * (hotfix.admin.MAX_BODY + 1), js, 413),
    ]
    for method, path, body, headers, expected in cases:
        http_status = call(method, path=path, raw=body or None, token=None,
                           headers={"Content-Type": "application/json", **headers} if body else headers)[0]
        wsgi_status = _wsgi_call(wsgi, method, path, body, headers)[0]
        asgi_status = _asgi_call(asgi, method, path, body, headers)[0]
        assert (http_status, wsgi_status, asgi_status) == (expected,) * 3, (method, path, body[:30])
    # a streamed ASGI body over the limit is cut off at the limit
    assert _asgi_call(asgi, "POST", "/hotfix/v1/dry-run", headers=js,
                      chunks=[b"x" * 40000, b"x" * 40000])[0] == 413
    assert_same(before, snapshot(mod))
    status, body = _wsgi_call(wsgi, "POST", "/hotfix/v1/apply", json.dumps({"module": mod.__name__, "probation": 0}).encode(), js)
    assert status == 200 and mod.f() == 2
    status, body = _asgi_call(asgi, "POST", "/hotfix/v1/rollback", b"{}", js)
    assert status == 200 and mod.f() == 1


def test_asgi_lifespan_and_websocket():
    app = hotfix.admin.asgi_app(token=TOKEN)
    sent = []
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    sent.clear()
    asyncio.run(app({"type": "websocket", "path": "/"}, receive, send))
    assert sent == ["websocket.close"]
