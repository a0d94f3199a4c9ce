"""The lean HTTP path: a folded job written to an MLflow tracking server sends as few REST requests as MLflow's
API allows (counted at ``http_request``), and the runs hold every value."""

from __future__ import annotations

import collections
import math

import pytest
from mlflow import MlflowClient

from harness.app import run_replicas
from harness.tracking.run import Run

RUNS, EPOCHS = 3, 300  # 301 epochs × 6 metrics + the summary: one whole batch of 1,000 and the rest at the end


@pytest.fixture
def requests_sent(monkeypatch) -> list[tuple[str, str, dict]]:
    """Every request MLflow's REST client and artifact repository send: ``(method, endpoint, json body)``."""
    import mlflow.store.artifact.http_artifact_repo as artifacts
    import mlflow.utils.rest_utils as rest

    sent: list[tuple[str, str, dict]] = []

    def counted(real):
        def counting(host_creds, endpoint, method, *args, **kwargs):
            sent.append((method, endpoint, kwargs.get("json") or {}))
            return real(host_creds, endpoint, method, *args, **kwargs)

        return counting

    monkeypatch.setattr(rest, "http_request", counted(rest.http_request))
    monkeypatch.setattr(artifacts, "http_request", counted(artifacts.http_request))
    return sent


@pytest.mark.slow
def test_a_folded_job_over_http_sends_the_fewest_requests(compose_cfg, tmp_path, monkeypatch, requests_sent, capsys):
    from servers import MlflowServer

    # No flush on time (a loaded machine would add some): only the size limit and the end flush here.
    monkeypatch.setattr(Run.__init__, "__defaults__", (math.inf, *Run.__init__.__defaults__[1:]))
    server = MlflowServer(tmp_path).start()
    try:
        cfgs = [
            compose_cfg(f"tracking.uri={server.uri}", f"train.epochs={EPOCHS}", "train.eval_every=1", f"seed={s}")
            for s in range(RUNS)
        ]  # fmt: skip  (every epoch: the most values the path can get)
        results = run_replicas(cfgs)
        sent = list(requests_sent)
        c, logged = MlflowClient(server.uri), {}
        for r in results:  # nothing lost
            run = c.get_run(r["run_id"])
            assert run.info.status == "FINISHED" and run.data.tags["outcome"] == r["outcome"]
            assert sorted(m.step for m in c.get_metric_history(r["run_id"], "train_loss")) == list(range(EPOCHS + 1))
            logged[r["run_id"]] = sum(len(c.get_metric_history(r["run_id"], k)) for k in run.data.metrics)
    finally:
        server.stop()
    kinds = collections.Counter(
        "artifact" if method == "PUT" else endpoint.rsplit("/api/2.0/mlflow/", 1)[-1] for method, endpoint, _ in sent
    )
    batches = [body for method, endpoint, body in sent if endpoint.endswith("runs/log-batch")]
    # One lookup of the experiment for the whole job (created here: a fresh server), one request per run for
    # each of create, inputs, config.yaml and the status; never a get_run (MLflow's "View run" line needs one).
    assert kinds == {
        "experiments/get-by-name": 1, "experiments/create": 1, "runs/create": RUNS, "runs/log-inputs": RUNS,
        "artifact": RUNS, "runs/update": RUNS, "runs/log-batch": 3 * RUNS,
    }  # fmt: skip
    assert "View run" not in capsys.readouterr().out
    for r in results:
        mine = [b for b in batches if b.get("run_id") == r["run_id"]]
        params, whole, last = mine  # params in one request; one whole batch of 1,000; the end's metrics and tags
        assert len(params["params"]) > 20 and not params.get("metrics") and not params.get("tags")
        assert len(whole["metrics"]) == 1000 and not whole.get("params") and not whole.get("tags")
        assert {t["key"] for t in last["tags"]} == {"outcome", "epochs_run", "undefined_epochs"}
        assert len(whole["metrics"]) + len(last["metrics"]) == logged[r["run_id"]] > 6 * (EPOCHS + 1)
        assert 0 < len(last["metrics"]) + len(last["tags"]) <= 1000
