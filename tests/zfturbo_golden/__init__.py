"""Scripts that make the golden fixtures in tests/data/zfturbo_golden/ with ZFTurbo's own code.

Not tests, and not run by the suite: run ``python -m tests.zfturbo_golden.make --repo PATH``
(see make.py) in a venv that can import ZFTurbo's Music-Source-Separation-Training at
``common.UPSTREAM_COMMIT``. The suite reads only the data they wrote.
"""
