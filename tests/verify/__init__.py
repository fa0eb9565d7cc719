"""The shipped verification suite, installed as ``lemfleet.verify``; its options and fixtures are a pytest plugin.

From an installed lemfleet (``pip install 'lemfleet[verify]'``)::

    pytest --pyargs lemfleet.verify --hosts=ssh://gpu1,ssh://gpu2

From a checkout, ``pytest tests/verify --hosts=...`` runs the same tests.
"""
