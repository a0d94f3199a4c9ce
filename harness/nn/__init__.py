"""The network and its training, in numpy; knows nothing of Hydra or MLflow (metrics go out through a callback).

- :mod:`.weights`: the initial weights (one draw per seed);
- :mod:`.network`: the reference MLP, Nielsen's four equations as the book writes them (what the tests compare
  the engine against);
- :mod:`.stack`: the engine's network, R replicas as one stack (a single run is R = 1);
- :mod:`.evaluation`: the epoch metrics and the outcomes;
- :mod:`.training`: the epoch loop, minibatch SGD and the logging cadence;
- :mod:`.data`: the datasets.
"""
