"""A real, tiny filesystem for the disk-full fault: a tmpfs mounted on a folder.

`TinyFs.fill` takes every free byte with a filler file, `free` deletes it, `close` unmounts.
Mounting needs the right to (root, or CAP_SYS_ADMIN): `PermissionError` otherwise.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


class TinyFs:
    def __init__(self, path: Path, size_kib: int = 4096) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs",
                            str(path)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise PermissionError(f"cannot mount a tmpfs on {path}: {r.stderr.strip()}")
        self._mounted = True

    @property
    def filler(self) -> Path:
        return self.path / "filler"

    def fill(self) -> int:
        """Write zeros until the filesystem refuses; return the bytes written."""
        n = 0
        with open(self.filler, "ab", buffering=0) as f:
            try:
                while True:
                    n += f.write(bytes(65536))
            except OSError:
                pass
            try:
                while True:
                    n += f.write(bytes(512))
            except OSError:
                pass
        return n

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        if self._mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
            self._mounted = False
