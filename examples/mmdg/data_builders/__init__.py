"""Data builders of the MMDG example, apart from the experiment code.

* `avdigits`: AV-Digits-DG, spoken digit words in four languages paired with styled
  handwritten digits (``python -m mmdg.avdigits``);
* `acoustic`: AV-Digits-DG acoustic, one language under four recording conditions
  (``python -m mmdg.acoustic``);
* `synthetic`: controllable synthetic feature data for the tests.

Each writes the feature layout `mmdg.features` reads; the experiment code never imports them.
"""
