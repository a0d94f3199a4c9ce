"""The shared vocabulary: the names every layer writes or reads, defined once.

Metric names are what the training loop logs and the reports read; tag names are what the runner writes
on MLflow runs and the queries search for. This module imports nothing, so the math, the tracker and the
reports can all use it without depending on each other.
"""

from __future__ import annotations

# Per evaluated epoch (MLflow step = epoch; step 0 is the untrained network).
TRAIN_LOSS = "train_loss"
TRAIN_ACCURACY = "train_accuracy"
TEST_LOSS = "test_loss"
TEST_ACCURACY = "test_accuracy"
GRAD_COSINE = "grad_cosine"  # cos ∠(rule's parameter update, true ∂C/∂θ), on the whole training set
DELTA_COSINE = "delta_cosine"  # cos ∠(rule's output δᴸ, true ∂L/∂zᴸ), on the whole training set
METRICS = (TRAIN_LOSS, TRAIN_ACCURACY, TEST_LOSS, TEST_ACCURACY, GRAD_COSINE, DELTA_COSINE)

# Run tags.
PAIRING_TAG = "pairing"  # exact | mismatched: is the rule the true ∂L/∂z for (loss, activation)?
OUTCOME_TAG = "outcome"  # completed | diverged | undefined | failed | killed
EPOCHS_RUN_TAG = "epochs_run"
UNDEFINED_EPOCHS_TAG = "undefined_epochs"  # evaluated epochs whose loss was undefined (outputs off its domain)
SWEEP_TAG = "harness.sweep_dir"  # on a sweep's parent run: the key its jobs find it by
HASH_TAG = "harness.config_hash"  # what ``tracking.resume`` matches (see harness.tracking.queries.config_hash)
JOB_TAG = "harness.job"
OVERRIDES_TAG = "harness.overrides"
TAGS_TAG = "harness.tags"  # the config's ``tags`` list, comma-separated
BLAS_TAG = "harness.blas_threads"
HOST_TAG = "harness.host"
PID_TAG = "harness.pid"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own
