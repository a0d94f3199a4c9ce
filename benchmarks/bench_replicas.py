"""Benchmark 5: the batched replica step against idiomatic PyTorch, torch.func.vmap and a GEMM-only floor.

    python benchmarks/bench_replicas.py          # needs the bench extra: pip install -e ".[bench]"
    python benchmarks/bench_replicas.py --quick  # fewer repeats and epochs (a smoke run)

Everything is reported *per network step* (one SGD step of one network): a stack of R replicas doing one
batched step counts R network steps. Every contender trains from the same initial weights (replica r from
``default_rng(seed r)``, as a single run) in the same minibatch order (replica r's own shuffles), and the
final training losses of the first network are checked to agree before anything is timed. Contenders:

- ``replicas``: :func:`harness.nn.training.sgd_epoch` on R replicas (gathering each replica's own
  minibatch, one batched forward / backward / update per step), epochs back to back;
- ``replicas+metrics``: :func:`harness.nn.training.train`, the six metrics of every replica on the
  whole training and test sets every epoch;
- ``harness``: one network, the same :func:`harness.nn.training.sgd_epoch` on a stack of one (a single run);
- ``pytorch``: one network, ``nn.Sequential`` + autograd + ``optim.SGD``, minibatches indexed from tensors;
- ``vmap``: the R replicas in PyTorch at once, ``torch.func.vmap(torch.func.grad(loss))`` over
  ``functional_call`` with the parameters stacked by ``torch.func.stack_module_state``, then an in-place SGD
  update of the stacks with each replica's rate (PyTorch's own batched counterpart: the fair contender);
- ``gemm-floor``: one network's matrix products of the same steps only (forward, weight gradients,
  back-propagated error) into preallocated buffers;
- ``stack-gemm`` and ``gather``, the profile of ``replicas``: the stack's own products alone (as ``replicas``
  calls them, on data in place) and the gathering of every replica's minibatches alone; what ``replicas``
  spends beyond their sum is elementwise work (activations, the rule's δ, f′) and Python.

Targets (issue 12): XOR with R = 30 ≥ 100× PyTorch per network step; MNIST minibatch 10 with R = 10, float64:
≥ 8× PyTorch, at least as fast as vmap, and within 1.3× of one network's GEMM-only floor.
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
from harness.nn.stack import ReplicaMLP  # noqa: E402
from harness.nn.training import as_dtype, sgd_epoch, shuffle_rngs, train  # noqa: E402


@dataclass(frozen=True)
class Case:
    dataset: str
    hidden: int
    output: str  # the loss is its natural pair and the rule is ng (exact here)
    loss: str
    lr: float
    batch_size: int
    epochs: int
    replicas: int
    dtype: str = "float64"

    @property
    def label(self) -> str:
        return f"{self.dataset} mb{self.batch_size} R={self.replicas} {self.dtype}"


def cases(quick: bool) -> list[Case]:
    xor_epochs, mnist_epochs = (200, 1) if quick else (1000, 1)
    return [
        Case("xor", 4, "sigmoid", "bce", 2.0, 4, xor_epochs, 30),
        Case("mnist", 30, "softmax", "cce", 0.5, 10, mnist_epochs, 10),
    ]


class Setup:
    """One case's data, initial replicas, per-replica rates and shuffles, shared by every contender."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.dtype = np.dtype(case.dtype)
        self.data = as_dtype(load(case.dataset), self.dtype)
        self.sizes = [self.data.n_inputs, case.hidden, self.data.n_outputs]
        self.seeds = list(range(case.replicas))
        self.hidden, self.output = HIDDEN_ACTIVATIONS["sigmoid"], OUTPUT_ACTIVATIONS[case.output]
        self.init = ReplicaMLP.initialise(self.sizes, self.hidden, self.output, self.seeds, dtype=self.dtype)
        # The training inputs with their ones column (the bias input), made once per process as a run makes it
        # once per training; every fresh stack below shares it.
        self.init.augment(self.data.x_train)
        # Mixed rates (as a learning-rate sweep would fold them): every replica its own, around the case's.
        self.lrs = case.lr * np.geomspace(0.5, 1.5, case.replicas)
        n = len(self.data.x_train)
        self.full_batch = case.batch_size >= n
        rngs = shuffle_rngs(self.seeds)
        epochs = 0 if self.full_batch else case.epochs  # the order sgd_epoch will draw
        self.perms = [np.stack([rng.permutation(n) for rng in rngs]) for _ in range(epochs)]
        self.loss = LOSSES[case.loss]
        self.rule = DELTA_RULES["ng"]

    def fresh_replicas(self) -> ReplicaMLP:
        return self.init.select(np.arange(self.case.replicas))

    def fresh_model(self) -> ReplicaMLP:
        """The first replica alone: a stack of one (a copy)."""
        return self.init.select([0])

    def steps_per_epoch(self) -> int:
        n, m = len(self.data.x_train), self.case.batch_size
        return -(-n // m)

    def batch_sizes(self) -> list[int]:
        n, m = len(self.data.x_train), self.case.batch_size
        return [min(m, n - start) for start in range(0, n, m)]

    def final_loss(self, a: np.ndarray) -> float:
        return self.loss.mean(np.asarray(a, dtype=np.float64), self.data.y_train.astype(np.float64))


# ----------------------------------------------------------------------------------------------- harness


def replicas_loop(s: Setup):
    model, rngs = s.fresh_replicas(), shuffle_rngs(s.seeds)
    c = s.case

    def go() -> float:
        with np.errstate(all="ignore"):
            for _ in range(c.epochs):
                sgd_epoch(model, s.data, s.loss, s.rule, s.lrs, c.batch_size, rngs)
        return s.final_loss(model.replica(0).predict(s.data.x_train))  # one network's forward, as the others

    return go


def replicas_train(s: Setup):
    model = s.fresh_replicas()
    c = s.case

    def go() -> float:
        results = train(
            model, s.data, s.loss, s.rule, epochs=c.epochs, lrs=s.lrs, batch_size=c.batch_size, seeds=s.seeds
        )
        return results[0].final["train_loss"]

    return go


def harness_loop(s: Setup):
    model, rngs = s.fresh_model(), shuffle_rngs(s.seeds[:1])
    c = s.case

    def go() -> float:
        with np.errstate(all="ignore"):
            for _ in range(c.epochs):
                sgd_epoch(model, s.data, s.loss, s.rule, s.lrs[:1], c.batch_size, rngs)
        return s.final_loss(model.predict(s.data.x_train)[0])

    return go


# ----------------------------------------------------------------------------------------------- PyTorch


def _torch_problem(s: Setup):
    """Tensors and the loss of the case, as PyTorch code would write them."""
    import torch
    from torch import nn

    x = torch.from_numpy(np.ascontiguousarray(s.data.x_train))
    if s.case.loss == "cce":  # softmax output: CrossEntropyLoss on the logits, class-index targets
        y = torch.from_numpy(np.argmax(s.data.y_train, axis=1))
        criterion = nn.CrossEntropyLoss()

        def loss_fn(logits, target):
            return criterion(logits, target)
    else:  # sigmoid output + BCE summed over the outputs, averaged over the batch (the harness's loss)
        y = torch.from_numpy(s.data.y_train)
        criterion = nn.BCEWithLogitsLoss(reduction="sum")

        def loss_fn(logits, target):
            return criterion(logits, target) / target.shape[0]

    def probs(logits):
        return torch.softmax(logits, dim=-1) if s.case.loss == "cce" else torch.sigmoid(logits)

    return x, y, loss_fn, probs


def _torch_net(s: Setup, r: int):
    import torch
    from torch import nn

    dtype = {"float64": torch.float64, "float32": torch.float32}[s.case.dtype]
    n_in, n_hidden, n_out = s.sizes
    net = nn.Sequential(nn.Linear(n_in, n_hidden), nn.Sigmoid(), nn.Linear(n_hidden, n_out)).to(dtype)
    with torch.no_grad():
        for layer, w, b in zip((net[0], net[2]), s.init.weights, s.init.biases):
            layer.weight.copy_(torch.from_numpy(w[r].T.copy()))
            layer.bias.copy_(torch.from_numpy(b[r].copy()))
    return net


def torch_loop(s: Setup):
    """One network (replica 0), idiomatic PyTorch."""
    import torch

    net = _torch_net(s, 0)
    x, y, loss_fn, probs = _torch_problem(s)
    optimiser = torch.optim.SGD(net.parameters(), lr=float(s.lrs[0]))
    perms = [torch.from_numpy(p[0]) for p in s.perms]
    bs = s.case.batch_size

    def step(xb, yb) -> None:
        optimiser.zero_grad()
        loss_fn(net(xb), yb).backward()
        optimiser.step()

    def go() -> float:
        if s.full_batch:  # full batch: no shuffle, no indexing (as the harness's loop)
            for _ in range(s.case.epochs):
                step(x, y)
        for perm in perms:
            for start in range(0, len(perm), bs):
                idx = perm[start : start + bs]
                step(x[idx], y[idx])
        with torch.no_grad():
            return s.final_loss(probs(net(x)).numpy())

    return go


def vmap_loop(s: Setup):
    """The R replicas at once: torch.func.vmap of torch.func.grad over functional_call, stacked parameters."""
    import torch
    from torch.func import functional_call, grad, stack_module_state, vmap

    nets = [_torch_net(s, r) for r in range(s.case.replicas)]
    params, _ = stack_module_state(nets)
    params = {k: v.detach() for k, v in params.items()}
    base = _torch_net(s, 0).to("meta")
    x, y, loss_fn, probs = _torch_problem(s)
    lrs = torch.from_numpy(s.lrs.astype(s.dtype))
    lr_views = {k: lrs.reshape(-1, *([1] * (v.ndim - 1))) for k, v in params.items()}

    def loss_of(p, xb, yb):
        return loss_fn(functional_call(base, (p,), (xb,)), yb)

    full = vmap(grad(loss_of), in_dims=(0, None, None))  # a full batch is shared by every replica
    mini = vmap(grad(loss_of), in_dims=(0, 0, 0))
    perms = [torch.from_numpy(p) for p in s.perms]  # (R, n) per epoch
    bs = s.case.batch_size

    def update(grads) -> None:
        with torch.no_grad():
            for k, p in params.items():
                p.sub_(grads[k] * lr_views[k])

    def go() -> float:
        if s.full_batch:
            for _ in range(s.case.epochs):
                update(full(params, x, y))
        for perm in perms:
            for start in range(0, perm.shape[1], bs):
                idx = perm[:, start : start + bs]  # (R, m): each replica's own minibatch
                update(mini(params, x[idx], y[idx]))
        with torch.no_grad():
            first = {k: v[0] for k, v in params.items()}
            return s.final_loss(probs(functional_call(_torch_net(s, 0), (first,), (x,))).numpy())

    return go


# ----------------------------------------------------------------------------------------------- GEMM floor


def gemm_floor(s: Setup):
    """One network's products of each step (``_common.products_only``)."""
    return products_only([v[0] for v in s.init.weights], s.data.x_train, s.batch_sizes(), s.case.epochs, s.dtype)


def stack_gemm(s: Setup):
    """The stack's own products only (what ``replicas`` runs in BLAS), on data already in place: the batched
    forward products, the small layers' gradient products and the in-BLAS updates of the large ones."""
    model = s.fresh_replicas()
    x = model.augment(s.data.x_train)
    r = s.case.replicas
    m = min(s.case.batch_size, len(x))
    xb = np.ascontiguousarray(np.broadcast_to(x[:m], (r, *x[:m].shape)))
    ws = model._workspace(m, s.dtype)
    for d in ws.deltas:
        d.fill(1e-9)  # a tiny error: the weights barely move, the products cost the same
    plan = s.steps_per_epoch() * s.case.epochs
    params, last = model.params, len(model.params) - 1

    def go() -> None:
        for _ in range(plan):
            a = xb
            for i, p in enumerate(params):
                np.matmul(a, p, out=ws.zs[i])
                a = ws.acts_aug[i]
            for i in range(last, -1, -1):
                if i > 0:
                    np.matmul(ws.deltas[i], model._wt[i], out=ws.deltas[i - 1])
                below = ws.acts_aug[i - 1] if i > 0 else xb
                if model._fused[i]:
                    model._update_in_blas(params[i], below, ws.deltas[i], None)
                else:
                    np.matmul(np.swapaxes(below, 1, 2), ws.deltas[i], out=ws.grads[i])

    return go


def gather_only(s: Setup):
    """Only the gathering of every replica's minibatches (as ``sgd_epoch`` does it)."""
    x, y = s.fresh_replicas().augment(s.data.x_train), s.data.y_train
    r, bs = s.case.replicas, s.case.batch_size
    x_batch, y_batch = np.empty((r, bs, x.shape[1]), s.dtype), np.empty((r, bs, y.shape[1]), s.dtype)

    def go() -> None:
        for perm in s.perms:
            for start in range(0, perm.shape[1], bs):
                idx = perm[:, start : start + bs]
                np.take(x, idx, axis=0, out=x_batch, mode="clip")
                np.take(y, idx, axis=0, out=y_batch, mode="clip")

    return go


# ----------------------------------------------------------------------------------------------- the run

# contender: (factory, networks it trains)
CONTENDERS = {
    "replicas": (replicas_loop, "R"),
    "replicas+metrics": (replicas_train, "R"),
    "harness": (harness_loop, "1"),
    "pytorch": (torch_loop, "1"),
    "vmap": (vmap_loop, "R"),
    "gemm-floor": (gemm_floor, "1"),
    "stack-gemm": (stack_gemm, "R"),  # the profile of ``replicas``: its products alone,
    "gather": (gather_only, "R"),  # its minibatch gathers alone (the rest is elementwise work and Python)
}


def check_agreement(s: Setup) -> str:
    """Train once with each real contender; network 0's final training losses must agree (else exit 1)."""
    losses = {name: CONTENDERS[name][0](s)() for name in ("replicas", "replicas+metrics", "harness", "pytorch", "vmap")}
    ref = losses["harness"]
    worst = max(abs(v - ref) / max(abs(ref), 1e-300) for v in losses.values())
    if not worst <= 1e-6:
        raise SystemExit(f"{s.case.label}: final training losses disagree (rel. diff {worst:.2e}): {losses}")
    return f"{ref:.6g} (max rel. diff {worst:.1e})"


def run_case(case: Case, repeats: int, contenders: list[str]) -> tuple[list[list[str]], dict[str, float], dict]:
    s = Setup(case)
    agreed = check_agreement(s)
    cpu: dict[str, list[float]] = {}
    chosen = {name: (lambda f=CONTENDERS[name][0]: f(s)) for name in contenders}
    times = interleaved(chosen, repeats, True, cpu)
    steps = s.steps_per_epoch() * case.epochs
    per_net = {}  # median seconds per network step
    per_net_cpu = {}
    for name in contenders:
        nets = case.replicas if CONTENDERS[name][1] == "R" else 1
        per_net[name] = median(times[name]) / (steps * nets)
        per_net_cpu[name] = median(cpu[name]) / (steps * nets)
    rows = []
    for name in contenders:
        t = per_net[name]
        rows.append(
            [case.label, name, CONTENDERS[name][1], f"{median(times[name]):.4f}", f"{t * 1e6:.2f}",
             f"{per_net['pytorch'] / t:.1f}×", f"{per_net_cpu['pytorch'] / per_net_cpu[name]:.1f}×"]
        )  # fmt: skip
    rows[0][0] += f"  (final loss {agreed})"
    return rows, per_net, per_net_cpu


def ratio_lines(results: dict[Case, dict[str, float]], clock: str) -> None:
    print(f"## Ratios per network step ({clock}: medians of interleaved repeats)")
    for case, t in results.items():
        rep = t["replicas"]
        torch_x, vmap_x, harness_x = t["pytorch"] / rep, t["vmap"] / rep, t["harness"] / rep
        floor_x = rep / t["gemm-floor"]
        line = (
            f"{case.label}: replicas {rep * 1e6:.2f} µs per network step = {torch_x:.1f}× faster than PyTorch "
            f"({t['pytorch'] * 1e6:.1f} µs), {vmap_x:.2f}× vmap ({t['vmap'] * 1e6:.2f} µs), {harness_x:.1f}× one "
            f"harness net ({t['harness'] * 1e6:.2f} µs), {floor_x:.2f}× one net's GEMM floor "
            f"({t['gemm-floor'] * 1e6:.2f} µs); with per-epoch metrics {t['replicas+metrics'] * 1e6:.2f} µs. "
            f"Profile: products {t['stack-gemm'] / rep:.0%}, gathers {t['gather'] / rep:.0%}, the rest "
            f"{1 - (t['stack-gemm'] + t['gather']) / rep:.0%}."
        )
        if case.dataset == "xor":
            line += f"  target ≥ 100× PyTorch: {verdict(torch_x, 100)}"
        else:
            line += (
                f"  target ≥ 8× PyTorch: {verdict(torch_x, 8)}; ≥ 1× vmap: {verdict(vmap_x, 1)}; "
                f"≤ 1.3× the GEMM floor: {verdict(floor_x, 1.3, higher_is_better=False)}"
            )
        print(line)
    print()


def main() -> None:
    args = loop_arguments(__doc__.splitlines()[0])
    repeats = args.repeats
    torch = import_torch("bench_replicas.py")
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    header(
        "Replicas: the batched step vs idiomatic PyTorch vs torch.func.vmap vs one network's GEMM-only floor",
        ("numpy", "scipy", "torch", "threadpoolctl"), repeats=repeats, threads=args.threads,
    )  # fmt: skip
    results: dict[Case, dict[str, float]] = {}
    results_cpu: dict[Case, dict[str, float]] = {}
    rows: list[list[str]] = []
    with threadpool_limits(args.threads):
        for case in cases(args.quick):
            if args.only not in case.label:
                continue
            case_rows, results[case], results_cpu[case] = run_case(case, repeats, list(CONTENDERS))
            rows += case_rows
            print(f"done: {case.label}", flush=True)
    print()
    table(rows, ["case", "contender", "nets", "median s", "µs/net step", "× PyTorch (wall)", "× PyTorch (CPU)"])
    ratio_lines(results, "wall time")
    ratio_lines(results_cpu, "CPU time of this process, steadier on a shared machine")


if __name__ == "__main__":
    try:
        main()
    finally:
        footer()
