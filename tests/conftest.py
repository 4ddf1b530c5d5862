"""Fixtures every test file may use, and the run's summary of counts a test
wants shown (``make test`` runs pytest without -s), e.g. how many mutants each
file-reader fuzz tried. The lines travel as the test's user properties, which
pytest-xdist carries from its worker to the controller that prints the summary
(a conftest below tests/ is not loaded in the controller)."""
import pytest

from tests.helpers import Procs

SUMMARY_PROPERTY = "diskbench summary"
_SUMMARY = []


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


class _SummaryLines(list):
    def __init__(self, node):
        list.__init__(self)
        self.node = node

    def append(self, line):
        list.append(self, line)
        self.node.user_properties.append((SUMMARY_PROPERTY, line))


@pytest.fixture
def summary_lines(request):
    """A list; every line appended is printed in the run's terminal summary."""
    return _SummaryLines(request.node)


def pytest_runtest_logreport(report):
    if report.when == "call":
        _SUMMARY.extend(value for name, value in report.user_properties
                        if name == SUMMARY_PROPERTY)


def pytest_terminal_summary(terminalreporter):
    if _SUMMARY:
        terminalreporter.write_sep("-", "diskbench fuzz counts")
        for line in _SUMMARY:
            terminalreporter.write_line(line)
