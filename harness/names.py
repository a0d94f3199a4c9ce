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

# Per run, logged once at its last epoch so the MLflow UI can sort and filter runs by them (computed in-process
# from every evaluated epoch; epochs_to_threshold is not logged for a run that never reached the threshold).
BEST_TEST_ACCURACY = "best_test_accuracy"
EPOCHS_TO_THRESHOLD = "epochs_to_threshold"
SUMMARY_METRICS = (BEST_TEST_ACCURACY, EPOCHS_TO_THRESHOLD)

# Params every run logs besides the flattened config: the names of its config groups' options.
LOSS_PARAM = "loss"
ACTIVATION_PARAM = "activation"
DELTA_PARAM = "delta"
DATASET_PARAM = "dataset"

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

# A study's levels (harness.tracking.study): sweep parent -> one configuration run per configuration (every swept
# value but the seed, its seeds' means per step) -> the seed runs, re-parented under their configuration run.
LEVEL_TAG = "harness.level"  # configuration | seed
CONFIGURATION_LEVEL = "configuration"
SEED_LEVEL = "seed"
CONFIGURATION_TAG = "harness.configuration"  # hash of the resolved config without `seed` (study.configuration_hash)
CHOSEN_RATE_TAG = "harness.chosen_rate"  # "true" on the configuration runs at each triple's chosen learning rate
ADOPTED_TAG = "harness.adopted_from"  # on a seed run a resumed sweep adopted: the parent run it came from
OUTCOMES_TAG = "outcomes"  # on a configuration run: its seeds' outcome counts, e.g. "28 completed, 2 diverged"
OUTCOMES = ("completed", "diverged", "undefined", "failed", "killed")

# Per step on a configuration run, next to the mean under the seed runs' own name: the 95 % CI of that mean.
LO_SUFFIX = "_lo"
HI_SUFFIX = "_hi"
COUNT_SUFFIX = "_n"  # seeds with a finite value at that step

# Once per configuration run (its summary of the seeds).
SEEDS = "seeds"  # n: seed runs of the configuration, each counted once
SEEDS_PREFIX = "seeds_"  # seeds_completed, seeds_diverged, ... (outcome counts) and seeds_reached
SEEDS_REACHED = "seeds_reached"  # seeds whose test accuracy reached the dataset's threshold
FINAL_TEST_ACCURACY = "final_test_accuracy"  # mean over seeds of each seed's last finite test_accuracy
MEDIAN_EPOCHS_TO_THRESHOLD = "median_epochs_to_threshold"  # over all seeds, a seed never reaching it ranks last
