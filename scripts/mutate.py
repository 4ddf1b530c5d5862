"""make mutate: break the product on purpose and check a test goes red.

Each entry of MUTATIONS (scripts/mutations.py) replaces one exact piece of
product code with a broken one, in a scratch copy of the tree (the checkout is
never touched), and runs the tests named for it. A mutation that no test
catches is a test that proves nothing: the run fails and names it.

    python scripts/mutate.py [--python PY] [--python2 PY2] [ID ...]

An entry with ``py2`` set guards a Python 2.7 path (compat): it runs under
--python2, and counts as missed when there is none.
"""
from __future__ import print_function

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from mutations import MUTATIONS  # noqa: E402

#: pytest's exit code when a test failed (the only outcome that catches a mutation).
PYTEST_FAILED = 1

_SKIP = (".venv", ".git", "__pycache__", ".pytest_cache", "build", "dist")


def _copy_tree(dest):
    shutil.copytree(REPO, dest, ignore=lambda d, names: [
        n for n in names if n in _SKIP or n.endswith(".pyc")])


def apply(root, mutation):
    """Apply one mutation in ``root``; raises ValueError if its text is not
    found exactly once (the list has gone stale)."""
    path = os.path.join(root, mutation["file"])
    with open(path) as f:
        text = f.read()
    count = text.count(mutation["old"])
    if count != 1:
        raise ValueError("%s: the text to break occurs %d times in %s (update "
                         "scripts/mutations.py)" % (mutation["id"], count, mutation["file"]))
    with open(path, "w") as f:
        f.write(text.replace(mutation["old"], mutation["new"]))


def _pytest(python, root, tests, timeout):
    """(exit code, seconds, output) of pytest on ``tests`` in ``root``."""
    t0 = time.time()
    env = dict(os.environ)
    env["DISKBENCH_GIT_DIR"] = os.path.join(REPO, ".git")  # the copy has no history
    proc = subprocess.Popen(
        [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
         "--timeout=%d" % timeout] + list(tests),
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = proc.communicate()[0].decode("utf-8", "replace")
    return proc.returncode, time.time() - t0, out


def run_one(python, mutation, timeout):
    scratch = tempfile.mkdtemp(prefix="diskbench-mutant-")
    root = os.path.join(scratch, "tree")
    try:
        _copy_tree(root)
        apply(root, mutation)
        code, took, out = _pytest(python, root, mutation["tests"], timeout)
        # only a failed test is a catch: pytest's 2-4 (a file that does not
        # collect, an internal or usage error) says nothing about the mutation
        caught = True if code == PYTEST_FAILED else False if code in (0, 5) else None
        return caught, took, out.strip().splitlines()[-1:] or [""]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def baseline(python, chosen, timeout):
    """The named tests must pass on the unbroken tree, or "caught" means nothing.
    Returns (ok, seconds, last lines of the output)."""
    tests = sorted(set(t for m in chosen for t in m["tests"]))
    scratch = tempfile.mkdtemp(prefix="diskbench-baseline-")
    root = os.path.join(scratch, "tree")
    try:
        _copy_tree(root)
        code, took, out = _pytest(python, root, tests, timeout)
        return code == 0, took, out.strip().splitlines()[-15:]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--python2", help="a Python 2.7 for the entries marked py2")
    p.add_argument("--timeout", type=int, default=120, help="per test, seconds")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the first run of every named test on the unbroken tree")
    p.add_argument("ids", nargs="*", help="only these mutation ids")
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.ids or m["id"] in args.ids]
    unknown = sorted(set(args.ids) - set(m["id"] for m in MUTATIONS))
    if unknown:
        p.error("no such mutation: %s" % ", ".join(unknown))
    def python_of(m):
        return args.python2 if m.get("py2") else args.python
    pythons = sorted(set(python_of(m) for m in chosen if python_of(m)))
    for python in pythons if args.baseline else ():
        ok, took, tail = baseline(python, [m for m in chosen if python_of(m) == python],
                                  args.timeout)
        print("%-7s %-28s %5.1fs  %s" % ("ok" if ok else "FAILED", "(baseline: unbroken)",
                                         took, tail[-1] if tail else ""))
        if not ok:
            print("\n".join(tail))
            print("the named tests fail on the unbroken tree under %s: fix them first"
                  % python)
            return 2
    missed = []
    for m in chosen:
        if not python_of(m):
            print("MISSED  %-28s no --python2 to run it under" % m["id"])
            missed.append(m["id"])
            continue
        try:
            caught, took, last = run_one(python_of(m), m, args.timeout)
        except ValueError as exc:
            print("STALE   %-28s %s" % (m["id"], exc))
            missed.append(m["id"])
            continue
        print("%-7s %-28s %5.1fs  %s  [%s]" % (
            {True: "caught", False: "MISSED", None: "ERROR"}[caught], m["id"], took,
            last[0], ", ".join(t.split("::")[-1] for t in m["tests"])))
        if not caught:
            missed.append(m["id"])
    print("%d mutations, %d caught, %d missed%s" % (
        len(chosen), len(chosen) - len(missed), len(missed),
        (": " + ", ".join(missed)) if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
