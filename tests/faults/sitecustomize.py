"""Fault injection for subprocess tests: on ``PYTHONPATH``, Python imports this module at start-up in every
process, including joblib's loky workers. When ``HARNESS_FAIL_SEED`` is set, a job that trains that seed
raises inside training, a real exception in a real job; every other job trains normally."""

import os

if os.environ.get("HARNESS_FAIL_SEED"):
    import harness.app

    _train = harness.app.train

    def _failing_train(*args, **kwargs):
        if int(os.environ["HARNESS_FAIL_SEED"]) in kwargs["seeds"]:
            raise RuntimeError("injected failure for the test")
        return _train(*args, **kwargs)

    harness.app.train = _failing_train
