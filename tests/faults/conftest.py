"""The fault suite's summary: counts a test wants shown after the run (``make
test`` runs pytest without -s), e.g. how many mutants each file-reader fuzz tried."""
import pytest


@pytest.fixture
def summary_lines(request):
    """A list; every line appended is printed in the run's terminal summary."""
    if not hasattr(request.config, "_diskbench_summary"):
        request.config._diskbench_summary = []
    return request.config._diskbench_summary


def pytest_terminal_summary(terminalreporter):
    lines = getattr(terminalreporter.config, "_diskbench_summary", None)
    if lines:
        terminalreporter.write_sep("-", "diskbench fuzz counts")
        for line in lines:
            terminalreporter.write_line(line)
