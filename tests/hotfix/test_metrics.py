"""Prometheus metrics: the endpoint's text exposition and the prometheus_client registry, parsed for real."""

from __future__ import annotations

import http.client

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

import hotfix
import hotfix.admin
from hotfix import _metrics

TOKEN = "metrics-token-" + "m" * 24
V1 = """
    def f():
        return 1
"""
V2 = """
    def f():
        return 2
"""
V3 = """
    def f():
        return 3
"""
BLOCKED = """
    def f(:
        return 2
"""


def scrape(server: hotfix.admin.AdminServer, token: str | None = TOKEN) -> tuple[int, str, str]:
    port = int(server.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/hotfix/v1/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, parsed by prometheus_client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def server(modules):
    srv = hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir])
    yield srv
    srv.close()


def test_exposition_counts_every_outcome_and_parses(server, modules):
    status, ctype, text = scrape(server)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    before = samples(text)
    mod = modules.create(V1)
    modules.write(mod, V2)
    hotfix.apply(mod, probation=0)
    modules.write(mod, BLOCKED)
    with pytest.raises(hotfix.PatchRejected):
        hotfix.apply(mod, probation=0)
    modules.write(mod, V3)
    with pytest.raises(hotfix.PatchRolledBack):
        hotfix.apply(mod, probation=0, checks=[lambda: False])
    hotfix.rollback()
    status, _, text = scrape(server)
    after = samples(text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("hotfix_patches_total", outcome="applied") == 1
    assert delta("hotfix_patches_total", outcome="rejected") == 1
    assert delta("hotfix_patches_total", outcome="rolled_back") == 1
    assert delta("hotfix_patches_rejected_total", reason="blocked") == 1
    assert delta("hotfix_rollbacks_total", reason="check-failed") == 1
    assert delta("hotfix_rollbacks_total", reason="requested") == 1
    assert delta("hotfix_checks_failed_total") == 1
    assert delta("hotfix_probation_failures_total") == 0
    # one swap pause for the apply, one for the rolled-back apply, one for each undo
    assert delta("hotfix_worker_held_seconds_count") == 4
    assert delta("hotfix_worker_held_seconds_bucket", le="+Inf") == 4
    assert delta("hotfix_pauses_total") >= 4
    assert ("hotfix_pause_timeouts_total", ()) in after
    assert value(after, "hotfix_patches_in_effect") == len(_metrics.patch_ids_in_effect())
    assert ("hotfix_stale_modules", ()) in after
    build = [k for k in after if k[0] == "hotfix_build_info"]
    assert build and dict(build[0][1])["version"] == hotfix.__version__


def test_stale_modules_gauge_follows_the_disk(server, modules):
    mod = modules.create(V1)
    stale_before = value(samples(scrape(server)[2]), "hotfix_stale_modules")
    modules.write(mod, V2)
    assert value(samples(scrape(server)[2]), "hotfix_stale_modules") == stale_before + 1
    hotfix.apply(mod, probation=0)
    assert value(samples(scrape(server)[2]), "hotfix_stale_modules") == stale_before
    hotfix.rollback()


def test_metrics_need_the_token_unless_public(modules):
    private = hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir])
    public = hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir], metrics_public=True)
    try:
        assert scrape(private, token=None)[0] == 401
        assert scrape(private, token="wrong-" + TOKEN)[0] == 401
        status, _, text = scrape(public, token=None)
        assert status == 200
        names = {k[0] for k in samples(text)}
        assert "hotfix_patches_total" in names and "hotfix_worker_held_seconds_count" in names
        assert "hotfix_build_info" not in names  # counts only without the token
        assert "hotfix_build_info" in {k[0] for k in samples(scrape(public)[2])}
        # every other route still needs the token on a public-metrics server
        port = int(public.url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/hotfix/v1/status")
        assert conn.getresponse().status == 401
        conn.close()
    finally:
        private.close()
        public.close()


def test_the_same_series_in_the_prometheus_client_registry(server, modules):
    """An app's own /metrics (prometheus_client's default registry) shows hotfix's series, registered once."""
    hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir]).close()  # a second server: no duplicate
    before = samples(prometheus_client.generate_latest().decode())
    mod = modules.create(V1)
    modules.write(mod, V2)
    hotfix.apply(mod, probation=0)
    text = prometheus_client.generate_latest().decode()
    after = samples(text)
    assert value(after, "hotfix_patches_total", outcome="applied") == value(
        before, "hotfix_patches_total", outcome="applied") + 1
    assert value(after, "hotfix_worker_held_seconds_count") == value(before, "hotfix_worker_held_seconds_count") + 1
    assert ("hotfix_patches_in_effect", ()) in after
    assert any(k[0] == "hotfix_build_info" for k in after)
    ours = samples(scrape(server)[2])
    for key in after:  # the same series, the same values, as the endpoint's own rendering
        if key[0].startswith("hotfix_") and not key[0].endswith("_created"):
            assert key in ours, key
    assert _metrics.register_default() is True  # idempotent
    hotfix.rollback()
