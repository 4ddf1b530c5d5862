"""An ack means "on disk": proved with a recorder whose writes are slow.

The server runs in this process (its recorder's ``write_fd`` slowed down, the
only way to widen the window between queueing a record and writing it); a
protocol-built client on a real socket checks, as each ack arrives, that
perf.jsonl already holds every seq the ack covers.
"""
import json
import os
import threading
import time

from diskbench import exitcodes
from diskbench.server import __main__ as server_main
from diskbench.server.master import Master
from tests.test_server_fakes import FakeClient, play_full_run

#: Each write of the recorder takes this much longer: acks sent before the
#: write would arrive well before the line is on disk.
SLOW_WRITE_S = 0.2


def test_acks_are_sent_only_after_the_record_is_written(tmpdir):
    log_dir = str(tmpdir.join("logs"))
    args = server_main.derive_limits(server_main.build_parser().parse_args(
        ["--port", "0", "--host", "127.0.0.1", "--log-dir", log_dir, "--clients", "1",
         "--quiet", "--idle-timeout", "0.3"]))
    args.secret = None
    master = Master(args, out=open(os.devnull, "w"))
    master.open_logs()
    real_write = master.recorder.write_fd

    def slow_write(fd, data):
        time.sleep(SLOW_WRITE_S)
        return real_write(fd, data)
    master.recorder.write_fd = slow_write
    port = master.bind()[1]
    perf_path = os.path.join(log_dir, "perf.jsonl")
    early = []

    def on_ack(ack):  # in the client's reader thread, as the ack arrives
        with open(perf_path) as f:
            on_disk = set(json.loads(line)["seq"] for line in f if line.strip())
        if ack.upto_seq not in on_disk:
            early.append(ack.upto_seq)

    done = []

    def client():
        c = FakeClient(port, "careful", on_ack=on_ack)
        play_full_run(c, [[0.001], [0.002]], rollovers=1)
        c.close()
        done.append(c.seq)

    t = threading.Thread(target=client)
    t.daemon = True
    t.start()
    code = master.run()              # the main thread: it installs signal handlers
    t.join(10)
    assert done, "the client did not finish its run"
    assert code == exitcodes.OK
    assert not early, "acks for seqs not yet in perf.jsonl: %r" % early
