"""Phase 1 of Dutson et al.: fine-tune the ANN for activation and weight sparsity, then prune.

Loss = cross-entropy + lambda_a * A + lambda_w * W with
    A = sum_l (N_l / N) * mean_c Phi(beta_lc)     (activation penalty through batch-norm biases)
    W = sum_l (S_l / S) * mean |W_l|              (weight penalty)
where beta_lc is the bias of channel c of the batch norm feeding ReLU layer l, Phi the standard normal
CDF, N_l the neurons of layer l (channels x positions), N all such neurons, S_l the synapses into
weighted layer l (weights x output positions for convolutions) and S all synapses. Pushing beta down
shifts each batch-normalized pre-activation below zero, so fewer ReLUs fire. After fine-tuning, weights
with |w| below a threshold are set to zero.

How strong to make the penalties depends on the data: :func:`budgeted_sparsity` chooses the strength
itself, searching the penalty scale and the pruning threshold for the sparsest model whose accuracy on
the validation part of the training split stays within an accuracy budget of the original model's.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from neurodeploy.data.datasets import Split
from neurodeploy.evaluate.metrics import combined_sparsity
from neurodeploy.train.trainer import evaluate_accuracy, split_validation, train_epoch


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


def activation_sparsity(model: nn.Module, images: torch.Tensor) -> float:
    """S_a: fraction of ReLU outputs that are exactly zero on ``images``."""
    counts, handles = [0, 0], []

    def record(module, inputs, output):
        counts[0] += int((output == 0).sum())
        counts[1] += output.numel()

    for module in model.modules():
        if isinstance(module, nn.ReLU):
            handles.append(module.register_forward_hook(record))
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), 1000):
            model(images[start:start + 1000])
    for handle in handles:
        handle.remove()
    return counts[0] / max(counts[1], 1)


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


def validation_report(model: nn.Module, val: Split) -> dict:
    """Accuracy (fraction), correctly classified items, S_a, S_w and S_c of ``model`` on ``val``."""
    accuracy = evaluate_accuracy(model, val)
    s_a, s_w = activation_sparsity(model, val.images), weight_sparsity(model)
    return {"accuracy": accuracy, "correct": round(accuracy * len(val)), "activation_sparsity": s_a,
            "weight_sparsity": s_w, "combined_sparsity": combined_sparsity(s_a, s_w)}


def _finetune(model: nn.Module, fit: Split, config: SparsityConfig, progress: bool) -> None:
    """Fine-tunes ``model`` in place with the penalties of ``config`` (no pruning)."""
    sizes = measure_sizes(model, fit.images[:1])
    optimizer = torch.optim.SGD(model.parameters(), lr=5e-3, momentum=config.momentum)
    generator = torch.Generator().manual_seed(config.seed)

    def penalty() -> torch.Tensor:
        return config.lambda_a * activation_penalty(sizes) + config.lambda_w * weight_penalty(sizes)

    for epoch in tqdm(range(config.epochs), desc="sparsity fine-tuning", disable=not progress, leave=False):
        for group in optimizer.param_groups:
            group["lr"] = 5e-3 if epoch < (config.epochs + 1) // 2 else 1e-3
        train_epoch(model, fit, optimizer, config.batch_size, generator, penalty=penalty)
    model.eval()


def finetune_sparsity(model: nn.Module, train: Split, config: SparsityConfig, progress: bool = True) -> dict:
    """Fine-tunes ``model`` in place with the strengths of ``config``, prunes it, and returns before/after
    accuracy (on the validation part of ``train``), S_a, S_w and S_c."""
    fit, val = split_validation(train, VALIDATION_FRACTION, config.seed)
    before = validation_report(model, val)
    _finetune(model, fit, config, progress)
    prune(model, config.prune_threshold)
    model.eval()
    return {"before": before, "after": validation_report(model, val), "config": asdict(config)}


#: the penalty direction the budget search scales: (lambda_a, lambda_w) = scale * DEFAULT_LAMBDAS
DEFAULT_LAMBDAS = (SparsityConfig.lambda_a, SparsityConfig.lambda_w)
#: pruning thresholds tried on every candidate model (0: no pruning)
PRUNE_THRESHOLDS = (0.0, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2)


def items_within(budget: float, items: int) -> int:
    """How many of ``items`` items an accuracy budget (fraction) lets a model lose: floor(budget * items),
    counted in whole items because a float comparison of accuracies could let one item more through (the
    1e-9 absorbs the float error of products such as 0.005 * 2000)."""
    return math.floor(budget * items + 1e-9)


@dataclass(frozen=True)
class BudgetedSparsity:
    """Phase 1 that chooses its own strength: the sparsest model whose validation accuracy stays within
    ``budget`` of the original's.

    budget: validation accuracy the fine-tuned, pruned model may lose against the original, as a fraction
    (0.005 = 0.5 percentage points); counted in whole items of the validation part.
    lambda_a, lambda_w: fixed penalty weights (None and None: searched along ``scale * DEFAULT_LAMBDAS``;
    one given: the other keeps its default and nothing is searched).
    prune_threshold: fixed pruning threshold (None: each candidate tries every one of ``PRUNE_THRESHOLDS``).
    first_scale, step, min_scale, max_scale, resolution, max_trials: the scale search. It starts at
    ``first_scale`` (the defaults 10 / 50), multiplies by ``step`` while the model stays within the budget
    and divides by it while it does not, then bisects (geometrically) the bracket between the largest
    scale inside and the smallest outside until their ratio is at most ``resolution``; at most
    ``max_trials`` fine-tunings. Scale 0 (the original model, pruned only) is always a candidate, so a
    search over both the penalty and the threshold (threshold 0 among them) always ends inside the budget.
    epochs, batch_size, momentum, seed: every fine-tuning's, as :class:`SparsityConfig`.
    """

    budget: float = 0.005
    lambda_a: float | None = None
    lambda_w: float | None = None
    prune_threshold: float | None = None
    first_scale: float = 1.0
    step: float = 4.0
    min_scale: float = 1.0 / 64
    max_scale: float = 64.0
    resolution: float = 1.5
    max_trials: int = 6
    epochs: int = 6
    batch_size: int = 64
    momentum: float = 0.9
    seed: int = 0

    @property
    def searches_penalty(self) -> bool:
        return self.lambda_a is None and self.lambda_w is None

    def config(self, scale: float | None) -> SparsityConfig:
        """The fine-tuning settings of one candidate: the penalty ``scale * DEFAULT_LAMBDAS`` (or the
        fixed lambdas when ``scale`` is None) and the fixed pruning threshold (0 when it is searched)."""
        if scale is None:
            lambda_a = DEFAULT_LAMBDAS[0] if self.lambda_a is None else self.lambda_a
            lambda_w = DEFAULT_LAMBDAS[1] if self.lambda_w is None else self.lambda_w
        else:
            lambda_a, lambda_w = scale * DEFAULT_LAMBDAS[0], scale * DEFAULT_LAMBDAS[1]
        return SparsityConfig(epochs=self.epochs, lambda_a=lambda_a, lambda_w=lambda_w,
                              prune_threshold=self.prune_threshold or 0.0, batch_size=self.batch_size,
                              momentum=self.momentum, seed=self.seed)


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


def scale_schedule(search: BudgetedSparsity, within_budget: Callable[[float], bool]) -> list[float]:
    """The penalty scales the search tries, in order; ``within_budget(scale)`` measures one (a fine-tuning)
    and says whether it is inside the budget. Steps up or down by ``search.step`` until the budget is
    bracketed (or ``min_scale`` / ``max_scale`` is passed), then bisects the bracket geometrically until
    its ends are at most ``search.resolution`` apart; at most ``search.max_trials`` scales."""
    tried, inside, outside, scale = [], 0.0, math.inf, search.first_scale
    while len(tried) < search.max_trials:
        tried.append(scale)
        if within_budget(scale):
            inside = scale
        else:
            outside = scale
        if inside > 0 and outside < math.inf:
            if outside / inside <= search.resolution:
                break
            scale = math.sqrt(inside * outside)
        else:
            scale = scale * search.step if outside == math.inf else scale / search.step
            if not search.min_scale <= scale <= search.max_scale:
                break
    return tried


def budgeted_sparsity(model: nn.Module, train: Split, search: BudgetedSparsity, progress: bool = True,
                      on_trial: Callable[[dict], None] | None = None) -> tuple[nn.Module, dict]:
    """Phase 1 under the accuracy budget of ``search``; ``model`` is left untouched.

    Every candidate (a fine-tuning at one penalty scale, or the original model at scale 0) is pruned at
    each threshold tried and measured on the validation part of ``train`` (never the test split); the
    sparsest (largest S_c) inside the budget is returned. With fixed lambdas nothing may be inside the
    budget: then the most accurate candidate is returned and the record says ``within_budget`` False.
    ``on_trial`` is called with each candidate's row of the record (progress lines).

    Returns the chosen model (a new module) and the record: ``before`` / ``after`` (validation accuracy,
    correct items, S_a, S_w, S_c), ``config`` (the chosen lambdas and threshold), ``scale`` (None when the
    lambdas were given), ``budget``, ``accuracy_floor`` (the least validation accuracy inside it),
    ``validation_items``, ``within_budget``, ``searched`` and ``trials`` (one row per candidate: its
    preferred threshold).
    """
    fit, val = split_validation(train, VALIDATION_FRACTION, search.seed)
    before = validation_report(model, val)
    floor_correct = before["correct"] - items_within(search.budget, len(val))
    thresholds = PRUNE_THRESHOLDS if search.prune_threshold is None else (search.prune_threshold,)
    best, trials = _Best(), []

    def candidate(scale: float | None) -> bool:
        """Measures one candidate at every threshold; True when one of them is inside the budget."""
        config = search.config(scale)
        tuned = copy.deepcopy(model)
        if scale != 0.0:
            _finetune(tuned, fit, config, progress)
        own = _Best()
        for threshold in thresholds:
            pruned = copy.deepcopy(tuned)
            prune(pruned, threshold)
            report = validation_report(pruned, val)
            entry = {"scale": scale, "lambda_a": config.lambda_a, "lambda_w": config.lambda_w,
                     "prune_threshold": threshold, **report, "within_budget": report["correct"] >= floor_correct}
            own.offer(pruned, entry)
        trials.append(own.entry)
        best.offer(own.model, own.entry)
        if on_trial is not None:
            on_trial(own.entry)
        return own.entry["within_budget"]

    if not search.searches_penalty:
        candidate(None)
    else:
        candidate(0.0)
        scale_schedule(search, candidate)
    chosen = best.entry
    config = replace(search.config(chosen["scale"]), prune_threshold=chosen["prune_threshold"])
    after = {key: chosen[key] for key in before}  # the chosen candidate's validation report, measured above
    record = {"before": before, "after": after, "config": asdict(config),
              "scale": chosen["scale"], "budget": search.budget, "accuracy_floor": floor_correct / len(val),
              "validation_items": len(val), "within_budget": chosen["within_budget"],
              "searched": {"penalty": search.searches_penalty, "prune_threshold": search.prune_threshold is None},
              "trials": trials}
    best.model.eval()
    return best.model, record
