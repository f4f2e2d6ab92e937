"""File assets confined to the data roots the operator configures (``[assets] roots``).

A file asset's path is checked twice:

* when the asset is created (``DataRoots.admit``): the path must be absolute, without NUL bytes
  and at most ``MAX_PATH_LENGTH`` characters, and once ``..`` and every symlink are resolved it
  must lie inside a data root and outside every protected path; an existing file must be a
  regular file. A file that does not exist yet is admitted (the data plane answers 404 until it
  does).
* at every serve (``DataRoots.open``), because the file may have been replaced since (by a
  symlink out of the root, say): the path is resolved again and located in a root, then opened
  from the root's directory one component at a time with ``O_NOFOLLOW``, so a symlink that
  appears between the resolution and the open makes the open fail instead of leaving the root
  (no time-of-check/time-of-use gap). The final component is ``lstat``-ed before it is opened
  (a FIFO or a device node is never opened) and ``fstat``-ed after (the same regular file).

Never servable, whatever the roots: ``/proc``, ``/sys`` and ``/dev``, and the protected paths the
configuration names (``connector.config.Config.data_roots``): the participant directory (every
key, the default store, the audit log, the vault), the store's files, the audit log, the
management API key file and the config file. Roots are refused when they are built rather than
files at serve time: a root that equals, contains or lies inside the participant directory,
contains a protected file, or overlaps ``/proc``, ``/sys`` or ``/dev`` is a configuration error
(``RootRefused``), so a mistake shows at start-up and not as a leak. The serve-time check refuses
protected paths again, and files with the identity (device, inode) of a protected file, so a
hard link to a key inside a root is refused too.

Each refusal is a ``PathRefused`` subclass with ``reason`` (short, without paths: safe to show a
consumer) and ``str()`` (with the paths and roots: for the operator).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

MAX_PATH_LENGTH = 4096
NEVER_SERVED = ("/proc", "/sys", "/dev")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
NO_ROOTS_HINT = "no data roots are configured: set [assets] roots in the connector's config"


class PathRefused(Exception):
    """A file asset's path may not be served."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.reason = reason


class BadPath(PathRefused):
    """Not an absolute path, a NUL byte in it, or too long."""


class OutsideRoots(PathRefused):
    """The resolved path lies in no data root."""


class ProtectedPath(PathRefused):
    """A path that is never served: the participant directory, a key, the store, /proc, ..."""


class NotARegularFile(PathRefused):
    """A directory, FIFO, socket or device."""


class PathChanged(PathRefused):
    """A component of the resolved path became a symlink while it was being opened."""


class RootRefused(ValueError):
    """A configured data root that would expose what must never be served."""


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a file asset, whatever the roots (None: it can)."""
    if "\x00" in path:
        return "the path contains a NUL byte"
    if len(path) > MAX_PATH_LENGTH:
        return f"the path is longer than {MAX_PATH_LENGTH} characters"
    if not path.startswith("/"):
        return "the path must be absolute"
    return None


def _within(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


@dataclass(frozen=True, slots=True)
class DataRoots:
    """The data roots (real paths) and what is never served inside them."""

    roots: tuple[str, ...] = ()
    protected: tuple[tuple[str, str], ...] = ()  # (what, real path): directories and files
    protected_ids: frozenset[tuple[int, int]] = frozenset()  # (device, inode) of protected files

    @classmethod
    def build(
        cls,
        roots: Iterable[Path],
        *,
        protected_dirs: Mapping[str, Path] | None = None,
        protected_files: Mapping[str, Path] | None = None,
    ) -> DataRoots:
        """Resolve and check the roots; raises ``RootRefused``. ``protected_*`` map what a path
        is ("the participant directory") to the path."""
        dirs = [(what, os.path.realpath(p)) for what, p in (protected_dirs or {}).items()]
        files = [(what, os.path.realpath(p)) for what, p in (protected_files or {}).items()]
        real_roots: list[str] = []
        for root in roots:
            if not root.is_absolute():
                raise RootRefused(f"data root {root}: must be an absolute path")
            real = os.path.realpath(root)
            if not os.path.isdir(real):
                raise RootRefused(f"data root {root}: not an existing directory")
            if real == "/":
                raise RootRefused(f"data root {root}: the whole file system cannot be a data root")
            for system in NEVER_SERVED:
                if _within(real, system) or _within(system, real):
                    raise RootRefused(f"data root {root}: overlaps {system}, which is never served")
            for what, d in dirs:
                if _within(real, d) or _within(d, real):
                    raise RootRefused(
                        f"data root {root}: overlaps {what} ({d}), which holds keys "
                        "and state that are never served; choose a folder beside it"
                    )
            for what, f in files:
                if _within(f, real):
                    raise RootRefused(
                        f"data root {root}: contains {what} ({f}), which is never "
                        "served; move it or choose another folder"
                    )
            real_roots.append(real)
        ids: set[tuple[int, int]] = set()
        for _, f in files:
            with contextlib.suppress(OSError):  # not created yet (an audit log before a start)
                ids.add(_identity(os.stat(f)))
        for _, d in dirs:
            with contextlib.suppress(OSError), os.scandir(d) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        ids.add(_identity(entry.stat(follow_symlinks=False)))
        return cls(tuple(real_roots), tuple(dirs + files), frozenset(ids))

    def describe(self) -> str:
        return ", ".join(self.roots) if self.roots else "none"

    def _locate(self, path: str) -> tuple[str, str]:
        """(root, real path) of ``path``; raises ``PathRefused``."""
        problem = path_problem(path)
        if problem is not None:
            raise BadPath(problem, f"{problem}: {path[:200]!r}")
        real = os.path.realpath(path)
        for system in NEVER_SERVED:
            if _within(real, system):
                raise ProtectedPath(
                    "the asset's file is a system file, which is never served",
                    f"{path} resolves to {real}, under {system}: never served",
                )
        for what, p in self.protected:
            if _within(real, p):
                raise ProtectedPath(
                    f"the asset's file is {what}, which is never served",
                    f"{path} resolves to {real}, in {what} ({p}): never served",
                )
        for root in self.roots:
            if real == root:
                raise NotARegularFile(
                    "the asset's file is not a regular file", f"{path} is the data root {root} itself"
                )
            if _within(real, root):
                return root, real
        detail = (
            f"{path} resolves to {real}, which is outside the data roots ({self.describe()})"
            if self.roots
            else f"{path}: {NO_ROOTS_HINT}"
        )
        raise OutsideRoots("the asset's file is outside the provider's data roots", detail)

    def admit(self, path: str) -> str:
        """Check the path of a new file asset (see the module docstring); returns it as given.
        Raises ``PathRefused`` (with the roots named in its message)."""
        try:
            fd = self.open(path)
        except FileNotFoundError:
            return path  # located inside a root, but not there yet: served once it is
        except PathRefused:
            raise
        except OSError as exc:
            raise PathRefused(
                "the connector cannot read the asset's file",
                f"{path}: the connector cannot read it ({exc.strerror})",
            ) from exc
        os.close(fd)
        return path

    @staticmethod
    def _open_below(dir_fd: int, name: str, flags: int, real: str) -> int:
        """``name`` in ``dir_fd``, never through a symlink (``PathChanged`` if it is one)."""
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            # O_NOFOLLOW refuses a symlink with ELOOP, or ENOTDIR along with O_DIRECTORY
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and stat.S_ISLNK(
                os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            ):
                raise PathChanged(
                    "the asset's file changed while it was opened",
                    f"a component of {real} became a symlink while it was opened",
                ) from exc
            raise

    def open(self, path: str) -> int:
        """A read-only descriptor of the regular file ``path`` names, inside a data root
        (blocking: run it in a worker thread). Raises ``PathRefused``, or ``OSError`` (e.g.
        ``FileNotFoundError``) when the file cannot be opened."""
        root, real = self._locate(path)
        parts = real[len(root) :].strip("/").split("/")
        dir_fd = os.open(root, _DIR_FLAGS)
        try:
            for part in parts[:-1]:
                inner = self._open_below(dir_fd, part, _DIR_FLAGS, real)
                os.close(dir_fd)
                dir_fd = inner
            before = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(before.st_mode):
                raise PathChanged(
                    "the asset's file changed while it was opened",
                    f"{real} became a symlink while it was opened",
                )
            if not stat.S_ISREG(before.st_mode):
                raise NotARegularFile(
                    "the asset's file is not a regular file", f"{real} is not a regular file"
                )
            fd = self._open_below(dir_fd, parts[-1], _FILE_FLAGS, real)
        finally:
            os.close(dir_fd)
        try:
            after = os.fstat(fd)
            if _identity(after) != _identity(before) or not stat.S_ISREG(after.st_mode):
                raise PathChanged(
                    "the asset's file changed while it was opened", f"{real} was replaced while it was opened"
                )
            if _identity(after) in self.protected_ids:
                raise ProtectedPath(
                    "the asset's file is a protected file, which is never served",
                    f"{real} is a link to a protected file: never served",
                )
        except BaseException:
            os.close(fd)
            raise
        return fd
