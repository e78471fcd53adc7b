"""Writing files safely: the one home of nngp-lut's atomic write, overwrite check, stale
temporary files, locks and the translation of OS failures into errors with advice.

Every file nngp-lut writes (tables, kernels, predictions, figures and their CSVs, scratch
tiles, a search's results) goes through :func:`atomic_write` or, for a search's results CSV
that grows row by row, is created by it and appended to under :func:`lock`.

* **Atomic.**  (:func:`atomic_write`, or :func:`atomic_target` for a writer that fills a
  file over time.)  The data go to ``.NAME.nngp-lut-tmp-PID`` in the same folder, are flushed to
  disk (fsync), and the temporary file is renamed over NAME (``os.replace``): a reader
  sees the old file or the new one, never half of one, even after SIGKILL or a power cut.
* **Recognisable leftovers.**  A process killed mid-write leaves its temporary file; the
  next write to the same NAME removes temporary files of processes that no longer run
  (:func:`clean_stale`).
* **Permissions.**  Files are created with ``open`` (mode 0o666 minus the umask), so they
  get the user's umask (``tempfile.mkstemp`` would make them 0600).
* **Locks.**  :func:`lock` takes an exclusive ``fcntl.flock`` lock, which the kernel
  releases when the process dies, so a killed run never leaves a stale lock.
"""

import contextlib
import errno
import os
import re
import warnings
from pathlib import Path

from .errors import Busy, DiskFull, FileFailure, OutputExists

#: Marker of nngp-lut's temporary files: ``.NAME.nngp-lut-tmp-PID``.
TEMP_TAG = ".nngp-lut-tmp-"
#: Marker of lock files beside an output: ``.NAME.nngp-lut-lock``.
LOCK_TAG = ".nngp-lut-lock"

_ADVICE = {
    errno.ENOENT: "no such file or folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.ENOSPC: "no space left on the device; free space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free space or write elsewhere",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOTDIR: "a part of the path is not a folder",
}


def os_failure(exc, path, action="write"):
    """The NNGPError for an OSError (or h5py's RuntimeError carrying an errno) met while
    ``action``-ing ``path``: DiskFull for ENOSPC and EDQUOT, else FileFailure, with one line
    of advice.  Other errors are returned as they are (they are not expected failures)."""
    if isinstance(exc, FileFailure) or not isinstance(exc, (OSError, RuntimeError)):
        return exc
    code = getattr(exc, "errno", None)
    if code is None:
        # h5py puts the C library's errno in its message only ("errno = 28"), in an OSError
        # or a RuntimeError; numpy reports a short write as "N requested and M written".
        found = re.search(r"errno = (\d+)", str(exc))
        code = (int(found.group(1)) if found else
                errno.ENOSPC if re.search(r"requested and \d+ written", str(exc)) else None)
    advice = _ADVICE.get(code)
    if advice is None:
        return exc
    cls = DiskFull if code in (errno.ENOSPC, errno.EDQUOT) else FileFailure
    new = cls(code, f"cannot {action} {path}: {advice}")
    new.filename = str(path)
    return new


def read_text(path, limit, *, what="file", error=FileFailure):
    """The text of a file the user names, read with a cap: at most ``limit`` bytes are
    read (a FIFO, a device such as /dev/urandom or a huge file never fills memory) and
    decoded as UTF-8.  Every failure is ``error`` (an NNGPError class taking one message)
    naming the file and what to do."""
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        reason = _ADVICE.get(exc.errno) or exc.strerror or str(exc)
        raise error(f"cannot read {what} {str(path)!r}: {reason}") from None
    if len(raw) > limit:
        raise error(f"{what} {str(path)!r} is longer than {limit} bytes; is it the right "
                    "file?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start} is "
                    f"0x{raw[exc.start]:02x}); is it the right file?") from None


def temp_path(path):
    """The temporary name of ``path`` for this process: ``.NAME.nngp-lut-tmp-PID``."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_TAG}{os.getpid()}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale(path):
    """Remove the temporary files of ``path`` left by nngp-lut processes that no longer
    run (killed mid-write).  Returns the paths removed."""
    path = Path(path)
    folder = path.parent
    removed = []
    try:
        candidates = list(folder.glob(f".{_glob_escape(path.name)}{TEMP_TAG}*"))
    except OSError:
        return removed
    for tmp in candidates:
        pid = tmp.name.rpartition(TEMP_TAG)[2]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def _glob_escape(name):
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def check_output(path, *, force=False, what="output"):
    """Check before any work that ``path`` can be written: it does not exist (unless
    ``force``), is not a folder, and its folder exists and is writable (probed by creating
    and removing this process's temporary file).  Raises OutputExists or FileFailure."""
    path = Path(path)
    if path.is_dir():
        raise FileFailure(errno.EISDIR, f"cannot write {path}: it is a folder")
    if path.exists() and not force:
        raise OutputExists(errno.EEXIST, f"{path} exists; pass --force to overwrite it "
                           f"(or choose another {what})")
    folder = path.parent
    if not folder.is_dir():
        raise FileFailure(errno.ENOENT, f"cannot write {path}: the folder {folder} does not "
                          "exist")
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return  # our own temporary file from an earlier write of this process
    except OSError as exc:
        raise os_failure(exc, path) from None
    os.close(fd)
    os.unlink(tmp)


def fsync_dir(folder):
    """Make a rename in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write, *, force=True, mkdir=False):
    """Write ``path`` atomically: ``write(tmp)`` fills the temporary file ``tmp`` (a Path
    that does not exist yet), which is then fsynced and renamed over ``path``.

    Parameters
    ----------
    path : path
        The final name.
    write : callable
        ``write(tmp)``; it may open ``tmp`` by name (h5py, matplotlib) or as a file.
    force : bool
        Overwrite an existing ``path``; False raises OutputExists.
    mkdir : bool
        Create the folder (and its parents) first.

    Raises
    ------
    OutputExists, DiskFull, FileFailure
        Expected OS failures, with advice; the temporary file is removed and ``path`` is
        left as it was.
    """
    with atomic_target(path, force=force, mkdir=mkdir) as tmp:
        write(tmp)
    return Path(path)


@contextlib.contextmanager
def atomic_target(path, *, force=True, mkdir=False):
    """The temporary file of ``path``, for a writer that fills it over time (an HDF5 file
    streamed tile by tile): ``with atomic_target(path) as tmp: ...``.  On a normal exit the
    file (closed by then) is fsynced and renamed over ``path``; on an exception it is
    removed and OS failures become DiskFull / FileFailure.  See :func:`atomic_write`."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExists(errno.EEXIST, f"{path} exists; pass --force (force=True) to "
                           "overwrite it")
    try:
        if mkdir:
            path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(path)
        tmp = temp_path(path)
        tmp.unlink(missing_ok=True)
    except OSError as exc:
        new = os_failure(exc, path)
        if new is exc:
            raise
        raise new from None
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        new = os_failure(exc, path)
        if new is exc:
            raise
        raise new from None
    fsync_dir(path.parent)


def write_bytes(path, data, **kwargs):
    """:func:`atomic_write` of bytes."""

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write, **kwargs)


# --- locks -----------------------------------------------------------------------------------
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class Lock:
    """An exclusive, non-blocking lock on the file ``path`` (created if absent).

    ``acquire`` raises :class:`Busy` (naming the holder's pid) when another process holds
    it.  With ``remove=True`` the lock file is deleted on release; a process that opened
    the deleted file meanwhile notices (its file is no longer at ``path``) and retries.
    """

    def __init__(self, path, *, what, remove=True):
        self.path = Path(path)
        self.what = what
        self.remove = remove
        self.fd = None

    def acquire(self):
        if fcntl is None:  # pragma: no cover
            warnings.warn("no file locking on this platform: do not run two nngp-lut jobs "
                          f"on {self.what} at once", RuntimeWarning, stacklevel=2)
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            except OSError as exc:
                raise os_failure(exc, self.path, "lock") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                raise Busy(errno.EBUSY, f"another nngp-lut process"
                           f"{f' (pid {holder})' if holder.isdigit() else ''} is using "
                           f"{self.what}; wait for it to finish (or stop it) and run again") \
                    from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file as we opened it: try again
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def release(self):
        if self.fd is None:
            return
        if self.remove:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(self.fd)  # closing releases the flock
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def lock(path, *, what=None):
    """A :class:`Lock` for the output ``path``, held in ``.NAME.nngp-lut-lock`` beside it
    (removed on release)."""
    path = Path(path)
    return Lock(path.with_name(f".{path.name}{LOCK_TAG}"), what=what or str(path))
