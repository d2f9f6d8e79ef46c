"""Backends: where an IR network runs. Installed as ``neurodeploy.backends``.

Built-in backends are listed in :data:`BUILTIN`; third-party packages add their own through the
``neurodeploy.backends`` entry-point group (``name = "package.module:BackendClass"``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from neurodeploy.backends.base import Backend, ExitPolicy, Option, Requirements, RunOptions, Session, run_in_batches
from neurodeploy.errors import BackendError, ConfigError

BUILTIN = {
    "gpu": "neurodeploy.backends.gpu:GpuBackend",
    "neuron": "neurodeploy.backends.neuron:NeuronBackend",
    "nest": "neurodeploy.backends.nest:NestBackend",
    "spinnaker": "neurodeploy.backends.spinnaker:SpinnakerBackend",
}
ENTRY_POINT_GROUP = "neurodeploy.backends"


def available_backends() -> dict[str, str]:
    """Backend name -> ``module:Class`` for built-in and entry-point backends."""
    found = dict(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.value)
    return found


def backend_class(name: str) -> type[Backend]:
    """The class of the backend called ``name`` (importing it runs no simulator)."""
    known = available_backends()
    if name not in known:
        raise ConfigError(f"unknown backend {name!r}; available: {', '.join(sorted(known))}")
    module_name, _, class_name = known[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise BackendError(f"backend {name!r} cannot be loaded ({err}); `neurodeploy backends` says what to "
                           "install") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendError(f"backend {name!r} ({known[name]}) does not derive from neurodeploy.backends.Backend")
    return cls


def get_backend(name: str, **options) -> Backend:
    """Instantiates the backend called ``name`` with its ``options`` (validated by the backend)."""
    return backend_class(name)(**options)


__all__ = ["Backend", "ExitPolicy", "Option", "Requirements", "RunOptions", "Session", "available_backends",
           "backend_class", "get_backend", "run_in_batches"]
