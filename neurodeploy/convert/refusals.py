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
    "nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d (plain averages), nn.BatchNorm1d/2d, "
    "ReLU (nn.ReLU, F.relu, torch.relu, in-place, clamp(min=0), clamp_min(0), F.threshold(x, 0, 0), "
    "nn.Threshold(0, 0)), flatten/view/reshape to (batch, -1), Dropout, nn.Identity, '+' and '-' of "
    "activations, adding, subtracting, multiplying or dividing by scalar or per-channel constants "
    "(Normalize modules included), and softmax/log_softmax as the last op (dropped)"
)

_RELU_ONLY = "IF neurons approximate ReLU only: replace the activation with nn.ReLU and retrain"
_SIGNED = "negative slopes need signed spikes: replace it with nn.ReLU and retrain"
_CLIPPED = ("a converted IF neuron is already a ReLU clipped at its threshold (one spike per step), with the "
            "clip set from the calibration data: replace it with nn.ReLU (or clamp(min=0)) and retrain")
_MAX_POOL = "max pooling has no rate-coded IF equivalent: replace it with nn.AvgPool2d and retrain"
_ADAPTIVE_MAX_POOL = "max pooling has no rate-coded IF equivalent: replace it with nn.AdaptiveAvgPool2d and retrain"
_SOFTMAX = ("softmax converts only as the model's last op over the class axis, where it is dropped (the argmax is "
            "unchanged): return the logits and apply softmax outside the model")
_MEAN = ("use nn.AdaptiveAvgPool2d(1) followed by torch.flatten(x, 1) for a spatial mean of a (C, H, W) "
         "activation (exact, no retraining)")
_SUM = ("use nn.AdaptiveAvgPool2d(1) followed by torch.flatten(x, 1) for a spatial sum, and multiply the next "
        "layer's weights by H * W (exact, no retraining)")
_CONV1D = ("the IR has 2-D convolutions only: feed inputs shaped (C, 1, L) and use nn.Conv2d with kernel_size "
           "(1, k), weights conv1d.weight.unsqueeze(2) (exact, no retraining)")
_TRANSPOSED = ("the IR has no transposed convolution (upsampling): replace it with nn.Conv2d, or remove the "
               "upsampling part of the model, and retrain")
_NORM = ("it divides each item by statistics of its own activations: replace it with nn.BatchNorm1d / "
         "nn.BatchNorm2d (folded into the weights) and retrain")
_MATMUL = ("products of two activations cannot be computed by rate-coded IF neurons: use nn.Linear for a product "
           "with a weight matrix")
_PERMUTE = ("the IR keeps the (C, H, W) layout: remove it, and permute the next nn.Linear's weight columns "
            "instead if the order matters")

REFUSALS: dict[str, str] = {
    # modules
    "nn.MaxPool2d": _MAX_POOL,
    "nn.AdaptiveMaxPool2d": _ADAPTIVE_MAX_POOL,
    "nn.Sigmoid": _RELU_ONLY,
    "nn.Tanh": _RELU_ONLY,
    "nn.GELU": _RELU_ONLY,
    "nn.SiLU": _RELU_ONLY,
    "nn.ELU": _RELU_ONLY,
    "nn.Softplus": _RELU_ONLY,
    "nn.LeakyReLU": _SIGNED,
    "nn.PReLU": _SIGNED,
    "nn.ReLU6": _CLIPPED,
    "nn.Hardtanh": _CLIPPED + "; a negative min_val needs signed spikes",
    "nn.Conv1d": _CONV1D,
    "nn.AvgPool1d": "the IR has 2-D pooling only: feed inputs shaped (C, 1, L) and use nn.AvgPool2d((1, k))",
    "nn.ConvTranspose2d": _TRANSPOSED,
    "nn.LayerNorm": _NORM,
    "nn.GroupNorm": _NORM,
    "nn.InstanceNorm2d": _NORM,
    "nn.RNNBase": ("recurrent layers (nn.RNN, nn.LSTM, nn.GRU) are not supported: use a feed-forward model "
                   "(nn.Linear, nn.Conv2d) and retrain"),
    "nn.MultiheadAttention": ("attention multiplies two activations, which rate-coded IF neurons cannot do: "
                              "use a convolutional or fully connected model and retrain"),
    # functions and tensor methods
    "F.max_pool2d": _MAX_POOL,
    "F.adaptive_max_pool2d": _ADAPTIVE_MAX_POOL,
    "torch.sigmoid": _RELU_ONLY,
    "Tensor.sigmoid": _RELU_ONLY,
    "torch.tanh": _RELU_ONLY,
    "Tensor.tanh": _RELU_ONLY,
    "F.gelu": _RELU_ONLY,
    "F.silu": _RELU_ONLY,
    "F.elu": _RELU_ONLY,
    "F.softplus": _RELU_ONLY,
    "F.leaky_relu": _SIGNED,
    "F.relu6": _CLIPPED,
    "F.hardtanh": _CLIPPED + "; a negative min_val needs signed spikes",
    "F.conv1d": _CONV1D,
    "F.conv_transpose2d": _TRANSPOSED,
    "F.layer_norm": _NORM,
    "torch.mean": _MEAN,
    "Tensor.mean": _MEAN,
    "torch.sum": _SUM,
    "Tensor.sum": _SUM,
    "torch.cat": "concatenation is not supported yet: use a residual '+' or separate models",
    "torch.matmul": _MATMUL,
    "operator.matmul": _MATMUL,
    "Tensor.permute": _PERMUTE,
    "Tensor.transpose": _PERMUTE,
    # refused uses of supported ops, and model structure
    "clamp or threshold other than a ReLU": (
        "only clamp(min=0), clamp_min(0) and F.threshold(x, 0, 0) convert (they are ReLUs); " + _CLIPPED),
    "softmax that is not the last op over the class axis": _SOFTMAX,
    "product of two activations": ("products of two activations cannot be computed by rate-coded IF neurons: "
                                   "remove the product and retrain (products with constants convert)"),
    "division by an activation": ("IF neurons cannot divide by an activation: use constant divisors only "
                                  "(they fold into the weights)"),
    "constant factor that is not scalar or per-channel": (
        "use a scalar or a per-channel factor shaped (C, 1, 1) (it folds into the next layer's weights)"),
    "constant that does not broadcast to the activation": (
        "use a constant of the activation's shape, a per-channel constant shaped (C, 1, 1) or a scalar"),
    "parameter or buffer used directly": (
        "wrap weights in nn.Linear / nn.Conv2d; use tensors in forward() only to add, subtract, multiply or "
        "divide by"),
    "batch size used in arithmetic": "use x.size(0) or -1 only as the first size of view/reshape to (batch, -1)",
    "flatten of other axes": "use nn.Flatten() or torch.flatten(x, 1): flatten everything after the batch axis",
    "reshape other than (batch, -1)": "use only reshapes to (batch, -1), e.g. x.view(x.size(0), -1)",
    "residual add of different shapes": ("make both branches the same shape, e.g. use a strided 1x1 nn.Conv2d on "
                                         "the shortcut, and retrain"),
    "nn.Conv2d padding_mode other than 'zeros'": "use padding_mode='zeros' and retrain",
    "asymmetric 'same' padding": "use an odd kernel or explicit padding, and retrain",
    "batch norm without running statistics": "use track_running_stats=True and retrain",
    "average pooling with ceil_mode or divisor_override": "use ceil_mode=False and no divisor_override",
    "padded average pooling with count_include_pad=False": "use count_include_pad=True or no padding",
    "adaptive average pooling to a size that does not divide the input": (
        "use an output size that divides the input, e.g. nn.AdaptiveAvgPool2d(1)"),
    "second model input": "use a single input tensor (stack several inputs as channels beforehand)",
    "model output that is not one tensor": "return one tensor of logits",
    "data-dependent control flow": "remove Python control flow on tensor values from forward() (torch.fx traces it)",
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
