"""The math: losses, activations, output-error (delta) rules, their registries and the gradient checker.

numpy and scipy only: no Hydra, no MLflow, no pandas (``tests/test_layers.py`` checks it).
"""
