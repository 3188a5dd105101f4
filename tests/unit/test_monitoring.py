"""The dashboard and the alert rules: the deploy files are the rendering of
``ingester.cli.monitoring``, name only metrics that exist, and pass ``promtool check rules`` and
``promtool test rules`` (every alert fires on its series and stays quiet on the others).

promtool comes with Debian's ``prometheus`` package, which ``python3 dev.py test`` installs; a
real Prometheus evaluating every expression runs in tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from ingester.cli.monitoring import DASHBOARD, PROMETHEUS_RULE, README, RULES, RULES_TEST, main, rendered, to_yaml
from ingester.cli.monitoring.alerts import Windows, alerts, promtool_tests, rule_groups
from ingester.cli.monitoring.dashboard import PANELS, dashboard
from ingester.freshness import Freshness
from ingester.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: run `python3 dev.py test`, which installs Debian's prometheus package")
    return path


def exposed_series_names() -> set[str]:
    names = set()
    for metric in vars(Metrics()).values():
        if isinstance(metric, MetricWrapperBase):
            names.update(metric._name + suffix for suffix in SUFFIXES[metric._type])
    return names | set(Freshness.NAMES)


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bingester_[a-z_]+\b", expr))


def test_the_deploy_files_are_the_rendering() -> None:
    stale = [str(path.relative_to(REPO)) for path, text in rendered(REPO).items() if path.read_text() != text]
    assert not stale, f"stale: {stale}; run python -m ingester.cli.monitoring --write"
    assert main(["--root", str(REPO), "--check"]) == 0


def test_check_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "README.md").write_text("<!-- alerts-table:start -->\nold\n<!-- alerts-table:end -->\n")
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert "run python -m ingester.cli.monitoring --write" in capsys.readouterr().err
    assert main(["--root", str(tmp_path), "--write"]) == 0 and main(["--root", str(tmp_path), "--check"]) == 0
    assert "`IngesterNoCommit` | critical |" in (tmp_path / "README.md").read_text()


def test_rules_pass_promtool_check() -> None:
    done = subprocess.run([promtool(), "check", "rules", str(REPO / RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {1 + len(alerts())} rules found" in done.stdout


def test_promtool_unit_tests_cover_every_alert_firing_and_quiet() -> None:
    done = subprocess.run([promtool(), "test", "rules", str(REPO / RULES_TEST)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    tests = yaml.safe_load((REPO / RULES_TEST).read_text())["tests"]
    fired = {(t["alert_rule_test"][0]["alertname"], bool(t["alert_rule_test"][0]["exp_alerts"])) for t in tests}
    assert fired == {(a.name, outcome) for a in alerts() for outcome in (True, False)}


def changed(w: Windows) -> str:
    return next(f"{k}={v}" for k, v in asdict(w).items() if v != asdict(Windows())[k])


@pytest.mark.parametrize("mutated", [
    Windows(retries_per_s=0.05), Windows(no_commit_after_s=1500), Windows(paused_share=0.4), Windows(lag_for="40m"),
    Windows(dead_letter_window="1m"), Windows(not_ready_for="20m"), Windows(down_for="12m"),
], ids=changed)
def test_the_promtool_cases_catch_a_changed_threshold(mutated: Windows, tmp_path: Path) -> None:
    """Rules with one threshold moved fail the shipped cases: the cases can fail."""
    (tmp_path / "rules.yaml").write_text(to_yaml(rule_groups(mutated)))
    (tmp_path / "test.yaml").write_text(to_yaml(promtool_tests("rules.yaml")))
    done = subprocess.run([promtool(), "test", "rules", str(tmp_path / "test.yaml")], capture_output=True, text=True)
    assert done.returncode == 1 and "FAILED" in done.stdout + done.stderr


def test_rules_and_panels_name_only_exposed_metrics() -> None:
    exposed = exposed_series_names()
    used = set()
    for a in alerts():
        used |= metric_names(a.expr)
    for panel in PANELS:
        for q in panel.queries:
            used |= metric_names(q.expr)
    assert used <= exposed, used - exposed
    assert {"ingester_last_commit_timestamp_seconds", "ingester_partition_lag", "ingester_commit_seconds_bucket",
            "ingester_dead_letters_total", "ingester_retries_total", "ingester_duplicate_events_total",
            "ingester_max_inflight_bytes", "ingester_source_paused"} <= used


def test_every_panel_query_is_filtered_by_the_variables() -> None:
    board = json.loads((REPO / DASHBOARD).read_text())
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "namespace", "pod", "table"}
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            selectors = re.findall(r"ingester_[a-z_]+(\{[^}]*\})?", target["expr"])
            assert selectors and all('namespace=~"$namespace"' in s and 'pod=~"$pod"' in s for s in selectors), target
            if "table" in target["legendFormat"]:
                assert 'table=~"$table"' in target["expr"]


def test_dashboard_panels_tile_without_overlap() -> None:
    cells = set()
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, panel["title"]
        cells |= area
    titles = [p["title"] for p in dashboard()["panels"]]
    assert len(titles) == len(set(titles))


def test_the_prometheus_rule_holds_the_same_rules() -> None:
    rule = yaml.safe_load((REPO / PROMETHEUS_RULE).read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((REPO / RULES).read_text()) == rule_groups()
    assert PROMETHEUS_RULE.name in yaml.safe_load((REPO / "deploy/k8s/kustomization.yaml").read_text())["resources"]


def test_readme_has_a_runbook_line_for_every_alert() -> None:
    operate = (REPO / README).read_text().split("\n## Operate\n", 1)[1]
    for a in alerts():
        assert f"| `{a.name}` | {a.severity} |" in operate and a.runbook in operate
