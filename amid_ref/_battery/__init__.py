"""The battery engine: the case type, the logits generators, the comparison and the
known-wrong formulas, shared by the three pairings (``amid_ref`` against
:mod:`amid_ref.precise`, ``gpu`` against ``amid_ref`` and an external implementation against
``amid_ref`` in :mod:`amid_ref.conformance`). It reads the reference; the reference never
imports it."""
