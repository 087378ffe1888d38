"""Every source framework x every target over a grid of losses, activations, optimizers, schedules, regularizers
and dropout: each source written the way its framework's users write it, ported, and certified (float64, two
epochs, small models).  Dropout rates > 0 agree only statistically (each framework draws its own masks): the
certificate then claims exactness at the start only and holds the run to the bound dropout implies, and the
expected training-mode loss agrees within its sampling error.

Which conventions beyond the spec each source is read with is stated here, per source and case
(:data:`CONVENTIONS`), not taken from the code under test: it decides whether the NumPy and JAX targets, which
train by the spec alone, must refuse the source or reproduce it.  Where the framework's own idiom can write
the same case without those conventions (:data:`WITHIN_SPEC`), that variant is certified on them as well."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
import pytest

from impls import port
from tests.conftest import import_or_skip

TARGETS = ("torch", "keras", "flax", "numpy", "jax")


@dataclass(frozen=True)
class Case:
    activation: str
    loss: str
    optimizer: str  # "sgd" (momentum 0.9) or "adam"
    decay: float = 1.0
    every: int = 1
    l2: float = 0.0
    dropout: float = 0.0
    momentum: float = 0.9  # SGD's
    decay_biases: bool = True  # torch's weight_decay and Optax's add_decayed_weights reach the biases unless told

    @property
    def outputs(self) -> int:
        return 3 if self.loss == "categorical_crossentropy" else 1


CASES = {
    "relu-cce-sgd-exponential-l2": Case("relu", "categorical_crossentropy", "sgd", 0.9, 1, 1e-3),
    "tanh-bce-adam": Case("tanh", "binary_crossentropy", "adam"),
    "leaky-mse-sgd-step": Case("leaky_relu", "mse", "sgd", 0.5, 2),
    "elu-mse-adam-l2": Case("elu", "mse", "adam", l2=1e-2),
    "sigmoid-cce-sgd": Case("sigmoid", "categorical_crossentropy", "sgd"),
}
"""Each case is a native model (4 -> 6 -> 5 -> outputs) and its training setup."""

BIAS_L2_0_001 = "a penalty on the biases (l1 0, l2 0.001)"
BIAS_L2_0_01 = "a penalty on the biases (l1 0, l2 0.01)"
BUFFER = "gradient-buffer momentum under a changing learning rate"
KERAS_EPSILON = "Adam's epsilon added to sqrt(v) before the bias correction"
EVERY_2 = "a learning rate decayed every 2 epochs"

CONVENTIONS: dict[tuple[str, str], list[str]] = {
    # torch: weight_decay decays the biases too; SGD's momentum buffers raw gradients (matters once the rate
    # changes); StepLR(2) decays every second epoch
    ("torch", "relu-cce-sgd-exponential-l2"): [BIAS_L2_0_001, BUFFER],
    ("torch", "tanh-bce-adam"): [],
    ("torch", "leaky-mse-sgd-step"): [BUFFER, EVERY_2],
    ("torch", "elu-mse-adam-l2"): [BIAS_L2_0_01],
    ("torch", "sigmoid-cce-sgd"): [],
    # Keras: L2 is a kernel regularizer and SGD's momentum is the spec's velocity, but Adam adds epsilon before
    # the bias correction, and the scheduler of the step case decays every second epoch
    ("keras", "relu-cce-sgd-exponential-l2"): [],
    ("keras", "tanh-bce-adam"): [KERAS_EPSILON],
    ("keras", "leaky-mse-sgd-step"): [EVERY_2],
    ("keras", "elu-mse-adam-l2"): [KERAS_EPSILON],
    ("keras", "sigmoid-cce-sgd"): [],
    # Flax + Optax: add_decayed_weights decays the biases too unless masked; optax.sgd traces raw gradients;
    # a staircase schedule of two epochs' steps
    ("flax", "relu-cce-sgd-exponential-l2"): [BIAS_L2_0_001, BUFFER],
    ("flax", "tanh-bce-adam"): [],
    ("flax", "leaky-mse-sgd-step"): [BUFFER, EVERY_2],
    ("flax", "elu-mse-adam-l2"): [BIAS_L2_0_01],
    ("flax", "sigmoid-cce-sgd"): [],
}
"""The conventions beyond the spec each source case is written with, in the order ``beyond_spec`` lists them."""

WITHIN_SPEC: dict[tuple[str, str], dict[str, object]] = {
    ("torch", "relu-cce-sgd-exponential-l2"): {"decay_biases": False, "momentum": 0.0},
    ("torch", "elu-mse-adam-l2"): {"decay_biases": False},
    ("flax", "relu-cce-sgd-exponential-l2"): {"decay_biases": False, "momentum": 0.0},
    ("flax", "elu-mse-adam-l2"): {"decay_biases": False},
}
"""A source case with conventions beyond the spec, written without them in the framework's own idiom: weight decay
on the weights alone (a parameter group, an Optax mask), and SGD without momentum, where the buffer and velocity
forms are the same update.  The other cases have no such variant: Keras's Adam always adds epsilon before the bias
correction, and the step cases are about a rate decayed every second epoch."""

SPEC_ONLY = ("numpy", "jax")
"""The targets that train by the spec alone."""

LR = 0.05
EPOCHS, BATCH, N = 3, 16, 40


def problem(case: Case) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(N, 4))
    if case.loss == "mse":
        return X, rng.normal(size=N)
    return X, rng.integers(0, 3 if case.loss == "categorical_crossentropy" else 2, N)


def torch_model(case: Case) -> port.Port:
    torch = import_or_skip("torch")
    nn, optim = torch.nn, torch.optim
    torch.manual_seed(0)
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": lambda: nn.LeakyReLU(0.1),
           "elu": lambda: nn.ELU(0.7)}[case.activation]
    layers = [nn.Linear(4, 6), act(), *([nn.Dropout(case.dropout)] if case.dropout else []), nn.Linear(6, 5), act(),
              nn.Linear(5, case.outputs)]
    model = nn.Sequential(*layers).double()
    loss = {"categorical_crossentropy": nn.CrossEntropyLoss(), "binary_crossentropy": nn.BCEWithLogitsLoss(),
            "mse": nn.MSELoss()}[case.loss]
    linears = [layer for layer in model if isinstance(layer, nn.Linear)]
    # weight decay on the weights alone: a parameter group of its own, as PyTorch's users write it
    groups = ([{"params": model.parameters(), "weight_decay": case.l2}] if case.decay_biases else
              [{"params": [linear.weight for linear in linears], "weight_decay": case.l2},
               {"params": [linear.bias for linear in linears], "weight_decay": 0.0}])
    if case.optimizer == "adam":
        optimizer = optim.Adam(groups, lr=LR)
    else:
        optimizer = optim.SGD(groups, lr=LR, momentum=case.momentum)
    scheduler = None
    if case.decay != 1.0:
        scheduler = (optim.lr_scheduler.ExponentialLR(optimizer, case.decay) if case.every == 1
                     else optim.lr_scheduler.StepLR(optimizer, case.every, case.decay))
    return port.import_model(model, loss=loss, optimizer=optimizer, scheduler=scheduler, epochs=EPOCHS,
                             batch_size=BATCH)


def keras_model(case: Case) -> port.Port:
    keras = import_or_skip("keras")
    from impls.keras_backend import enable_float64, floatx

    enable_float64()
    keras.utils.set_random_seed(0)
    tail = {"categorical_crossentropy": "softmax", "binary_crossentropy": "sigmoid", "mse": "linear"}[case.loss]
    with floatx("float64"):  # how Keras trains float64: layers, losses and optimizer variables in floatx
        regularizer = keras.regularizers.L2(case.l2 / 2) if case.l2 else None
        act = {"leaky_relu": "linear", "elu": "elu"}.get(case.activation, case.activation)
        layers = [keras.Input((4,))]
        for width in (6, 5):
            layers.append(keras.layers.Dense(width, activation=act, kernel_regularizer=regularizer))
            if case.activation == "leaky_relu":
                layers.append(keras.layers.LeakyReLU(0.1))
            if case.dropout and width == 6:
                layers.append(keras.layers.Dropout(case.dropout))
        layers.append(keras.layers.Dense(case.outputs, activation=tail, kernel_regularizer=regularizer))
        model = keras.Sequential(layers)
        loss = {"categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy(),
                "binary_crossentropy": keras.losses.BinaryCrossentropy(), "mse": keras.losses.MeanSquaredError()}
        # numpy.float64 hyper-parameters: Keras on TensorFlow casts Python floats through float32
        optimizer = (keras.optimizers.Adam(np.float64(LR), np.float64(0.9), np.float64(0.999), np.float64(1e-7))
                     if case.optimizer == "adam" else
                     keras.optimizers.SGD(np.float64(LR), momentum=np.float64(case.momentum)))
        model.compile(optimizer=optimizer, loss=loss[case.loss])
    callbacks = []
    if case.decay != 1.0:
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: LR * case.decay ** (epoch // case.every)))
    return port.import_model(model, callbacks=callbacks, epochs=EPOCHS, batch_size=BATCH)


def flax_model(case: Case) -> port.Port:
    import_or_skip("flax")
    import jax
    import optax
    from flax import nnx

    act = {"relu": nnx.relu, "tanh": nnx.tanh, "sigmoid": nnx.sigmoid,
           "leaky_relu": functools.partial(nnx.leaky_relu, negative_slope=0.1),
           "elu": functools.partial(nnx.elu, alpha=0.7)}[case.activation]
    with jax.enable_x64(True):
        rngs = nnx.Rngs(0)
        linear = functools.partial(nnx.Linear, dtype=np.float64, param_dtype=np.float64, rngs=rngs)
        layers = [linear(4, 6), act, *([nnx.Dropout(case.dropout, rngs=rngs)] if case.dropout else []),
                  linear(6, 5), act, linear(5, case.outputs)]
        model = nnx.Sequential(*layers)
    steps = -(-N // BATCH)
    rate = (optax.exponential_decay(LR, steps * case.every, case.decay, staircase=True) if case.decay != 1.0
            else LR)
    inner = optax.adam(rate) if case.optimizer == "adam" else optax.sgd(rate, momentum=case.momentum or None)
    # weight decay on the kernels alone: Optax's mask
    mask = None if case.decay_biases else (lambda params: jax.tree.map(lambda p: p.ndim == 2, params))
    tx = optax.chain(optax.add_decayed_weights(case.l2, mask=mask), inner) if case.l2 else inner
    loss = {"categorical_crossentropy": optax.softmax_cross_entropy_with_integer_labels,
            "binary_crossentropy": optax.sigmoid_binary_cross_entropy, "mse": optax.squared_error}[case.loss]
    return port.import_model(model, loss=loss, optimizer=tx, epochs=EPOCHS, batch_size=BATCH,
                             steps_per_epoch=steps)


SOURCES = {"torch": torch_model, "keras": keras_model, "flax": flax_model}


def certify(source: port.Port, target: str, case: Case) -> port.Certificate:
    X, y = problem(case)
    certificate = port.verify(source, target, X, y, epochs=EPOCHS, batch_size=BATCH)
    assert certificate.passed, certificate.to_markdown()
    return certificate


def test_the_tables_cover_the_grid():
    assert set(CONVENTIONS) == {(source, case) for source in SOURCES for case in CASES}
    assert all(CONVENTIONS[key] for key in WITHIN_SPEC), "a variant only where the source goes beyond the spec"


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("source", list(SOURCES))
def test_every_source_ports_to_every_target(source, case, target):
    """Certified, except where the table says the source goes beyond the spec and the target trains by the spec
    alone: there the export is refused by name, and the case's variant within the spec, if it has one, is
    certified instead."""
    read, expected = SOURCES[source](CASES[case]), CONVENTIONS[source, case]
    assert read.conventions.beyond_spec() == expected
    if target in SPEC_ONLY and expected:
        with pytest.raises(port.UnsupportedModel, match="spec's conventions only"):
            read.export(target)
        if (source, case) not in WITHIN_SPEC:
            return
        read = SOURCES[source](replace(CASES[case], **WITHIN_SPEC[source, case]))
        assert read.conventions.beyond_spec() == []
    certificate = certify(read, target, CASES[case])
    limited = [row for row in certificate.rows if row[0].startswith("parameters")]
    assert all(limit is not None for _, _, limit, _ in limited), certificate.to_markdown()


@pytest.mark.parametrize("source", list(SOURCES))
def test_the_grid_reads_each_source_as_written(source):
    case = CASES["relu-cce-sgd-exponential-l2"]
    read = SOURCES[source](case)
    # Keras's L2 factor on TensorFlow goes through float32, and the port keeps the value Keras computes with
    assert read.spec.layer_sizes == (4, 6, 5, 3) and read.spec.l2 == pytest.approx(1e-3, rel=1e-7)
    assert read.config.lr_decay == pytest.approx(0.9, rel=1e-12)
    expected = {"torch": "buffer", "keras": "velocity", "flax": "buffer"}[source]
    assert read.conventions.momentum_form == expected


@pytest.mark.parametrize("source", list(SOURCES))
def test_dropout_ports_exactly_at_the_start_and_statistically_in_training(source):
    case = Case("relu", "categorical_crossentropy", "sgd", dropout=0.3)
    read = SOURCES[source](case)
    assert read.spec.dropout_rates == (0.3, 0.0)
    X, y = problem(case)
    for target in ("torch", "flax"):
        certificate = port.verify(read, target, X, y, epochs=1, batch_size=BATCH)
        assert certificate.passed, certificate.to_markdown()
        start = [row for row in certificate.rows if row[0].endswith("at start")]
        assert all(limit is not None for _, _, limit, _ in start)
        assert all(limit is not None and "dropout" in remark for quantity, _, limit, remark in certificate.rows
                   if quantity.startswith("parameters"))
        mean, error = port.dropout_loss(read, target, X, y, draws=400)
        reference, reference_error = port.dropout_loss(read, "numpy", X, y, draws=400)
        assert abs(mean - reference) < 4 * np.hypot(error, reference_error), (target, mean, reference)


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("source", ["numpy", "jax", "npz", "pytree"])
def test_this_projects_models_files_and_pytrees_port_to_every_target(source, target, tmp_path):
    from impls.exchange import save
    from impls.registry import create
    from impls.spec import Adam, MLPSpec, TrainConfig

    import_or_skip({"numpy": "numpy", "jax": "jax", "npz": "numpy", "pytree": "numpy"}[source])
    spec = MLPSpec((4, 6, 5, 1), "elu", "mse", elu_alpha=0.5, l2=1e-3)
    model = create("jax" if source == "jax" else "numpy", spec, seed=3)
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=0.01, optimizer=Adam(), shuffle=False)
    if source == "npz":
        obj = save(tmp_path / "model.npz", spec, model.get_params())
    elif source == "pytree":
        obj = model.get_params()
    else:
        obj = model
    read = port.import_model(obj, config=config, spec=spec if source == "pytree" else None)
    assert read.spec == spec
    assert read.conventions.beyond_spec() == []  # this project's models train by the spec
    case = Case("elu", "mse", "adam")
    certify(read, target, case)
