"""The handler's receive loop: several lines in one receive, a line split
across receives, all recorded once and acknowledged by batch.

The handler takes whatever one ``recv`` brings and handles every complete
line in it as one batch (one record batch, one ack naming the highest seq);
a partial line waits for the rest. Real server process, real socket.
"""
import os

from diskbench import protocol
from tests.helpers import read_jsonl
from tests.test_server_fakes import FakeClient, ServerProc


def test_lines_together_and_split_are_each_recorded_once_and_acked(procs, tmpdir):
    log_dir = str(tmpdir.join("logs"))
    server = ServerProc(procs, log_dir, ["--clients", "1", "--quiet",
                                         "--idle-timeout", "0.5"])
    client = FakeClient(server.port, "framed")
    client.begin()                                   # hello, go, start
    msgs = [client.build(protocol.HEARTBEAT, writer_pid=os.getpid(), writer_alive=True,
                         bytes_written=i << 20, chunks_written=i, progress_age_s=0.1)
            for i in range(1, 5)]
    lines = [protocol.encode(m) for m in msgs]
    half = len(lines[3]) // 2
    client.raw(b"".join(lines[:3]) + lines[3][:half])   # 3 whole lines + half of one
    client.wait_acked(msgs[2].seq)
    assert not [a for a in client.got(protocol.ACK) if a.upto_seq > msgs[2].seq], \
        "acked a line the server has only half of"
    client.raw(lines[3][half:])
    client.wait_acked(msgs[3].seq)
    stop = client.stop()
    client.send(protocol.BYE)
    client.wait_acked(stop.seq + 1)
    client.close()
    assert server.wait_exit(30) == 0, server.stderr()
    seqs = [r["seq"] for r in read_jsonl(os.path.join(log_dir, "perf.jsonl"))]
    assert sorted(seqs) == list(range(1, stop.seq + 2)), seqs   # each once
    # one ack per batch, never one per line for lines that came together
    assert len(client.got(protocol.ACK)) < stop.seq + 1
