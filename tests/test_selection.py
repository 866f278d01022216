"""Selecting samples with a data config: counts, force number, context filter, balance, patient splits."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pyarrow.compute as pc
import pytest
from omegaconf import OmegaConf

from ehrr1.tasks.index import read_index
from ehrr1.tasks.registry import TaskError
from ehrr1.tasks.select import SelectionSettings, load_data_config, select, subject_split, wanted_count
from tests.support import REPO


@pytest.fixture(scope="module")
def index(index_root, registry):
    return read_index(index_root, registry.names)


def counts(table, column="task"):
    return Counter(table.column(column).to_pylist())


def test_counts_all_and_force_number():
    assert wanted_count(50, None, 1000) == 50
    assert wanted_count(-1, None, 1000) == 1000 and wanted_count(0, None, 1000) == 1000
    assert wanted_count(50, 7, 1000) == 7 and wanted_count(-1, 7, 1000) == 7
    assert wanted_count(50, 0.5, 1000) == 25 and wanted_count(-1, 0.1, 1000) == 100


def test_context_filter_and_counts(index, registry):
    settings = SelectionSettings(min_events=10, max_events=40)
    chosen = select(index, {"labevents": 30, "poe": -1}, registry, settings, splits=("train",))
    length = [
        e - b
        for b, e in zip(chosen.column("period_begin").to_pylist(), chosen.column("period_end").to_pylist(), strict=True)
    ]
    assert all(10 < n < 40 for n in length)
    assert counts(chosen)["labevents"] == 30
    eligible = [
        r
        for r in index.to_pylist()
        if r["task"] == "poe"
        and 10 < r["period_end"] - r["period_begin"] < 40
        and subject_split(r["subject_id"], settings.split, settings.seed) == "train"
    ]
    assert counts(chosen)["poe"] == len(eligible)


def test_risk_tasks_take_an_equal_count_per_label(index, registry):
    chosen = select(
        index,
        {"ED_Hospitalization": 40, "LengthOfStay_3day": 30},
        registry,
        SelectionSettings(min_events=0),
        splits=("train",),
    )
    for task in ("ED_Hospitalization", "LengthOfStay_3day"):
        labels = Counter(
            t[0]
            for t, name in zip(chosen.column("target").to_pylist(), chosen.column("task").to_pylist(), strict=True)
            if name == task
        )
        assert labels["yes"] == labels["no"] > 0


def test_balanced_decision_tasks_favour_rare_labels(index, registry):
    """next_event is drawn with weight 1 / label frequency (the reference's target_weight), whatever balance says."""
    settings = SelectionSettings(min_events=0, max_events=10_000, balance=False)
    pool = select(index, {"next_event": -1}, registry, settings, splits=("train",))
    weighted = select(index, {"next_event": 300}, registry, settings, splits=("train",))
    share = lambda t: Counter(tuple(x) for x in t.column("target").to_pylist()).most_common(1)[0][1] / t.num_rows  # noqa: E731
    assert weighted.num_rows == 300 < pool.num_rows and share(weighted) < share(pool) / 2


def test_splits_are_by_patient_and_seeded(index, registry):
    chosen = select(index, {"labevents": -1, "Inpatient_Mortality": -1}, registry, SelectionSettings(min_events=0))
    by_split = {}
    for subject, split in zip(chosen.column("subject_id").to_pylist(), chosen.column("split").to_pylist(), strict=True):
        assert by_split.setdefault(subject, split) == split
    shares = Counter(by_split.values())
    assert shares["train"] > shares["val"] > 0 and shares["test"] > 0
    again = select(index, {"labevents": -1, "Inpatient_Mortality": -1}, registry, SelectionSettings(min_events=0))
    assert again.equals(chosen)
    moved = sum(
        subject_split(s, SelectionSettings().split, 0) != subject_split(s, SelectionSettings().split, 1)
        for s in by_split
    )
    assert moved > 0


@pytest.mark.slow
def test_a_draw_depends_on_the_rows_not_on_how_the_index_is_read(index, registry):
    """Read in batches of 7 rows, tasks in reverse shard order, the selection is the one of the whole table:
    each row's chance is a hash of (seed, task, split, subject, anchor), kept across batches by its key."""
    mix = {"labevents": 12, "next_event": 9, "ED_Hospitalization": 6, "LengthOfStay_3day": 4, "poe": -1}
    settings = SelectionSettings(min_events=0, max_events=10_000)
    whole = select(index, mix, registry, settings)

    def reversed_small_batches(name):
        rows = index.filter(pc.equal(index.column("task"), name))
        return reversed(rows.to_batches(max_chunksize=7))

    assert select(reversed_small_batches, mix, registry, settings).equals(whole)
    assert counts(whole) == {"labevents": 12 * 3, "next_event": 9 * 3, "ED_Hospitalization": 6 * 3,
                             "LengthOfStay_3day": 4 * 3, "poe": counts(whole)["poe"]}  # fmt: skip
    reseeded = select(index, mix, registry, SelectionSettings(min_events=0, max_events=10_000, seed=1))
    assert not reseeded.equals(whole)


def test_unknown_tasks_and_impossible_requests(index, registry, caplog):
    with pytest.raises(TaskError, match=r"unknown task 'lab_events'.*Did you mean labevents.*Valid tasks: admissions"):
        select(index, {"lab_events": 5}, registry, SelectionSettings())
    with caplog.at_level(logging.WARNING):
        chosen = select(index, {"radiology": 100_000}, registry, SelectionSettings(min_events=0), splits=("val",))
    assert "radiology/val: 100000 samples requested" in caplog.text and f"{chosen.num_rows} exist" in caplog.text


def test_data_config_files(tmp_path):
    path = tmp_path / "mix.json"
    path.write_text(json.dumps({"labevents": 10, "ED_Hospitalization": -1}))
    assert load_data_config(path) == {"labevents": 10, "ED_Hospitalization": -1}
    path.write_text('["labevents"]')
    with pytest.raises(ValueError, match=r"mix\.json: expected a JSON object"):
        load_data_config(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"mix\.json: not a readable JSON file"):
        load_data_config(path)


@pytest.mark.parametrize(
    ("mix", "reference", "force"),
    [
        ("ehr_ins", "enh_ins", None),
        ("ehr_bench_decision_making", "ehr_bench_decision_making", 500),
        ("ehr_bench_risk_prediction", "ehr_bench_risk_prediction", 500),
    ],
)
def test_paper_mixes_are_the_reference_data_configs(mix, reference, force):
    """Copies of the reference's scripts/data_configs/*.json (commit 46e8ca1); EHR-Bench forces 500 per task."""
    ours = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "task_mix" / f"{mix}.yaml"))["tasks"]
    theirs = load_data_config(REPO / "tests" / "golden" / "reference_data_configs" / f"{reference}.json")
    assert list(ours) == list(theirs)
    assert ours == (theirs if force is None else dict.fromkeys(theirs, force))


def test_split_factor_scales_each_splits_count(index, registry):
    settings = SelectionSettings(min_events=0)
    chosen = select(index, {"labevents": 10}, registry, settings, split_factor={"train": 3, "test": 0.5})
    counts = Counter(chosen.column("split").to_pylist())
    assert (counts["train"], counts["val"], counts["test"]) == (30, 10, 5)


def test_a_task_mix_may_split_its_patients_its_own_way():
    from ehrr1.artefacts.instructions import mix_selection
    from ehrr1.config import SplitRatios
    from tests.support import compose_config

    assert mix_selection(compose_config("synthesize", "task_mix=main")).split == SplitRatios(0.7, 0.05, 0.25)
    smoke = mix_selection(compose_config("synthesize", "task_mix=smoke", "selection.split.train=0.6",
                                         "selection.split.test=0.3"))  # fmt: skip
    assert smoke.split == SplitRatios(0.6, 0.1, 0.3) and smoke.min_events == 10
