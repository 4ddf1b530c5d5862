import pytest

from tests.helpers import Procs


@pytest.fixture
def procs():
    """Start real processes; every one of them is killed when the test ends."""
    keeper = Procs()
    yield keeper
    keeper.cleanup()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long test (thousands of clients); "
                            "deselected unless -m names it (make bench-server runs them)")


def pytest_collection_modifyitems(config, items):
    """Slow tests run only when asked for by ``-m`` (e.g. ``-m slow``)."""
    if "slow" in (config.getoption("-m") or ""):
        return
    keep = [item for item in items if item.get_closest_marker("slow") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
