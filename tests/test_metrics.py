"""Answer parsing and metrics on crafted cases; garbage scores 0 and never raises."""

from __future__ import annotations

import pytest

from ehrr1.tasks.metrics import accuracy, answer_lines, auroc, final_answer, rouge, score, set_score, yes_no
from ehrr1.think import reasoning_of, split_reasoning, with_reasoning


def test_answer_is_the_text_after_the_reasoning():
    assert final_answer("<think>\nmaybe sodium\n</think>\nCreatinine\nPotassium") == "\nCreatinine\nPotassium"
    assert answer_lines("<think>x</think>\n  Creatinine \n\nPOTASSIUM\n") == ["creatinine", "potassium"]
    assert answer_lines("no think block\nline two") == ["no think block", "line two"]


def test_the_think_block_is_built_and_split_in_one_place():
    text = with_reasoning("sodium is low", "Hyponatremia")
    assert text == "<think>\nsodium is low\n</think>\n\nHyponatremia"
    assert split_reasoning(text) == ("\nsodium is low\n", "\n\nHyponatremia")
    assert split_reasoning("just an answer") == ("", "just an answer")
    # a completion after a prompt that opened the block; a second block: the answer follows the last one
    assert split_reasoning("a</think>b</think>c") == ("a</think>b", "c")
    assert reasoning_of("a</think>b</think>c") == "a" and reasoning_of(text) == "\nsodium is low\n"


def test_set_metrics_worked_by_hand():
    # predicted {a, b, c}, target {b, c, d, e}: 2 hits -> precision 2/3, recall 2/4, f1 = 2PR/(P+R) = 4/7
    result = set_score("A\nb\nc", ["B", "c", "d", "e"])
    assert result.precision == pytest.approx(2 / 3) and result.recall == pytest.approx(0.5)
    assert result.f1 == pytest.approx(4 / 7)
    assert score("recall", "b\nb\nc", ["b", "c", "d", "e"]) == pytest.approx(0.5)  # repeated lines count once
    assert score("f1", "x", ["b"]) == 0.0


def test_accuracy_and_yes_no():
    assert accuracy("Labotary Test Events", ["labotary test events"]) == 1.0
    assert accuracy("Chart Events\nLabotary Test Events", ["Labotary Test Events"]) == 0.0
    assert yes_no("<think>risky</think>Yes.") == "yes" and yes_no("no, unlikely") == "no" and yes_no("maybe") is None
    assert score("auroc", "yes", ["yes"]) == 1.0 and score("auroc", "perhaps", ["yes"]) == 0.0


def test_auroc_from_scores():
    assert auroc(["yes", "no", "yes", "no"], [0.9, 0.1, 0.8, 0.3]) == 1.0
    assert auroc(["yes", "no", "yes", "no"], [0.1, 0.9, 0.2, 0.8]) == 0.0
    assert auroc(["yes", "yes"], [0.2, 0.4]) is None  # undefined with one label


def test_the_one_auroc_equals_scikit_learns_on_every_resample():
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from ehrr1.tasks.metrics import auroc_of

    rng = np.random.default_rng(0)
    positive = rng.random((200, 30)) < 0.3
    scores = rng.integers(0, 6, (200, 30)) / 5  # ties on purpose
    batched = auroc_of(positive, scores)
    for row in range(200):
        if len(set(positive[row])) < 2:
            assert np.isnan(batched[row])
        else:
            assert batched[row] == pytest.approx(roc_auc_score(positive[row], scores[row]), abs=1e-12)


def test_every_metric_is_registered_once_with_its_rules():
    from ehrr1.errors import ConfigError
    from ehrr1.tasks.metrics import METRICS, AnswerForm, metric
    from ehrr1.tasks.registry import Metric as CatalogueMetric

    assert set(METRICS) == {m.value for m in CatalogueMetric}  # every catalogue metric has its rules
    assert [m for m in METRICS if METRICS[m].set_valued] == ["f1", "recall"]  # what the reference's RL reward F1s
    assert METRICS["auroc"].ranked and METRICS["rouge1"].form is AnswerForm.text
    with pytest.raises(ConfigError, match="unknown metric 'bleu'; use f1, recall"):
        metric("bleu")


@pytest.mark.parametrize("garbage", [None, "", "   \n\n", b"\xff\xfe\xfa", "x" * 200_001, "</think>", 12345])
def test_garbage_scores_zero_and_never_raises(garbage):
    for metric in ("f1", "recall", "accuracy", "auroc"):
        assert score(metric, garbage, ["creatinine"]) == 0.0
    assert rouge(garbage, "a reference summary") == 0.0


def test_rouge():
    assert rouge("the patient was discharged home", "the patient was discharged home") == pytest.approx(1.0)
    assert 0 < rouge("patient discharged", "the patient was discharged home") < 1
    assert score("rouge1", "home patient", ["the patient went home"]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert rouge("discharged home patient", "patient discharged home", "rougeL") < 1.0
