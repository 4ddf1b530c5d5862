"""Files that are either wholly there or not at all."""
import os


def atomic_write(path, data):
    """Write ``data`` (bytes) to ``path`` via a temp file + fsync + rename; on
    failure the temp file is removed and the old ``path`` (if any) is left as
    it was."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except (IOError, OSError):
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
