"""The run records: a Delta table `pipeline_runs` under the warehouse root, one row per pipeline step per run,
appended and never updated. Every step writes its own row when it ends (success, or failed with the reason);
the DAG's last task (`attnrec record-run`, run whatever happened before it) adds a row for each step that
crashed or never ran. `attnrec runs` prints a per-date summary.

Pure pyarrow + delta-rs (the Spark jobs and the PyTorch steps both write it; no Spark, no Airflow).
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa

from attnmodel.delta_io import append_log_row, read_log_rows, warehouse_table

PIPELINE_RUNS_TABLE = "pipeline_runs"
SUCCESS, FAILED, CRASHED, NOT_RUN = "success", "failed", "crashed", "not_run"

SCHEMA = pa.schema([
    ("recorded_at", pa.timestamp("us", tz="UTC")),
    ("data_date", pa.date32()),
    ("run_id", pa.string()),
    ("step", pa.string()),
    ("status", pa.string()),  # success / failed (the step said why) / crashed / not_run (record-run saw it)
    ("seconds", pa.float64()),
    ("rows_read", pa.int64()),
    ("rows_written", pa.int64()),
    ("quarantined", pa.string()),  # JSON {reason: rows}
    ("tables_read", pa.string()),  # JSON {table: version}
    ("tables_written", pa.string()),  # JSON {table: version}
    ("model_version", pa.string()),
    ("gate_candidate_ndcg10", pa.float64()),
    ("gate_published_ndcg10", pa.float64()),
    ("gate_popularity_ndcg10", pa.float64()),
    ("gate_decision", pa.string()),
    ("message", pa.string()),
])
JSON_COLUMNS = ("quarantined", "tables_read", "tables_written")


def runs_path(warehouse: str) -> str:
    return warehouse_table(warehouse, PIPELINE_RUNS_TABLE)


def append(warehouse: str, **fields) -> dict:
    """Append one row (missing fields null). One small Delta commit: readers see it whole or not at all."""
    return append_log_row(runs_path(warehouse), SCHEMA, fields, dates=("data_date",), json_columns=JSON_COLUMNS,
                          what="pipeline_runs")


def read_runs(warehouse: str) -> list[dict]:
    return read_log_rows(runs_path(warehouse))


def _first(d: dict, *keys):
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return None


def fields_from_report(step: str, report: dict) -> dict:
    """pipeline_runs columns from a step's report (the JSON every step prints)."""
    snapshot = report.get("snapshot") or {}
    out = {
        "seconds": report.get("seconds"),
        "rows_read": _first(report, "records_read", "events_read", "rows_read"),
        "rows_written": _first(report, "accepted", "rows", "rows_written"),
        "quarantined": report.get("quarantined"),
        "model_version": report.get("model_version"),
    }
    if step == "sequences":
        out["rows_written"] = report.get("users")
        out["tables_read"] = {"events": report.get("events_version")}
        out["tables_written"] = {"user_sequences": report.get("user_sequences_version"),
                                 "item_index": report.get("item_index_version")}
    elif step == "score":
        out["rows_read"] = report.get("users")
        out["tables_read"] = {"user_sequences": snapshot.get("user_sequences_version")}
        out["tables_written"] = {"recommendations": report.get("recommendations_version")}
        out["message"] = f"model from {report.get('model_source')}; gate: {report.get('gate')}"
    elif step == "export":
        out["rows_read"] = report.get("rows")
        out["tables_read"] = {"recommendations": report.get("recommendations_version")}
        out["message"] = json.dumps({t: {k: v for k, v in d.items() if k in ("path", "live", "keys", "rows")}
                                     for t, d in (report.get("targets") or {}).items()}, default=str)
    elif step == "check":
        figures = report.get("figures") or {}
        out["rows_read"] = (figures.get("accepted") or 0) + (figures.get("bad") or 0)
        out["message"] = "; ".join(c["message"] for c in report.get("checks") or [])
    elif step == "gate":
        out.update(gate_candidate_ndcg10=report.get("candidate_ndcg@10"),
                   gate_published_ndcg10=report.get("published_ndcg@10"),
                   gate_popularity_ndcg10=report.get("popularity_ndcg@10"),
                   gate_decision=report.get("decision"), message=report.get("reason"),
                   rows_read=report.get("gate_users"))
    elif step == "train-nightly":
        out["message"] = ("reused" if report.get("reused") else
                          "full retrain" if report.get("full_retrain") else f"warm start from {report.get('warm_start_from')}")
    elif step == "maintenance":
        out["message"] = json.dumps({k: report.get(k) for k in ("optimized", "vacuum_mode", "removed")}, default=str)
    return out


def record_step(warehouse: str, step: str, data_date, run_id: str, report: dict | None = None, *,
                status: str = SUCCESS, message: str | None = None, seconds: float | None = None) -> dict:
    fields = fields_from_report(step, report) if report is not None else {}
    if message is not None:
        fields["message"] = message
    if seconds is not None and fields.get("seconds") is None:
        fields["seconds"] = seconds
    return append(warehouse, data_date=data_date, run_id=run_id or "manual", step=step, status=status, **fields)


def latest_per_step(rows: list[dict], date: dt.date) -> dict[str, dict]:
    """The last row of each step for `date` (a rerun's rows replace the earlier run's in the summary)."""
    out = {}
    for r in rows:
        if r["data_date"] == date:
            out[r["step"]] = r
    return out


def summary_lines(rows: list[dict], first: dt.date | None = None, last: dt.date | None = None) -> list[str]:
    """One block per date: each step's last status, seconds and figures, the gate, the quarantine."""
    dates = sorted({r["data_date"] for r in rows if (first is None or r["data_date"] >= first)
                    and (last is None or r["data_date"] <= last)})
    lines = []
    for d in dates:
        steps = latest_per_step(rows, d)
        bad = [s for s, r in steps.items() if r["status"] != SUCCESS]
        lines.append(f"{d}  {'OK' if not bad else 'FAILED: ' + ', '.join(sorted(bad))}  run {next(iter(steps.values()))['run_id']}")
        for step, r in sorted(steps.items(), key=lambda kv: kv[1]["recorded_at"]):
            figures = []
            if r["rows_read"] is not None:
                figures.append(f"read {r['rows_read']:,}")
            if r["rows_written"] is not None:
                figures.append(f"wrote {r['rows_written']:,}")
            if r["quarantined"]:
                q = json.loads(r["quarantined"])
                if q:
                    figures.append("quarantine " + ", ".join(f"{k} {v}" for k, v in sorted(q.items())))
            if r["model_version"]:
                figures.append(f"model {r['model_version']}")
            if r["gate_decision"]:
                figures.append(f"gate {r['gate_decision']}: candidate {_f(r['gate_candidate_ndcg10'])} / published "
                               f"{_f(r['gate_published_ndcg10'])} / popularity {_f(r['gate_popularity_ndcg10'])}")
            if r["status"] != SUCCESS and r["message"]:
                figures.append(r["message"])
            secs = "" if r["seconds"] is None else f"{r['seconds']:.1f}s"
            lines.append(f"    {step:<14} {r['status']:<8} {secs:>8}  {'; '.join(figures)}")
    return lines


def _f(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def night_summary_lines(rows: list[dict], date: dt.date, report_path: str | None = None) -> list[str]:
    """The night in a few lines a person reads in ten seconds: rows per table, quarantine by reason, the gate,
    users scored, exports written, the report's path."""
    steps = latest_per_step(rows, date)
    if not steps:
        return [f"night {date}: no run recorded"]
    get = lambda step, key: (steps.get(step) or {}).get(key)  # noqa: E731
    bad = sorted(s for s, r in steps.items() if r["status"] != SUCCESS and s != "report")
    seconds = sum(r["seconds"] or 0 for r in steps.values())
    out = [f"== night {date}: {'OK' if not bad else 'FAILED at ' + ', '.join(bad)}  "
           f"(run {next(iter(steps.values()))['run_id']}, {seconds:.0f} s of steps)"]
    quarantine = json.loads(get("ingest", "quarantined") or "{}")
    tables = [f"events +{_n(get('ingest', 'rows_written'))}", f"events_quarantine +{_n(sum(quarantine.values()))}",
              f"user_sequences {_n(get('sequences', 'rows_written'))} users",
              f"recommendations {_n(get('score', 'rows_written'))} rows"]
    out.append("   rows        " + " | ".join(tables))
    out.append("   quarantine  " + (", ".join(f"{k} {v:,}" for k, v in sorted(quarantine.items(), key=lambda kv: -kv[1]))
                                    or "none"))
    if get("gate", "gate_decision"):
        out.append(f"   gate        {get('gate', 'gate_decision').upper()}: candidate {_f(get('gate', 'gate_candidate_ndcg10'))}"
                   f" vs published {_f(get('gate', 'gate_published_ndcg10'))} vs popularity "
                   f"{_f(get('gate', 'gate_popularity_ndcg10'))} (NDCG@10 on {_n(get('gate', 'rows_read'))} users)")
    elif "gate" in steps:
        out.append(f"   gate        {steps['gate']['status']}: {steps['gate']['message'] or ''}")
    if "score" in steps:
        out.append(f"   scored      {_n(get('score', 'rows_read'))} users with model {get('score', 'model_version') or '-'}")
    if get("export", "message"):
        try:
            targets = json.loads(get("export", "message"))
            text = "; ".join(f"{t}: {_n(d.get('rows') or d.get('keys'))} rows -> {d.get('path') or d.get('live') or ''}".rstrip(" ->")
                             for t, d in targets.items())
        except ValueError:
            text = get("export", "message")
        out.append(f"   exports     {text}")
    for s in bad:
        out.append(f"   {s:<11} {steps[s]['status']}: {steps[s]['message'] or 'see its task log'}")
    if report_path or get("report", "message"):
        out.append(f"   report      {report_path or get('report', 'message')}")
    return out


def _n(x) -> str:
    return "-" if x is None else f"{x:,}"
