"""The README's sample report: what the current renderer prints for a recorded run.

tests/data/readme_run/ holds perf.jsonl and run.json of a real run (one VM, four
clients, server ``--chunk-mb 10,20``); the README shows the start of its report.txt
between the SAMPLE_BEGIN and SAMPLE_END comments, indented as a code block.
tests/test_readme_samples.py re-renders it and compares.

    python -m tests.readme_sample                 # rewrite the README's sample
    python -m tests.readme_sample --from LOG_DIR  # first record another run as the data
(``make readme-sample`` runs the first.)  (No tests here.)
"""
from __future__ import print_function

import io
import os
import shutil
import sys

from diskbench.report import rerender
from diskbench.report import text as text_mod
from tests.helpers import REPO

RUN_DIR = os.path.join(REPO, "tests", "data", "readme_run")
#: The files of a log dir a re-render reads (what RUN_DIR keeps of a run).
RUN_FILES = ("perf.jsonl", "run.json")
README = os.path.join(REPO, "README.md")
SAMPLE_BEGIN = "<!-- sample: report.txt -->"
SAMPLE_END = "<!-- /sample -->"
#: The README shows report.txt up to the line that starts with this (the headline
#: and the client table).
SAMPLE_STOP = "by workload ("
INDENT = "    "


def sample_lines(log_dir=RUN_DIR):
    """report.txt's headline and client table, as the renderer prints them now."""
    rep, _ = rerender.load(log_dir, lambda text: None)
    lines = text_mod.render_text(rep).splitlines()
    lines = lines[:[line.startswith(SAMPLE_STOP) for line in lines].index(True)]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _read(path):
    with io.open(path, encoding="utf-8") as f:
        return f.read()


def readme_sample(text):
    """The lines between the README's sample markers, unindented; None if unmarked."""
    if SAMPLE_BEGIN not in text or SAMPLE_END not in text:
        return None
    block = text.split(SAMPLE_BEGIN, 1)[1].split(SAMPLE_END, 1)[0]
    lines = block.strip("\n").splitlines()
    return [line[len(INDENT):] if line.startswith(INDENT) else line for line in lines]


def with_sample(text, lines):
    """``text`` (the README) with ``lines`` as its sample."""
    head, rest = text.split(SAMPLE_BEGIN, 1)
    tail = rest.split(SAMPLE_END, 1)[1]
    body = "\n".join((INDENT + line) if line else "" for line in lines)
    return "%s%s\n\n%s\n\n%s%s" % (head, SAMPLE_BEGIN, body, SAMPLE_END, tail)


def main(argv):
    if argv[:1] == ["--from"] and len(argv) == 2:
        for name in RUN_FILES:
            shutil.copy(os.path.join(argv[1], name), os.path.join(RUN_DIR, name))
    elif argv:
        print("usage: python -m tests.readme_sample [--from LOG_DIR]", file=sys.stderr)
        return 2
    text = _read(README)
    if readme_sample(text) is None:
        print("README.md has no %s ... %s block" % (SAMPLE_BEGIN, SAMPLE_END),
              file=sys.stderr)
        return 2
    with io.open(README, "w", encoding="utf-8") as f:
        f.write(with_sample(text, sample_lines()))
    print("README.md: sample report.txt re-rendered from %s" % RUN_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
