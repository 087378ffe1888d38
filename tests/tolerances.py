"""Every numerical tolerance of the test suite, in one place, with the reason for its size.

Errors are relative to the largest entry of the compared vector (:func:`tests.helpers.max_rel_error`),
so a gradient entry of ~1e-12 is not judged by its own, noise-dominated scale.
"""

from __future__ import annotations

COMPUTATION = {"float64": 1e-10, "float32": 1e-4}
"""One forward/backward computation (loss, gradients, outputs) against the NumPy reference.

float64: reductions in another order cost ~1e-16 per operation; a few hundred operations deep
that is ~1e-14, so 1e-10 leaves room while any formula difference (a missing 1/2, a mean over
the wrong axis, a clipped log) shows at 1e-3 or more.  float32: against the float64 reference on
the same float32-representable inputs; rounding is ~6e-8 per operation and 1e-4 allows for
sums of a few hundred terms.
"""

TRAJECTORY = 1e-8
"""Whole float64 training runs (several epochs of SGD with momentum and decay, or Adam): another
framework, another mode (compiled kernels fuse and reorder operations), or ``fit`` against
``train_step``.  Rounding compounds over the steps; measured differences are ~1e-14."""

EXACT_STEP = 1e-12
"""Absolute error of a float64 parameter after one or two hand-computable steps (Adam's first step
moves every parameter by exactly ``lr``): nothing compounds, a few roundings of O(1) numbers."""

FINITE_DIFFERENCES = 1e-6
"""The hand-written gradients against central differences in float64 (step ~1e-6): the truncation
and cancellation error of the difference quotient is ~1e-9 at worst."""
