"""The converter's one table of refused operations: op -> what to do instead.

Keys are how the converter names an op: ``nn.<Class>`` for a ``torch.nn`` module (the first class of its
MRO found here), ``F.<name>`` / ``torch.<name>`` / ``operator.<name>`` for a function, ``Tensor.<name>``
for a tensor method, or a short description for a refused use of a supported op (a flatten of other axes,
a softmax before the output, ...). Every value names an action: a replacement module, an argument to
change, or "retrain with ...". ``docs/converter.md`` lists the same table and a test keeps the two equal.
"""

from __future__ import annotations

from neurodeploy.errors import UnsupportedOperationError

SUPPORTED = (
    "nn.Linear, nn.Conv2d, nn.Conv1d, nn.AvgPool2d/1d (any ceil_mode, count_include_pad, divisor_override), "
    "nn.AdaptiveAvgPool2d/1d to any size, spatial mean/sum (x.mean((2, 3))), nn.BatchNorm1d/2d, ReLU (nn.ReLU, "
    "F.relu, torch.relu, in-place, clamp(min=0), clamp_min(0), F.threshold(x, 0, 0), nn.Threshold(0, 0)), clipped "
    "ReLU (nn.ReLU6, nn.Hardtanh(0, a), clamp(0, a)), max pooling with a strategy (convert(..., max_pool='avg' or "
    "'spiking')), torch.cat along channels, static view/reshape/flatten/transpose/permute/squeeze/unsqueeze/"
    "chunk/split/indexing/slicing of the axes after the batch axis, zero padding (F.pad, nn.ZeroPad2d), Dropout, "
    "nn.Identity, '+' and '-' of activations, adding, subtracting, multiplying or dividing by scalar or "
    "per-channel constants (Normalize modules included), and softmax/log_softmax as the last op (dropped)"
)

_SWAP = ("neurodeploy.convert.replace_activations(model, train) replaces it with nn.ReLU (and removes "
         "squeeze-excitation gates) and fine-tunes; convert the result")
_RELU_ONLY = f"IF neurons compute ReLUs only: {_SWAP}"
_SIGNED = f"negative slopes need signed spikes: {_SWAP}"
_MAX_POOL = (
    "choose a strategy (on the command line: neurodeploy run --max-pool avg or --max-pool spiking): "
    "convert(..., max_pool='avg') replaces it with average pooling of the same window (no "
    "retraining: check the accuracy), neurodeploy.convert.replace_max_pooling(model, train) replaces it and "
    "fine-tunes, or convert(..., max_pool='spiking') computes the max exactly in rates from ReLU populations "
    "(max(a, b) = b + relu(a - b); ceil(log2(window)) more layers, so it needs a longer T)")
_SOFTMAX = ("softmax converts only as the model's last op over the class axis, where it is dropped (the argmax is "
            "unchanged): return the logits and apply softmax outside the model")
_TRANSPOSED = ("the IR has no transposed convolution (upsampling): replace it with nn.Conv2d, or remove the "
               "upsampling part of the model, and retrain")
_NORM = ("it divides each item by statistics of its own activations: replace it with nn.BatchNorm1d / "
         "nn.BatchNorm2d (folded into the weights) and retrain")
_MATMUL = ("products of two activations cannot be computed by rate-coded IF neurons: use nn.Linear for a product "
           "with a weight matrix")

REFUSALS: dict[str, str] = {
    # modules
    "nn.Sigmoid": _RELU_ONLY,
    "nn.Tanh": _RELU_ONLY,
    "nn.GELU": _RELU_ONLY,
    "nn.SiLU": _RELU_ONLY,
    "nn.ELU": _RELU_ONLY,
    "nn.Softplus": _RELU_ONLY,
    "nn.Hardswish": _RELU_ONLY,
    "nn.Hardsigmoid": _RELU_ONLY,
    "nn.Mish": _RELU_ONLY,
    "nn.LeakyReLU": _SIGNED,
    "nn.PReLU": _SIGNED,
    "nn.ConvTranspose2d": _TRANSPOSED,
    "nn.LayerNorm": _NORM,
    "nn.GroupNorm": _NORM,
    "nn.InstanceNorm2d": _NORM,
    "nn.RNNBase": ("recurrent layers (nn.RNN, nn.LSTM, nn.GRU) are not supported: use a feed-forward model "
                   "(nn.Linear, nn.Conv2d) and retrain"),
    "nn.MultiheadAttention": ("attention multiplies two activations, which rate-coded IF neurons cannot do: "
                              "use a convolutional or fully connected model and retrain"),
    # functions and tensor methods
    "torch.sigmoid": _RELU_ONLY,
    "Tensor.sigmoid": _RELU_ONLY,
    "torch.tanh": _RELU_ONLY,
    "Tensor.tanh": _RELU_ONLY,
    "F.gelu": _RELU_ONLY,
    "F.silu": _RELU_ONLY,
    "F.elu": _RELU_ONLY,
    "F.softplus": _RELU_ONLY,
    "F.hardswish": _RELU_ONLY,
    "F.hardsigmoid": _RELU_ONLY,
    "F.leaky_relu": _SIGNED,
    "F.conv_transpose2d": _TRANSPOSED,
    "F.layer_norm": _NORM,
    "torch.matmul": _MATMUL,
    "operator.matmul": _MATMUL,
    # refused uses of supported ops, and model structure
    "clip other than a ReLU or a clipped ReLU": (
        "only ReLUs (clamp(min=0), clamp_min(0), F.threshold(x, 0, 0)) and clipped ReLUs min(max(x, 0), a) with "
        "a > 0 (clamp(0, a), nn.ReLU6, nn.Hardtanh(0, a)) convert: an IF neuron clips at its threshold; a lower "
        "bound other than 0 needs signed spikes: replace it with nn.ReLU or nn.Hardtanh(0, a) and retrain"),
    "max pooling without a strategy": _MAX_POOL,
    "max pooling that its strategy cannot express": (
        "use return_indices=False; max_pool='spiking' takes padding and ceil_mode only for a non-negative input "
        "(right after a ReLU, where zeros are the max's own padding: max_pool='avg' takes any), max_pool='avg' no "
        "dilation (max_pool='spiking' takes it)"),
    "adaptive max pooling to a size that does not divide the input": (
        "use max_pool='avg' (adaptive average pooling to any size converts exactly) or an output size that divides "
        "the input"),
    "mean or sum over axes other than the spatial ones": (
        "use x.mean((2, 3)) / x.sum((2, 3)) over every spatial axis (or keepdim=True for some of them); for a "
        "channel mean use nn.Conv2d(C, 1, 1) with weights 1 / C"),
    "concatenation along an axis other than the channels": (
        "use torch.cat along dim=1 (channels) of parts with the same spatial size"),
    "softmax that is not the last op over the class axis": _SOFTMAX,
    "product of two activations": (
        "products of two activations cannot be computed by rate-coded IF neurons: for a gate x * sigmoid(s) "
        "(squeeze-excitation) neurodeploy.convert.replace_activations(model, train) removes it and fine-tunes; "
        "else remove the product and retrain (products with constants convert)"),
    "division by an activation": ("IF neurons cannot divide by an activation: use constant divisors only "
                                  "(they fold into the weights)"),
    "constant factor that is not scalar or per-channel": (
        "use a scalar or a per-channel factor shaped (C, 1, 1) (it folds into the next layer's weights)"),
    "constant that does not broadcast to the activation": (
        "use a constant of the activation's shape, a per-channel constant shaped (C, 1, 1) or a scalar"),
    "parameter or buffer used directly": (
        "wrap weights in nn.Linear / nn.Conv2d; use tensors in forward() only to add, subtract, multiply or "
        "divide by"),
    "batch size used in arithmetic": "use x.size(0) or -1 only as the batch size of a view/reshape",
    "rearrangement that mixes the batch axis": (
        "use view, reshape, flatten, permute, indexing and slicing only on the axes after the batch axis, which "
        "stays first (x.size(0) or -1 as the first size of a view)"),
    "padding other than with zeros": "use zero padding (F.pad with mode='constant', value=0) and retrain",
    "residual add of different shapes": ("make both branches the same shape, e.g. use a strided 1x1 nn.Conv2d on "
                                         "the shortcut, and retrain"),
    "convolution padding_mode other than 'zeros'": "use padding_mode='zeros' and retrain",
    "asymmetric 'same' padding": "use an odd kernel or explicit padding, and retrain",
    "batch norm without running statistics": "use track_running_stats=True and retrain",
    "second model input": "use a single input tensor (stack several inputs as channels beforehand)",
    "model output that is not one tensor": "return one tensor of logits",
    "data-dependent control flow": "remove Python control flow on tensor values from forward() (torch.fx traces it)",
    "model parameters that are not real floating point": (
        "use float32, float64, float16 or bfloat16 parameters (the converter casts them to float32); convert the "
        "float model before quantizing it with torch.ao"),
    "plain ReLU with conversion 'qcfs' or 'qffs'": (
        "fine-tune with quantized activations (`neurodeploy train --quantize-bits B` replaces each ReLU with "
        "QuantReLU) or use conversion 'rate'"),
}


def refusal(what: str, node: str, key: str) -> UnsupportedOperationError:
    """The error for a listed op: what was met, at which graph node, and the table's advice for ``key``."""
    return UnsupportedOperationError(f"cannot convert {what} (graph node {node!r}): {REFUSALS[key]}")


def unlisted(what: str, node: str) -> UnsupportedOperationError:
    """The error for an op the table does not know: only the supported operations can be offered."""
    return UnsupportedOperationError(
        f"cannot convert {what} (graph node {node!r}): rewrite it with supported operations and retrain "
        f"(supported: {SUPPORTED})")
