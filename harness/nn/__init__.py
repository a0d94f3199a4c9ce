"""The network and its training: the numpy MLP, minibatch SGD with a chosen delta rule, the datasets.

Builds on :mod:`harness.core`; knows nothing of Hydra or MLflow (metrics go out through a callback).
"""
