"""Regularization on a small-data problem: L1, L2, dropout and early stopping, side by side.

10% of the digits (180 samples) train a network far larger than they justify,
so it overfits; each regularizer is switched on alone.  Runs without dropout
are the same computation in every framework (same start, same batches), so
their numbers agree to rounding; dropout draws its masks from each framework's
own random generator, so those rows agree only statistically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from impls import EarlyStopping, MLPSpec, TrainConfig, create
from impls.numpy_mlp import init_params
from studies.common import StudyResult, Table, digits_split, relative_spread, savefig, weight_norm

SETTINGS = {
    "none": {},
    "L2 1e-3": {"l2": 1e-3},
    "L2 1e-2": {"l2": 1e-2},
    "L2 5e-2": {"l2": 5e-2},
    "L1 1e-4": {"l1": 1e-4},
    "L1 1e-3": {"l1": 1e-3},
    "dropout 0.2": {"dropout": 0.2},
    "dropout 0.5": {"dropout": 0.5},
    "early stopping": {"early_stopping": EarlyStopping(patience=20)},
}
SIZES = {"tiny": dict(width=16, epochs=3), "full": dict(width=256, epochs=200)}
NEAR_ZERO = 1e-3
METRICS = ("train accuracy", "test accuracy", "train-test gap", "weight norm", "near-zero weights", "epochs run",
           "best epoch")


def run(impls: list[str], size: str, out: Path) -> StudyResult:
    s = SIZES[size]
    (X, y), (X_val, y_val), (X_test, y_test) = digits_split(0.1, validation_fraction=0.1)
    base = MLPSpec((64, s["width"], s["width"], 10), "relu", "categorical_crossentropy", "he_normal")
    start = init_params(base, seed=0)
    result = StudyResult(
        "regularization", "Regularization on 10% of the digits",
        f"{len(X)} training samples, {len(X_val)} validation (early stopping only), {len(X_test)} test; "
        f"[64, {s['width']}, {s['width']}, 10], ReLU, He init, float64, SGD lr 0.05, batch 32, {s['epochs']} "
        "epochs; one regularizer at a time, every framework from the same start and batch order.")
    rows, by_setting = [], {}
    for setting, options in SETTINGS.items():
        es = options.get("early_stopping")
        spec_options = {k: v for k, v in options.items() if k != "early_stopping"}
        spec = MLPSpec(base.layer_sizes, base.hidden_activation, base.loss, base.initializer, **spec_options)
        config = TrainConfig(epochs=s["epochs"], batch_size=32, learning_rate=0.05, seed=0, early_stopping=es)
        per_impl = {}
        for name in impls:
            model = create(name, spec)
            model.set_params(start)
            history = model.fit(X, y, config, validation=(X_val, y_val))
            params = model.get_params()
            weights = np.concatenate([np.abs(W).ravel() for W, _ in params])
            train_acc, test_acc = model.accuracy(X, y), model.accuracy(X_test, y_test)
            per_impl[name] = {"train accuracy": train_acc, "test accuracy": test_acc,
                              "train-test gap": train_acc - test_acc, "weight norm": weight_norm(params),
                              "near-zero weights": float(np.mean(weights < NEAR_ZERO)),
                              "epochs run": history.epochs_run,
                              "best epoch": history.best_epoch if es is not None else history.epochs_run}
        by_setting[setting] = per_impl
        for metric in METRICS:
            values = {name: per_impl[name][metric] for name in impls}
            rows.append({"setting": setting, "metric": metric, **values,
                         "max rel. diff": relative_spread(values) if metric != "train-test gap" else ""})
    result.tables.append(Table("metrics", "after training, per framework",
                               ["setting", "metric", *impls, "max rel. diff"], rows,
                               note=f"near-zero weights: fraction with |w| < {NEAR_ZERO:g}; weight norm: "
                                    "Frobenius norm of all weight matrices. Dropout rows use each framework's own "
                                    "random masks."))
    plot(result, out, by_setting, impls)
    ref = impls[0]
    test = {k: v[ref]["test accuracy"] for k, v in by_setting.items()}
    gap = {k: v[ref]["train-test gap"] for k, v in by_setting.items()}
    best = max(test, key=test.get)
    result.findings.append(
        f"Unregularized: train-test gap {gap['none']:.3f}, test accuracy {test['none']:.3f}. Best test accuracy: "
        f"{best} ({test[best]:.3f}, gap {gap[best]:.3f}).")
    l1 = by_setting["L1 1e-3"][ref]["near-zero weights"]
    result.findings.append(f"L1 1e-3 leaves {l1:.1%} of the weights below {NEAR_ZERO:g} in magnitude, "
                           f"against {by_setting['none'][ref]['near-zero weights']:.1%} without a penalty.")
    stopped = by_setting["early stopping"][ref]
    result.findings.append(
        f"Early stopping on the validation loss (patience 20) keeps the weights of epoch {stopped['best epoch']} "
        f"and reaches {stopped['test accuracy']:.3f} test accuracy: with so few samples the validation loss "
        "starts rising (over-confident predictions) long before the accuracy stops improving.")
    deterministic = [r["max rel. diff"] for r in rows
                     if not r["setting"].startswith("dropout") and r["max rel. diff"] != ""]
    result.findings.append(f"Without dropout the frameworks agree within {max(deterministic):.1e} (relative) "
                           "on every metric.")
    return result


def plot(result: StudyResult, out: Path, by_setting, impls: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(by_setting)
    x = np.arange(len(settings))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    width = 0.8 / len(impls)
    for i, name in enumerate(impls):
        for ax, metric in zip(axes, ("test accuracy", "train-test gap")):
            ax.bar(x + i * width, [by_setting[s][name][metric] for s in settings], width, label=name)
    for ax, metric in zip(axes, ("test accuracy", "train-test gap")):
        ax.set_xticks(x + 0.4 - width / 2, settings, rotation=30, ha="right")
        ax.set_title(metric)
    axes[0].legend(fontsize=8)
    savefig(fig, out, "regularization.png", result)
