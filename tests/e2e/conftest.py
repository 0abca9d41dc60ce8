"""End-to-end fixtures: the real daemons under supervisord, started with `circ up`.

Self-contained on purpose (nothing from ``tests/conftest.py``). One instance
is shared per test module: start-up costs ~5 s (chat loads the model).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from .harness import Instance, make_home, remove_home


@pytest.fixture(scope="module")
def instance() -> Iterator[Instance]:
    """A running instance (`circ up`) shared by the tests of one module."""
    home = make_home()
    inst = Instance(home)
    try:
        inst.up()
        yield inst
    finally:
        inst.teardown()
        remove_home(home)


@pytest.fixture(scope="module")
def ctx() -> Iterator[zmq.Context]:
    """One ZeroMQ context per test module, for tests that open raw sockets to the daemons."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def fresh_home() -> Iterator[Instance]:
    """An instance directory with nothing running (torn down anyway, in case)."""
    home = make_home()
    inst = Instance(home)
    try:
        yield inst
    finally:
        inst.teardown()
        remove_home(home)
