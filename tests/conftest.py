"""Shared fixtures: one small synthetic cohort and its timelines, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from ehrr1.data.build import TimelineBuildSettings, build_timelines
from ehrr1.data.reader import MimicReader
from ehrr1.data.synthetic.cohort import SyntheticCohortSettings, generate_cohort

MODULES = ("hosp", "icu", "ed", "note")


def modules_of(root: Path, modules=MODULES) -> dict[str, Path]:
    return {m: root / m for m in modules}


@pytest.fixture(scope="session")
def cohort_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort") / "n300"
    generate_cohort(root, SyntheticCohortSettings(n_patients=300, seed=7), progress=False)
    return root


@pytest.fixture(scope="session")
def timelines_root(cohort_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("timelines") / "n300"
    build_timelines(
        MimicReader(modules_of(cohort_root)), out, TimelineBuildSettings(patients_per_shard=100), progress=False
    )
    return out


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "n6"
    generate_cohort(root, SyntheticCohortSettings(n_patients=6, seed=1), progress=False)
    return root
