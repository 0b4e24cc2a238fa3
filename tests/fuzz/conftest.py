"""Fixtures of the fuzz tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _lazy_schema_node_id(request: pytest.FixtureRequest) -> None:
    """Give the test node the `_nodeid` attribute schemathesis' lazy schemas read and rewrite.

    Pytest 9 keeps a node's id elsewhere (`Node._id`), so `schemathesis.pytest.from_fixture` (4.32)
    fails with AttributeError before running a case. Schemathesis only uses the attribute to label
    each operation's subtest; the node's real id is untouched.
    """
    node = request.node
    if not hasattr(node, "_nodeid"):
        node._nodeid = node.nodeid
