"""The built wheel installs into a fresh virtualenv of this Python, and its
console scripts run a real (short) server + client there, outside the checkout.

Building needs setuptools/wheel from the package index pip is set up with (pip
builds in an isolated environment); about 15 s per Python.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

from diskbench import __version__, exitcodes
from tests.helpers import REPO, Procs, communicate, wait_until

#: Where the Makefile keeps the virtualenv tool that makes 2.7 environments.
VIRTUALENV = os.path.join(os.path.dirname(sys.prefix), "tools", "bin", "virtualenv")
NO_CHECKOUT = {"PYTHONPATH": ""}   # the installed package, not the checkout's


def _run(args, cwd=None):
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.communicate()[0].decode("utf-8", "replace")
    assert proc.returncode == 0, (args, out[-3000:])
    return out


@pytest.fixture(scope="module")
def installed(tmpdir_factory):
    """bin/ of a fresh virtualenv holding only the built wheel (and pip)."""
    top = tmpdir_factory.mktemp("packaging")
    src = str(top.join("src"))
    shutil.copytree(os.path.join(REPO, "diskbench"), os.path.join(src, "diskbench"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.py", "setup.cfg", "README.md"):
        shutil.copy(os.path.join(REPO, name), src)
    dist = str(top.join("dist"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, src])
    wheels = os.listdir(dist)
    assert wheels == ["diskbench-%s-py2.py3-none-any.whl" % __version__]
    env = str(top.join("venv"))
    if sys.version_info[0] == 2:
        if not os.path.exists(VIRTUALENV):
            pytest.skip("no virtualenv tool at %s (make env builds it)" % VIRTUALENV)
        base = os.path.join(getattr(sys, "real_prefix", sys.prefix), "bin", "python")
        _run([VIRTUALENV, "-q", "-p", base, env])
    else:
        _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", env])
    _run([os.path.join(env, "bin", "pip"), "install", "-q", "--no-index", "--no-deps",
          os.path.join(dist, wheels[0])], cwd=str(top))
    return os.path.join(env, "bin")


def _script(procs, bindir, name, args, cwd):
    return procs.start([os.path.join(bindir, name)] + list(args), env=NO_CHECKOUT, cwd=cwd)


#: The console scripts setup.py installs: each answers --version and --help, and
#: names itself in its usage and error lines.
SCRIPTS = ("diskbench-client", "diskbench-server", "diskbench-report", "diskbench-launch")


def test_console_scripts_install_and_name_themselves(installed, tmpdir):
    """Every console script (launch too) is installed, says its version, and its
    usage and error lines start with the name it was run as."""
    procs = Procs(python=os.path.join(installed, "python"))
    try:
        where = procs.start(["-c", "import diskbench; print(diskbench.__file__)"],
                            env=NO_CHECKOUT, cwd=str(tmpdir))
        out, _ = communicate(where, 30)
        assert out.startswith(os.path.dirname(installed)), out  # not the checkout
        for name in SCRIPTS:
            proc = _script(procs, installed, name, ["--version"], str(tmpdir))
            out, err = communicate(proc, 30)
            assert proc.returncode == 0 and (out + err).strip() == "diskbench %s" % __version__
            proc = _script(procs, installed, name, ["--help"], str(tmpdir))
            out, err = communicate(proc, 30)
            assert proc.returncode == 0 and out.startswith("usage: %s " % name), out
        for name, args in (("diskbench-client", ["--no-such-flag"]),
                           ("diskbench-server", ["--no-such-flag"]),
                           ("diskbench-report", ["--no-such-flag"]),
                           ("diskbench-launch", ["--hosts", "no-such-file", "--", "d"])):
            proc = _script(procs, installed, name, args, str(tmpdir))
            out, err = communicate(proc, 30)
            assert proc.returncode == exitcodes.USAGE
            assert err.startswith("%s: error: " % name) and "see %s --help" % name in err, err
    finally:
        procs.cleanup()


def test_console_scripts_run_a_short_benchmark(installed, tmpdir):
    procs = Procs(python=os.path.join(installed, "python"))
    try:
        server = _script(procs, installed, "diskbench-server", [
            "--port", "0", "--host", "127.0.0.1", "--clients", "1", "--quiet",
            "--log-dir", "logs"], str(tmpdir))
        first = server.stdout.readline().decode("utf-8")
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", first).group(1))
        data = tmpdir.mkdir("data")
        client = _script(procs, installed, "diskbench-client", [
            "--server", "127.0.0.1:%d" % port, "--name", "pkg", "--duration", "2",
            "--chunk-mb", "10", "--file-mb", "10", "--perf-interval", "0.5", "--force",
            "--log-dir", "client-logs", str(data)], str(tmpdir))
        out, err = communicate(client, 60)
        assert client.returncode == exitcodes.OK, err[-3000:]
        out, err = communicate(server, 30)
        assert server.returncode == exitcodes.OK, err[-3000:]
        wait_until(lambda: tmpdir.join("logs", "report.json").check(), 5, what="report")
        report = tmpdir.join("logs", "report.json").read()
        assert '"client": "pkg"' in report and os.listdir(str(data)) == []
    finally:
        procs.cleanup()
