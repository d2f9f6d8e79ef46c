"""Dataset readers (IDX, CIFAR python pickles) and the embedded MNIST subset."""

from neurodeploy.data.datasets import Dataset, Split, check_items, embedded_mnist_folder, load_dataset

__all__ = ["Dataset", "Split", "check_items", "embedded_mnist_folder", "load_dataset"]
