import pytest

from tests.helpers import Procs


@pytest.fixture
def procs():
    """Start real processes; every one of them is killed when the test ends."""
    keeper = Procs()
    yield keeper
    keeper.cleanup()
