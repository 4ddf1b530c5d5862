"""The scripts still start: the bench's flags parse and its data-path probe
(which builds real perf messages) runs; `make bench` itself takes 25 minutes;
the mutation list names text and tests that are there."""
import json
import os
import re
import sys

from tests.helpers import REPO


def test_bench_vs_fio_help_and_data_path_run(procs):
    code, out, err = procs.run(["scripts/bench_vs_fio.py", "--help"], timeout=60)
    assert code == 0 and "--fio-buffer" in out, err
    code, out, err = procs.run(["scripts/bench_vs_fio.py", "--data-path"], timeout=120)
    assert code == 0, err
    figures = json.loads(out)
    assert figures["python"] == "%d.%d.%d" % sys.version_info[:3]
    assert figures["perf_messages_encoded_per_s"] > 0 and figures["payload_stamp_mib_s"] > 0


def test_every_mutation_breaks_text_that_is_there_once_and_names_real_tests():
    """scripts/mutations.py stays true to the code: each ``old`` is found exactly
    once in its file (a merge or an edit that moves it leaves ``make mutate`` a
    STALE entry, counted as missed, only when someone runs it), ids are unique, and
    every test named is a function in the file named."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    try:
        import mutations
    finally:
        sys.path.pop(0)
    ids = [m["id"] for m in mutations.MUTATIONS]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    problems = []
    for m in mutations.MUTATIONS:
        with open(os.path.join(REPO, m["file"]), "rb") as f:
            text = f.read().decode("utf-8")
        if text.count(m["old"]) != 1:
            problems.append("%s: old found %d times in %s" % (
                m["id"], text.count(m["old"]), m["file"]))
        for test in m["tests"]:
            path, _, name = test.partition("::")
            name = re.sub(r"\[.*$", "", name)
            with open(os.path.join(REPO, path), "rb") as f:
                source = f.read().decode("utf-8")
            if name and not re.search(r"^def %s\(" % re.escape(name), source, re.M):
                problems.append("%s: no test %s" % (m["id"], test))
    assert not problems, "\n".join(problems)
