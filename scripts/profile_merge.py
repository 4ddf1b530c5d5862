"""Add up the cProfile dumps of a profiled server run (debug aid).

Run the server with DISKBENCH_PROFILE_DIR=DIR (every handler thread and the
recorder thread dump their stats there as they end), then:

    python scripts/profile_merge.py DIR [--messages N] [--top 25]

prints the handler threads' and the recorder's top functions by own time,
and with --messages the microseconds per message of each.
"""
from __future__ import division, print_function

import argparse
import glob
import os
import pstats
import sys


def merged(paths):
    stats = None
    for path in paths:
        if stats is None:
            stats = pstats.Stats(path)
        else:
            stats.add(path)
    return stats


#: Calls whose own time is mostly waiting (blocked, or for the GIL), not work.
BLOCKING = ("recv_into", "recv", "acquire", "send", "sendall", "write", "lseek",
            "wait", "select", "poll", "readline", "sleep")


def _blocking(func):
    """``<method 'recv' of ...>``, ``<built-in method time.sleep>``, ``<posix.write>``."""
    if not func.startswith("<"):
        return False
    words = func.strip("<>").replace("'", " ").split()
    names = [w.split(".")[-1] for w in words]
    return any(name in BLOCKING for name in names[:3])


def show(title, stats, messages, top):
    total = stats.total_tt
    work = sum(row[2] for (_p, _l, func), row in stats.stats.items()
               if not _blocking(func))
    print("== %s: %d calls, %.2f s own time%s" % (
        title, stats.total_calls, total,
        ", %.1f us per message" % (1e6 * total / messages) if messages else ""))
    print("   Python work (own time outside blocking calls): %.2f s%s" % (
        work, ", %.1f us per message" % (1e6 * work / messages) if messages else ""))
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]
    for (path, line, func), (_cc, calls, tottime, _cumtime, _callers) in rows:
        per = " %7.2f us/msg" % (1e6 * tottime / messages) if messages else ""
        print("%9.3f s%s %9d  %s:%d(%s)" % (tottime, per, calls,
                                            os.path.basename(path), line, func))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir")
    p.add_argument("--messages", type=int, default=0)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    for tag in ("handler", "recorder"):
        paths = glob.glob(os.path.join(args.dir, tag + "-*.prof"))
        if paths:
            show("%s (%d threads)" % (tag, len(paths)), merged(paths), args.messages,
                 args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
