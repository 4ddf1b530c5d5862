"""The README's sample output is what the current code prints: its report.txt lines
are re-rendered from the recorded run they were made from (tests/readme_sample.py)
and must match line for line. ``make readme-sample`` brings the README up to date."""
import io

from tests import readme_sample

#: The README's first screen: what a new user sees before scrolling.
FIRST_SCREEN = 45


def _readme():
    with io.open(readme_sample.README, encoding="utf-8") as f:
        return f.read()


def test_readme_sample_report_is_what_the_renderer_prints_for_its_run():
    """README.md's sample report.txt (headline and client table) is exactly what the
    renderer prints now for the run it was made from, a finished run re-rendered
    through the server's recorded facts (exit code 0, every client finished)."""
    shown = readme_sample.readme_sample(_readme())
    assert shown, "README.md lost its %s block" % readme_sample.SAMPLE_BEGIN
    printed = readme_sample.sample_lines()
    # the server's recorded facts were used; if not (a run of an older protocol or
    # facts format), record a new run: python -m tests.readme_sample --from LOG_DIR
    assert printed[1] == "exit code 0: every client finished", printed[:2]
    assert shown == printed, (
        "README.md's sample report.txt is not what the code prints now: run "
        "`make readme-sample`\nREADME:\n%s\nrenderer:\n%s" % ("\n".join(shown),
                                                              "\n".join(printed)))


def test_readme_sample_is_on_the_first_screen():
    """The sample ends within the README's first screen (FIRST_SCREEN lines), after
    the two commands a new user needs."""
    lines = _readme().splitlines()
    end = lines.index(readme_sample.SAMPLE_END)
    assert end < FIRST_SCREEN, "the sample ends on line %d" % (end + 1)
    head = "\n".join(lines[:end])
    assert "make demo" in head and "make test" in head
