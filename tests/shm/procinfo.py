"""What /proc says about this process's shared memory (for the shm tests)."""

from __future__ import annotations

import os


def memfd_fds(pid: int | str = "self") -> list[str]:
    """Open file descriptors of process ``pid`` that point at an easymesh memfd."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:easymesh"):
            out.append(target)
    return out


def memfd_maps() -> list[str]:
    """This process's mappings of easymesh memfds (lines of /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        return [line for line in f if "/memfd:easymesh" in line]


def mapping_of(address: int) -> str:
    """The /proc/self/maps line of the mapping that holds ``address`` ('' if none)."""
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= address < hi:
                return line
    return ""
