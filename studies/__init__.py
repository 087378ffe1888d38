"""The lecture's experiments, computed by every implementation side by side.

Each study module exposes ``run(impls, size) -> StudyResult``: tables whose
columns are the implementations, so the reader sees that they agree and by how
much.  ``python -m studies`` (``nox -s studies``) runs them and writes
``results/studies/``.
"""

STUDIES = ("softmax", "symmetry", "vanishing", "regularization")
"""Study modules in the order they run and appear in the report."""
