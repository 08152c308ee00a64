"""The only code that touches MongoDB or FiftyOne's internals.

``dataset`` is the door: one :class:`~dequity.store.dataset.Store` per
dataset recovers what dead writers left once, and ``writing(run_key)`` claims
a run key, stages the new values and commits them. Beneath it: ``claims``
(leases in the database), ``commit`` (the crash-safe journal), ``columns``
(the values a write sets), ``fields`` (schema checks), ``runs`` (the run's
config and results classes), ``objects`` (Detection attributes) and
``compat`` (the FiftyOne internals relied on, one function each).
"""
