"""Porting a user's own model: import, export to every framework, and the certificate of the two trained side by side.

The three sources of issue 10's "done when" — a torch ``nn.Sequential`` (``CrossEntropyLoss``, ``SGD(momentum=0.9,
weight_decay=1e-3)``, ``ExponentialLR(0.9)``), a compiled Keras ``Sequential`` (sigmoid output,
``BinaryCrossentropy``, ``Adam``, ``EarlyStopping``) and a Flax ``nnx.Sequential`` with an Optax chain — each go to
every framework, float64, two epochs.  Where a source trains by a convention the spec does not hold (torch's decay
of the biases, its gradient-buffer momentum under a changing rate, Keras's Adam epsilon), the NumPy/JAX
implementations refuse by name, and the framework exports reproduce it with a small replacement.
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import replace

import numpy as np
import pytest

from impls import port
from impls.spec import EarlyStopping
from tests.conftest import import_or_skip
from tests.tolerances import COMPUTATION, TRAJECTORY

TARGETS = ("torch", "keras", "flax", "numpy", "jax")


def data(n_inputs: int, n_classes: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, n_inputs)), rng.integers(0, n_classes, n)


def torch_source(**overrides):
    torch = import_or_skip("torch")
    nn, optim = torch.nn, torch.optim
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=overrides.get("weight_decay", 1e-3))
    scheduler = optim.lr_scheduler.ExponentialLR(optimizer, overrides.get("gamma", 0.9))
    return model, nn.CrossEntropyLoss(), optimizer, scheduler


def keras_source():
    keras = import_or_skip("keras")
    from impls.keras_backend import enable_float64

    enable_float64()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,), dtype="float64"),
                              keras.layers.Dense(6, activation="tanh", dtype="float64"),
                              keras.layers.Dense(1, activation="sigmoid", dtype="float64")])
    # a Keras loss computes in its own dtype, floatx() (float32) unless told, and Keras on TensorFlow casts
    # Python-float hyper-parameters through float32: see test_keras_float32_losses_and_rounded_betas_are_deviations_*
    adam = keras.optimizers.Adam(0.01, beta_1=np.float64(0.9), beta_2=np.float64(0.999), epsilon=np.float64(1e-7))
    model.compile(optimizer=adam, loss=keras.losses.BinaryCrossentropy(dtype="float64"))
    return model, [keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)]


def flax_source():
    import_or_skip("flax")
    import jax
    import optax
    from flax import nnx

    with jax.enable_x64(True):
        rngs = nnx.Rngs(0)
        model = nnx.Sequential(nnx.Linear(4, 6, dtype=np.float64, param_dtype=np.float64, rngs=rngs), nnx.relu,
                               nnx.Linear(6, 3, dtype=np.float64, param_dtype=np.float64, rngs=rngs))
    decayed = optax.chain(optax.add_decayed_weights(1e-3, mask=lambda p: jax.tree.map(lambda x: x.ndim == 2, p)),
                          optax.sgd(0.05, momentum=0.8))
    return model, optax.softmax_cross_entropy_with_integer_labels, decayed


def certify(source: port.Port, target: str, X: np.ndarray, y: np.ndarray) -> None:
    beyond = source.conventions.beyond_spec()
    if target in ("numpy", "jax") and beyond:
        with pytest.raises(port.UnsupportedModel, match="spec's conventions only"):
            source.export(target)
        return
    certificate = port.verify(source, target, X, y, epochs=2, batch_size=16)
    assert certificate.passed, certificate.to_markdown()
    claimed = [row for row in certificate.rows if row[0].startswith(("outputs", "data-loss", "parameters"))]
    assert all(limit is not None for _, _, limit, _ in claimed), certificate.to_markdown()
    assert all(limit is not None for _, _, limit, _ in certificate.rows), certificate.to_markdown()


@pytest.mark.parametrize("target", TARGETS)
def test_torch_sequential_ports_everywhere(target):
    model, loss, optimizer, scheduler = torch_source()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    source = port.import_model(model, loss=loss, optimizer=optimizer, scheduler=scheduler, epochs=2, batch_size=16)
    assert source.conventions.momentum_form == "buffer" and source.conventions.bias_l2 == 1e-3
    assert any("weight_decay" in note for note in source.notes)
    X, y = data(4, 3)
    certify(source, target, X, y)
    assert all((model.state_dict()[k] == v).all() for k, v in before.items())  # verify trains copies


@pytest.mark.parametrize("target", TARGETS)
def test_keras_sequential_ports_everywhere(target):
    model, callbacks = keras_source()
    weights = [w.copy() for w in model.get_weights()]
    source = port.import_model(model, callbacks=callbacks, epochs=2, batch_size=16)
    assert source.spec.loss == "binary_crossentropy" and source.conventions.adam_epsilon == "uncorrected"
    assert source.config.early_stopping == EarlyStopping(patience=3, restore_best=True)
    X, y = data(4, 2)
    certify(source, target, X, y)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))


@pytest.mark.parametrize("target", TARGETS)
def test_flax_optax_ports_everywhere(target):
    model, loss, tx = flax_source()
    source = port.import_model(model, loss=loss, optimizer=tx, epochs=2, batch_size=16)
    assert source.spec.l2 == pytest.approx(1e-3, rel=1e-12) and source.conventions.bias_l2 == 0
    assert source.config.optimizer.momentum == pytest.approx(0.8, rel=1e-12)
    X, y = data(4, 3)
    certify(source, target, X, y)


@pytest.mark.parametrize("target", TARGETS)
def test_a_port_within_the_spec_reaches_numpy_and_jax(target):
    model, loss, optimizer, _ = torch_source(weight_decay=0.0)
    source = port.import_model(model, loss=loss, optimizer=optimizer, epochs=2, batch_size=16)
    assert source.conventions.beyond_spec() == []
    X, y = data(4, 3)
    certify(source, target, X, y)


@pytest.mark.parametrize("schedule", ["exponential", "step"])
def test_optax_schedules_and_momentum_forms_are_read(schedule):
    import_or_skip("flax")
    import optax

    model, loss, _ = flax_source()
    rate = (optax.exponential_decay(0.1, 3, 0.5, staircase=True) if schedule == "exponential"
            else optax.exponential_decay(0.1, 6, 0.5, staircase=True))
    source = port.import_model(model, loss=loss, optimizer=optax.sgd(rate, momentum=0.9), epochs=4,
                               steps_per_epoch=3)
    assert source.conventions.momentum_form == "buffer"
    assert source.config.lr_decay == pytest.approx(0.5, rel=1e-12)
    assert source.conventions.decay_every == (1 if schedule == "exponential" else 2)
    adam = port.import_model(model, loss=loss, optimizer=optax.adam(0.01, b1=0.8, b2=0.99, eps=1e-6))
    assert adam.config.optimizer.beta1 == pytest.approx(0.8, rel=1e-9)
    assert adam.config.optimizer.beta2 == pytest.approx(0.99, rel=1e-9)
    assert adam.config.optimizer.epsilon == pytest.approx(1e-6, rel=1e-6)


def test_the_certificate_limits_are_the_suites():
    assert {"start": COMPUTATION["float64"], "run": TRAJECTORY} == port.LIMITS


# ---- bad input: a clear error naming the problem, the source left untouched ---------------


def test_torch_models_outside_the_supported_set_are_refused_by_name():
    torch = import_or_skip("torch")
    nn = torch.nn
    cases = [
        (nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2)), nn.CrossEntropyLoss(),
         "BatchNorm1d"),
        (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.Softmax(dim=1)), nn.CrossEntropyLoss(),
         "softmax twice"),
        (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(5, 2)), nn.CrossEntropyLoss(), "takes 5 inputs"),
        (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)),
         nn.CrossEntropyLoss(), "mixed hidden activations"),
        (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1)), nn.BCELoss(), "needs Sigmoid"),
        (nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), nn.CrossEntropyLoss(label_smoothing=0.1),
         "label_smoothing"),
    ]
    for model, loss, problem in cases:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(port.UnsupportedModel, match=problem):
            port.import_model(model, loss=loss)
        assert all((model.state_dict()[k] == v).all() for k, v in before.items())


def test_torch_optimizer_options_outside_the_spec_are_refused():
    torch = import_or_skip("torch")
    nn, optim = torch.nn, torch.optim
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    for optimizer, problem in [(optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True), "nesterov"),
                               (optim.AdamW(model.parameters()), "AdamW"),
                               (optim.Adam(model.parameters(), amsgrad=True), "amsgrad")]:
        with pytest.raises(port.UnsupportedModel, match=problem):
            port.import_model(model, loss=nn.CrossEntropyLoss(), optimizer=optimizer)

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x):
            return self.linear(x) * 2

    with pytest.raises(port.UnsupportedModel, match="own forward"):
        port.import_model(Custom(), loss=nn.CrossEntropyLoss())

    class Chain(nn.Module):  # a module whose children are applied in order: read, after a check
        def __init__(self):
            super().__init__()
            self.hidden, self.act, self.out = nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)

        def forward(self, x):
            return self.out(self.act(self.hidden(x)))

    chain = Chain()
    read = port.import_model(chain, loss=nn.CrossEntropyLoss())
    assert read.spec.layer_sizes == (4, 3, 2) and chain.training
    assert any("checked, on a probe input" in note for note in read.notes)
    mixed = nn.Sequential(nn.Linear(4, 3), nn.LeakyReLU(0.1), nn.Linear(3, 3), nn.LeakyReLU(0.2), nn.Linear(3, 2))
    with pytest.raises(port.UnsupportedModel, match="different leaky_slope"):
        port.import_model(mixed, loss=nn.CrossEntropyLoss())
    with pytest.raises(port.UnsupportedModel, match="carries no loss"):
        port.import_model(model)


def test_keras_models_outside_the_supported_set_are_refused():
    keras = import_or_skip("keras")
    conv = keras.Sequential([keras.Input((8, 1)), keras.layers.Conv1D(2, 3), keras.layers.Flatten(),
                             keras.layers.Dense(1)])
    with pytest.raises(port.UnsupportedModel, match="Conv1D"):
        port.import_model(conv)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(port.UnsupportedModel, match="not compiled"):
        port.import_model(model, callbacks=[keras.callbacks.EarlyStopping()])
    model.compile(optimizer=keras.optimizers.SGD(0.1, nesterov=True, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(port.UnsupportedModel, match="nesterov"):
        port.import_model(model)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(port.UnsupportedModel, match="applied twice"):
        port.import_model(model)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))


def test_flax_modules_and_transformations_outside_the_supported_set_are_refused():
    import_or_skip("flax")
    import optax
    from flax import nnx

    model, loss, _ = flax_source()
    with pytest.raises(port.UnsupportedModel, match=r"not an sgd/adam form|does not scale"):
        port.import_model(model, loss=loss, optimizer=optax.chain(optax.clip_by_global_norm(1e-3), optax.sgd(0.1)))
    with pytest.raises(port.UnsupportedModel, match=r"l2_loss"):
        port.import_model(model, loss=optax.l2_loss)
    with pytest.raises(port.UnsupportedModel, match=r"only nnx\.Sequential"):
        port.import_model(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


def test_a_non_model_is_refused():
    with pytest.raises(port.UnsupportedModel, match=r"cannot port a builtins\.dict"):
        port.import_model({"W": 1})


def perturbed(source: port.Port, *, weight: float = 0.0, rate: float = 1.0) -> port.Port:
    """``source`` with one parameter moved by ``weight`` and the learning rate times ``rate``: what its exports
    build is then wrong, while verify still trains the source's own objects."""
    params = [(W.copy(), b.copy()) for W, b in source.params]
    params[0][0][0, 0] += weight
    return replace(source, params=params,
                   config=replace(source.config, learning_rate=source.config.learning_rate * rate))


def limited(certificate: port.Certificate) -> bool:
    return all(limit is not None and diff is not None for _, diff, limit, _ in certificate.rows)


def test_keras_float32_losses_and_rounded_betas_are_deviations_held_to_their_bounds():
    keras = import_or_skip("keras")
    model, _ = keras_source()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.BinaryCrossentropy())
    source = port.import_model(model)
    causes = {deviation.cause: deviation for deviation in source.deviations}
    assert "computes in float32" in causes["float32_loss"]
    if keras.backend.backend() == "tensorflow":
        assert "through float32" in causes["rounded_betas"]
    X, y = data(4, 2)
    certificate = port.verify(source, "torch", X, y, epochs=2, batch_size=16)
    assert certificate.passed and limited(certificate), certificate.to_markdown()
    start = dict((quantity, limit) for quantity, _, limit, _ in certificate.rows)
    assert start["outputs at start"] == port.LIMITS["start"]  # the model computes in float64: exact outputs
    assert start["data-loss gradients at start"] == pytest.approx(port.LIMITS["start"] + port.FLOAT32_COMPUTATION)
    for quantity, _, limit, remark in certificate.rows:
        if quantity.startswith("parameters"):
            assert port.LIMITS["run"] < limit < 1e-3 and "float32_loss" in remark, certificate.to_markdown()
    # a wrong export fails under these deviations: one weight off by 1e-3 (the outputs, exact, see it), or the
    # learning rate off by 1 % (ten times the float32 bound of 1e-4 per step, with its margin of 10)
    for wrong in (perturbed(source, weight=1e-3), perturbed(source, rate=1.01)):
        failed = port.verify(wrong, "torch", X, y, epochs=2, batch_size=16)
        assert not failed.passed and limited(failed), failed.to_markdown()


def test_rounded_betas_bound_each_step_by_their_bias_correction_and_a_wrong_rate_fails():
    keras = import_or_skip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("Keras casts Python-float betas through float32 on TensorFlow only: no deviation to bound")
    model, _ = keras_source()
    # float64 everywhere but the betas, given as Python floats
    model.compile(optimizer=keras.optimizers.Adam(np.float64(0.01), beta_1=0.9, beta_2=0.999,
                                                  epsilon=np.float64(1e-7)),
                  loss=keras.losses.BinaryCrossentropy(dtype="float64"))
    source = port.import_model(model)
    assert [deviation.cause for deviation in source.deviations] == ["rounded_betas"]
    # step 1: lr sqrt(1 - beta2) / (1 - beta1) with float32 betas, relative to the exact ones
    b1, b2 = float(np.float32(0.9)), float(np.float32(0.999))
    first = abs(np.sqrt((1 - b2) / (1 - 0.999)) * (1 - 0.9) / (1 - b1) - 1)
    step = port.DEVIATION_BOUNDS["rounded_betas"].step
    assert step(source, 1) == pytest.approx(first, rel=1e-6) and 5e-6 < first < 8e-6  # not 1e-8: 1 - beta2 is 1e-3
    X, y = data(4, 2)
    certificate = port.verify(source, "torch", X, y, epochs=2, batch_size=16)
    assert certificate.passed and limited(certificate), certificate.to_markdown()
    rows = {quantity: (diff, limit, remark) for quantity, diff, limit, remark in certificate.rows}
    assert rows["data-loss gradients at start"][1] == port.LIMITS["start"]
    diff, limit, remark = rows["parameters after epoch 2"]
    assert "rounded_betas" in remark and 1e-7 < diff < limit < 1e-5
    failed = port.verify(perturbed(source, rate=1.001), "torch", X, y, epochs=2, batch_size=16)
    assert not failed.passed, failed.to_markdown()
    assert all(diff > limit for quantity, diff, limit, _ in failed.rows if quantity.startswith("parameters"))


def test_a_float32_port_is_held_to_float32_bounds_and_a_wrong_export_fails():
    torch = import_or_skip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))  # float32, as torch makes it
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.9)
    source = port.import_model(model, loss=nn.CrossEntropyLoss(), optimizer=optimizer, scheduler=scheduler,
                               epochs=2, batch_size=16)
    assert source.spec.dtype == "float32"
    X, y = data(4, 3)
    certificate = port.verify(source, "flax", X, y)
    assert certificate.passed and limited(certificate), certificate.to_markdown()
    assert all("float32" in remark for _, _, _, remark in certificate.rows)
    assert all(limit <= 1e-3 for _, _, limit, _ in certificate.rows)
    for wrong in (perturbed(source, weight=1e-3), perturbed(source, rate=1.01)):
        failed = port.verify(wrong, "torch", X, y)
        assert not failed.passed and limited(failed), failed.to_markdown()


def test_a_certificate_with_a_row_without_a_limit_fails():
    row = ("parameters after epoch 1", 0.0, port.LIMITS["run"], "")
    assert port.Certificate("torch", "keras", [row]).passed
    assert not port.Certificate("torch", "keras", [row, ("reported loss, epoch 1", 0.0, None, "")]).passed
    assert not port.Certificate("torch", "keras", [row, ("reported loss, epoch 1", None, 1e-8, "")]).passed
    assert not port.Certificate("torch", "keras", [row, ("reported loss, epoch 1", float("nan"), 1e-8, "")]).passed
    assert not port.Certificate("torch", "keras", []).passed


def test_a_deviation_needs_a_known_cause():
    with pytest.raises(ValueError, match="unknown deviation cause 'rounding'"):
        port.Deviation("rounded somewhere", "rounding")
    model, loss, optimizer, scheduler = torch_source()
    source = port.import_model(model, loss=loss, optimizer=optimizer, scheduler=scheduler, epochs=1)
    with pytest.raises(port.UnsupportedModel, match="has no known cause"):
        port.verify(replace(source, deviations=["rounded somewhere"]), "torch", *data(4, 3))
    kept = port.Deviation("rounded", "float32_rate")
    assert pickle.loads(pickle.dumps(kept)).cause == "float32_rate" and copy.deepcopy(kept) == "rounded"


def test_losses_without_their_penalty_are_compared_with_it_added():
    # torch reports its loss without weight_decay's penalty, Keras with its regularizers': compared on the whole
    # objective, the reported losses agree to the float64 run limit, and a doubled penalty is seen in them
    model, loss, optimizer, scheduler = torch_source(weight_decay=0.05)
    source = port.import_model(model, loss=loss, optimizer=optimizer, scheduler=scheduler, epochs=2, batch_size=16)
    X, y = data(4, 3)
    certificate = port.verify(source, "keras", X, y, epochs=2, batch_size=16)
    losses = [(diff, limit) for quantity, diff, limit, _ in certificate.rows if quantity.startswith("reported")]
    assert certificate.passed and all(limit == port.LIMITS["run"] for _, limit in losses), certificate.to_markdown()
    doubled = replace(source, spec=replace(source.spec, l2=0.1))
    failed = port.verify(doubled, "keras", X, y, epochs=2, batch_size=16)
    assert all(diff > 1e-4 for quantity, diff, _, _ in failed.rows if quantity.startswith("reported"))


def test_dropout_runs_get_a_limit_that_catches_a_far_wrong_export():
    torch = import_or_skip("torch")
    nn, optim = torch.nn, torch.optim
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.3), nn.Linear(6, 3)).double()
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    source = port.import_model(model, loss=nn.CrossEntropyLoss(), optimizer=optimizer, epochs=2, batch_size=16)
    X, y = data(4, 3)
    certificate = port.verify(source, "flax", X, y)
    assert certificate.passed and limited(certificate), certificate.to_markdown()
    rows = {quantity: (limit, remark) for quantity, _, limit, remark in certificate.rows}
    assert rows["outputs at start"][0] == port.LIMITS["start"]  # inference: no dropout, exact
    assert "dropout: 2 x path" in rows["parameters after epoch 1"][1]
    assert "dropout: 8 x spread" in rows["reported loss, epoch 1"][1]
    failed = port.verify(perturbed(source, rate=10.0), "flax", X, y)
    assert not failed.passed, failed.to_markdown()


def test_inputs_of_the_wrong_width_are_refused_by_name():
    model, loss, optimizer, scheduler = torch_source()
    source = port.import_model(model, loss=loss, optimizer=optimizer, scheduler=scheduler, epochs=2)
    X, y = data(5, 3)
    with pytest.raises(ValueError, match="X has 5 features, the model expects 4"):
        port.verify(source, "torch", X, y)


def test_an_uncompiled_keras_model_ports_its_layers_but_has_no_training_setup():
    keras = import_or_skip("keras")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    source = port.import_model(model)
    assert source.config is None and any("not compiled" in note for note in source.notes)
    X, y = data(4, 2)
    with pytest.raises(port.UnsupportedModel, match="no training setup"):
        port.verify(source, "torch", X, y)
    with pytest.raises(port.UnsupportedModel, match="no training setup"):
        source.script("torch")
    net, _, optimizer, scheduler = source.export("torch")  # the layers still port
    assert optimizer is None and scheduler is None and len(net) == 3


def test_a_keras_model_that_is_not_a_chain_is_refused():
    keras = import_or_skip("keras")
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, activation="relu")(inputs)
    outputs = keras.layers.Dense(1)(keras.layers.Add()([inputs, hidden]))
    with pytest.raises(port.UnsupportedModel, match="Add"):
        port.import_model(keras.Model(inputs, outputs))


def test_a_pytree_needs_its_spec_and_must_fit_it():
    from impls.spec import MLPSpec

    pytree = [(np.ones((4, 3)), np.zeros(3)), (np.ones((3, 1)), np.zeros(1))]
    with pytest.raises(port.UnsupportedModel, match="pass spec="):
        port.import_model(pytree)
    with pytest.raises(port.UnsupportedModel, match="does not fit the spec"):
        port.import_model(pytree, spec=MLPSpec((4, 5, 1)))
    read = port.import_model(pytree, spec=MLPSpec((4, 3, 1), "tanh", "mse"))
    assert read.spec.hidden_activation == "tanh" and read.source == "jax"


def test_verify_trains_copies_of_keras_and_flax_sources():
    keras = import_or_skip("keras")
    model, callbacks = keras_source()
    source = port.import_model(model, callbacks=callbacks, epochs=2, batch_size=16)
    X, y = data(4, 2)
    port.verify(source, "torch", X, y, epochs=1)
    assert int(model.optimizer.iterations.numpy()) == 0
    del keras
    flax_model, loss, tx = flax_source()
    kernel = np.asarray(flax_model.layers[0].kernel.get_value()).copy()
    ported = port.import_model(flax_model, loss=loss, optimizer=tx, epochs=1, batch_size=16)
    port.verify(ported, "torch", *data(4, 3), epochs=1)
    np.testing.assert_array_equal(np.asarray(flax_model.layers[0].kernel.get_value()), kernel)


def test_torch_losses_after_their_output_layers_port_with_their_notes():
    torch = import_or_skip("torch")
    nn, optim = torch.nn, torch.optim
    torch.manual_seed(0)
    X, y = data(4, 2)
    binary = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 1), nn.Sigmoid()).double()
    read = port.import_model(binary, loss=nn.BCELoss(), optimizer=optim.SGD(binary.parameters(), lr=0.1),
                             epochs=2, batch_size=16)
    assert read.spec.loss == "binary_crossentropy" and any("clamps log at -100" in n for n in read.notes)
    assert port.verify(read, "flax", X, y).passed
    multi = nn.Sequential(nn.Linear(4, 5), nn.ELU(0.5), nn.Linear(5, 3), nn.LogSoftmax(dim=1)).double()
    optimizer = optim.SGD(multi.parameters(), lr=0.1, momentum=0.5)
    read = port.import_model(multi, loss=nn.NLLLoss(), optimizer=optimizer,
                             scheduler=optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5), epochs=3,
                             batch_size=16)
    assert (read.spec.loss, read.spec.elu_alpha, read.conventions.decay_every) == ("categorical_crossentropy", 0.5, 2)
    assert port.verify(read, "keras", *data(4, 3), epochs=3).passed
    regression = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Dropout(0.1), nn.Linear(5, 2)).double()
    read = port.import_model(regression, loss=nn.L1Loss())
    assert read.spec.loss == "mae" and read.spec.dropout_rates == (0.1,)


def test_keras_functional_chains_and_exponential_decay_port():
    keras = import_or_skip("keras")
    from impls.keras_backend import floatx

    with floatx("float64"):
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(5, activation="tanh")(inputs)
        outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Dropout(0.0)(hidden))
        model = keras.Model(inputs, outputs)
        schedule = keras.optimizers.schedules.ExponentialDecay(np.float64(0.1), decay_steps=6,
                                                               decay_rate=np.float64(0.5), staircase=True)
        model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=np.float64(0.9)),
                      loss=keras.losses.SparseCategoricalCrossentropy())
    with pytest.raises(port.UnsupportedModel, match="steps_per_epoch"):
        port.import_model(model)
    read = port.import_model(model, epochs=4, batch_size=16, steps_per_epoch=3)
    assert (read.config.lr_decay, read.conventions.decay_every) == (0.5, 2)
    X, y = data(4, 3, n=48)  # 3 steps of 16 per epoch
    certificate = port.verify(read, "torch", X, y, epochs=4, batch_size=16)
    assert certificate.passed, certificate.to_markdown()


def test_optax_forms_outside_the_spec_are_refused():
    import_or_skip("flax")
    import optax

    model, loss, _ = flax_source()
    for tx, problem in ((optax.adamw(1e-3, weight_decay=1e-2), r"not an sgd/adam form .*decoupled \(AdamW\)"),
                        (optax.sgd(0.1, momentum=0.9, nesterov=True), "neither SGD with momentum form"),
                        (optax.adam(1e-3, eps_root=1e-8), r"not an sgd/adam form .*eps_root"),
                        (optax.rmsprop(1e-3), "does not scale every gradient alike")):
        with pytest.raises(port.UnsupportedModel, match=problem):
            port.import_model(model, loss=loss, optimizer=tx)
