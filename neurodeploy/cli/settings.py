"""Parsed arguments -> validated job settings (``neurodeploy.jobs.config``)."""

from __future__ import annotations

import argparse

from neurodeploy.jobs.config import (
    ConversionSettings,
    EvaluationSettings,
    FanInSettings,
    ModelSettings,
    NIRImportSettings,
    OptimizationSettings,
    RunSettings,
)


def model(args: argparse.Namespace) -> ModelSettings:
    return ModelSettings(arch=getattr(args, "arch", "dense_mnist"), model=args.model, data=args.data,
                         epochs=getattr(args, "epochs", 15), seed=args.seed,
                         model_class=getattr(args, "model_class", None),
                         model_kwargs=getattr(args, "model_kwargs", None),
                         weights=getattr(args, "weights", None), trust_pickle=getattr(args, "trust_pickle", False),
                         network=getattr(args, "network", None))


def conversion(args: argparse.Namespace) -> dict:
    return {
        "conversion": ConversionSettings(
            conversion=args.conversion, normalization=args.normalization, percentile=args.percentile,
            granularity=args.granularity, reset=args.reset, v_init=args.v_init,
            calibration_samples=args.calibration_samples, quant_bits=args.quant_bits, quant_epochs=args.quant_epochs,
            max_pool=args.max_pool, readout_start=args.readout_start, negative_spikes=args.negative_spikes,
            headroom=args.headroom),
        "fan_in": FanInSettings(max_fan_in=args.max_fan_in, epochs=args.fan_in_epochs),
    }


def evaluation(args: argparse.Namespace) -> EvaluationSettings:
    return EvaluationSettings(dc_alpha=args.dc_alpha, dc_tolerance=args.dc_tolerance,
                              dc_validation_fraction=args.dc_validation_fraction, dc_rule=args.dc_rule)


def optimization(args: argparse.Namespace, enabled: bool) -> OptimizationSettings:
    return OptimizationSettings(enabled=enabled, method=args.optimize_method, evals=args.optimize_evals,
                                T=args.optimize_T, items=args.optimize_items, lambda_e=args.lambda_e,
                                sparsity=not args.no_sparsity, accuracy_budget=args.accuracy_budget,
                                lambda_a=args.lambda_a, lambda_w=args.lambda_w, prune=args.prune,
                                v_init=not args.fixed_v_init)


def run(args: argparse.Namespace) -> RunSettings:
    return RunSettings(T=args.T, batch_size=args.batch_size, samples=args.samples, encoding=args.encoding,
                       exit=getattr(args, "exit", None), progress=not args.no_progress,
                       memory_budget=getattr(args, "memory_budget", None),
                       record=tuple(getattr(args, "record", None) or ()))


def backend_options(args: argparse.Namespace) -> dict:
    """The backend options given on the command line (not the defaults: each backend fills its own)."""
    prefix = "backend_option_"
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def nir_import(args: argparse.Namespace) -> NIRImportSettings:
    return NIRImportSettings(writer=args.nir_from, dt=args.nir_dt, reset=args.nir_reset, leak=args.nir_leak)
