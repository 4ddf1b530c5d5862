"""One table of exit codes (diskbench/exitcodes.py) says every code's meaning:
the README's table is the table, each program's --help lists exactly the codes
that program's code can exit with, and the report and the launcher say a code
in the table's words.

The programs' --help is read from real processes; which codes a program can
exit with is read from its source (every ``exitcodes.NAME`` it names, and the
two every Python program has: 1 for a traceback, 2 for a wrong flag).
"""
import ast
import io
import os
import re
import subprocess
import sys

import pytest

from diskbench import exitcodes, launcher
from diskbench.compat import string_types
from diskbench.server import finalreport, master
from tests.helpers import REPO

#: Each program: how it is started for --help, and the source files whose
#: ``exitcodes.NAME`` it may exit with (directories: every .py in them).
PROGRAMS = {
    exitcodes.SERVER: (["-m", "diskbench.server"],
                       ["diskbench/server/__main__.py", "diskbench/server/master.py",
                        "diskbench/server/finalreport.py", "diskbench/server/logdir.py",
                        "diskbench/server/listener.py"]),
    exitcodes.CTL: (["-m", "diskbench.server", "ctl"],
                    ["diskbench/server/ctl.py", "diskbench/server/control.py"]),
    exitcodes.CLIENT: (["-m", "diskbench.client"], ["diskbench/client"]),
    exitcodes.LAUNCH: (["-m", "diskbench.launch"], ["diskbench/launch.py",
                                                    "diskbench/launcher.py"]),
    exitcodes.REPORT: (["-m", "diskbench.report"], ["diskbench/report"]),
}
#: What every program can exit with whatever its code says: a traceback, argparse.
ALWAYS = set([exitcodes.OK, exitcodes.INTERNAL, exitcodes.USAGE])


def _read(path):
    with io.open(os.path.join(REPO, path), encoding="utf-8") as f:
        return f.read()


def _sources(paths):
    for path in paths:
        full = os.path.join(REPO, path)
        if os.path.isdir(full):
            for name in sorted(os.listdir(full)):
                if name.endswith(".py"):
                    yield os.path.join(path, name)
        else:
            yield path


def _named_codes(paths):
    """The exit codes named (``exitcodes.NAME``) in the source files ``paths``."""
    names = set()
    for path in _sources(paths):
        for node in ast.walk(ast.parse(_read(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id == "exitcodes" and \
                    isinstance(getattr(exitcodes, node.attr, None), int):
                names.add(node.attr)
    return set(getattr(exitcodes, name) for name in names)


def _help(argv):
    out = subprocess.check_output([sys.executable] + argv + ["--help"], cwd=REPO)
    return " ".join(out.decode("utf-8").split())


def _epilog_codes(text):
    """The codes an 'Exit codes...: 0 meaning; 1 meaning; ...' paragraph lists."""
    m = re.search(r"Exit codes[^:]*: (.*)", text)
    assert m, "no exit codes paragraph in: %s" % text[-300:]
    return [int(c) for c in re.findall(r"(?:^|; )(\d+) ", m.group(1))]


def test_readme_exit_code_table_is_the_table():
    readme = _read("README.md")
    start = readme.index("| code | name | program | meaning |")
    end = readme.find("\n\n", start)
    shown = readme[start:end if end >= 0 else None].splitlines()
    assert shown == exitcodes.readme_table(), \
        "README's exit code table differs from exitcodes.TABLE: paste readme_table()"


def test_table_has_every_named_code_once():
    named = dict((name, value) for name, value in vars(exitcodes).items()
                 if re.match(r"^[A-Z][A-Z_]+$", name) and isinstance(value, int))
    assert sorted(row.code for row in exitcodes.TABLE) == sorted(named.values())
    assert all(named[row.name] == row.code for row in exitcodes.TABLE)
    for row in exitcodes.TABLE:
        assert row.programs and set(row.programs) <= set(exitcodes.PROGRAMS), row


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_each_epilog_lists_exactly_the_codes_its_program_can_exit_with(program):
    argv, sources = PROGRAMS[program]
    can = _named_codes(sources) | ALWAYS
    if program == exitcodes.LAUNCH:   # the server's code is passed on
        can |= set(exitcodes.codes(exitcodes.SERVER))
    listed = _epilog_codes(_help(argv))
    assert listed == sorted(listed) and len(set(listed)) == len(listed), listed
    assert set(listed) == can, "%s --help lists %s; its code can exit with %s" % (
        program, listed, sorted(can))
    assert listed == exitcodes.codes(program)


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_each_epilog_gives_the_tables_meanings(program):
    text = re.sub(r"\s+", "", _help(PROGRAMS[program][0]))   # argparse wraps at will
    for code in exitcodes.codes(program):
        said = re.sub(r"\s+", "", exitcodes.meaning(code, program))
        assert "%d%s" % (code, said) in text, (program, code)


def test_report_and_launcher_say_a_code_in_the_tables_words():
    """The server's report (exit_meaning) and the launcher's host table take
    their phrase from the table; the launcher knows every client code."""
    for code in exitcodes.codes(exitcodes.CLIENT):
        assert launcher.MEANINGS[code] == exitcodes.brief(code, exitcodes.CLIENT)
    assert set(launcher.MEANINGS) == set(exitcodes.codes(exitcodes.CLIENT))
    assert exitcodes.brief(exitcodes.OK, exitcodes.SERVER) == "every client finished"
    assert not hasattr(master, "EXIT_MEANING") and not hasattr(finalreport, "EXIT_MEANING")


def _literal(node):
    """The value of a string literal node (ast.Constant from 3.8, ast.Str before)."""
    if type(node).__name__ == "Constant":
        return node.value
    return node.s if type(node).__name__ == "Str" else None


def _docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body and \
                isinstance(node.body[0], ast.Expr):
            yield node.body[0].value


def test_no_program_spells_a_codes_number_in_what_it_prints():
    """A program's text (help, messages) takes a code's number from the table's
    constant ('exit code %d' % exitcodes.NAME), never writes 'exit 17' itself:
    a string literal of a program's source naming a code 3-21 is a second spelling."""
    spelled = []
    for _, sources in sorted(PROGRAMS.values()):
        for path in _sources(sources):
            tree = ast.parse(_read(path))
            skip = set(id(node) for node in _docstrings(tree))
            for node in ast.walk(tree):
                text = _literal(node)
                if isinstance(text, string_types) and id(node) not in skip and re.search(
                        r"\bexit(?:s| code| status)? (?:[3-9]|1\d|2[01])\b", text):
                    spelled.append("%s:%d: %s" % (path, node.lineno, text))
    assert spelled == []
