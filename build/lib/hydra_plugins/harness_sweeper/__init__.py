"""``hydra/sweeper=harness``: Hydra's basic sweeper, without composing every job twice (see the module)."""
