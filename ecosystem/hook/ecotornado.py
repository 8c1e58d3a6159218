"""pytest plugin: the test setup of Tornado's own runner (tornado.test.runtests).

Tornado's suite is written for `python -m tornado.test.runtests`, which
silences the access log (tests assert that nothing unexpected is logged) and
turns warnings from tornado itself into errors. Loaded with
`-p ecotornado`, this does the same under pytest, so that each test's
outcome can be recorded like every other suite's.
"""

import logging
import warnings


def pytest_configure(config):
    logging.getLogger("tornado.access").setLevel(logging.CRITICAL)
    warnings.filterwarnings("error", category=DeprecationWarning, module=r"tornado\..*")
