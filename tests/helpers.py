"""Small utilities for tests: random problems, error measures, the lecture's data."""

from __future__ import annotations

import numpy as np

from impls.spec import MLPSpec, Params


def random_problem(spec: MLPSpec, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features ~ N(0, 1) and valid random targets for the spec's loss."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, spec.n_inputs))
    k = spec.n_outputs
    if spec.task == "multiclass":
        y = rng.integers(0, k, size=n)
    elif spec.task == "binary":
        y = rng.integers(0, 2, size=(n, k)).astype(float)
    else:
        y = rng.normal(size=(n, k))
    return X.astype(spec.dtype), y


def random_params(spec: MLPSpec, seed: int, scale: float = 0.7) -> Params:
    """Dense random weights and biases (no exact zeros, so L1 and ReLU kinks are not hit)."""
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, scale, w).astype(spec.dtype), rng.normal(0, 0.3, b).astype(spec.dtype))
            for w, b in spec.param_shapes()]


def max_rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max(max|a|, max|b|)``: relative to the array's scale, not element-wise."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    return 0.0 if scale == 0 else float(np.abs(a - b).max() / scale)


def flatten(params: Params) -> np.ndarray:
    """Every weight and bias in one float64 vector."""
    return np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for pair in params for a in pair])


def params_rel_error(p: Params, q: Params) -> float:
    """:func:`max_rel_error` of the whole parameter (or gradient) vector.

    Relative to the largest entry of the vector, so that a bias whose gradient is
    ~1e-12 is not judged by its own, noise-dominated scale.
    """
    return max_rel_error(flatten(p), flatten(q))


def lecture_circles() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The lecture's data: make_circles(200, factor .5, noise .08, seed 1), 70/30 stratified, standardized."""
    from sklearn.datasets import make_circles
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = make_circles(n_samples=200, factor=0.5, noise=0.08, random_state=1)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_tr)
    return scaler.transform(X_tr), scaler.transform(X_te), y_tr, y_te
