"""What the ``modelworks`` command shows people: lineage tables, progress bars, outcomes.

Pure: objects come in as the plain dicts the API server returns, strings and plain
structures (ready for ``json.dumps``) go out. No I/O and no clock: ``now`` is passed in.
The command in ``cli.py`` does the listing and the polling.

- :mod:`~modelworks.humans.lineage`: the objects grouped by model and version
  (TrainingJob -> version -> ModelDeployment -> DriftMonitor);
- :mod:`~modelworks.humans.tables`: that lineage as a table that fits the terminal;
- :mod:`~modelworks.humans.watch`: ``modelworks watch``: a progress line, the outcome;
- :mod:`~modelworks.humans.common`: reading objects and writing numbers, times, metrics.
"""
