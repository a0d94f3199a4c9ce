"""Benchmark 1: the harness's training loop against idiomatic PyTorch, Nielsen's per-sample loop and a GEMM floor.

    python benchmarks/bench_loop.py              # needs the bench extra: pip install -e ".[bench]"
    python benchmarks/bench_loop.py --quick      # fewer repeats and epochs (a smoke run)

Every contender trains the same network from the same initial weights on the same data in the same
minibatch order (the harness's own shuffles); their final training losses are checked to agree before
anything is timed. Contenders, per case:

- ``harness``: ``harness.nn.training.sgd_epoch`` on a stack of one network (what ``python -m harness`` runs for
  a single run), epochs back to back;
- ``harness+metrics``: ``harness.nn.training.train`` with the six metrics on the full train and test sets
  every epoch (what a run with ``train.eval_every=1`` pays);
- ``pytorch``: ``nn.Sequential`` + autograd + ``optim.SGD``, minibatches indexed from tensors (no
  DataLoader, which would only add overhead), on the CPU; ``pytorch+eval`` also computes loss and accuracy
  on the train and test sets every epoch under ``no_grad``;
- ``nielsen``: the per-sample loop of Nielsen's ``network2.py`` (``update_mini_batch`` / ``backprop``,
  column vectors, one ``backprop`` per sample, gradients summed in Python lists), written out below;
- ``gemm-floor``: only the matrix products of the same steps (forward, weight gradients, back-propagated
  error), into preallocated buffers: no activation, no loss, no update, no gathering of the minibatch.

GFLOP/s counts the floor's products (2·m·n_in·n_out per product); "of floor" = floor time / harness time.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    footer,
    header,
    import_torch,
    interleaved,
    loop_arguments,
    median,
    products_only,
    table,
    verdict,
)

from harness.core.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS  # noqa: E402
from harness.core.deltas import DELTA_RULES  # noqa: E402
from harness.core.losses import LOSSES  # noqa: E402
from harness.nn.data import load  # noqa: E402
from harness.nn.network import MLP  # noqa: E402
from harness.nn.stack import ReplicaMLP  # noqa: E402
from harness.nn.training import as_dtype, sgd_epoch, train  # noqa: E402


@dataclass(frozen=True)
class Case:
    dataset: str
    hidden: int
    output: str  # output activation; the loss is its natural pair and the rule is ng (exact here)
    loss: str
    lr: float
    batch_size: int
    epochs: int
    dtype: str

    @property
    def label(self) -> str:
        return f"{self.dataset} mb{self.batch_size} {self.dtype}"


def cases(quick: bool) -> list[Case]:
    xor_epochs, mnist_epochs = (200, 1) if quick else (1000, 2)
    out = []
    for dtype in ("float64", "float32"):
        out += [
            Case("xor", 4, "sigmoid", "bce", 2.0, 4, xor_epochs, dtype),
            Case("mnist", 30, "softmax", "cce", 0.5, 10, mnist_epochs, dtype),
            Case("mnist", 30, "softmax", "cce", 0.5, 128, 2 * mnist_epochs, dtype),
        ]
    return out


class Setup:
    """One case's data, initial network and shuffles, shared by every contender."""

    def __init__(self, case: Case, seed: int = 0) -> None:
        self.case = case
        self.dtype = np.dtype(case.dtype)
        self.data = as_dtype(load(case.dataset), self.dtype)
        self.sizes = [self.data.n_inputs, case.hidden, self.data.n_outputs]
        self.init = MLP.initialise(
            self.sizes, HIDDEN_ACTIVATIONS["sigmoid"], OUTPUT_ACTIVATIONS[case.output], np.random.default_rng(seed),
            dtype=self.dtype,
        )  # fmt: skip
        self.seed = seed
        n = len(self.data.x_train)
        rng = self.shuffle_rng()
        self.perms = [rng.permutation(n) for _ in range(case.epochs)]  # the order sgd_epoch will draw
        self.loss = LOSSES[case.loss]

    def shuffle_rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, 1])

    def fresh_model(self) -> ReplicaMLP:
        """The initial network as the engine trains it: a stack of one (a copy)."""
        return ReplicaMLP.stack([self.init])

    def batch_sizes(self) -> list[int]:
        n, m = len(self.data.x_train), self.case.batch_size
        return [min(m, n - start) for start in range(0, n, m)]

    def flops(self) -> float:
        """Floating-point operations of the floor's products over the whole run."""
        per_sample = 0
        for i, (n_in, n_out) in enumerate(zip(self.sizes, self.sizes[1:])):
            products = 3 if i > 0 else 2  # forward, weight gradient, and (above the first layer) δ·Wᵀ
            per_sample += products * 2 * n_in * n_out
        return float(per_sample * len(self.data.x_train) * self.case.epochs)

    def final_loss(self, a: np.ndarray) -> float:
        return self.loss.mean(np.asarray(a, dtype=np.float64), self.data.y_train.astype(np.float64))


# ----------------------------------------------------------------------------------------------- harness


def harness_loop(s: Setup):
    model, rngs = s.fresh_model(), [s.shuffle_rng()]
    loss, rule, c = s.loss, DELTA_RULES["ng"], s.case
    lrs = np.array([c.lr])

    def go() -> float:
        with np.errstate(all="ignore"):
            for _ in range(c.epochs):
                sgd_epoch(model, s.data, loss, rule, lrs, c.batch_size, rngs)
        return s.final_loss(model.predict(s.data.x_train)[0])

    return go


def harness_train(s: Setup):
    model, rng = s.fresh_model(), s.shuffle_rng()
    c = s.case

    def go() -> float:
        (r,) = train(
            model, s.data, s.loss, DELTA_RULES["ng"], epochs=c.epochs, lrs=[c.lr], batch_size=c.batch_size, rngs=[rng],
        )  # fmt: skip
        return r.final["train_loss"]

    return go


# ----------------------------------------------------------------------------------------------- PyTorch


def torch_loop(s: Setup, evaluate: bool = False):
    import torch
    from torch import nn

    dtype = {"float64": torch.float64, "float32": torch.float32}[s.case.dtype]
    n_in, n_hidden, n_out = s.sizes
    net = nn.Sequential(nn.Linear(n_in, n_hidden), nn.Sigmoid(), nn.Linear(n_hidden, n_out)).to(dtype)
    with torch.no_grad():
        for layer, w, b in zip((net[0], net[2]), s.init.weights, s.init.biases):
            layer.weight.copy_(torch.from_numpy(w.T.copy()))
            layer.bias.copy_(torch.from_numpy(b))
    x = torch.from_numpy(np.ascontiguousarray(s.data.x_train))
    x_test = torch.from_numpy(np.ascontiguousarray(s.data.x_test))
    if s.case.loss == "cce":  # softmax output: CrossEntropyLoss on the logits, class-index targets
        y = torch.from_numpy(np.argmax(s.data.y_train, axis=1))
        y_test = torch.from_numpy(np.argmax(s.data.y_test, axis=1))
        criterion = nn.CrossEntropyLoss()

        def loss_fn(logits, target):
            return criterion(logits, target)

        def probs(logits):
            return torch.softmax(logits, dim=1)
    else:  # sigmoid output + BCE summed over the outputs, averaged over the batch (the harness's loss)
        y, y_test = torch.from_numpy(s.data.y_train), torch.from_numpy(s.data.y_test)
        criterion = nn.BCEWithLogitsLoss(reduction="sum")

        def loss_fn(logits, target):
            return criterion(logits, target) / len(target)

        def probs(logits):
            return torch.sigmoid(logits)

    optimiser = torch.optim.SGD(net.parameters(), lr=s.case.lr)
    perms = [torch.from_numpy(p) for p in s.perms]
    bs = s.case.batch_size

    def step(xb, yb) -> None:
        optimiser.zero_grad()
        loss_fn(net(xb), yb).backward()
        optimiser.step()

    def go() -> float:
        for perm in perms:
            if bs >= len(perm):  # full batch: no shuffle, no indexing (as the harness's loop)
                step(x, y)
            for start in range(0, len(perm), bs) if bs < len(perm) else ():
                idx = perm[start : start + bs]
                step(x[idx], y[idx])
            if evaluate:
                with torch.no_grad():
                    for xs, ys in ((x, y), (x_test, y_test)):
                        logits = net(xs)
                        loss_fn(logits, ys).item()
                        (logits.argmax(1) == (ys if ys.ndim == 1 else ys.argmax(1))).double().mean().item()
        with torch.no_grad():
            return s.final_loss(probs(net(x)).numpy())

    return go


# ---------------------------------------------------------------------------------- Nielsen's network2.py


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _sigmoid_prime(z):
    return _sigmoid(z) * (1 - _sigmoid(z))


def _softmax(z):
    e = np.exp(z - np.max(z, axis=0))
    return e / np.sum(e, axis=0)


class NielsenNetwork:
    """``network2.Network``'s training step, as in the book: column vectors, weights (n_out, n_in), one
    ``backprop`` per sample, Python lists of gradients. The output is sigmoid (cross-entropy cost) or
    softmax (log-likelihood cost, chapter 3); for both the cost's ``delta`` is a − y."""

    def __init__(self, weights, biases, output: str) -> None:
        self.weights = [w.T.copy() for w in weights]
        self.biases = [b.reshape(-1, 1).copy() for b in biases]
        self.num_layers = len(weights) + 1
        self.output = _softmax if output == "softmax" else _sigmoid

    def feedforward(self, a):
        for i, (b, w) in enumerate(zip(self.biases, self.weights)):
            z = np.dot(w, a) + b
            a = self.output(z) if i == self.num_layers - 2 else _sigmoid(z)
        return a

    def update_mini_batch(self, mini_batch, eta):
        nabla_b = [np.zeros(b.shape, dtype=b.dtype) for b in self.biases]
        nabla_w = [np.zeros(w.shape, dtype=w.dtype) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        self.weights = [w - (eta / len(mini_batch)) * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(self.biases, nabla_b)]

    def backprop(self, x, y):
        nabla_b = [np.zeros(b.shape, dtype=b.dtype) for b in self.biases]
        nabla_w = [np.zeros(w.shape, dtype=w.dtype) for w in self.weights]
        activation = x
        activations = [x]
        zs = []
        for i, (b, w) in enumerate(zip(self.biases, self.weights)):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = self.output(z) if i == self.num_layers - 2 else _sigmoid(z)
            activations.append(activation)
        delta = activations[-1] - y  # CrossEntropyCost.delta / log-likelihood delta: a − y
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for layer in range(2, self.num_layers):
            z = zs[-layer]
            sp = _sigmoid_prime(z)
            delta = np.dot(self.weights[-layer + 1].transpose(), delta) * sp
            nabla_b[-layer] = delta
            nabla_w[-layer] = np.dot(delta, activations[-layer - 1].transpose())
        return (nabla_b, nabla_w)


def nielsen_loop(s: Setup):
    net = NielsenNetwork(s.init.weights, s.init.biases, s.case.output)
    # network2 keeps training_data as a list of (x, y) column-vector pairs; shuffling reorders that list
    training_data = [(x.reshape(-1, 1), y.reshape(-1, 1)) for x, y in zip(s.data.x_train, s.data.y_train)]
    bs = s.case.batch_size

    def go() -> float:
        with np.errstate(all="ignore"):
            for perm in s.perms:
                shuffled = [training_data[i] for i in perm]
                for k in range(0, len(shuffled), bs):
                    net.update_mini_batch(shuffled[k : k + bs], s.case.lr)
            return s.final_loss(net.feedforward(s.data.x_train.T).T)

    return go


# ----------------------------------------------------------------------------------------------- GEMM floor


def gemm_floor(s: Setup):
    """Only the products of each step (``_common.products_only``, the harness's own layout)."""
    return products_only(s.init.weights, s.data.x_train, s.batch_sizes(), s.case.epochs, s.dtype)


# ----------------------------------------------------------------------------------------------- the run


CONTENDERS = {
    "harness": harness_loop,
    "harness+metrics": harness_train,
    "pytorch": lambda s: torch_loop(s, evaluate=False),
    "pytorch+eval": lambda s: torch_loop(s, evaluate=True),
    "nielsen": nielsen_loop,
    "gemm-floor": gemm_floor,
}


def check_agreement(s: Setup) -> str:
    """Train once with each real contender; their final training losses must agree (else exit 1)."""
    losses = {name: CONTENDERS[name](s)() for name in ("harness", "harness+metrics", "pytorch", "nielsen")}
    ref = losses["harness"]
    worst = max(abs(v - ref) / max(abs(ref), 1e-300) for v in losses.values())
    tol = 1e-6 if s.case.dtype == "float64" else 5e-2
    if not worst <= tol:
        raise SystemExit(f"{s.case.label}: final training losses disagree (rel. diff {worst:.2e} > {tol}): {losses}")
    return f"{ref:.6g} (max rel. diff {worst:.1e})"


def run_case(case: Case, repeats: int) -> tuple[list[list[str]], dict[str, float], dict[str, float]]:
    s = Setup(case)
    agreed = check_agreement(s)
    cpu: dict[str, list[float]] = {}
    times = interleaved({name: (lambda f=f: f(s)) for name, f in CONTENDERS.items()}, repeats, True, cpu)
    med = {name: median(t) for name, t in times.items()}
    med_cpu = {name: median(t) for name, t in cpu.items()}
    steps = len(s.batch_sizes()) * case.epochs
    gflops = s.flops() / 1e9
    rows = []
    for name, t in med.items():
        rows.append(
            [case.label, name, f"{t:.4f}", f"{t / steps * 1e6:.1f}", f"{gflops / t:.2f}", f"{t / med['harness']:.2f}×"]
        )
    rows[0][0] += f"  (final loss {agreed})"
    for row, t in zip(rows, med_cpu.values()):
        row.append(f"{t / med_cpu['harness']:.2f}×")
    return rows, med | {"gflops": gflops}, med_cpu | {"gflops": gflops}


def ratio_lines(results: dict[Case, dict[str, float]], clock: str) -> None:
    print(f"## Ratios ({clock}: medians of interleaved repeats)")
    for case, med in results.items():
        h = med["harness"]
        torch_x, nielsen_x, floor_share = med["pytorch"] / h, med["nielsen"] / h, med["gemm-floor"] / h
        target = ""
        if case.dataset == "xor":
            target = f"  target ≥ 10× PyTorch: {verdict(torch_x, 10)}"
        elif case.batch_size == 10:
            target = (
                f"  target ≥ 5× PyTorch: {verdict(torch_x, 5)}; target ≥ 50 % of floor GFLOP/s: "
                f"{verdict(floor_share, 0.5)}"
            )
        print(
            f"{case.label}: harness {h:.4f} s = {torch_x:.1f}× faster than PyTorch ({med['pytorch']:.4f} s), "
            f"{nielsen_x:.1f}× faster than Nielsen's loop ({med['nielsen']:.4f} s); "
            f"{med['gflops'] / h:.2f} GFLOP/s = {floor_share:.0%} of the GEMM floor's "
            f"{med['gflops'] / med['gemm-floor']:.2f} GFLOP/s ({med['gemm-floor']:.4f} s); "
            f"with per-epoch metrics {med['harness+metrics']:.4f} s vs PyTorch+eval {med['pytorch+eval']:.4f} s "
            f"({med['pytorch+eval'] / med['harness+metrics']:.1f}×).{target}"
        )
    print()


def main() -> None:
    args = loop_arguments(__doc__.splitlines()[0])
    repeats = args.repeats
    torch = import_torch("bench_loop.py")
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    header(
        "Training loop: harness vs PyTorch vs Nielsen's per-sample loop vs GEMM-only floor",
        ("numpy", "torch", "threadpoolctl"), repeats=repeats, threads=args.threads,
    )  # fmt: skip
    results: dict[Case, dict[str, float]] = {}
    results_cpu: dict[Case, dict[str, float]] = {}
    rows: list[list[str]] = []
    with threadpool_limits(args.threads):
        for case in cases(args.quick):
            if args.only not in case.label:
                continue
            case_rows, results[case], results_cpu[case] = run_case(case, repeats)
            rows += case_rows
            print(f"done: {case.label}", flush=True)
    print()
    table(rows, ["case", "contender", "median s", "µs/step", "GFLOP/s", "× harness time", "× harness CPU"])
    ratio_lines(results, "wall time")
    ratio_lines(results_cpu, "CPU time of this process, steadier on a shared machine")


if __name__ == "__main__":
    try:
        main()
    finally:
        footer()
