"""Phase 1 of Dutson et al.: fine-tune the ANN for activation and weight sparsity, then prune.

Loss = cross-entropy against the targets + lambda_a * A + lambda_w * W, where the targets mix the labels
and the original model's outputs (:func:`distillation_targets`: ``(1 - kappa) * onehot(label) + kappa *
softmax(original logits)``; kappa = 0 is the paper's fine-tuning on the labels), and
    A = sum_l (N_l / N) * mean_c Phi(beta_lc)     (activation penalty through batch-norm biases)
    W = sum_l (S_l / S) * mean |W_l|              (weight penalty)
where beta_lc is the bias of channel c of the batch norm feeding ReLU layer l, Phi the standard normal
CDF, N_l the neurons of layer l (channels x positions), N all such neurons, S_l the synapses into
weighted layer l (weights x output positions for convolutions) and S all synapses. Pushing beta down
shifts each batch-normalized pre-activation below zero, so fewer ReLUs fire. After fine-tuning, weights
with |w| below a threshold are set to zero.

Why the original's outputs: the budget compares the candidate with the original item by item, and the width
of that comparison's interval grows with the number of items on which the two disagree. Fine-tuned on the
labels, a candidate re-decides items near the original's decision boundary both ways (on a noisy set's 800
validation items, 8 gained and 7 lost at the weakest penalty), and so cannot be shown within a 0.5 pp
budget; fine-tuned toward the original's outputs it is pulled back to the original's decisions.

How strong to make the penalties depends on the data: :func:`budgeted_sparsity` chooses the strength
itself, searching the penalty scale and the pruning threshold for the sparsest model that the paired
comparison with the original on the validation part of the training split
(:mod:`neurodeploy.optimize.budget`) shows to lose at most an accuracy budget.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from neurodeploy.data.datasets import Split
from neurodeploy.evaluate.metrics import combined_sparsity
from neurodeploy.optimize.budget import CONFIDENCE, compare_paired
from neurodeploy.train.trainer import split_validation, train_epoch


@dataclass
class LayerSizes:
    """Per batch-norm: neurons per item; per weighted layer: synapses per item."""

    neurons: dict[nn.Module, int]
    synapses: dict[nn.Module, int]


def measure_sizes(model: nn.Module, example: torch.Tensor) -> LayerSizes:
    """One forward pass on ``example`` ``[1, *input_shape]`` records output sizes."""
    neurons, synapses, handles = {}, {}, []
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            handles.append(module.register_forward_hook(
                lambda m, i, o: neurons.__setitem__(m, o[0].numel())))
        elif isinstance(module, nn.Linear):
            synapses[module] = module.weight.numel()
        elif isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(
                lambda m, i, o: synapses.__setitem__(m, m.weight.numel() * o.shape[-1] * o.shape[-2])))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(example)
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return LayerSizes(neurons, synapses)


def activation_penalty(sizes: LayerSizes) -> torch.Tensor:
    """sum_l (N_l / N) mean_c Phi(beta_lc) over the batch norms (differentiable in beta)."""
    total = sum(sizes.neurons.values())
    terms = [n / total * (0.5 * (1 + torch.erf(bn.bias / math.sqrt(2)))).mean() for bn, n in sizes.neurons.items()]
    return torch.stack(terms).sum()


def weight_penalty(sizes: LayerSizes) -> torch.Tensor:
    """sum_l (S_l / S) mean |W_l| over the linear and convolution layers."""
    total = sum(sizes.synapses.values())
    return torch.stack([s / total * layer.weight.abs().mean() for layer, s in sizes.synapses.items()]).sum()


def _weighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def weight_sparsity(model: nn.Module) -> float:
    """S_w: fraction of the linear and convolution weights that are exactly zero."""
    weights = [m.weight.detach() for m in _weighted_layers(model)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


def prune(model: nn.Module, threshold: float) -> float:
    """Zeroes weights with |w| < threshold; returns the fraction of weights that are now zero (S_w)."""
    with torch.no_grad():
        for module in _weighted_layers(model):
            module.weight[module.weight.abs() < threshold] = 0.0
    return weight_sparsity(model)


def _predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, float]:
    """One forward pass over ``images``: the predicted classes ``[N]`` and S_a, the fraction of ReLU
    outputs that are exactly zero. (Batches of 256: on conv MNIST, one thread, a forward pass over 7,200
    items took about half the CPU time of batches of 1,000; ``BENCHMARKS.md``, issue 34.)"""
    counts, handles, predictions = [0, 0], [], []

    def record(module, inputs, output):
        counts[0] += int((output == 0).sum())
        counts[1] += output.numel()

    for module in model.modules():
        if isinstance(module, nn.ReLU):
            handles.append(module.register_forward_hook(record))
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                predictions.append(model(images[start:start + batch_size]).argmax(1))
    finally:
        for handle in handles:
            handle.remove()
    return (torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)), counts[0] / max(counts[1], 1)


def activation_sparsity(model: nn.Module, images: torch.Tensor) -> float:
    """S_a: fraction of ReLU outputs that are exactly zero on ``images``."""
    return _predict(model, images)[1]


#: fraction of the training split held out for validation (the same part training keeps for choosing its
#: best epoch, and the scale optimization's items are the first of)
VALIDATION_FRACTION = 0.1


@dataclass
class SparsityConfig:
    """The paper's schedule: SGD at lr 5e-3 for the first half of the epochs, then 1e-3.

    Default lambdas measured on the trained dense MNIST model (embedded data): lambda_a = 10,
    lambda_w = 50, threshold 5e-3 raised S_c from 0.537 to 0.772 with test accuracy 0.9585 -> 0.9650;
    40 / 200 / 1e-2 reached S_c 0.973 at 0.9410."""

    epochs: int = 6
    lambda_a: float = 10.0
    lambda_w: float = 50.0
    prune_threshold: float = 5e-3
    batch_size: int = 64
    momentum: float = 0.9
    seed: int = 0
    max_items: int | None = None
    distill: float = 0.0
    frozen_norms: bool = False


def distillation_targets(labels: torch.Tensor, original_logits: torch.Tensor, distill: float) -> torch.Tensor:
    """The fine-tuning's targets ``[N, classes]`` (class probabilities): ``(1 - distill) * onehot(labels) +
    distill * softmax(original_logits)`` for ``labels`` int64 ``[N]`` and the original model's logits
    ``[N, classes]``. Cross-entropy against them is ``(1 - distill)`` times the labels' cross-entropy plus
    ``distill`` times the cross-entropy to the original's output distribution, which differs from the KL
    divergence to it only by the original's entropy (a constant): the gradient in the logits is
    ``softmax(logits) - targets``, zero for ``distill`` 1 where the model's outputs equal the original's."""
    if not 0.0 <= distill <= 1.0:
        raise ValueError(f"distill is a weight in [0, 1], got {distill}")
    onehot = F.one_hot(labels, original_logits.shape[1]).to(original_logits.dtype)
    return (1.0 - distill) * onehot + distill * torch.softmax(original_logits, dim=1)


def original_targets(model: nn.Module, fit: Split, distill: float, batch_size: int = 256) -> torch.Tensor | None:
    """:func:`distillation_targets` of ``fit`` from ``model`` (the original, before fine-tuning; its logits in
    eval mode), or None for ``distill`` 0 (the labels alone)."""
    if distill == 0.0:
        return None
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(fit.images[start:start + batch_size]) for start in range(0, len(fit), batch_size)])
    model.train(was_training)
    return distillation_targets(fit.labels, logits, distill)


def correct_flags(model: nn.Module, split: Split) -> torch.Tensor:
    """``[len(split)]`` bool: whether ``model`` classifies each item of ``split`` right."""
    return _predict(model, split.images)[0] == split.labels


def validation_report(model: nn.Module, val: Split) -> dict:
    """Accuracy (fraction), correctly classified items, S_a, S_w and S_c of ``model`` on ``val``."""
    return _measure(model, val)[0]


def _measure(model: nn.Module, val: Split) -> tuple[dict, torch.Tensor]:
    """:func:`validation_report` and the per-item correctness ``[len(val)]`` it counted."""
    predictions, s_a = _predict(model, val.images)
    flags = predictions == val.labels
    correct, s_w = int(flags.sum()), weight_sparsity(model)
    return {"accuracy": correct / max(len(val), 1), "correct": correct, "activation_sparsity": s_a,
            "weight_sparsity": s_w, "combined_sparsity": combined_sparsity(s_a, s_w)}, flags


def _finetune(model: nn.Module, fit: Split, config: SparsityConfig, progress: bool,
              targets: torch.Tensor | None = None) -> None:
    """Fine-tunes ``model`` in place with the penalties of ``config`` (no pruning), against ``targets``
    (:func:`original_targets` of ``fit``; None: the labels). With ``config.max_items`` each epoch is one
    pass over that many items drawn afresh from ``fit``."""
    sizes = measure_sizes(model, fit.images[:1])
    optimizer = torch.optim.SGD(model.parameters(), lr=5e-3, momentum=config.momentum)
    generator = torch.Generator().manual_seed(config.seed)

    def penalty() -> torch.Tensor:
        return config.lambda_a * activation_penalty(sizes) + config.lambda_w * weight_penalty(sizes)

    for epoch in tqdm(range(config.epochs), desc="sparsity fine-tuning", disable=not progress, leave=False):
        for group in optimizer.param_groups:
            group["lr"] = 5e-3 if epoch < (config.epochs + 1) // 2 else 1e-3
        part, wanted = fit, targets
        if config.max_items is not None and config.max_items < len(fit):
            index = torch.randperm(len(fit), generator=generator)[:config.max_items]
            part = Split(fit.images[index], fit.labels[index])
            wanted = None if targets is None else targets[index]
        train_epoch(model, part, optimizer, config.batch_size, generator, penalty=penalty, targets=wanted,
                    frozen_norms=config.frozen_norms)
    model.eval()


def finetune_sparsity(model: nn.Module, train: Split, config: SparsityConfig, progress: bool = True) -> dict:
    """Fine-tunes ``model`` in place with the strengths of ``config``, prunes it, and returns before/after
    accuracy (on the validation part of ``train``), S_a, S_w and S_c."""
    fit, val = split_validation(train, VALIDATION_FRACTION, config.seed)
    before = validation_report(model, val)
    _finetune(model, fit, config, progress, original_targets(model, fit, config.distill))
    prune(model, config.prune_threshold)
    model.eval()
    return {"before": before, "after": validation_report(model, val), "config": asdict(config)}


#: the penalty direction the budget search scales: (lambda_a, lambda_w) = scale * DEFAULT_LAMBDAS
DEFAULT_LAMBDAS = (SparsityConfig.lambda_a, SparsityConfig.lambda_w)
#: pruning thresholds tried on every candidate model (0: no pruning)
PRUNE_THRESHOLDS = (0.0, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2)


class CandidateStore(Protocol):
    """Where phase 1 keeps each finished fine-tuning, so that a search killed part-way and run again loads
    the finished candidates instead of training them again (``neurodeploy.jobs.optimize`` keeps them beside
    the model cache's file of the phase-1 model)."""

    def load(self, name: str) -> dict[str, torch.Tensor] | None:
        """The state dict saved under ``name``, or None."""
        ...

    def save(self, name: str, state: dict[str, torch.Tensor]) -> None:
        ...


@dataclass(frozen=True)
class BudgetedSparsity:
    """Phase 1 that chooses its own strength: the sparsest model not shown to lose more than ``budget``
    of validation accuracy against the original (the paired rule of :mod:`neurodeploy.optimize.budget`).

    budget: validation accuracy the fine-tuned, pruned model may lose against the original, as a fraction
    (0.005 = 0.5 percentage points); confidence: the paired interval's two-sided level.
    lambda_a, lambda_w: fixed penalty weights (None and None: searched along ``scale * DEFAULT_LAMBDAS``;
    one given: the other keeps its default and nothing is searched; that one fine-tuning runs
    ``given_epochs`` epochs from the original, the paper's schedule).
    prune_threshold: fixed pruning threshold (None: each candidate tries every one of ``PRUNE_THRESHOLDS``).
    first_scale, step, min_scale, max_scale, resolution, max_trials: the scale search
    (:func:`scale_schedule`): a continuation upwards from ``first_scale`` by factors of ``step``, each
    candidate fine-tuned from the previous one's weights, then geometric bisection of the bracket to a
    ratio of ``resolution``; downwards from the original when ``first_scale`` is already outside; at
    most ``max_trials`` fine-tunings. Scale 0 (the original model, pruned only) is always a candidate.
    epochs, passes, max_items: each searched candidate's fine-tuning: ``epochs`` rounds (the first half of
    them at learning rate 5e-3, the rest at 1e-3), each over ``passes / epochs`` of the fit part, at most
    ``max_items`` items, drawn afresh each round; by default one pass over the fit part in all, in two
    halves. The continuation gives a candidate the training of those before it, so one pass each is
    enough (phase 1 then costs at most ``max_trials`` passes; the search of fixed 6-epoch fine-tunings
    from the original cost at least 24).
    distill: the weight of the original's outputs in each fine-tuning's targets (:func:`distillation_targets`;
    0: the labels alone, the paper's). By default 1: a candidate is pulled toward the original's decisions,
    so it disagrees with it on fewer validation items and the paired interval is narrower.
    batch_size, momentum, seed: as :class:`SparsityConfig`.
    """

    budget: float = 0.005
    confidence: float = CONFIDENCE
    lambda_a: float | None = None
    lambda_w: float | None = None
    prune_threshold: float | None = None
    first_scale: float = 1.0
    step: float = 2.0
    min_scale: float = 1.0 / 16
    max_scale: float = 64.0
    resolution: float = 1.5
    max_trials: int = 5
    epochs: int = 2
    passes: float = 1.0
    max_items: int | None = 15_000
    given_epochs: int = 6
    batch_size: int = 64
    momentum: float = 0.9
    seed: int = 0
    distill: float = 1.0
    frozen_norms: bool = True

    @property
    def searches_penalty(self) -> bool:
        return self.lambda_a is None and self.lambda_w is None

    def config(self, scale: float | None) -> SparsityConfig:
        """The fine-tuning settings of one candidate: the penalty ``scale * DEFAULT_LAMBDAS`` (or the
        fixed lambdas when ``scale`` is None) and the fixed pruning threshold (0 when it is searched)."""
        if scale is None:
            lambda_a = DEFAULT_LAMBDAS[0] if self.lambda_a is None else self.lambda_a
            lambda_w = DEFAULT_LAMBDAS[1] if self.lambda_w is None else self.lambda_w
            epochs, max_items = self.given_epochs, None
        else:
            lambda_a, lambda_w = scale * DEFAULT_LAMBDAS[0], scale * DEFAULT_LAMBDAS[1]
            epochs, max_items = self.epochs, self.max_items
        return SparsityConfig(epochs=epochs, lambda_a=lambda_a, lambda_w=lambda_w,
                              prune_threshold=self.prune_threshold or 0.0, batch_size=self.batch_size,
                              momentum=self.momentum, seed=self.seed, max_items=max_items, distill=self.distill,
                              frozen_norms=self.frozen_norms)


@dataclass
class _Best:
    """The preferred candidate so far: one inside the budget over one outside; inside, the larger S_c,
    then the more accurate; outside, the more accurate, then the larger S_c. The first found wins ties
    (so the search is deterministic)."""

    model: nn.Module | None = None
    entry: dict | None = None

    @staticmethod
    def rank(entry: dict) -> tuple:
        sparsity, accuracy = entry["combined_sparsity"], entry["accuracy"]
        return (True, sparsity, accuracy) if entry["within_budget"] else (False, accuracy, sparsity)

    def offer(self, model: nn.Module, entry: dict) -> None:
        if self.entry is None or self.rank(entry) > self.rank(self.entry):
            self.model, self.entry = model, entry


#: one step of the search: (penalty scale, the scale whose fine-tuned weights it starts from; None: the
#: original model)
Step = tuple[float, float | None]


def scale_schedule(search: BudgetedSparsity, within_budget: Callable[[float, float | None], bool]) -> list[Step]:
    """The fine-tunings the search runs, in order; ``within_budget(scale, start)`` fine-tunes one (from the
    weights of the candidate at scale ``start``, or the original when None) and says whether it is inside
    the budget.

    Upwards: ``first_scale``, then ``step`` times the last, each from the previous candidate (a
    continuation: a stronger penalty starts where the weaker one ended), until one is outside or
    ``max_scale`` is passed. Downwards, only when ``first_scale`` is outside: ``1 / step`` times the last,
    each from the original, until one is inside or ``min_scale`` is passed. Then the bracket (largest
    inside, smallest outside) is bisected geometrically, each midpoint from the largest inside, until its
    ends are at most ``resolution`` apart. At most ``max_trials`` fine-tunings."""
    tried: list[Step] = []

    def attempt(scale: float, start: float | None) -> bool | None:
        if len(tried) >= search.max_trials:
            return None
        tried.append((scale, start))
        return within_budget(scale, start)

    inside, outside = None, None
    scale, start = search.first_scale, None
    while scale <= search.max_scale:
        result = attempt(scale, start)
        if result is None:
            return tried
        if not result:
            outside = scale
            break
        inside, scale, start = scale, scale * search.step, scale
    if inside is None:
        scale = search.first_scale / search.step
        while scale >= search.min_scale:
            result = attempt(scale, None)
            if result is None:
                return tried
            if result:
                inside = scale
                break
            outside, scale = scale, scale / search.step
    while inside is not None and outside is not None and outside / inside > search.resolution:
        middle = math.sqrt(inside * outside)
        result = attempt(middle, inside)
        if result is None:
            break
        inside, outside = (middle, outside) if result else (inside, middle)
    return tried


def _candidate_name(index: int, scale: float | None, start: float | None) -> str:
    """The store's name of one fine-tuning: its place in the search, its scale and where it started."""
    return f"{index}-scale-{'given' if scale is None else f'{scale:.6g}'}-from-" \
           f"{'original' if start is None else f'{start:.6g}'}"


def budgeted_sparsity(model: nn.Module, train: Split, search: BudgetedSparsity, progress: bool = True,
                      on_trial: Callable[[dict], None] | None = None,
                      store: CandidateStore | None = None) -> tuple[nn.Module, dict]:
    """Phase 1 under the accuracy budget of ``search``; ``model`` is left untouched.

    Every candidate (a fine-tuning at one penalty scale, or the original model at scale 0) is pruned at
    each threshold tried, in ascending order up to the first one outside the budget, and compared with
    the original, item by item, on the validation part of ``train`` (never the test split; the part the
    original's training held out, all of it): the paired rule
    (:func:`neurodeploy.optimize.budget.compare_paired`) says whether it is inside the budget (its interval's
    lower end at least -budget: ``shown_within_budget``), and the sparsest (largest S_c) inside is returned.
    With fixed lambdas nothing may be inside the budget: then the most accurate candidate is returned and the
    record says ``within_budget`` False. ``on_trial`` is called with each candidate's row of the record
    (progress lines) once it is finished (and stored in ``store``, when given, which also answers the
    fine-tunings a previous, interrupted search finished).

    Returns the chosen model (a new module) and the record: ``before`` / ``after`` (validation accuracy,
    correct items, S_a, S_w, S_c), ``config`` (the chosen lambdas and threshold), ``scale`` (None when the
    lambdas were given), ``budget``, ``confidence``, ``paired`` (the chosen candidate's paired comparison:
    gained / lost items, the interval of the difference), ``validation_items``, ``within_budget``,
    ``searched`` and ``trials`` (one row per candidate, its preferred threshold, each with its ``paired``
    comparison, ``warm_start`` (the scale it was fine-tuned from; None: the original) and ``cached``).
    """
    fit, val = split_validation(train, VALIDATION_FRACTION, search.seed)
    before, original_flags = _measure(model, val)
    original_flags = original_flags.numpy()
    targets = original_targets(model, fit, search.distill)
    thresholds = PRUNE_THRESHOLDS if search.prune_threshold is None else (search.prune_threshold,)
    best, trials, tuned_states = _Best(), [], {}
    per_round = math.ceil(search.passes * len(fit) / search.epochs)
    if search.max_items is not None:
        per_round = min(per_round, search.max_items)

    def candidate(scale: float | None, start: float | None) -> bool:
        """Fine-tunes (or loads) and measures one candidate at every threshold; True when one of them is
        inside the budget."""
        config = search.config(scale)
        if scale is not None:
            config = replace(config, max_items=per_round)
        tuned = copy.deepcopy(model)
        name = _candidate_name(len(trials), scale, start)
        cached = False
        if scale != 0.0:
            state = store.load(name) if store is not None else None
            if state is not None:
                tuned.load_state_dict(state)
                cached = True
            else:
                if start is not None:
                    tuned.load_state_dict(tuned_states[start])
                _finetune(tuned, fit, config, progress, targets)
                if store is not None:
                    store.save(name, tuned.state_dict())
            tuned_states[scale] = copy.deepcopy(tuned.state_dict())
        own = _Best()
        for threshold in thresholds:  # ascending: past the first outside, more pruning only loses more
            pruned = copy.deepcopy(tuned)
            prune(pruned, threshold)
            report, flags = _measure(pruned, val)
            paired = compare_paired(flags.numpy(), original_flags, search.budget, search.confidence)
            entry = {"scale": scale, "lambda_a": config.lambda_a, "lambda_w": config.lambda_w,
                     "prune_threshold": threshold, **report, "paired": paired.as_dict(),
                     "within_budget": paired.shown_within_budget, "warm_start": start, "cached": cached}
            own.offer(pruned, entry)
            if not paired.shown_within_budget:
                break
        trials.append(own.entry)
        best.offer(own.model, own.entry)
        if on_trial is not None:
            on_trial(own.entry)
        return own.entry["within_budget"]

    if not search.searches_penalty:
        candidate(None, None)
    else:
        candidate(0.0, None)
        scale_schedule(search, candidate)
    chosen = best.entry
    config = replace(search.config(chosen["scale"]), prune_threshold=chosen["prune_threshold"])
    if chosen["scale"] is not None:
        config = replace(config, max_items=per_round)
    after = {key: chosen[key] for key in before}  # the chosen candidate's validation report, measured above
    record = {"before": before, "after": after, "config": asdict(config), "scale": chosen["scale"],
              "budget": search.budget, "confidence": search.confidence, "paired": chosen["paired"],
              "validation_items": len(val), "within_budget": chosen["within_budget"],
              "searched": {"penalty": search.searches_penalty, "prune_threshold": search.prune_threshold is None},
              "fine_tunings": sum(t["scale"] != 0.0 for t in trials),
              "fine_tunings_loaded": sum(t["cached"] for t in trials), "trials": trials}
    best.model.eval()
    return best.model, record
