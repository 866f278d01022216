"""A tabular baseline on the same samples: scikit-learn models over counts of the concepts in the input.

Features are what the EHR markdown shows (one parser of the one renderer, shared with the thinking graph):
the count of each concept (``<event type>:<name>``: a lab item, a drug, a diagnosis title, ...) and of
each event type's sections, log-scaled, in a sparse matrix. Per task, on the training split's samples (at
most ``max_train_per_task``, file order, so memory stays bounded on MIMIC-IV):

- risk: a logistic regression (balanced classes); its P(yes) is scored by AUROC like the LLM's;
- decision: one logistic regression per answer of the task's vocabulary (its ``max_labels`` most frequent
  answers); a sample's answer is its ``k`` most probable answers, ``k`` the training answers' median size;
- free text (the discharge note: no vocabulary to classify): the answer of the nearest training sample
  (cosine similarity of the concept counts), so every task the model is scored on has a tabular score too.

Predictions become harness rows (``harness.score_row``), so the report scores them exactly as the LLM's.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ehrr1.config import TabularSettings
from ehrr1.evaluation.harness import Request, score_row
from ehrr1.reasoning.concepts import DictionaryExtractor, normalise, sections
from ehrr1.tasks.metrics import AnswerForm, metric
from ehrr1.tasks.records import InstructionRecord, user_text

log = logging.getLogger(__name__)


def concept_counts(markdown: str) -> dict[str, float]:
    """log(1 + count) of each concept and each event type's sections in EHR markdown."""
    counts: Counter = Counter(f"section:{event_type}" for event_type, _ in sections(markdown))
    counts.update(f"{event_type}:{normalise(name)}" for event_type, name in DictionaryExtractor().names(markdown))
    return {key: math.log1p(n) for key, n in counts.items()}


@dataclass
class TaskModel:
    kind: str
    vectorizer: Any
    models: list[Any] = field(default_factory=list)  # risk: one; decision: one per label (None: constant)
    priors: list[float] = field(default_factory=list)  # the constant P of a label seen always or never
    labels: list[str] = field(default_factory=list)
    k: int = 1
    neighbours: Any = None  # free text: the training samples' index (sklearn NearestNeighbors)
    answers: list[str] = field(default_factory=list)  # free text: the training samples' answers, in its order

    def probabilities(self, rows: list[dict[str, float]]) -> np.ndarray:
        """[samples, labels] P(label) (risk: one column, P(yes))."""
        x = _int32(self.vectorizer.transform(rows))
        columns = [
            np.full(x.shape[0], prior) if model is None else model.predict_proba(x)[:, 1]
            for model, prior in zip(self.models, self.priors, strict=True)
        ]
        return np.stack(columns, axis=1)


def _int32(x: Any) -> Any:
    """A CSR matrix with 32-bit indices, which liblinear requires (DictVectorizer may give 64-bit ones)."""
    x = x.tocsr()
    x.indices, x.indptr = x.indices.astype(np.int32), x.indptr.astype(np.int32)
    return x


def _fit_binary(x: Any, y: np.ndarray, settings: TabularSettings, balanced: bool) -> tuple[Any, float]:
    from sklearn.linear_model import LogisticRegression

    prior = float(y.mean())
    if prior in (0.0, 1.0):
        return None, prior
    model = LogisticRegression(
        C=settings.C,
        class_weight="balanced" if balanced else None,
        solver="liblinear",
        max_iter=1000,
        random_state=settings.seed,
    )
    return model.fit(x, y), prior


def fit_task(
    kind: str, metric_name: str, features: list[dict[str, float]], targets: list[list[str]], settings: TabularSettings
) -> TaskModel:
    """The model of one task from its training samples' features and answers."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.neighbors import NearestNeighbors

    vectorizer = DictVectorizer(sparse=True, sort=True)
    x = _int32(vectorizer.fit_transform(features))
    if metric(metric_name).form is AnswerForm.text:
        index = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(x)
        return TaskModel(kind, vectorizer, neighbours=index, answers=["\n".join(t) for t in targets])
    if kind == "risk":
        model, prior = _fit_binary(x, np.array([t[0] == "yes" for t in targets], dtype=float), settings, True)
        return TaskModel(kind, vectorizer, [model], [prior], ["yes"])
    answers = [{v.strip() for v in t if v.strip()} for t in targets]
    frequency = Counter(label for a in answers for label in a)
    labels = [label for label, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))][: settings.max_labels]
    fitted = [_fit_binary(x, np.array([label in a for a in answers], dtype=float), settings, False) for label in labels]
    k = max(1, int(np.median([len(a) for a in answers])))
    return TaskModel(kind, vectorizer, [m for m, _ in fitted], [p for _, p in fitted], labels, k)


class TabularBaseline:
    """Per-task scikit-learn models fitted on training records, predicting harness rows for test records."""

    def __init__(self, settings: TabularSettings | None = None):
        self.settings = settings or TabularSettings()
        self.models: dict[str, TaskModel] = {}

    def fit(self, records: Iterable[InstructionRecord], tasks: set[str] | None = None) -> TabularBaseline:
        """Fit every task of ``records`` (only ``tasks`` when given); records are featurised as they stream."""
        features: dict[str, list[dict[str, float]]] = defaultdict(list)
        targets: dict[str, list[list[str]]] = defaultdict(list)
        kinds: dict[str, tuple[str, str]] = {}
        for r in records:
            task = r["task"]
            if (tasks is not None and task not in tasks) or len(features[task]) >= self.settings.max_train_per_task:
                continue
            features[task].append(concept_counts(user_text(r)))
            targets[task].append(list(r["target"]))
            kinds[task] = (r["kind"], r["metric"])
        for task in sorted(features):
            if features[task]:
                kind, metric_name = kinds[task]
                self.models[task] = fit_task(kind, metric_name, features[task], targets[task], self.settings)
        log.info("tabular baseline: fitted %d tasks on %d training samples", len(self.models),
                 sum(len(f) for f in features.values()))  # fmt: skip
        return self

    def predict(self, records: list[InstructionRecord]) -> list[dict[str, Any]]:
        """One harness row per record of a fitted task, in record order (other tasks are left out)."""
        by_task: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            if r["task"] in self.models:
                by_task[r["task"]].append(i)
        rows: dict[int, dict[str, Any]] = {}
        for task, indices in by_task.items():
            model = self.models[task]
            features = [concept_counts(user_text(records[i])) for i in indices]
            if model.neighbours is not None:
                nearest = model.neighbours.kneighbors(_int32(model.vectorizer.transform(features)))[1][:, 0]
                for i, j in zip(indices, nearest, strict=True):
                    rows[i] = score_row(self._request(records[i]), model.answers[j], "stop", None)
                continue
            for i, probs in zip(indices, model.probabilities(features), strict=True):
                rows[i] = self._row(records[i], model, probs)
        return [rows[i] for i in sorted(rows)]

    @staticmethod
    def _request(record: InstructionRecord) -> Request:
        return Request(
            "tabular/" + record["id"], record["id"], record["task"], record["kind"], record["metric"],
            list(record["target"]), "",
        )  # fmt: skip

    @classmethod
    def _row(cls, record: InstructionRecord, model: TaskModel, probs: np.ndarray) -> dict[str, Any]:
        request = cls._request(record)
        if model.kind == "risk":
            p_yes = float(probs[0])
            return score_row(request, "yes" if p_yes >= 0.5 else "no", "stop", p_yes)
        order = np.argsort(-probs, kind="stable")[: model.k]
        return score_row(request, "\n".join(model.labels[j] for j in order), "stop", None)
