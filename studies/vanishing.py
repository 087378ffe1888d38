"""Vanishing gradients (Glorot & Bengio, 2010): activations and gradients layer by layer.

A deep network (5 hidden layers) on the digits, in five configurations: sigmoid
with N(0, 1) weights (the initialization the lecture blames), sigmoid with
Xavier, tanh with Xavier, ReLU with He, leaky ReLU with He.  Every framework
starts from the same weights (drawn once by the spec's formulas), so their
numbers must agree; what differs between configurations is the physics.

Pre-activations of hidden layer ``l`` come from each framework itself: the
network cut after layer ``l`` with an identity output (an ``mse`` head) returns
``z_l``.  Gradients are each framework's ``gradients()`` on a fixed batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from impls import MLPSpec, TrainConfig, create
from impls.numpy_mlp import activation, init_params
from studies.common import StudyResult, Table, digits_split, relative_spread, savefig

CONFIGS = {
    "sigmoid, N(0,1)": ("sigmoid", "normal"),
    "sigmoid, Xavier": ("sigmoid", "xavier_uniform"),
    "tanh, Xavier": ("tanh", "xavier_uniform"),
    "ReLU, He": ("relu", "he_normal"),
    "leaky ReLU, He": ("leaky_relu", "he_normal"),
}
"""Label -> (hidden activation, initializer)."""

SIZES = {"tiny": dict(width=8, depth=5, epochs=2, batch=64),
         "full": dict(width=128, depth=5, epochs=20, batch=500)}


def inactive_fraction(name: str, z: np.ndarray, h: np.ndarray) -> float:
    """Fraction of units whose local derivative is (nearly) gone.

    sigmoid: output within 0.02 of 0 or 1 (derivative < 0.02); tanh: |h| > 0.98;
    ReLU: z <= 0 (derivative exactly 0); leaky ReLU: z <= 0 (derivative = slope).
    """
    if name == "sigmoid":
        return float(np.mean((h < 0.02) | (h > 0.98)))
    if name == "tanh":
        return float(np.mean(np.abs(h) > 0.98))
    return float(np.mean(z <= 0))


def layer_gradient_norms(model, X: np.ndarray, y: np.ndarray) -> list[float]:
    """Frobenius norm of dLoss/dW for every layer, input layer first."""
    return [float(np.linalg.norm(gW)) for gW, _ in model.gradients(X, y)]


def run(impls: list[str], size: str, out: Path) -> StudyResult:
    s = SIZES[size]
    (X, y), _, (X_test, y_test) = digits_split(0.7)
    X_probe, y_probe = X[: s["batch"]], y[: s["batch"]]
    layer_sizes = (64, *([s["width"]] * s["depth"]), 10)
    config = TrainConfig(epochs=s["epochs"], batch_size=32, learning_rate=0.1, seed=0)
    checkpoints = sorted({1, max(1, s["epochs"] // 4), max(1, s["epochs"] // 2), s["epochs"]})
    result = StudyResult(
        "vanishing", "Vanishing gradients",
        f"Digits, {list(layer_sizes)}, softmax output, float64; gradient norms of the loss on a fixed batch of "
        f"{len(X_probe)} training samples; training: {s['epochs']} epochs of SGD (lr 0.1, batch 32), "
        "the same start and batches in every framework.")
    init_rows, summary_rows = [], []
    histograms: dict[str, list[np.ndarray]] = {}
    curves: dict[str, dict[int, list[float]]] = {}
    for label, (act, initializer) in CONFIGS.items():
        spec = MLPSpec(layer_sizes, act, "categorical_crossentropy", initializer)
        start = init_params(spec, seed=0)
        norms = {}
        for name in impls:
            model = create(name, spec)
            model.set_params(start)
            norms[name] = layer_gradient_norms(model, X_probe, y_probe)
            if name == impls[0]:
                histograms[label] = [gW.ravel() for gW, _ in model.gradients(X_probe, y_probe)]
        for layer in range(spec.n_layers):
            row = {"configuration": label, "layer": layer + 1}
            if layer < len(spec.hidden_sizes):
                sub = MLPSpec(layer_sizes[: layer + 2], act, "mse")
                z_by_impl = {}
                for name in impls:
                    cut = create(name, sub)
                    cut.set_params(start[: layer + 1])
                    z_by_impl[name] = cut.forward(X_probe)
                z = z_by_impl[impls[0]]
                h = activation(spec, z)
                row.update({"activation mean": float(h.mean()), "activation std": float(h.std()),
                            "saturated/inactive": inactive_fraction(act, z, h),
                            "z max rel. diff": max(float(np.abs(zi - z).max() / np.abs(z).max())
                                                   for zi in z_by_impl.values())})
            else:
                row.update({"activation mean": "(output)", "activation std": "", "saturated/inactive": ""})
            values = {name: norms[name][layer] for name in impls}
            row.update({f"grad norm {name}": v for name, v in values.items()})
            row["grad-norm max rel. diff"] = relative_spread(values)
            init_rows.append(row)

        trained = {}
        for name in impls:
            model = create(name, spec)
            model.set_params(start)
            record: dict[int, list[float]] = {0: norms[name]}

            def track(epoch, _history, model=model, record=record):
                if epoch in checkpoints:
                    record[epoch] = layer_gradient_norms(model, X_probe, y_probe)

            history = model.fit(X, y, config, on_epoch_end=track)
            trained[name] = (record, model.accuracy(X_test, y_test), history.loss[-1])
        curves[label] = trained[impls[0]][0]
        ratio = {name: {e: v[0] / v[-1] for e, v in trained[name][0].items()} for name in impls}
        summary_rows.append({
            "configuration": label,
            **{f"layer-1/output grad norm, init, {n}": ratio[n][0] for n in impls[:1]},
            **{f"after {s['epochs']} epochs, {n}": ratio[n][s["epochs"]] for n in impls},
            **{f"test acc. {n}": trained[n][1] for n in impls},
            "ratio max rel. diff": relative_spread({n: ratio[n][s["epochs"]] for n in impls}),
        })
    result.tables.append(Table(
        "at_init", "at initialization, per layer",
        ["configuration", "layer", "activation mean", "activation std", "saturated/inactive", "z max rel. diff",
         *[f"grad norm {n}" for n in impls], "grad-norm max rel. diff"], init_rows,
        note="saturated/inactive: sigmoid output within 0.02 of 0 or 1, |tanh| > 0.98, or ReLU/leaky ReLU input "
             "<= 0. Activation statistics are the reference's activation of each framework's pre-activations "
             "(z max rel. diff: how far the frameworks' pre-activations are from the reference's)."))
    summary_columns = list(summary_rows[0])
    result.tables.append(Table(
        "training", "gradient of the first layer relative to the output layer, and accuracy after training",
        summary_columns, summary_rows))
    plot(result, out, histograms, curves, checkpoints, impls[0])
    ref = impls[0]
    first_over_last = {r["configuration"]: r[f"layer-1/output grad norm, init, {ref}"] for r in summary_rows}
    acc = {r["configuration"]: r[f"test acc. {ref}"] for r in summary_rows}
    worst = min(first_over_last, key=first_over_last.get)
    best = max(first_over_last, key=first_over_last.get)
    result.findings.append(
        f"At initialization the first layer's gradient is {first_over_last[worst]:.1e} times the output "
        f"layer's with {worst} and {first_over_last[best]:.2g} times with {best}; after {s['epochs']} epochs "
        f"test accuracy is {acc[worst]:.3f} ({worst}) against {acc[best]:.3f} ({best}).")
    result.findings.append(
        "Ranked by the first-to-output gradient ratio at initialization: "
        + ", ".join(f"{k} {v:.2g}" for k, v in sorted(first_over_last.items(), key=lambda kv: kv[1])) + ".")
    agree = max(r["grad-norm max rel. diff"] for r in init_rows)
    result.findings.append(f"The frameworks' per-layer gradient norms agree within {agree:.1e} (relative).")
    return result


def plot(result: StudyResult, out: Path, histograms, curves, checkpoints, reference: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(histograms), figsize=(4 * len(histograms), 3.2), sharey=True)
    for ax, (label, grads) in zip(axes, histograms.items()):
        for layer, g in enumerate(grads, start=1):
            g = np.abs(g[g != 0])
            if g.size:
                ax.hist(np.log10(g), bins=60, histtype="step", density=True, label=f"layer {layer}")
        ax.set_title(label)
        ax.set_xlabel("log10 |dLoss/dW|")
    axes[0].set_ylabel("density")
    axes[-1].legend(fontsize=7)
    fig.suptitle(f"Back-propagated weight gradients per layer at initialization ({reference})")
    savefig(fig, out, "vanishing_gradient_histograms.png", result)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, record in curves.items():
        axes[0].semilogy(range(1, len(record[0]) + 1), record[0], marker="o", label=label)
        epochs = sorted(record)
        axes[1].semilogy(epochs, [record[e][0] / record[e][-1] for e in epochs], marker="o", label=label)
    axes[0].set(xlabel="layer (1 = input side)", ylabel="|dLoss/dW| (Frobenius)", title="at initialization")
    axes[1].set(xlabel="epoch", ylabel="first layer / output layer", title="during training")
    axes[0].legend(fontsize=8)
    savefig(fig, out, "vanishing_gradient_norms.png", result)
