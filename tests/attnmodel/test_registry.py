"""The model registry (a real Delta table through delta-rs) and the nightly decisions made from it: which model
serves a date, which one a night warm-starts from, when it retrains from scratch, and the gate's rule."""

from __future__ import annotations

import argparse
import datetime as dt

import pytest

from attnmodel import registry as reg
from attnmodel.data import DataError
from attnmodel.nightly import GateFigures, GatePolicy, decide, plan_training, publish

D = [dt.date(2026, 5, d) for d in range(1, 11)]
T0 = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)


def _row(day, version, status, minutes, **kw):
    return {"data_date": day, "model_version": version, "status": status, "model_dir": f"/m/{version}",
            "recorded_at": T0 + dt.timedelta(minutes=minutes), "lineage_start_date": kw.pop("lineage", None),
            "warm_start_from": kw.pop("warm", ""), **kw}


def test_append_and_read_back_a_real_delta_table(tmp_path):
    wh = str(tmp_path / "wh")
    assert reg.read_registry(wh) == []
    reg.append(wh, data_date=D[0], model_version="m1", model_dir="/m/m1", status=reg.CANDIDATE,
               trained_on={"as_of_date": "2026-05-01", "content_hash": "h"}, metrics={"valid": {"ndcg@10": 0.3}},
               user_sequences_version=4)
    reg.append(wh, data_date=D[0], model_version="m1", model_dir="/m/m1", status=reg.PUBLISHED, reason="first")
    rows = reg.read_registry(wh)
    assert [r["status"] for r in rows] == [reg.CANDIDATE, reg.PUBLISHED]
    assert rows[0]["data_date"] == D[0] and '"content_hash": "h"' in rows[0]["trained_on"]
    assert reg.referenced_sequence_versions(rows) == [4]
    with pytest.raises(ValueError, match="unknown registry status"):
        reg.append(wh, data_date=D[0], model_version="m1", status="maybe")
    with pytest.raises(ValueError, match="not registry columns"):
        reg.append(wh, data_date=D[0], model_version="m1", status=reg.CANDIDATE, colour="red")


def test_serving_model_is_the_last_publish_on_or_before_the_date_and_a_manual_publish_wins():
    rows = [
        _row(D[0], "m1", reg.CANDIDATE, 0), _row(D[0], "m1", reg.PUBLISHED, 1),
        _row(D[1], "m2", reg.CANDIDATE, 2), _row(D[1], "m2", reg.REJECTED, 3),
        _row(D[2], "m3", reg.CANDIDATE, 4), _row(D[2], "m3", reg.PUBLISHED, 5),
        _row(D[2], "m1", reg.PUBLISHED, 6, reason="by hand: m3 misbehaves"),  # rollback for D3
    ]
    assert reg.published_for(rows, D[0])["model_version"] == "m1"
    assert reg.published_for(rows, D[1])["model_version"] == "m1"  # m2 was rejected: m1 keeps serving
    assert reg.published_for(rows, D[2])["model_version"] == "m1"  # the later, manual publish wins
    assert reg.published_for(rows, D[5])["model_version"] == "m1"
    assert reg.published_for(rows, dt.date(2026, 4, 30)) is None


def test_warm_start_never_from_a_rejected_or_a_later_model():
    rows = [
        _row(D[0], "m1", reg.CANDIDATE, 0, lineage=D[0]), _row(D[0], "m1", reg.PUBLISHED, 1),
        _row(D[1], "m2", reg.CANDIDATE, 2, lineage=D[0], warm="m1"), _row(D[1], "m2", reg.REJECTED, 3),
        # a later date, already run, whose model was published (a backfill of D[2] runs after it)
        _row(D[4], "m5", reg.CANDIDATE, 4, lineage=D[0], warm="m1"), _row(D[4], "m5", reg.PUBLISHED, 5),
    ]
    parent, full = plan_training(rows, D[2], full_every_days=7)
    assert parent["model_version"] == "m1" and not full  # not m2 (rejected), not m5 (later date)
    parent, full = plan_training(rows, D[0], full_every_days=7)
    assert parent is None and full  # nothing published before the first night
    assert plan_training(rows, D[5], full_every_days=7)[0]["model_version"] == "m5"


def test_full_retrain_every_k_days_counted_from_the_chain_start():
    rows = [_row(D[0], "m1", reg.CANDIDATE, 0, lineage=D[0]), _row(D[0], "m1", reg.PUBLISHED, 1),
            _row(D[1], "m2", reg.CANDIDATE, 2, lineage=D[0], warm="m1"), _row(D[1], "m2", reg.PUBLISHED, 3)]
    assert plan_training(rows, D[2], full_every_days=3) == (reg.published_before(rows, D[2]), False)
    parent, full = plan_training(rows, D[3], full_every_days=3)  # chain began on D[0], 3 days before D[3]
    assert parent["model_version"] == "m2" and full


@pytest.mark.parametrize("figures, has_published, status, words", [
    (GateFigures(300, 0.30, None, 0.10), False, reg.PUBLISHED, "first model"),
    (GateFigures(300, 0.08, None, 0.10), False, reg.REJECTED, "does not beat popularity"),
    (GateFigures(300, 0.28, 0.30, 0.10), True, reg.PUBLISHED, "within 10%"),
    (GateFigures(300, 0.26, 0.30, 0.10), True, reg.REJECTED, "worse than the published model by more than 10%"),
    (GateFigures(300, 0.09, 0.30, 0.10), True, reg.REJECTED, "does not beat popularity"),
    (GateFigures(20, 0.90, 0.30, 0.10), True, reg.REJECTED, "too few users to judge (20 < 50)"),
    (GateFigures(20, 0.30, None, 0.10), False, reg.PUBLISHED, "first model"),  # a first night publishes anyway
    (GateFigures(0, None, None, None), False, reg.REJECTED, "no figures"),
])
def test_gate_rule(figures, has_published, status, words):
    got, reason = decide(figures, GatePolicy(tolerance=0.10, min_users=50), has_published)
    assert got == status and words in reason


def test_publish_by_hand_is_recorded_and_refuses_a_model_from_a_later_date(tmp_path):
    wh, model_dir = str(tmp_path / "wh"), tmp_path / "m5"
    model_dir.mkdir()
    reg.append(wh, data_date=D[4], model_version="m5", model_dir=str(model_dir), status=reg.CANDIDATE, train_key="k")
    ask = lambda day: argparse.Namespace(warehouse=wh, model="m5", date=day, reason="rollback", run_id="")  # noqa: E731
    with pytest.raises(DataError, match="cannot serve 2026-05-03, which is earlier"):
        publish(ask(D[2]))
    with pytest.raises(DataError, match="not in the registry"):
        publish(argparse.Namespace(warehouse=wh, model="nope", date=D[5], reason="x", run_id=""))
    out = publish(ask(D[5]))
    assert out["published"] == "m5" and out["replaces"] is None
    row = reg.published_for(reg.read_registry(wh), D[5])
    assert row["model_version"] == "m5" and row["reason"] == "by hand: rollback" and row["run_id"] == "manual"


def test_vacuum_keeps_the_snapshots_of_models_still_in_use_only():
    rows = [_row(D[0], "m1", reg.CANDIDATE, 0, user_sequences_version=1), _row(D[0], "m1", reg.PUBLISHED, 1),
            _row(D[3], "m4", reg.CANDIDATE, 2, user_sequences_version=4), _row(D[3], "m4", reg.REJECTED, 3),
            _row(D[6], "m7", reg.CANDIDATE, 4, user_sequences_version=7), _row(D[6], "m7", reg.PUBLISHED, 5)]
    for r in rows:
        r.setdefault("user_sequences_version", None)
    assert reg.referenced_sequence_versions(rows, since=D[2]) == [1, 7]  # m1 still served D[2]; m4 never served
    assert reg.referenced_sequence_versions(rows, since=D[7]) == [7]
