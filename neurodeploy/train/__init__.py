"""Model zoo (seed architectures), ANN training and model files."""

from neurodeploy.train.checkpoint import ModelFormatError, load_model, save_model
from neurodeploy.train.trainer import TrainConfig, evaluate_accuracy, train_model
from neurodeploy.train.zoo import ARCHITECTURES, build

__all__ = ["ARCHITECTURES", "ModelFormatError", "TrainConfig", "build", "evaluate_accuracy", "load_model",
           "save_model", "train_model"]
