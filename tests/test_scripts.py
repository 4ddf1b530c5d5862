"""The scripts still start: the bench's flags parse and its data-path probe
(which builds real perf messages) runs; `make bench` itself takes 25 minutes."""
import json
import sys


def test_bench_vs_fio_help_and_data_path_run(procs):
    code, out, err = procs.run(["scripts/bench_vs_fio.py", "--help"], timeout=60)
    assert code == 0 and "--fio-buffer" in out, err
    code, out, err = procs.run(["scripts/bench_vs_fio.py", "--data-path"], timeout=120)
    assert code == 0, err
    figures = json.loads(out)
    assert figures["python"] == "%d.%d.%d" % sys.version_info[:3]
    assert figures["perf_messages_encoded_per_s"] > 0 and figures["payload_stamp_mib_s"] > 0
