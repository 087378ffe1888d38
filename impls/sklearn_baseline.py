"""The benchmark's baseline: scikit-learn's ``MLPClassifier`` / ``MLPRegressor`` behind the :class:`MLP` interface.

Registered in :data:`impls.registry.BASELINES`, not among the implementations: it trains the same
model with scikit-learn's own estimator, so it cannot pass the equivalence suite.  Mapping (checked
against scikit-learn 1.9.1's ``neural_network/_multilayer_perceptron.py`` and ``_stochastic_optimizers.py``):

* ``solver="sgd"``, ``learning_rate="constant"``, ``nesterovs_momentum=False``: scikit-learn's SGD keeps
  ``v <- momentum v - lr g; w <- w + v``, the spec's :class:`~impls.spec.SGD`.  The per-epoch decay is
  applied by setting the optimizer's rate between epochs.
* L2: scikit-learn adds ``0.5 alpha ||W||^2 / batch`` to each batch loss (gradient ``alpha W / batch``);
  the spec adds ``(l2 / 2) ||W||^2``, so ``alpha = l2 * batch_size``.
* Regression: scikit-learn's squared error is *half* the mean squared error, so its gradient is half
  the spec's: ``learning_rate_init = 2 lr`` and ``alpha = l2 * batch / 2``; its reported loss is doubled.
* One epoch is one ``partial_fit`` over the whole training set (scikit-learn has no per-step hook),
  so the epoch time includes ``partial_fit``'s input checks.  Early stopping is the spec's
  (validation loss, patience, restore best), run by :meth:`MLP.fit` between epochs; scikit-learn's
  own monitors a score on a split of the training data.

Differences that remain: Glorot-uniform initialization (not settable), scikit-learn's own shuffle
from ``RandomState(seed)`` (the spec's batch order is not followed), no dropout (a spec's dropout is ignored), SGD only,
and no gradient or single-step API: :meth:`gradients` and :meth:`train_step` raise
:class:`NotImplementedError`, as do parameters before the first epoch (scikit-learn draws them there).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, mean_squared_error
from sklearn.neural_network import MLPClassifier, MLPRegressor

from impls.base import MLP, History
from impls.spec import SGD, MLPSpec, Optimizer, Params, TrainConfig

ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "logistic", "identity": "identity"}
"""Hidden activations scikit-learn has, by the spec's name."""


class SklearnMLP(MLP):
    """scikit-learn's multi-layer perceptron, trained epoch by epoch with ``partial_fit``."""

    name = "sklearn"

    def __init__(self, spec: MLPSpec, seed: int = 0, mode: str = "default") -> None:
        super().__init__(spec, seed, mode)
        unsupported = []
        if spec.hidden_activation not in ACTIVATIONS:
            unsupported.append(f"hidden activation {spec.hidden_activation!r} (it has {sorted(ACTIVATIONS)})")
        if spec.loss not in ("binary_crossentropy", "categorical_crossentropy", "mse"):
            unsupported.append(f"loss {spec.loss!r}")
        if spec.task == "binary" and spec.n_outputs > 1:
            unsupported.append("several binary outputs (multi-label)")
        if spec.l1:
            unsupported.append("l1 (it has L2 only)")
        if unsupported:
            raise NotImplementedError("scikit-learn's MLP does not support: " + "; ".join(unsupported))
        self.regression = spec.task == "regression"
        self.loss_scale = 2.0 if self.regression else 1.0  # its squared error is half the MSE
        self.estimator: MLPClassifier | MLPRegressor | None = None
        self._config: TrainConfig | None = None

    def get_params(self) -> Params:
        fitted = self._fitted()
        return [(W.astype(self.spec.dtype), b.astype(self.spec.dtype))
                for W, b in zip(fitted.coefs_, fitted.intercepts_)]

    def _set_params(self, params: Params) -> None:
        fitted = self._fitted()
        fitted.coefs_ = [W.copy() for W, _ in params]
        fitted.intercepts_ = [b.copy() for _, b in params]

    def _forward(self, X: np.ndarray) -> np.ndarray:
        fitted = self._fitted()
        if self.regression:
            return fitted.predict(X).reshape(len(X), self.spec.n_outputs)
        probabilities = fitted.predict_proba(X)
        return probabilities[:, 1:] if self.spec.task == "binary" else probabilities

    def _loss(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> float:
        if any(m is not None for m in masks):
            raise NotImplementedError("scikit-learn's MLP has no dropout: no loss with dropout masks")
        outputs = self._forward(X)
        if self.regression:
            data = mean_squared_error(Y, outputs)
        else:
            data = log_loss(self._labels(Y), outputs if self.spec.task == "multiclass" else outputs[:, 0],
                            labels=np.arange(max(self.spec.n_outputs, 2)))
        return float(data + 0.5 * self.spec.l2 * sum(float(np.sum(W * W)) for W in self._fitted().coefs_))

    def _gradients(self, X: np.ndarray, Y: np.ndarray, masks: list[np.ndarray | None]) -> Params:
        raise NotImplementedError("scikit-learn's MLP has no public gradient API (its _backprop is private)")

    def _train_step(self, X: np.ndarray, Y: np.ndarray, learning_rate: float, optimizer: Optimizer) -> float:
        raise NotImplementedError("scikit-learn's MLP trains whole epochs (partial_fit), not single steps")

    def reset_optimizer(self) -> None:
        # private: the SGD state (velocities) that partial_fit keeps between calls; without it the next
        # call starts a fresh optimizer on the current weights (scikit-learn 1.9.1, _fit_stochastic)
        if self.estimator is not None and hasattr(self.estimator, "_optimizer"):
            del self.estimator._optimizer

    def _prepare_data(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense targets back to what scikit-learn takes: class labels, or values ``(n,)`` / ``(n, k)``."""
        if self.regression:
            return X, (Y[:, 0] if self.spec.n_outputs == 1 else Y)
        return X, self._labels(Y)

    def _run_epoch(self, X: np.ndarray, y: np.ndarray, batches: list[np.ndarray], learning_rate: float,
                   optimizer: Optimizer) -> float:
        """One ``partial_fit`` over the whole set (scikit-learn's own shuffle; ``batches`` is not followed).

        Returns the spec's epoch loss: scikit-learn's batch-size-weighted mean batch loss, which
        includes the L2 term (doubled for regression).
        """
        if self.estimator is None:
            # a RandomState, not an int: partial_fit re-seeds from an int on every call, which would give
            # every epoch the same shuffle (scikit-learn 1.9.1, BaseMultilayerPerceptron._fit)
            self.estimator = (MLPRegressor if self.regression else MLPClassifier)(
                hidden_layer_sizes=self.spec.hidden_sizes, activation=ACTIVATIONS[self.spec.hidden_activation],
                solver="sgd", learning_rate="constant", nesterovs_momentum=False,
                random_state=np.random.RandomState(self.seed), **self._settings(learning_rate, X.shape[0]))
        elif not hasattr(self.estimator, "_optimizer"):  # a new fit: its settings, a fresh optimizer
            self.estimator.set_params(**self._settings(learning_rate, X.shape[0]))
        else:
            # private: the rate partial_fit's SGDOptimizer uses (scikit-learn 1.9.1); learning_rate_init is
            # read only when the optimizer is created
            self.estimator._optimizer.learning_rate = learning_rate * self.loss_scale
        if self.regression:
            self.estimator.partial_fit(X, y)
        else:
            self.estimator.partial_fit(X, y, classes=np.arange(max(self.spec.n_outputs, 2)))
        return float(self.estimator.loss_) * self.loss_scale

    def fit(self, X: object, y: object, config: TrainConfig, validation: tuple[object, object] | None = None,
            on_epoch_end=None) -> History:
        """:meth:`MLP.fit` with scikit-learn's estimator; the batch size, momentum and shuffle come from ``config``."""
        if not isinstance(config.optimizer, SGD):
            raise NotImplementedError(f"the scikit-learn baseline trains with SGD only, not {config.optimizer!r}")
        self._config = config
        return super().fit(X, y, config, validation, on_epoch_end)

    def _restore_point(self) -> Params | None:
        return self.get_params() if self.estimator is not None and hasattr(self.estimator, "coefs_") else None

    def _settings(self, learning_rate: float, n_samples: int) -> dict[str, object]:
        """The estimator's training settings from this fit's ``config`` (the mapping above)."""
        config = self._config
        batch = min(config.batch_size or n_samples, n_samples)
        return {"learning_rate_init": learning_rate * self.loss_scale, "momentum": config.optimizer.momentum,
                "alpha": self.spec.l2 * batch / self.loss_scale, "batch_size": batch, "shuffle": config.shuffle}

    def _fitted(self) -> MLPClassifier | MLPRegressor:
        if self.estimator is None or not hasattr(self.estimator, "coefs_"):
            raise NotImplementedError("scikit-learn draws its weights in the first partial_fit: "
                                      "there are no parameters before fit")
        return self.estimator

    def _labels(self, Y: np.ndarray) -> np.ndarray:
        return Y.argmax(axis=1) if self.spec.task == "multiclass" else Y[:, 0].astype(np.int64)
