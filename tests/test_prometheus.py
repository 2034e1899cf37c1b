"""deploy/: the Prometheus rules (promtool's own checks and unit tests), the Grafana dashboard
against the metrics a server really exposes, and a real Prometheus scraping a real
`vecdoctor serve` on loopback while off-topic queries arrive, its alert firing.

promtool and prometheus are Debian's package ``prometheus`` (`.ci/run` installs it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import retrieval_support as rs
from test_monitor import held_queries, index_dir, licence_sentences, served, split_sample  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "vecdoctor.rules.yml"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is required for this test (Debian package 'prometheus'; .ci/run "
                    "installs it)")
    return found


@pytest.mark.slow
def test_the_rules_pass_promtool_check_and_their_unit_tests():
    promtool = _tool("promtool")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    tests = subprocess.run([promtool, "test", "rules", "tests/vecdoctor.rules.test.yml"],
                           cwd=DEPLOY / "prometheus", capture_output=True, text=True)
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout, tests.stdout + tests.stderr
    config = subprocess.run([promtool, "check", "config", "prometheus.yml"],
                            cwd=DEPLOY / "prometheus", capture_output=True, text=True)
    # the example configuration reads the API key from a file the user writes
    assert "vecdoctor.key" in config.stdout + config.stderr


def _exposed_names(index_dir: Path) -> set[str]:
    from vecdoctor.index.store import Index
    from vecdoctor.monitor.live import LiveHealth
    from vecdoctor.search.searcher import Searcher
    from vecdoctor.serve.guard import Stats
    from vecdoctor.serve.metrics import render

    index = Index.load(index_dir)
    searcher = Searcher(index, cache_size=0)
    health = LiveHealth(index, 20)
    searcher.observer = health
    searcher.search_batch(licence_sentences()[:20], k=5)
    stats = Stats()
    stats.record("POST /search", 200, 0.01)
    text = render(stats, health, index).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def test_the_dashboard_and_the_rules_read_metrics_the_server_exposes(index_dir):
    exposed = _exposed_names(index_dir)
    rules = RULES.read_text()
    recorded = set(re.findall(r"record: (\S+)", rules))
    dashboard = json.loads((DEPLOY / "grafana" / "vecdoctor-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += re.findall(r"expr: (.+)", rules)
    used = {m for e in exprs for m in re.findall(r"\b(vecdoctor[:_][a-z0-9_:]+)", e)}
    unknown = used - exposed - recorded
    assert not unknown, f"metrics no server exposes: {sorted(unknown)}"
    for name in ("vecdoctor_query_ood_share", "vecdoctor_query_ood_alarm_share",
                 "vecdoctor_health_alarm", "vecdoctor_query_mean_cosine",
                 "vecdoctor_query_truncation_share", "vecdoctor_query_no_bm25_match_share"):
        assert name in used, f"{name} is on no panel and in no rule"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def _prometheus(target: str, folder: Path) -> tuple[subprocess.Popen, str]:
    port = rs.free_port()
    shutil.copy(RULES, folder / "vecdoctor.rules.yml")
    (folder / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [vecdoctor.rules.yml]\n"
        "scrape_configs:\n"
        "  - job_name: vecdoctor\n"
        "    authorization: {type: Bearer, credentials_file: vecdoctor.key}\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n")
    proc = subprocess.Popen(
        [_tool("prometheus"), f"--config.file={folder / 'prometheus.yml'}",
         f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"prometheus did not start: {proc.stderr.read().decode()[-2000:]}")


def _query(url: str, expr: str) -> list[dict]:
    body = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _wait(check, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return True
        time.sleep(1)
    return False


@pytest.mark.slow
def test_a_real_prometheus_scrapes_the_health_and_fires_the_off_topic_alert(index_dir, split_sample,
                                                                              tmp_path):
    key = "prom-key"
    (tmp_path / "vecdoctor.key").write_text(key)
    with served(index_dir, key) as (server, _):
        headers = {"Authorization": f"Bearer {key}"}
        target = server.removeprefix("http://")
        prom, url = _prometheus(target, tmp_path)
        try:
            # a window of the corpus' own questions: scraped, no alarm, no alert
            for q in held_queries(split_sample[1])[:20]:
                httpx.post(server + "/search", json={"query": q, "k": 5}, headers=headers,
                           timeout=60).raise_for_status()
            assert _wait(lambda: bool(_query(url, "vecdoctor_window_queries == 20")), 30)
            share = float(_query(url, "vecdoctor_query_ood_share")[0]["value"][1])
            alarm = _query(url, 'vecdoctor_health_alarm{alarm="out_of_distribution"}')
            assert share < 0.4 and alarm[0]["value"][1] == "0"
            assert _query(url, 'up{job="vecdoctor"}')[0]["value"][1] == "1"
            # a window of legal prose: the server's alarm, then Prometheus' alert after its 30 s
            for q in licence_sentences()[:20]:
                httpx.post(server + "/search", json={"query": q, "k": 5}, headers=headers,
                           timeout=60).raise_for_status()
            assert _wait(lambda: bool(_query(
                url, 'vecdoctor_health_alarm{alarm="out_of_distribution"} == 1')), 30)
            assert _wait(lambda: float(_query(url, "vecdoctor:query_ood_margin")[0]["value"][1]) > 0,
                         10)

            def firing() -> bool:
                alerts = httpx.get(url + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
                return any(a["labels"]["alertname"] == "VecdoctorQueriesOutOfDomain"
                           and a["state"] == "firing" for a in alerts)

            assert _wait(firing, 90), httpx.get(url + "/api/v1/alerts", timeout=10).text
            alerts = httpx.get(url + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
            names = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
            assert "VecdoctorQueriesAnisotropic" not in names  # explained by the off-topic queries
        finally:
            prom.terminate()
            prom.wait(timeout=30)
