"""What each accepted message does to its client's record: one method per
message type (``APPLY``), the clock offset from timestamps and from pongs,
and the sentence for a pong offset beyond belief.

A mixin of ``ledger.Ledger`` (which dedups a message, then applies it here),
apart so that a message type's rule is found under its name, away from the
bookkeeping around it. Runs under the ledger's lock; said log lines go
through ``self.say`` (emitted once the lock is released).
"""
import logging

from diskbench import metrics, plan, protocol
from diskbench.stamp import kinds_text
from diskbench.states import FAILED, FINISHED, JOINED, LIVE, RUNNING, STALLED, TERMINAL

# The server's loggers (diskbench/server/__init__.py), by name: a re-render
# replays through this module too, and the report never imports the server.
log = logging.getLogger("diskbench.server")
event = logging.getLogger("diskbench.server.event")
verbose = logging.getLogger("diskbench.server.verbose")

#: Errors and notes kept per client for the report (the rest are only counted).
KEEP_TEXTS_MAX = 1000
#: Clocks differing by more than this (client vs server) are warned about.
CLOCK_SKEW_WARN_S = 1.0
#: A pong later than this after its ping is not used for the clock.
PING_RTT_MAX_S = 60.0
#: Pongs within 2 x the shortest round trip plus this count for the drift.
PING_RTT_SLACK_S = 0.002
#: A client whose measured offset moves more than this during the run is flagged.
CLOCK_DRIFT_WARN_S = 0.05
#: Messages seen before a skew is said live (early ones may have queued).
SKEW_SAMPLES_MIN = 10
#: Why a client the server stopped before it wrote a byte is FAILED, not FINISHED
#: (after "stopped at the server's request" or the operator's reason).
STOPPED_UNWRITTEN = "before it wrote anything: nothing was measured"


def unbelieved_offset(name, offset):
    """The report's sentence for a pong offset beyond CLOCK_OFFSET_MAX_S."""
    return ("client %s's clock is %s the server's (over %g s, "
            "protocol.CLOCK_OFFSET_MAX_S): offset not used; its go carried none and "
            "its figures are put on the server's clock by when its messages arrived"
            % (name, metrics.describe_offset(offset), protocol.CLOCK_OFFSET_MAX_S))


def wrote(client, stop):
    """Whether ``client`` wrote anything before its ``stop`` summary: it started
    its writer and has a byte to show, in the summary or in its intervals."""
    return client.start is not None and bool(stop.bytes_written or client.perf_bytes)


class Effects(object):
    """The per-type half of ``ledger.Ledger``: ``APPLY`` names the method of
    each message type (total: tests/test_protocol.py)."""

    def _clock_sample(self, client, msg, recv_ts):
        client.clock_offset_s = metrics.clock_ahead(client.clock_offset_s, msg.ts, recv_ts)
        if not client.skew_warned and abs(client.clock_offset_s) > CLOCK_SKEW_WARN_S \
                and client.messages >= SKEW_SAMPLES_MIN:
            client.skew_warned = True
            self.say(event.info, "client %s: its clock is %+.1f s off the server's (or its "
                     "messages are that late); its times are put on the server's "
                     "clock in the report", client.name, client.clock_offset_s)

    def _apply_hello(self, client, msg, recv_ts):
        """Nothing more than the client the ledger added; the server's
        ``go.GoRelease`` releases go here once --clients N said hello."""

    def _apply_start(self, client, msg, recv_ts):
        client.start_ts = recv_ts
        client.start = msg
        client.started_at = msg.started_at
        for key in ("chunk_bytes", "file_bytes", "duration_s"):  # as run, when said
            if msg.data.get(key) is not None:
                client.plan[key] = msg.data[key]
        if msg.data.get(plan.VERIFY):  # as run (a re-render has no go to say it)
            client.verify = True
            client.verify_source = plan.FROM_CLIENT if client.hello.data.get(plan.VERIFY) \
                else plan.FROM_SERVER
        if client.state == JOINED:
            self._transition(client, RUNNING, "writing")
        self.say(event.info,
                 "client %s started writing (writer pid %d, %s, preallocate %s)",
                 client.name, msg.writer_pid, msg.sync_mode, msg.preallocate)

    def _apply_perf(self, client, msg, recv_ts):
        d = msg.data      # (its fields by key: the hot path of a big run)
        t_start, t_end, nbytes, io_s = d["t_start"], d["t_end"], d["bytes"], d["io_s"]
        client.intervals.append(t_start, t_end, nbytes)
        client.recent.append((client.last_seen, t_end - t_start, nbytes))
        client.perf_bytes += nbytes
        client.perf_chunks += d["chunks"]
        client.io_s += io_s
        client.hist.merge_wire(d["lat_hist"], total=io_s, lo=d["lat_min_s"],
                               hi=d["lat_max_s"])

    def _apply_readback(self, client, msg, recv_ts):
        client.read_files += 1
        client.read_bytes += msg.bytes
        client.read_file_bytes += msg.file_bytes
        client.read_io_s += msg.io_s
        client.read_modes.add(msg.read_mode)
        client.read_hist.merge_wire(msg.lat_hist, total=msg.io_s, lo=msg.lat_min_s,
                                    hi=msg.lat_max_s)
        bad = 0
        for kind in protocol.BAD_KINDS:
            client.bad_counts[kind] += msg.data[kind]
            bad += msg.data[kind]
        if bad:
            self.say(event.info, "client %s: file %d read back with %d bad blocks (%s)",
                     client.name, msg.file_index, bad, kinds_text(msg.data))

    def _apply_bad_block(self, client, msg, recv_ts):
        if len(client.bad_blocks) < KEEP_TEXTS_MAX:
            client.bad_blocks.append(msg)
        self.say(log.warning, "client %s bad block (%s) in %s at offset %d: expected "
                 "%s, found %s", client.name, msg.kind, msg.path, msg.offset,
                 msg.expected, msg.found)

    def _apply_heartbeat(self, client, msg, recv_ts):
        client.last_heartbeat = (recv_ts, msg)
        stuck = msg.progress_age_s >= self.stall_timeout or not msg.writer_alive
        why = "writer %s" % ("no progress for %.1f s" % msg.progress_age_s
                             if msg.writer_alive else "process is not alive")
        if self._after_its_run(client, msg):
            pass  # sampled after the writer's run ended: an idle writer is no stall
        elif stuck and client.state == RUNNING:
            self._transition(client, STALLED, why)
        elif stuck and client.state == STALLED:
            client.reason = why  # the stall's true length so far
        elif not stuck and client.state == STALLED:
            self._transition(client, RUNNING, "writer progressing again")
        if not msg.writer_alive:  # (every heartbeat itself is in perf.jsonl)
            self.say(log.warning,
                     "client %s heartbeat: its writer %d is NOT alive", client.name,
                     msg.writer_pid)

    @staticmethod
    def _after_its_run(client, msg):
        """True when heartbeat ``msg`` was sampled (its ts: the client's clock
        when the heartbeat process looked) at or after the end of the writer's
        run (its start message's started_at + duration, the same clock): a
        beat that waited in a paused client's pipe is judged by when it was
        taken, not by when it came."""
        duration = client.plan.get("duration_s")
        if client.started_at is None or not duration:
            return False
        return msg.ts >= client.started_at + duration

    def _apply_stats(self, client, msg, recv_ts):
        client.cpu_samples.append(msg.cpu_percent)
        client.rss_samples.append(msg.rss_bytes)

    def _apply_rollover(self, client, msg, recv_ts):
        client.close_times.append(msg.close_s)
        self.say(verbose.info,
                 "client %s rollover #%d (file %d, %.1f MiB, fsync+close %.1f ms)",
                 client.name, len(client.close_times), msg.file_index,
                 metrics.mib(msg.file_bytes), msg.close_s * 1000.0)

    def _apply_stop(self, client, msg, recv_ts):
        client.stop_ts = recv_ts
        client.stop = msg
        self.say(event.info, "client %s stopped (%s): %.1f MiB in %.1f s, %d rollovers, "
                 "%d dropped messages", client.name, msg.reason,
                 metrics.mib(msg.bytes_written), msg.elapsed_s, msg.rollovers,
                 msg.dropped_messages)
        if client.state in TERMINAL:
            return
        bad = sum(client.bad_counts.values())
        if bad:  # whatever its speed
            self._transition(client, FAILED, "its data did not come back: %d bad blocks "
                             "read back (%s)" % (bad, kinds_text(client.bad_counts)))
        elif client.state == STALLED:
            self._transition(client, FAILED, "stopped while stalled (%s): its last "
                             "figures may predate the stall" % client.reason)
        elif msg.reason == protocol.STOP_DURATION:
            self._transition(client, FINISHED, "ran its full duration")
        elif msg.reason == protocol.STOP_SERVER and not wrote(client, msg):
            # (ctl stop before go, a server interrupted before it): it ran nothing
            self._transition(client, FAILED, "stopped at the server's request %s"
                             % STOPPED_UNWRITTEN)
        elif msg.reason == protocol.STOP_SERVER:
            self._transition(client, FINISHED, "stopped early at the server's request")
        elif msg.reason == protocol.STOP_SIGNAL:
            self._transition(client, FAILED, "interrupted by a signal on the client")
        else:
            last = client.errors[-1].reason if client.errors else "no error message"
            self._transition(client, FAILED, "stopped by an error: %s" % last)

    def _apply_error(self, client, msg, recv_ts):
        if len(client.errors) < KEEP_TEXTS_MAX:
            client.errors.append(msg)
        else:
            client.texts_dropped += 1
        self.say(log.warning,
                 "client %s error from %s: %s (errno %s, fatal %s)", client.name,
                 msg.source, msg.reason, msg.errno, msg.fatal)
        if msg.fatal and client.state in LIVE:
            self._transition(client, FAILED, "%s error: %s" % (msg.source, msg.reason))

    def _apply_note(self, client, msg, recv_ts):
        if len(client.notes) >= KEEP_TEXTS_MAX:
            client.texts_dropped += 1
            return
        client.notes.append(msg.text)
        self.say(log.info, "client %s note: %s", client.name, msg.text)

    def _apply_pong(self, client, msg, recv_ts):
        """Round trip = receive - send of the ping (its nonce); the client's
        clock at the middle of it says how far ahead of ours it is."""
        sent = msg.nonce / float(protocol.PING_NONCE_PER_S)
        rtt = recv_ts - sent
        if not 0.0 <= rtt <= PING_RTT_MAX_S:
            return  # not a pong to one of our pings (or absurdly late)
        offset = msg.client_time - (sent + recv_ts) / 2.0
        if abs(offset) > protocol.CLOCK_OFFSET_MAX_S:
            # beyond belief: never sent in a go nor used for its figures
            if client.offset_unbelieved is None:
                self._note(unbelieved_offset(client.name, offset))
            client.offset_unbelieved = offset
            return
        if client.rtt_s is None or rtt < client.rtt_s:
            client.rtt_s, client.ping_offset_s = rtt, offset
            band = client.offset_band_rtt_s
            if band is not None and band > 2 * rtt + PING_RTT_SLACK_S:
                # the spread so far holds pongs of slower round trips than the
                # band now admits (a congested link or a busy server at the
                # start: each such offset is off by up to half its round trip):
                # it starts again from this one, or it would call their error drift
                client.offset_low = client.offset_high = None
                client.offset_band_rtt_s = None
                client.drift_warned = False
        if rtt <= 2 * client.rtt_s + PING_RTT_SLACK_S:
            low, high = client.offset_low, client.offset_high
            client.offset_low = offset if low is None else min(low, offset)
            client.offset_high = offset if high is None else max(high, offset)
            client.offset_band_rtt_s = max(rtt, client.offset_band_rtt_s or 0.0)
            drift = client.offset_high - client.offset_low
            if drift > CLOCK_DRIFT_WARN_S and not client.drift_warned:
                client.drift_warned = True
                self.say(event.info, "client %s: its clock moved %.3f s against the "
                         "server's during the run", client.name, drift)

    def _apply_bye(self, client, msg, recv_ts):
        client.said_bye = True


APPLY = {
    protocol.HELLO: "_apply_hello",
    protocol.START: "_apply_start",
    protocol.PERF: "_apply_perf",
    protocol.HEARTBEAT: "_apply_heartbeat",
    protocol.STATS: "_apply_stats",
    protocol.ROLLOVER: "_apply_rollover",
    protocol.STOP: "_apply_stop",
    protocol.ERROR: "_apply_error",
    protocol.NOTE: "_apply_note",
    protocol.BYE: "_apply_bye",
    protocol.PONG: "_apply_pong",
    protocol.READBACK: "_apply_readback",
    protocol.BAD_BLOCK: "_apply_bad_block",
}
