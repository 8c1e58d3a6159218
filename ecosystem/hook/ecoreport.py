"""pytest plugin of the ecosystem gate: records every test's outcome.

Loaded with `-p ecoreport`. Writes `{nodeid: outcome}` as JSON to
$ECO_RESULTS when the session ends, where outcome is one of passed, failed,
skipped, xfailed. A test whose setup or teardown errors counts as failed; an
unexpected pass of a strict xfail is failed (pytest's own verdict).
Also deselects the items whose node id matches $ECO_DESELECT_RE (a suite's
own variants that are not the asyncio loop under test, e.g. anyio's trio
runs) and the node ids listed, one a line, in the file $ECO_EXCLUDE.
"""

import json
import os
import re

import pytest

_results = {}
_order = {"failed": 3, "passed": 1, "skipped": 0, "xfailed": 0}


def _record(nodeid, outcome):
    old = _results.get(nodeid)
    if old is None or _order[outcome] > _order[old]:
        _results[nodeid] = outcome


def pytest_runtest_logreport(report):
    if hasattr(report, "wasxfail"):
        if report.skipped:
            _record(report.nodeid, "xfailed")
        elif report.failed:  # strict xpass
            _record(report.nodeid, "failed")
        elif report.when == "call":
            _record(report.nodeid, "passed")
        return
    if report.failed:
        _record(report.nodeid, "failed")
    elif report.skipped:
        _record(report.nodeid, "skipped")
    elif report.when == "call":
        _record(report.nodeid, "passed")


def pytest_collectreport(report):
    if report.failed:
        _record("COLLECT::" + report.nodeid, "failed")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    pattern = os.environ.get("ECO_DESELECT_RE")
    excluded = set()
    path = os.environ.get("ECO_EXCLUDE")
    if path and os.path.exists(path):
        with open(path) as f:
            excluded = {line.strip() for line in f if line.strip()}
    regex = re.compile(pattern) if pattern else None
    keep, drop = [], []
    for item in items:
        if item.nodeid in excluded or (regex and regex.search(item.nodeid)):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_sessionfinish(session):
    path = os.environ.get("ECO_RESULTS")
    if path and not hasattr(session.config, "workerinput"):
        with open(path, "w") as f:
            json.dump(_results, f, indent=0, sort_keys=True)
