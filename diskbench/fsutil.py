"""Files that are either wholly there or not at all."""
import os


def atomic_write(path, data):
    """Write ``data`` (bytes, or an iterable of bytes written as it is made:
    a big report is never whole in memory) to ``path`` via a temp file +
    fsync + rename; on any failure (the disk, or whatever makes the chunks)
    the temp file is removed and the old ``path`` (if any) is left as it was."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            for chunk in ((data,) if isinstance(data, bytes) else data):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
