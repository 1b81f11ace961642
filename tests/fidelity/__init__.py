"""The fidelity matrix: real servers, each scenario with a known truth (issue 12).

``scenarios.py`` is the table (server × load × truth), ``runner.py`` starts a server, drives a
bounded loopback load and runs lifescope's collector on it, ``checks.py`` judges a measurement
against its truth. ``test_matrix.py`` and ``tools/fidelity.py`` (which writes
``docs/FIDELITY.md``) both use these, so the doc and the tests cannot disagree.
"""
