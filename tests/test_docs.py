"""The docs are true to the code: every file they name exists, every glob they
give matches something, and the defaults they quote are the parsers' defaults."""
import ast
import glob
import importlib
import inspect
import os
import re
import subprocess

import pytest

from diskbench import cli, plan, protocol
from diskbench.client import __main__ as client_main
from diskbench.client import sender, supervisor
from diskbench.server import control, finalreport, go, handler, liveness, recorder
from diskbench import states
from diskbench.report import build as report_build
from diskbench.server import __main__ as server_main
from diskbench.metrics import MIB
from diskbench.protocol import ctl as channel
from tests.helpers import REPO, git_dir

DOCS = ("docs/ARCHITECTURE.md", "docs/TESTING.md")
_PATHLIKE = re.compile(r"`([\w.*/-]+(?:\.(?:py|md|txt|png|json|jsonl)|/))`")
#: Names the docs use for files the run writes (not files of the repository).
RUN_FILES = ("server.log", "perf.jsonl", "run.json", "report.txt", "report.json",
             "report.html", "compare.html", "clients.csv", "chunk_sizes.csv", "timeseries.csv",
             "client-NAME.log", "client-NAME.undelivered.jsonl", "diskbench-logs/")


def _read(path):
    with open(os.path.join(REPO, path)) as f:
        return f.read()


def _tracked():
    out = subprocess.check_output(["git", "--git-dir", git_dir(), "ls-files"], cwd=REPO)
    return out.decode("utf-8").split()


def _tree_paths(text):
    """Paths of the file tree drawn in a code block that starts at ``diskbench/``."""
    m = re.search(r"```\n(diskbench/\n.*?)```", text, re.S)
    if not m:
        return []
    stack, out = [], []
    for line in m.group(1).splitlines():
        name = re.match(r"(\s*)(\S+)", line)
        if not name or not re.match(r"[\w.]+(/|\.py)$", name.group(2)):
            continue
        depth = len(name.group(1)) // 2
        del stack[depth:]
        out.append("/".join(stack + [name.group(2).rstrip("/")]))
        if name.group(2).endswith("/"):
            stack.append(name.group(2).rstrip("/"))
    return out


def _exists(name, tracked):
    if "*" in name:
        return any(glob.glob(os.path.join(REPO, base, name))
                   for base in ("", "diskbench"))
    name = name.rstrip("/")
    if "/" not in name:
        return any(os.path.basename(p) == name or ("/%s/" % name) in "/" + p
                   for p in tracked)
    return any(os.path.exists(os.path.join(REPO, base, name))
               for base in ("", "diskbench", "docs"))


@pytest.mark.parametrize("doc", DOCS)
def test_every_file_and_glob_a_doc_names_exists(doc):
    text, tracked = _read(doc), _tracked()
    named = set(_PATHLIKE.findall(text)) | set(_tree_paths(text))
    assert len(named) > 10  # the pattern still finds the doc's paths
    missing = sorted(n for n in named if n not in RUN_FILES and not _exists(n, tracked)
                     and not re.match(r"(--[a-z-]+|[A-Z_]+)/", n))  # a run's dir
    assert missing == [], "%s names files that do not exist: %s" % (doc, missing)


def test_the_tree_in_architecture_lists_every_product_module():
    listed = set(_tree_paths(_read("docs/ARCHITECTURE.md")))
    modules = set(p for p in _tracked() if p.startswith("diskbench/") and p.endswith(".py")
                  and not p.endswith("/__init__.py"))
    assert sorted(modules - listed) == []


_QUOTED_DEFAULT = re.compile(r"`(--[a-z-]+)` \(([0-9.]+)( s)?[,)]")


@pytest.mark.parametrize("doc", ("README.md", "docs/ARCHITECTURE.md", "docs/SECURITY.md"))
def test_defaults_quoted_in_the_docs_are_the_parsers_defaults(doc):
    defaults = {}
    for parser in (server_main.build_parser(), client_main.build_parser()):
        for action in parser._actions:
            for flag in action.option_strings:
                if isinstance(action.default, (int, float)) and \
                        not isinstance(action.default, bool):
                    defaults.setdefault(flag, set()).add(float(action.default))
    # the connection limits default to None on the command line: derived from
    # --clients, with these as the floor (server/__main__.py derive_limits)
    for flag, value in (("--max-connections", server_main.DEFAULT_MAX_CONNECTIONS),
                        ("--max-per-address", server_main.DEFAULT_MAX_PER_ADDRESS),
                        ("--max-clients", server_main.DEFAULT_MAX_CLIENTS)):
        defaults.setdefault(flag, set()).add(float(value))
    quoted = _QUOTED_DEFAULT.findall(_read(doc))
    checked = [(flag, float(value)) for flag, value, _ in quoted if flag in defaults]
    wrong = [(flag, value, sorted(defaults[flag])) for flag, value in checked
             if value not in defaults[flag]]
    assert wrong == []
    assert len(checked) >= 5  # the pattern still finds the doc's quoted defaults


def _demo_chunks_mb():
    """scripts/demo.py's CHUNKS_MB, read from its source (a script, not a module)."""
    text = _read("scripts/demo.py")
    return ast.literal_eval(re.search(r"^CHUNKS_MB = (.*)$", text, re.M).group(1))


def _quoted_constants():
    """(doc, phrase) for every constant a doc quotes with its value: each phrase is
    made from the constant, so a changed value (or a reworded row) shows here."""
    every = "second" if recorder.RETRY_S == 1 else "%g s" % recorder.RETRY_S
    return [
        ("README.md", "(%s MiB)" % ", ".join("%d" % n for n in plan.DEFAULT_CHUNK_MB)),
        ("README.md", "(%s MiB chunks)" % ", ".join("%d" % n for n in _demo_chunks_mb())),
        ("README.md", "`--chunk-mb` is below %d" % plan.MIN_CHUNK_MB),
        ("README.md", "a buffer of up to %d unacknowledged messages" % sender.BUFFER_MAX),
        ("README.md", "after %d in a row (`sender.SILENT_CLOSES_MAX`" % sender.SILENT_CLOSES_MAX),
        ("README.md", "(at most `BYE_GRACE_S`, %g s;" % supervisor.BYE_GRACE_S),
        ("README.md", "every %s (`RETRY_S`)" % every),
        ("README.md", "%g s more (`HELD_DRAIN_S`)" % recorder.HELD_DRAIN_S),
        ("README.md", "at most %g s (`liveness.MAX_WENT_AWAY_S`" % liveness.MAX_WENT_AWAY_S),
        ("README.md", "(default %g s, a day: `plan.MAX_RUN_S`)" % plan.MAX_RUN_S),
        ("README.md", "still live %g s (`liveness.OVERRUN_GRACE_S`)" % liveness.OVERRUN_GRACE_S),
        ("docs/SECURITY.md", "`liveness.OVERRUN_GRACE_S` (%g s)" % liveness.OVERRUN_GRACE_S),
        ("README.md", "a run ends within L + %g D + %g + 2 x %g + %g + %g s + the bound above, "
         "where L is the start lead (%g s + %g ms per `--max-clients`)" % (
             1 + liveness.READBACK_ALLOWANCE, protocol.END_SPREAD_MAX_S,
             liveness.OVERRUN_GRACE_S, 3 * liveness.LIVENESS_CHECK_S,
             liveness.SUMMARY_GRACE_S, go.START_LEAD_S, 1000 * go.START_LEAD_PER_CLIENT_S)),
        ("README.md", "at most %d at once, `control.MAX_REQUESTS`" % control.MAX_REQUESTS),
        ("README.md", "within %g s of its connect (`control.REQUEST_S`" % control.REQUEST_S),
        ("docs/SCALING.md", "`DRAIN_TIMEOUT_S`, %g s" % finalreport.DRAIN_TIMEOUT_S),
        ("docs/REPORT-FORMAT.md", "(sent after the hello, then every %s s)" % _ping_span()),
        ("docs/ARCHITECTURE.md", "after hello, then every %s s;" % _ping_span()),
        # each fact once (tests/test_rules_facts.py): the docs quote the one definition
        ("README.md", "every `--progress-interval` seconds (%g)" % cli.PROGRESS_INTERVAL_S),
        ("README.md", "[--log-dir ./%s]" % cli.DEFAULT_LOG_DIR),
        ("docs/ARCHITECTURE.md", "at most %d days (`--duration`," % (
            cli.MAX_SECONDS // cli.DAY_S)),
        ("docs/ARCHITECTURE.md", "or %d day (`--*-interval`, `--stall-timeout`)" % (
            cli.MAX_INTERVAL_S // cli.DAY_S)),
        ("docs/ARCHITECTURE.md", "`--max-files` 1..%d (the protocol's bound)" %
         protocol.FILES_MAX),
        ("docs/ARCHITECTURE.md", "`--file-mb` at most %d PiB" % (plan.MAX_MB * MIB >> 50)),
        ("docs/ARCHITECTURE.md", "is over %d characters" % protocol.NAME_MAX_CHARS),
        ("docs/ARCHITECTURE.md", "%d KiB max per line" % (protocol.MAX_LINE_BYTES // 1024)),
        ("docs/ARCHITECTURE.md", "`MAX_AGE_S` (%g s, `protocol/ctl.py`)" % channel.MAX_AGE_S),
        ("docs/ARCHITECTURE.md", "`--stall-timeout` (%g s, `STALL_TIMEOUT_S`)" %
         plan.STALL_TIMEOUT_S),
    ]


def _ping_span():
    """'5-15': the range of waits between two pings (handler.PING_INTERVAL_S
    times each end of PING_JITTER)."""
    low, high = handler.PING_JITTER
    return "%g-%g" % (handler.PING_INTERVAL_S * low, handler.PING_INTERVAL_S * high)


def test_constants_quoted_in_the_docs_are_the_codes_values():
    """Every value the README (and SCALING.md) quotes beside a constant's name, the
    default chunk sizes and the demo's, is the constant's value in the code."""
    missing = [(doc, phrase) for doc, phrase in _quoted_constants()
               if phrase not in " ".join(_read(doc).split())]
    assert missing == [], "the docs do not say (or no longer say): %s" % missing


_README_REFERENCE = re.compile(r"""README(?:\.md)?(?:'s)?[,:]? (?:["']([A-Z][^"'\n]*)["']|"""
                               r"""([A-Z][a-z ]+)\))""")


def test_references_to_readme_sections_name_its_headings():
    """Where the docs or the code point to a README section by name ('README "How
    many clients"'), the README has that section, so moving text cannot orphan them."""
    headings = set(re.findall(r"^#+ (.+)$", _read("README.md"), re.M))
    # scripts/mutations.py's ``new`` texts are breakages on purpose
    named, files = [], [p for p in _tracked() if p.endswith((".md", ".py"))
                        and p != "scripts/mutations.py"]
    for path in files:
        for quoted, bare in _README_REFERENCE.findall(" ".join(_read(path).split())):
            named.append((path, quoted or bare))
    assert len(named) >= 5  # the pattern still finds the references
    assert [(path, name) for path, name in named if name not in headings] == []


#: What follows a dot in a file name, not an attribute (`report.txt`, `control.sock`).
_FILE_SUFFIXES = ("py", "md", "txt", "html", "sock", "lock", "json", "jsonl", "log", "csv")
_DOTTED = re.compile(r"`([A-Za-z_]\w*)\.([A-Za-z_]\w*)(?:\(\))?`")


def _product_modules():
    """{basename: [module, ...]} of every module of the diskbench package."""
    found = {}
    for top, _dirs, files in os.walk(os.path.join(REPO, "diskbench")):
        for base in sorted(f[:-3] for f in files if f.endswith(".py")):
            path = os.path.relpath(os.path.join(top, base), REPO).split(os.sep)
            name = ".".join(path if base != "__init__" else path[:-1])
            found.setdefault(name.split(".")[-1], []).append(importlib.import_module(name))
    return found


def _has(cls, attr):
    """``cls`` has ``attr``: on the class, or set on its instances (self.attr)."""
    if hasattr(cls, attr):
        return True
    return bool(re.search(r"self\.%s\b" % attr, inspect.getsource(cls)))


@pytest.mark.parametrize("doc", ["README.md"] + sorted(
    "docs/" + name for name in os.listdir(os.path.join(REPO, "docs")) if name.endswith(".md")))
def test_names_the_docs_quote_exist_in_the_code(doc):
    """Every `module.NAME` and `Class.attribute` a doc quotes (`registry.MAX_WENT_AWAY_S`,
    `pollio.Poller`, `Registry.release_go`) is there in the code: a name that moved or
    went cannot stay quoted at its old home."""
    modules = _product_modules()
    classes = {}
    for mods in modules.values():
        for mod in mods:
            for name, value in vars(mod).items():
                if isinstance(value, type) and value.__module__ == mod.__name__:
                    classes.setdefault(name, []).append(value)
    checked, missing = 0, []
    for owner, attr in sorted(set(_DOTTED.findall(_read(doc)))):
        if attr in _FILE_SUFFIXES:
            continue
        if owner in modules:
            found = any(hasattr(mod, attr) for mod in modules[owner])
        elif owner in classes:
            found = any(_has(cls, attr) for cls in classes[owner])
        else:
            continue
        checked += 1
        if not found:
            missing.append("%s.%s" % (owner, attr))
    assert missing == [], "%s quotes names the code does not have: %s" % (doc, missing)
    if doc in ("README.md", "docs/ARCHITECTURE.md", "docs/SECURITY.md"):
        assert checked >= 5  # the pattern still finds the doc's names


def _row(doc, key):
    """The meaning column of ``key``'s row in a doc's key table."""
    m = re.search(r"^\| `%s` \| (.*) \|$" % re.escape(key), _read(doc), re.M)
    assert m, "%s has no row for %s" % (doc, key)
    return m.group(1)


def test_report_format_names_every_state_a_client_can_end_in():
    """REPORT-FORMAT's `clients[].state` row names every state the registry has
    (a state added to states.STATES must be documented)."""
    row = _row("docs/REPORT-FORMAT.md", "clients[].state")
    assert [s for s in states.STATES if "`%s`" % s not in row] == []


def test_report_format_puts_the_aggregate_on_the_clock_the_code_uses():
    """The aggregate is computed on the server's clock (report.METHOD says so in
    every report); REPORT-FORMAT's aggregate section says the same clock."""
    section = _read("docs/REPORT-FORMAT.md").split("## aggregate", 1)[1].split("\n## ", 1)[0]
    said = "on the server's clock"
    assert said in report_build.METHOD
    assert said in " ".join(section.split()) and "client clocks" not in section


def test_readme_gives_every_exit_code_of_rerender_and_compare():
    """Every exit code python -m diskbench.report returns (read from its source) is
    in the README's sentence about them."""
    from diskbench import exitcodes
    source = _read("diskbench/report/__main__.py")
    codes = sorted(set(getattr(exitcodes, name)
                       for name in re.findall(r"exitcodes\.([A-Z_]+)", source)
                       if isinstance(getattr(exitcodes, name), int)))   # not a program name
    assert len(codes) >= 2  # the pattern still finds them
    text = " ".join(_read("README.md").split())
    sentence = text[text.index("Re-render and compare exit"):]
    sentence = sentence[:sentence.index(". ")]
    assert [c for c in codes if not re.search(r"\b%d\b" % c, sentence)] == []


def test_the_docs_call_the_wheel_universal_as_setup_cfg_builds_it():
    """setup.cfg builds one universal wheel (py2.py3); MULTIHOST.md names that wheel
    and no doc says a wheel is for Python 3 hosts only."""
    assert re.search(r"^universal = 1$", _read("setup.cfg"), re.M)
    assert "-py2.py3-none-any.whl" in _read("docs/MULTIHOST.md")
    for doc in ("README.md", "docs/MULTIHOST.md"):
        assert "for Python 3 hosts" not in " ".join(_read(doc).split()), doc
