"""Jobs: the orchestration behind the commands, as a Python API with no terminal output.

``config``: typed, validated settings. ``prepare``: model -> IR for a job's backends. ``run``,
``compare``, ``optimize``: the jobs. ``models``: the content-keyed model cache. ``events``: how jobs
report progress (a listener the CLI renders). ``folders``: run folders and their ``config.json``.
"""

import importlib

#: public name -> the module of ``neurodeploy.jobs`` that defines it (imported on first use, so that
#: importing ``neurodeploy.jobs.events`` for a listener does not import torch and every backend)
_EXPORTS = {
    "ConversionSettings": "config", "EvaluationSettings": "config", "FanInSettings": "config",
    "JobConfig": "config", "ModelSettings": "config", "OptimizationSettings": "config", "RunSettings": "config",
    "Event": "events", "silent": "events", "compare_backends": "compare", "convert_job": "prepare",
    "prepare_network": "prepare", "optimize_job": "optimize", "run_job": "run",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'neurodeploy.jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(f"neurodeploy.jobs.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
