"""pipeline_runs: rows from reports, the summary, and record-run's rows for steps that crashed or never ran."""

from __future__ import annotations

import datetime as dt
import json

from attnmodel import runlog
from jobs.runs import TASK_STEPS, missing_rows, record_run_main, runs_main

D = dt.date(2026, 3, 3)


def test_rows_from_reports_and_the_summary(tmp_path, capsys):
    wh = str(tmp_path / "wh")
    runlog.record_step(wh, "ingest", D, "r1", {"records_read": 1000, "accepted": 990, "seconds": 12.5,
                                               "quarantined": {"bad_value": 6, "duplicate": 4}})
    runlog.record_step(wh, "gate", D, "r1", {"model_version": "m2", "decision": "rejected", "candidate_ndcg@10": 0.1,
                                             "published_ndcg@10": 0.3, "popularity_ndcg@10": 0.2,
                                             "reason": "worse"})
    runlog.record_step(wh, "score", D, "r1", {"users": 50, "rows": 500, "model_version": "m1",
                                              "snapshot": {"user_sequences_version": 7},
                                              "recommendations_version": 3, "model_source": "registry", "gate": "rejected"})
    rows = runlog.read_runs(wh)
    assert [r["step"] for r in rows] == ["ingest", "gate", "score"]
    score = rows[2]
    assert (score["rows_read"], score["rows_written"], score["model_version"]) == (50, 500, "m1")
    assert json.loads(score["tables_read"]) == {"user_sequences": 7}
    assert rows[1]["gate_decision"] == "rejected" and rows[1]["gate_published_ndcg10"] == 0.3
    assert runs_main(["--warehouse", wh]) == 0
    out = capsys.readouterr().out
    assert f"{D}  OK  run r1" in out and "quarantine bad_value 6, duplicate 4" in out
    assert "gate rejected: candidate 0.1000 / published 0.3000 / popularity 0.2000" in out


def test_missing_rows_only_for_steps_without_their_own_record():
    states = {"ingest_events": "success", "build_sequences": "failed", "check_data": "upstream_failed",
              "train": "upstream_failed", "record_run": "running"}
    assert missing_rows(states, {"ingest", "sequences"}) == [("check", runlog.NOT_RUN), ("train-nightly", runlog.NOT_RUN)]
    assert missing_rows(states, {"ingest"})[0] == ("sequences", runlog.CRASHED)


def test_record_run_adds_rows_for_crashed_steps_and_fails_the_night(tmp_path, capsys):
    wh = str(tmp_path / "wh")
    runlog.record_step(wh, "ingest", D, "r1", {"records_read": 10, "accepted": 10})
    states = {t: "success" for t in TASK_STEPS}
    assert record_run_main(["--date", D.isoformat(), "--run-id", "r1", "--warehouse", wh,
                            "--task-states", json.dumps({"r1": states})]) == 0
    states.update(build_sequences="failed", check_data="upstream_failed")
    assert record_run_main(["--date", D.isoformat(), "--run-id", "r2", "--warehouse", wh,
                            "--task-states", json.dumps(states)]) == 1
    captured = capsys.readouterr()
    assert "the night of 2026-03-03 failed: build_sequences, check_data" in captured.err
    latest = runlog.latest_per_step(runlog.read_runs(wh), D)
    assert latest["sequences"]["status"] == runlog.CRASHED and latest["check"]["status"] == runlog.NOT_RUN
    assert "FAILED: check, sequences" in captured.out
