"""The alert rules, declared once: each alert's expression, its runbook line and its promtool
cases (series on which it must fire, series on which it must stay quiet).

Windows and thresholds are production values (``Windows()``); tests render the rules with
short ones (``Windows(no_commit_after_s=8, ...)``) to watch an alert fire on a real Prometheus.
The expressions join a daemon's series on ``job, instance`` (every scrape target has them),
so they hold with any relabelling that adds ``namespace`` / ``pod``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SEVERITY_WARNING = "warning"
SEVERITY_CRITICAL = "critical"
LAG_SUM = "ingester:partition_lag:sum"
RECORDING_RULES = {LAG_SUM: "sum without (partition) (ingester_partition_lag)"}


@dataclass(frozen=True, slots=True)
class Windows:
    """How long and how much before an alert fires."""

    lag_window: str = "10m"
    lag_for: str = "15m"
    no_commit_after_s: int = 600
    """Several windows (the default ``max_batch_age_s`` is 10 s) without a commit while events wait."""
    no_commit_for: str = "2m"
    paused_window: str = "10m"
    paused_share: float = 0.9
    paused_for: str = "10m"
    dead_letter_window: str = "10m"
    retries_window: str = "5m"
    retries_per_s: float = 0.5
    retries_for: str = "10m"
    down_for: str = "5m"
    not_ready_for: str = "10m"


@dataclass(frozen=True, slots=True)
class Case:
    """A promtool case: ``series`` (selector, values; 1 minute apart), evaluated at ``at``; the
    label sets the alert fires with there (none: it stays quiet)."""

    series: tuple[tuple[str, str], ...]
    at: str
    fires: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    """May name ``{{ $labels.x }}``."""
    when: str
    runbook: str
    signals: tuple[str, ...]
    """Parts of ``expr`` that return series while a stream flows (checked on a real Prometheus)."""
    cases: tuple[Case, ...] = field(default=())

    def rule(self) -> dict[str, Any]:
        return {"alert": self.name, "expr": self.expr, "for": self.for_, "labels": {"severity": self.severity},
                "annotations": {"summary": self.summary, "runbook": self.runbook}}

    def annotations_for(self, labels: dict[str, str]) -> dict[str, str]:
        """The annotations as Prometheus renders them for ``labels`` (``$labels`` only)."""
        summary = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), self.summary)
        return {"summary": summary, "runbook": self.runbook}


TARGET = 'job="ingester", instance="10.0.0.7:9108", namespace="data", pod="ingester-0"'
OTHER = 'job="ingester", instance="10.0.0.8:9108", namespace="data", pod="ingester-1"'
LABELS = {"job": "ingester", "instance": "10.0.0.7:9108", "namespace": "data", "pod": "ingester-0"}


def _s(metric: str, target: str = TARGET, **labels: str) -> str:
    extra = "".join(f', {k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{target}{extra}}}"


def alerts(w: Windows = Windows()) -> tuple[Alert, ...]:
    after = w.no_commit_after_s
    return (
        Alert(
            "IngesterLagGrowing", f"deriv({LAG_SUM}[{w.lag_window}]) > 0", w.lag_for, SEVERITY_WARNING,
            "Kafka lag of {{ $labels.pod }} keeps growing",
            f"the summed partition lag of a daemon rises over {w.lag_window}",
            "the input outruns the commits: check the commit latency and `IngesterSourcePausedTooLong`; add "
            "replicas (at most one per partition) or let each snapshot carry more (`INGESTER_WINDOW__MAX_BATCH_FILES`, "
            "`INGESTER_WINDOW__MAX_BATCH_AGE_S`)",
            (f"deriv({LAG_SUM}[{w.lag_window}])",),
            (Case(((_s("ingester_partition_lag", partition="t/0"), "0+50x40"),), "30m", (LABELS,)),
             Case(((_s("ingester_partition_lag", partition="t/0"), "2000-50x40"),), "30m")),
        ),
        Alert(
            "IngesterNoCommit",
            f"(\n  time() - ingester_last_commit_timestamp_seconds > {after}\n"
            "  and ingester_last_admitted_timestamp_seconds > ingester_last_commit_timestamp_seconds\n)\nor\n"
            f"(\n  time() - ingester_events_created > {after}\n  unless ingester_last_commit_timestamp_seconds\n)",
            w.no_commit_for, SEVERITY_CRITICAL,
            "{{ $labels.table }} on {{ $labels.pod }}: events wait, nothing committed for over " f"{after} s",
            f"a table admitted events but committed nothing for {after} s (also one that never committed)",
            "events for the table are admitted but no snapshot lands: `ingester_retries_total` by `what` and the "
            "log name the failing step (catalog down, refused credentials, S3); nothing is acked meanwhile, so a "
            "restart loses nothing",
            ("time() - ingester_last_commit_timestamp_seconds", "ingester_last_admitted_timestamp_seconds",
             "ingester_events_created"),
            (Case(((_s("ingester_last_commit_timestamp_seconds", table="ns.stuck"), "60x40"),
                   (_s("ingester_last_admitted_timestamp_seconds", table="ns.stuck"), "60+60x40"),
                   (_s("ingester_events_created", table="ns.stuck"), "0x40"),
                   (_s("ingester_events_created", table="ns.new"), "0x40")), "20m",
                  (LABELS | {"table": "ns.stuck"}, LABELS | {"table": "ns.new"})),
             Case(((_s("ingester_last_commit_timestamp_seconds", table="ns.idle"), "120x40"),
                   (_s("ingester_last_admitted_timestamp_seconds", table="ns.idle"), "100x40"),
                   (_s("ingester_events_created", table="ns.idle"), "0x40"),
                   (_s("ingester_last_commit_timestamp_seconds", table="ns.busy"), "0+60x40"),
                   (_s("ingester_last_admitted_timestamp_seconds", table="ns.busy"), "30+60x40"),
                   (_s("ingester_events_created", table="ns.busy"), "0x40")), "20m")),
        ),
        Alert(
            "IngesterSourcePausedTooLong",
            f"avg_over_time(ingester_source_paused[{w.paused_window}]) > {w.paused_share}", w.paused_for,
            SEVERITY_WARNING, "{{ $labels.pod }} has paused its source most of the time",
            f"the source was paused over {w.paused_share:.0%} of {w.paused_window}",
            "backpressure for long: commits are slower than the input; check the commit latency p99 and the "
            "retries, give the catalog room, or raise `INGESTER_WINDOW__MAX_INFLIGHT_BYTES` (memory limit at "
            "least twice that)",
            (f"avg_over_time(ingester_source_paused[{w.paused_window}])",),
            (Case(((_s("ingester_source_paused"), "1x40"),), "25m", (LABELS,)),
             Case(((_s("ingester_source_paused"), " ".join(["1", "0"] * 20)),), "25m")),
        ),
        Alert(
            "IngesterDeadLetters", f"increase(ingester_dead_letters_total[{w.dead_letter_window}]) > 0", "0m",
            SEVERITY_WARNING, "{{ $labels.pod }} set events aside ({{ $labels.kind }})",
            "any dead letter",
            "read the reasons (`<home>/deadletter/deadletters.jsonl` or the dead-letter topic), fix the cause, "
            "then `ingester replay-deadletters`",
            (f"increase(ingester_dead_letters_total[{w.dead_letter_window}])",),
            (Case(((_s("ingester_dead_letters_total", kind="invalid_event"), "0 0 0 1 1 1 1"),), "5m",
                  (LABELS | {"kind": "invalid_event"},)),
             Case(((_s("ingester_dead_letters_total", kind="invalid_event"), "0 1 1x30"),), "20m")),
        ),
        Alert(
            "IngesterRetryStorm",
            f"sum without (what) (rate(ingester_retries_total[{w.retries_window}])) > {w.retries_per_s}",
            w.retries_for, SEVERITY_WARNING, "{{ $labels.pod }} retries many operations",
            f"more than {w.retries_per_s} retries per second",
            "`ingester_retries_total` by `what` names the step (catalog, S3, Kafka poll): check that server; "
            "retries back off up to `INGESTER_COMMIT__RETRY_MAX_WAIT_S` and lose nothing",
            (f"sum without (what) (rate(ingester_retries_total[{w.retries_window}]))",),
            (Case(((_s("ingester_retries_total", what="commit ns.t"), "0+60x40"),), "20m", (LABELS,)),
             Case(((_s("ingester_retries_total", what="commit ns.t"), "0+6x40"),), "20m")),
        ),
        Alert(
            "IngesterDown", "up == 0 and on (job, instance) max_over_time(ingester_ready[1h])", w.down_for,
            SEVERITY_CRITICAL, "{{ $labels.instance }} does not answer scrapes",
            "a scraped daemon's endpoint stops answering",
            "a daemon that was scraped is gone: the pod crashed or hangs (`kubectl describe pod`, its log); a "
            "restarted daemon resumes from the committed offsets",
            ("up and on (job, instance) max_over_time(ingester_ready[1h])",),
            (Case(((_s("up"), "1x5 0x20"), (_s("ingester_ready"), "1x5 stale")), "15m", (LABELS,)),
             Case(((_s("up"), "1x20"), (_s("ingester_ready"), "1x20"), (_s("up", OTHER), "0x20")), "15m")),
        ),
        Alert(
            "IngesterNotReady", "ingester_ready == 0", w.not_ready_for, SEVERITY_WARNING,
            "{{ $labels.pod }} is alive but not consuming",
            "`/readyz` fails (alive, not consuming)",
            "usually the catalog is unreachable at startup (`ingester_retries_total{what=\"connect to the "
            "catalog\"}`): check its URI, credentials and network",
            ("ingester_ready",),
            (Case(((_s("ingester_ready"), "0x20"),), "15m", (LABELS,)),
             Case(((_s("ingester_ready"), "0x5 1x15"),), "15m")),
        ),
    )


def rule_groups(w: Windows = Windows()) -> dict[str, Any]:
    """The Prometheus rule file's content."""
    return {"groups": [
        {"name": "ingester.rules", "rules": [{"record": name, "expr": expr} for name, expr in RECORDING_RULES.items()]},
        {"name": "ingester.alerts", "rules": [a.rule() for a in alerts(w)]},
    ]}


def promtool_tests(rule_file: str, w: Windows = Windows()) -> dict[str, Any]:
    """``promtool test rules`` input: every alert's cases."""
    tests = []
    for a in alerts(w):
        for case in a.cases:
            fired = [{"exp_labels": {**labels, "severity": a.severity}, "exp_annotations": a.annotations_for(labels)}
                     for labels in case.fires]
            tests.append({
                "interval": "1m",
                "input_series": [{"series": series, "values": values} for series, values in case.series],
                "alert_rule_test": [{"eval_time": case.at, "alertname": a.name, "exp_alerts": fired}],
            })
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": tests}


def runbook_table(w: Windows = Windows()) -> str:
    """The README's alert table: name, severity, when, what to do."""
    lines = ["| alert | severity | fires when | runbook |", "|---|---|---|---|"]
    for a in alerts(w):
        lines.append(f"| `{a.name}` | {a.severity} | {a.when}, for {a.for_} | {a.runbook} |")
    return "\n".join(lines) + "\n"
