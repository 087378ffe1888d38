"""The baseline row: scikit-learn's MLPClassifier / MLPRegressor with matching settings.

Mapping (checked against scikit-learn 1.9's ``_multilayer_perceptron.py`` / ``_base.py``):

* ``solver="sgd"``, ``learning_rate="constant"``, ``nesterovs_momentum=False``; scikit-learn's
  SGD keeps ``v <- momentum v - lr g; w <- w + v``, the spec's form.  The per-epoch decay is
  applied by setting the optimizer's ``learning_rate`` between epochs.
* L2: scikit-learn adds ``0.5 alpha ||W||^2 / batch`` to each batch loss (gradient
  ``alpha W / batch``); the spec adds ``(l2 / 2) ||W||^2`` -> ``alpha = l2 * batch_size``.
* Regression: scikit-learn's squared error is *half* the mean squared error, so its
  gradient is half the spec's: ``learning_rate_init = 2 lr`` and ``alpha = l2 * batch / 2``.
* Differences that remain: Glorot-uniform initialization (not settable), scikit-learn's own
  shuffling, no dropout (the breast_cancer row trains without it), float64 or float32 per input.
* One epoch is one ``partial_fit`` call (scikit-learn has no per-step hook): the step time is
  the epoch's wall time / its number of batches, and includes ``partial_fit``'s input checks.
* Early stopping: scikit-learn's own monitors a validation *score* on a split of the training
  data, so the spec's rule (validation loss, patience, restore best) is applied around
  ``partial_fit`` instead.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np

from bench.workloads import Data, Workload


def make_estimator(workload: Workload, seed: int) -> tuple[object, float]:
    """An unfitted scikit-learn estimator configured like ``workload``, and the factor on its learning rate."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    spec = workload.spec()
    config = workload.config(seed)
    regression = spec.task == "regression"
    batch = config.batch_size or 1
    lr_scale = 2.0 if regression else 1.0
    activation = {"relu": "relu", "tanh": "tanh", "sigmoid": "logistic", "identity": "identity"}[
        spec.hidden_activation]
    common = {
        "hidden_layer_sizes": spec.hidden_sizes,
        "activation": activation,
        "solver": "sgd",
        "learning_rate": "constant",
        "learning_rate_init": config.learning_rate * lr_scale,
        "momentum": config.momentum,
        "nesterovs_momentum": False,
        "alpha": spec.l2 * batch / lr_scale,
        "batch_size": batch,
        "shuffle": config.shuffle,
        "random_state": seed,
        "max_iter": 1,
    }
    return (MLPRegressor if regression else MLPClassifier)(**common), lr_scale


def _targets(workload: Workload, y: np.ndarray) -> np.ndarray:
    return np.asarray(y).ravel()


def _val_loss(estimator: object, workload: Workload, X: np.ndarray, y: np.ndarray) -> float:
    """The spec's validation loss (data loss + (l2/2) ||W||^2) of the estimator."""
    from sklearn.metrics import log_loss, mean_squared_error

    spec = workload.spec()
    if spec.task == "regression":
        data = mean_squared_error(y, estimator.predict(X))
    else:
        data = log_loss(y, estimator.predict_proba(X), labels=estimator.classes_)
    penalty = 0.5 * spec.l2 * sum(float(np.sum(W * W)) for W in estimator.coefs_)
    return float(data + penalty)


def train(workload: Workload, data: Data, seed: int) -> dict:
    """Train one seed epoch by epoch; returns epoch times, losses and the fitted estimator."""
    estimator, lr_scale = make_estimator(workload, seed)
    config = workload.config(seed)
    X, y = data.X_train, _targets(workload, data.y_train)
    classes = None if workload.task == "regression" else np.unique(y)
    es = config.early_stopping
    epoch_time, losses = [], []
    best, best_state, waited, best_epoch, stopped = math.inf, None, 0, None, None
    for epoch in range(1, config.epochs + 1):
        if epoch > 1:  # the optimizer exists after the first call; the decay is applied to it
            estimator._optimizer.learning_rate = config.learning_rate_at(epoch) * lr_scale
        start = time.perf_counter()
        if classes is None:
            estimator.partial_fit(X, y)
        else:
            estimator.partial_fit(X, y, classes=classes)
        epoch_time.append(time.perf_counter() - start)
        # scikit-learn reports half the MSE for regression; report the spec's loss
        losses.append(float(estimator.loss_) * lr_scale)
        if es is not None and data.X_val is not None:
            val = _val_loss(estimator, workload, data.X_val, _targets(workload, data.y_val))
            if es.improves(val, best):
                best, waited, best_epoch = val, 0, epoch
                best_state = (copy.deepcopy(estimator.coefs_), copy.deepcopy(estimator.intercepts_))
            else:
                waited += 1
                if waited >= es.patience:
                    stopped = epoch
                    break
    if es is not None and es.restore_best and best_state is not None:
        estimator.coefs_, estimator.intercepts_ = best_state
    return {"estimator": estimator, "epoch_time": epoch_time, "loss": losses,
            "best_epoch": best_epoch, "stopped_epoch": stopped}
