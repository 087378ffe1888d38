"""Dropout as each implementation draws it in training: the keep rate is ``1 - p`` and kept units are scaled by
``1 / (1 - p)``, so that the training-mode output is the inference output on average.

The equivalence tests inject masks; here the framework draws its own (``train_step``, ``fit``), over many
draws, and the result is held to a statistical bound derived below.  The networks are built so that the
quantity the public API returns, the pre-update training objective, is linear in the masks:

* identity hidden activations, non-negative weights and inputs, zero biases: every output ``z >= 0``;
* mean absolute error against the target ``y = -1``: ``|z - y| = z + 1``, linear in ``z``;
* no penalty, and a learning rate of ``1e-300``: weights of order 1 do not move in float64 and zero biases
  move to ~1e-298, so every draw sees the same network (checked at the end).

With ``s = m / (1 - p)``, ``m ~ Bernoulli(1 - p)``, ``E[s] = 1``; the masks of different units and layers are
independent, so ``E[z_train] = z_inference`` and ``E[loss_train] = loss_inference`` exactly, for any depth.
The draws are independent, so the mean of ``N`` of them lies within ``5 * std / sqrt(N)`` of its expectation
except with probability ~6e-7 (normal approximation, bounded draws).  Keeping units at scale 1 shrinks the
expected output by the factor ``1 - p`` per dropping layer; keeping them at rate ``p`` by ``p / (1 - p)``.  A
keep rate and scale that are wrong together but consistent (rate ``p``, scale ``1 / p``) leave the expectation
alone: the first test reads the masks themselves for that.
"""

from __future__ import annotations

import numpy as np

from impls import MLPSpec, TrainConfig, create
from tests.helpers import flatten

TINY_RATE = 1e-300
"""A learning rate > 0 (required) that leaves float64 weights of order 1 exactly as they are."""

FIVE_SIGMA = 5.0


def within(mean: float, expected: float, standard_error: float) -> bool:
    return abs(mean - expected) <= FIVE_SIGMA * standard_error


def test_train_step_keeps_units_at_rate_one_minus_p_and_scales_them_by_one_over_one_minus_p(impl_name):
    """One sample, so that each draw's loss reveals the whole mask of the dropping layer.

    ``1 -> K -> K -> 1``, rates ``(0, p)``: the first hidden layer is ``K`` ones (no dropout there), the second
    copies it (``W = I``) and drops, and the output weights are ``2**k``.  So ``z = c * M`` with
    ``M = sum_k m_k 2**k`` the mask read as a binary number and ``c`` the scale of a kept unit, and
    ``loss = z + 1``.  Checked, for ``N`` draws:

    * every ``(loss - 1) * (1 - p)`` is an integer in ``[0, 2**K)`` to 1e-3: ``c = 1 / (1 - p)``, and no unit of
      the first layer dropped (rounding is below 1e-5 even in float32; a scale of 1 puts most masks 0.1 or more
      off the integers);
    * the fraction of kept units, ``N * K`` Bernoulli trials, is ``1 - p`` within 5 binomial standard errors
      ``sqrt(p (1 - p) / (N K))`` (0.054 here; ``p`` instead of ``1 - p`` is 0.4 away);
    * the mean loss is the inference loss within 5 standard errors (module docstring; about 7 here, and a scale
      of 1 would put it 19 lower);
    * consecutive draws differ (a new mask each step).
    """
    K, p, N = 6, 0.3, 300
    spec = MLPSpec((1, K, K, 1), "identity", "mae", dropout=(0.0, p))
    model = create(impl_name, spec, seed=0)
    start = [(np.ones((1, K)), np.zeros(K)), (np.eye(K), np.zeros(K)), (2.0 ** np.arange(K)[:, None], np.zeros(1))]
    model.set_params(start)
    X, y = np.ones((1, 1)), np.full((1, 1), -1.0)
    inference = model.loss(X, y)
    assert inference == 2**K  # (2**K - 1) + 1: no dropout at inference

    draws = np.array([model.train_step(X, y, learning_rate=TINY_RATE) for _ in range(N)])
    patterns = (draws - 1) * (1 - p)
    off_grid = np.abs(patterns - np.round(patterns))
    assert off_grid.max() <= 1e-3, (
        f"{impl_name}: kept units are not scaled by 1/(1-p) = {1 / (1 - p):.4f}: "
        f"training losses {sorted({round(float(v), 4) for v in draws})[:6]}... are not 1 + M/(1-p) for integer "
        "masks M")
    masks = np.round(patterns).astype(np.int64)
    assert masks.min() >= 0 and masks.max() < 2**K
    kept = ((masks[:, None] >> np.arange(K)) & 1).astype(bool)  # (N, K): unit k kept in draw i

    keep_rate, keep_error = kept.mean(), np.sqrt(p * (1 - p) / kept.size)
    assert within(keep_rate, 1 - p, keep_error), f"{impl_name}: keep rate {keep_rate:.3f}, expected {1 - p} +- " \
                                                 f"{FIVE_SIGMA * keep_error:.3f} (dropout rate {p})"
    mean, error = draws.mean(), draws.std(ddof=1) / np.sqrt(N)
    assert within(mean, inference, error), f"{impl_name}: mean training loss {mean:.3f} +- {error:.3f}, " \
                                           f"inference loss {inference}"
    # the same mask twice in a row has probability ((1 - p)**2 + p**2)**K = 0.04 per step
    assert np.mean(masks[1:] != masks[:-1]) > 0.8, "a new mask every step"
    assert np.abs(flatten(model.get_params()) - flatten(start)).max() <= 1e-200, "the tiny rate moved the weights"


def test_fit_draws_masks_whose_mean_training_loss_is_the_inference_loss(impl_mode):
    """``fit`` in every mode (compiled, scanned, Keras's ``model.fit``) on 16 samples in batches of 4, two dropping
    layers with different rates: each epoch's loss is the mean of 16 independent draws of ``z + 1``, so the
    epochs' losses are independent draws of a quantity whose expectation is the inference loss (module
    docstring); their mean is within 5 standard errors of it.  Scale 1 in both layers gives ``0.8 * 0.5`` of the
    expected output, ~50 standard errors away."""
    name, mode = impl_mode
    spec = MLPSpec((2, 5, 4, 1), "identity", "mae", dropout=(0.2, 0.5))
    rng = np.random.default_rng(0)
    start = [(np.abs(rng.normal(size=w)) + 0.1, np.zeros(b)) for w, b in spec.param_shapes()]
    X, y = np.abs(rng.normal(size=(16, 2))) + 0.1, np.full(16, -1.0)
    model = create(name, spec, seed=1, mode=mode)
    model.set_params(start)
    epochs = 40
    history = model.fit(X, y, TrainConfig(epochs=epochs, batch_size=4, learning_rate=TINY_RATE, seed=0))
    losses = np.array(history.loss)
    inference = model.loss(X, y)
    mean, error = losses.mean(), losses.std(ddof=1) / np.sqrt(epochs)
    assert error > 0, "the masks change between epochs"
    assert within(mean, inference, error), f"{name}/{mode}: mean training loss {mean:.4f} +- {error:.4f}, " \
                                           f"inference loss {inference:.4f}"
    assert np.abs(flatten(model.get_params()) - flatten(start)).max() <= 1e-200, "the tiny rate moved the weights"
