"""Shared fixtures: one small synthetic cohort and its timelines, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from ehrr1.data.build import TimelineBuildSettings, build_timelines
from ehrr1.data.reader import MimicReader
from ehrr1.data.synthetic.cohort import SyntheticCohortSettings, generate_cohort
from tests.support import SMALL_DATA, compose_config, modules_of


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


@pytest.fixture(scope="session")
def registry():
    from ehrr1.tasks.registry import TaskRegistry

    return TaskRegistry()


@pytest.fixture(scope="session")
def index_root(timelines_root, registry, tmp_path_factory) -> Path:
    from ehrr1.tasks.index import build_index

    out = tmp_path_factory.mktemp("index") / "n300"
    build_index(timelines_root, out, registry.tasks.values(), num_workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def tokenizer(timelines_root, tmp_path_factory):
    """The embedded tokenizer, trained on the test cohort and reloaded from disk like any HF tokenizer."""
    import itertools

    from ehrr1.data.markdown import render_events
    from ehrr1.data.timeline import TimelineStore
    from ehrr1.models.tokenizer import build_embedded_tokenizer, load_tokenizer

    texts = (render_events(t) for t in itertools.islice(TimelineStore(timelines_root), 120))
    return load_tokenizer(build_embedded_tokenizer(texts, tmp_path_factory.mktemp("tok") / "tokenizer", 2048))


@pytest.fixture(scope="session")
def small_data_root(tmp_path_factory) -> Path:
    """A data root holding the smoke mix of a 60-patient cohort (what the main job builds, shrunk)."""
    from ehrr1.artefacts.graph import synthesize

    root = tmp_path_factory.mktemp("small_data")
    synthesize(compose_config("synthesize", f"data_root={root}", *SMALL_DATA))
    return root


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """No W&B key anywhere (environment or ~/.netrc), so logger=wandb runs offline."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture(scope="session")
def model_dir(tokenizer, tmp_path_factory) -> Path:
    """A randomly initialised tiny model saved in Hugging Face format with the embedded tokenizer."""
    from ehrr1.models.factory import init_random_model
    from tests.support import tiny_architecture

    out = tmp_path_factory.mktemp("model") / "tiny"
    init_random_model(tiny_architecture(), tokenizer, seed=3).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
