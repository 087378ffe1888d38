"""What only a library's own API can do, keyed by the library's module: applied to whatever a worker imported.

Thread pools that have no environment variable (``torch.set_num_threads``, ``tf.config.threading``),
which device the library computes on, and a float32 matrix product that waits for its result (the
run's matmul ceiling).  A worker asks :func:`imported` which of these libraries its implementation
loaded; nothing here names an implementation.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Products = Callable[[], object]
"""Runs every matrix product of one step once and returns when the results exist."""


@dataclass(frozen=True)
class Library:
    """Hooks for one library: ``threads(n)`` sets its API-only pools and returns what it reports back;
    ``device()`` names where it computes; ``products(pairs)`` builds a :data:`Products` runner."""

    threads: Callable[[int], dict[str, object]]
    device: Callable[[], str]
    products: Callable[[list[tuple[np.ndarray, np.ndarray]]], Products]


def _numpy_products(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Products:
    return lambda: [a @ b for a, b in pairs]


def _torch_threads(n: int) -> dict[str, object]:
    import torch

    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # allowed only before the first inter-op parallel work
        torch.set_num_interop_threads(1)
    return {"num_threads": torch.get_num_threads(), "num_interop_threads": torch.get_num_interop_threads()}


def _torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_products(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Products:
    import torch

    device = _torch_device()
    tensors = [(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)) for a, b in pairs]

    def run() -> object:
        out = [a @ b for a, b in tensors]
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def _jax_device() -> str:
    import jax

    return jax.default_backend()


def _jax_products(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Products:
    import jax
    import jax.numpy as jnp

    arrays = [(jnp.asarray(a), jnp.asarray(b)) for a, b in pairs]
    product = jax.jit(jnp.matmul)
    return lambda: [product(a, b).block_until_ready() for a, b in arrays]


def _tensorflow_threads(n: int) -> dict[str, object]:
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # the runtime is already initialized: the env variables hold
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


def _tensorflow_device() -> str:
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def _tensorflow_products(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Products:
    import tensorflow as tf

    tensors = [(tf.constant(a), tf.constant(b)) for a, b in pairs]
    return lambda: [tf.linalg.matmul(a, b).numpy() for a, b in tensors]


def _no_threads(n: int) -> dict[str, object]:
    return {"environment": {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS") or k == "XLA_FLAGS"}}


LIBRARIES: dict[str, Library] = {
    "numpy": Library(_no_threads, lambda: "cpu", _numpy_products),
    "torch": Library(_torch_threads, _torch_device, _torch_products),
    "jax": Library(_no_threads, _jax_device, _jax_products),
    "tensorflow": Library(_tensorflow_threads, _tensorflow_device, _tensorflow_products),
}
"""Libraries by module name; NumPy, JAX (XLA) and everything else take their threads from the environment."""


def imported() -> list[str]:
    """The libraries of :data:`LIBRARIES` this process has imported, in table order."""
    return [name for name in LIBRARIES if name in sys.modules]


def apply_threads(n: int) -> dict[str, dict[str, object]]:
    """Set every imported library's API-only thread pools to ``n``; returns what each reports."""
    return {name: LIBRARIES[name].threads(n) for name in imported()}


def devices() -> dict[str, str]:
    """Where every imported library computes."""
    return {name: LIBRARIES[name].device() for name in imported()}
