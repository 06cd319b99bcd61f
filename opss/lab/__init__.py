"""Harnesses that wire both halves together: the demo, the experiment driver and the testbed.

This package is the only code that may import both :mod:`opss.client` and
:mod:`opss.server`: the library core (the rest of ``opss``) imports neither,
and the client does not import the server. :mod:`opss.lab.harness` holds
what every harness shares (an in-process server, a session planning several
strategies, :func:`~opss.lab.harness.measure_strategies`);
:mod:`opss.lab.demo` is ``opss demo``, :mod:`opss.lab.experiment` is
``opss experiment`` and :mod:`opss.lab.testbed` its shaped-link testbed.
``scripts/bench_client.py`` uses the harness too. Importing this package
imports no torch.
"""
