"""One answer to "which modules" and "which are stale", shared by the endpoint, the watcher and the
signal handler (``hotfix._scope``). Each consumer is asked through its own real interface and the
answers must agree with ``Scope`` and with each other.

The copies this replaced disagreed: the endpoint treated a module from a ``dist-packages`` /
user-site directory as application code; the watcher and the signal handler took hotfix itself
when named by a prefix; a trailing dot in a prefix matched nothing in the watcher and the
signal handler; the signal handler scanned every module with a baseline, installed ones included.
"""

from __future__ import annotations

import http.client
import importlib
import importlib.util
import json
import os
import sys
import uuid

import pytest

import hotfix
import hotfix._baseline
import hotfix.admin
from hotfix import _scope
from hotfix._scope import Scope, is_application_code, staleness, system_directories
from hotfix._watch import watch

TOKEN = "scope-token-" + "y" * 24

V1 = "def f():\n    return 1\n"
V2 = "def f():\n    return 2\n"


def _make(directory, source: str = V1):
    os.makedirs(directory, exist_ok=True)
    name = f"hfscope_{uuid.uuid4().hex[:10]}"
    path = os.path.join(directory, name + ".py")
    with open(path, "w") as fh:
        fh.write(source)
    sys.path.insert(0, str(directory))
    try:
        importlib.invalidate_caches()
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(directory))
    return module, path


@pytest.fixture
def made():
    names = []

    def make(directory, source=V1):
        module, path = _make(directory, source)
        names.append(module.__name__)
        return module, path

    yield make
    for name in names:
        sys.modules.pop(name, None)


class Consumers:
    """Ask the endpoint, the watcher and the signal handler the same question."""

    def __init__(self, prefixes=None):
        self.prefixes = prefixes
        self.server = hotfix.admin.serve(token=TOKEN, allowed_prefixes=prefixes)
        self.port = int(self.server.url.rsplit(":", 1)[1])
        self.watcher = watch(prefixes=prefixes, debounce=0.05)

    def call(self, method, route, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, f"/hotfix/v1/{route}", body=data,
                         headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def endpoint_allows(self, name):
        return self.call("POST", "dry-run", {"module": name})[0] == 200

    def endpoint_stale(self):
        return {m["module"] for m in self.call("GET", "status")[1]["stale_modules"]}

    def watcher_maps(self, path):
        self.watcher.refresh()
        return [n for n, _ in self.watcher._index.lookup(path)]

    def signal_stale(self):
        return {r.module for r in hotfix.stale_modules(self.prefixes)}

    def close(self):
        self.watcher.stop(10)
        self.server.close()


@pytest.fixture
def consumers():
    made = []

    def make(prefixes=None):
        made.append(Consumers(prefixes))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_application_module_is_in_scope_everywhere_and_stale_everywhere(made, consumers, tmp_path):
    mod, path = made(tmp_path / "app")
    assert hotfix._baseline.get_baseline(mod.__name__) is not None
    c = consumers()
    assert Scope().allows(mod.__name__, path) and is_application_code(mod.__name__, path)
    assert c.endpoint_allows(mod.__name__)
    assert c.watcher_maps(path) == [mod.__name__]
    assert mod.__name__ not in c.endpoint_stale() | c.signal_stale()
    with open(path, "w") as fh:
        fh.write(V2)
    assert mod.__name__ in c.endpoint_stale()
    assert mod.__name__ in c.signal_stale()


@pytest.mark.parametrize("kind", ["dist-packages", "site-packages"])
def test_installed_packages_are_out_of_scope_everywhere(made, consumers, tmp_path, monkeypatch, kind):
    """A distribution directory on sys.path (Debian's dist-packages, a user site) is not application
    code: the endpoint used to allow it (it only knew the running scheme's sysconfig paths) and the
    signal handler scanned it (every module with a baseline)."""
    packages = tmp_path / "lib" / kind
    mod, path = made(packages)
    monkeypatch.syspath_prepend(str(packages))
    # imported after install(), but install() records baselines only for application code
    assert hotfix._baseline.get_baseline(mod.__name__) is None
    assert _scope.real_path(packages) in system_directories()
    c = consumers()
    with open(path, "w") as fh:
        fh.write(V2)  # stale: only the scope keeps it out of the lists
    assert not Scope().allows(mod.__name__, path)
    assert not c.endpoint_allows(mod.__name__)
    assert mod.__name__ not in c.endpoint_stale()
    assert c.watcher_maps(path) == []
    assert mod.__name__ not in c.signal_stale()
    # Named explicitly, it is in scope for all of them (a service deployed into site-packages;
    # `hotfix run --prefix` gives install() the same prefixes, so such modules get baselines too).
    named = consumers(prefixes=[mod.__name__])
    assert named.endpoint_allows(mod.__name__)
    assert named.watcher_maps(path) == [mod.__name__]
    assert _scope.Scope.of(prefixes=[mod.__name__]).allows(mod.__name__, path)


def test_a_trailing_dot_in_a_prefix_means_the_same_everywhere(made, consumers, tmp_path):
    mod, path = made(tmp_path / "app")
    c = consumers(prefixes=[mod.__name__ + "."])
    assert c.endpoint_allows(mod.__name__)
    assert c.watcher_maps(path) == [mod.__name__]
    with open(path, "w") as fh:
        fh.write(V2)
    assert mod.__name__ in c.endpoint_stale()
    assert mod.__name__ in c.signal_stale()


def test_hotfix_itself_is_never_in_scope_even_when_named(consumers, monkeypatch):
    """The watcher and the signal handler used to take hotfix's own modules when a prefix named them."""
    import hotfix._transaction as tx

    dry_runs = []
    monkeypatch.setattr("hotfix._signal.dry_run", lambda m: dry_runs.append(m.__name__))
    c = consumers(prefixes=["hotfix", "safepoints", "verification"])
    for name in ("hotfix._transaction", "safepoints", "verification"):
        assert not Scope.of(["hotfix", "safepoints", "verification"]).allows(name, sys.modules[name].__file__)
        assert not c.endpoint_allows(name)
    assert c.watcher_maps(tx.__file__) == []
    assert c.signal_stale() == set() and dry_runs == []
    assert not is_application_code("__main__", "/srv/app/main.py")


def test_standard_library_is_out_of_scope_everywhere(consumers):
    import json as json_module

    c = consumers()
    assert not Scope().allows("json", json_module.__file__)
    assert not c.endpoint_allows("json")
    assert c.watcher_maps(json_module.__file__) == []


def test_scope_answers_from_an_import_spec_before_the_module_runs(tmp_path, monkeypatch):
    """For install(): decide from the spec's origin, without executing the module."""
    app = tmp_path / "app"
    app.mkdir()
    name = f"hfscope_{uuid.uuid4().hex[:10]}"
    (app / f"{name}.py").write_text("raise RuntimeError('must not run')\n")
    monkeypatch.syspath_prepend(str(app))
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(name)
    assert spec is not None and name not in sys.modules
    assert Scope().allows_spec(spec)
    assert not Scope.of(prefixes=["billing"]).allows_spec(spec)
    assert Scope.of(roots=[app]).allows_spec(spec)
    assert not Scope().allows_spec(importlib.util.find_spec("json"))
    assert not Scope().allows_spec(importlib.util.find_spec("sys"))  # built-in: no source
    assert not Scope().allows_spec(importlib.util.find_spec("attr"))  # site-packages


def test_prefixes_and_roots(tmp_path):
    scope = Scope.of(prefixes=["billing"], roots=[tmp_path])
    assert scope.allows("billing", None) and scope.allows("billing.rules", "/elsewhere/rules.py")
    assert not scope.allows("billing2", "/elsewhere/billing2.py")
    assert scope.allows("anything", str(tmp_path / "x.py"))
    assert not scope.allows("anything", str(tmp_path / "x.so"))
    assert not Scope.of(prefixes=[]).allows("billing", str(tmp_path / "billing.py"))  # empty: nothing
    with pytest.raises(ValueError, match="not a dotted module prefix"):
        Scope.of(prefixes=["billing..x"])
    with pytest.raises(ValueError):
        Scope.of(prefixes=[""])


def test_staleness_rehashes_only_when_the_stat_changed(made, tmp_path, monkeypatch):
    mod, path = made(tmp_path / "app")
    reads = []
    real_hash = _scope.sha256_hex
    monkeypatch.setattr(_scope, "sha256_hex", lambda data: reads.append(1) or real_hash(data))
    assert staleness(mod.__name__) is None
    first = len(reads)
    assert staleness(mod.__name__) is None and staleness(mod.__name__) is None
    assert len(reads) == first  # unchanged stat: no read
    st = os.stat(path)
    with open(path, "w") as fh:
        fh.write(V1.replace("1", "7"))  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime: ctime still moved
    stale = staleness(mod.__name__)
    assert stale is not None and stale.disk_sha256 != stale.running_sha256
    assert len(reads) == first + 1
    os.unlink(path)
    missing = staleness(mod.__name__)
    assert missing is not None and missing.problem == "FileNotFoundError" and missing.disk_sha256 is None


def test_module_without_baseline_is_not_listed_as_stale(tmp_path, made):
    hotfix.uninstall()
    try:
        mod, path = made(tmp_path / "app")
    finally:
        hotfix.install()
    with open(path, "w") as fh:
        fh.write(V2)
    assert staleness(mod.__name__) is None
    assert mod.__name__ not in {s.module for s in _scope.stale_modules()}
    # The signal handler dry-runs it only when a prefix names it.
    assert mod.__name__ not in {r.module for r in hotfix.stale_modules()}
    assert [r.module for r in hotfix.stale_modules(mod.__name__)] == [mod.__name__]


def test_source_file():
    assert _scope.source_file(json) == json.__file__
    assert _scope.source_file(sys) is None
    assert _scope.source_file(None) is None
