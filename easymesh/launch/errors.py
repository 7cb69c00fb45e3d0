"""The errors meshlaunch raises on purpose (both are :class:`easymesh.MeshError`)."""

from __future__ import annotations

from collections.abc import Sequence

from easymesh.errors import MeshError


class LaunchError(MeshError):
    """A launch could not be carried out (for example a process could not be started)."""


class ConfigError(LaunchError, ValueError):
    """A launch file (or the options given with it) is wrong; nothing was started.

    ``problems`` lists every problem found, each as one line that names the file, the line
    number where known, the dotted key (``nodes.camera.number``), what was expected and what
    was found.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems:\n" + "\n".join(f"  {p}" for p in self.problems)
        super().__init__(text)
