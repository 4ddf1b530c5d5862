"""Exit codes of both programs, named once (docs/ARCHITECTURE.md lists them).

Scripts driving many hosts branch on these, so they never change meaning.
"""

OK = 0                  # the run completed: every client finished cleanly
INTERNAL = 1            # a bug: a traceback was printed (please report it)
USAGE = 2               # a wrong flag or value (argparse's own code)

# server
SERVER_BIND = 3         # the port is in use or the address is not ours
SERVER_LOG_DIR = 4      # the log directory cannot be created or written, holds a finished
                        # run, or another server runs on it (its server.lock is held)
SERVER_INCOMPLETE = 5   # the report is written, but a client went away or failed, or not
                        # everything received is on disk, or a client's stop summary counts
                        # more than the server holds
SERVER_INTERRUPTED = 6  # SIGINT/SIGTERM/SIGHUP, or the operator's `ctl end`: the report
                        # is written with what was known

# python -m diskbench.server ctl (the local control command)
CTL_NO_SERVER = 7       # no server is running with that --log-dir (no control.sock, or one
                        # left by a server that died)
CTL_NO_CLIENT = 8       # `ctl stop NAME`: no client of that name, or it is not running
CTL_REFUSED = 9         # the server refused the request: the secret differs or is missing,
                        # another user, a request too old (a replay) or signed ahead of its
                        # clock, or too many control requests at once (busy)

# client
CLIENT_DIRECTORY = 10   # the target directory is missing, not a directory or not writable
CLIENT_SPACE = 11       # not enough free space for --max-files data files
CLIENT_ROLLOVER = 12    # the run cannot give 2 rollovers (plan.MIN_ROLLOVERS); see --force
CLIENT_SERVER = 13      # the server is unreachable, its name does not resolve, the port is not
                        # a diskbench server, or it has no secret while we have one,
                        # or it refused us (version, secret, limits),
                        # or (measurement done) it had not acknowledged every result by the
                        # end of --deliver-timeout: those are in client-NAME.undelivered.jsonl;
                        # or it acknowledged a seq we never sent (a takeover of our name?)
CLIENT_DISK_ERROR = 14  # the writer hit a disk error (ENOSPC, EIO ...) and stopped, or the
                        # start-up calibration did
CLIENT_CHILD_DIED = 15  # a writer/stats/heartbeat process died unexpectedly
CLIENT_INTERRUPTED = 16 # SIGINT/SIGTERM/SIGHUP (at any point: start-up checks, calibration,
                        # connecting, the run, shutdown) or the server asked us to stop early
CLIENT_WRITER_STALLED = 17  # the writer made no progress for --stall-timeout: it was still
                            # stalled when the run ended, or it did not stop when asked
                            # and had to be sent SIGTERM/SIGKILL
