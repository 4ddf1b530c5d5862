"""Breakages that must each turn at least one test red (``make mutate``).

One entry per promise: ``file`` and the exact ``old`` text (found once), the
broken ``new`` text, and the ``tests`` that must catch it. Add an entry
whenever a test is written for a promise; keep each ``old`` short.
"""
_H = "tests/faults/test_server_hardening.py::"

MUTATIONS = [
    dict(id="rejoin-grace-ignored", file="diskbench/server/registry.py",
         old="        if waited < grace:\n            return True",
         new="        if False:\n            return True",
         tests=[_H + "test_went_away_client_rejoins_within_grace_and_finishes"]),
    dict(id="dedup-by-high-water", file="diskbench/server/registry.py",
         old="        if msg.seq in client.seen:",
         new="        if msg.seq <= client.last_seq:",
         tests=[_H + "test_takeover_with_a_seq_jump_cannot_discard_the_real_clients_"
                "messages"]),
    dict(id="seq-jump-unbounded", file="diskbench/server/registry.py",
         old="return SEQ_JUMP_BASE + int(SEQ_RATE_MAX * since)",
         new="return 2 ** 62",
         tests=[_H + "test_takeover_with_a_seq_jump_cannot_discard_the_real_clients_"
                "messages"]),
    dict(id="refusal-discloses-owner", file="diskbench/server/registry.py",
         old='"process; give each client its own name (--name)" % msg.name)',
         new='"process %s; give each client its own name" % (msg.name, '
             'client.hello.pid))',
         tests=[_H + "test_name_refusal_does_not_disclose_the_owner"]),
    dict(id="pause-not-noticed", file="diskbench/server/master.py",
         old="        if gap >= PAUSE_GAP_S:\n",
         new="        if False:\n",
         tests=[_H + "test_paused_server_does_not_blame_its_clients"]),
    dict(id="stall-never-shown", file="diskbench/server/registry.py",
         old="        if stuck and client.state == RUNNING:",
         new="        if False:",
         tests=[_H + "test_stalled_writer_is_shown_live_and_never_reported_finished"]),
    dict(id="short-start-hangs", file="diskbench/server/registry.py",
         old="            if self.expected_clients is not None and self.short_start is None:",
         new="            if self.expected_clients is not None:",
         tests=[_H + "test_fewer_clients_than_expected_go_on_after_start_timeout"]),
    dict(id="require-all-ignored", file="diskbench/server/registry.py",
         old="                if self.require_all:\n                    return []",
         new="                if False:\n                    return []",
         tests=[_H + "test_require_all_aborts_when_fewer_clients_came"]),
    dict(id="accept-spins-on-emfile", file="diskbench/server/master.py",
         old="            time.sleep(min(ACCEPT_BACKOFF_MAX_S,",
         new="            (min(ACCEPT_BACKOFF_MAX_S,",
         tests=[_H + "test_fd_exhaustion_backs_off_logs_once_and_recovers"]),
    dict(id="sighup-not-handled", file="diskbench/server/master.py",
         old="STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)",
         new="STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)",
         tests=[_H + "test_sighup_writes_the_report_like_sigterm"]),
    dict(id="skew-not-corrected", file="diskbench/server/report.py",
         old="    offset = c.clock_offset_s or 0.0\n",
         new="    offset = 0.0\n",
         tests=[_H + "test_clock_skew_is_detected_and_the_aggregate_uses_the_server_"
                "clock"]),
    dict(id="fd-limit-not-fitted", file="diskbench/server/master.py",
         old="            self.max_connections = fit\n",
         new="            pass\n",
         tests=[_H + "test_max_connections_beyond_the_fd_limit_is_lowered_and_said"]),
    dict(id="limits-not-derived-from-clients", file="diskbench/server/__main__.py",
         old="        args.max_connections = max(DEFAULT_MAX_CONNECTIONS, fit)",
         new="        args.max_connections = DEFAULT_MAX_CONNECTIONS",
         tests=["tests/test_server_ingest.py"]),
    dict(id="ack-before-write", file="diskbench/server/handler.py",
         old="        self.written.wait()\n",
         new="        pass\n",
         tests=["tests/test_server_ack_order.py"]),
    dict(id="handler-stack-too-small", file="diskbench/server/master.py",
         old="HANDLER_STACK_BYTES = 512 * 1024",
         new="HANDLER_STACK_BYTES = 64 * 1024",
         tests=[_H + "test_deeply_nested_json_is_refused_by_a_small_stack_handler"]),
]
