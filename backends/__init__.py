"""Backends: where an IR network runs. Installed as ``neurodeploy.backends``.

Built-in backends are listed in :data:`BUILTIN`; third-party packages add their own through the
``neurodeploy.backends`` entry-point group (``name = "package.module:BackendClass"``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from neurodeploy.backends.base import Backend, ExitPolicy, RunOptions, run_in_batches
from neurodeploy.errors import BackendError

BUILTIN = {
    "gpu": "neurodeploy.backends.gpu:GpuBackend",
    "neuron": "neurodeploy.backends.neuron:NeuronBackend",
    "spinnaker": "neurodeploy.backends.spinnaker:SpinnakerBackend",
}
ENTRY_POINT_GROUP = "neurodeploy.backends"


def available_backends() -> dict[str, str]:
    """Backend name -> ``module:Class`` for built-in and entry-point backends."""
    found = dict(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.value)
    return found


def get_backend(name: str, **kwargs) -> Backend:
    """Instantiates the backend called ``name`` (kwargs go to its constructor)."""
    known = available_backends()
    if name not in known:
        raise BackendError(f"unknown backend {name!r}; available: {', '.join(sorted(known))}")
    module_name, _, class_name = known[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError as err:
        raise BackendError(f"backend {name!r} is not installed ({err}); see the README for its extra") from None
    return cls(**kwargs)


__all__ = ["Backend", "ExitPolicy", "RunOptions", "available_backends", "get_backend", "run_in_batches"]
