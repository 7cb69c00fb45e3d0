"""Reading YAML so that errors can name lines: mappings remember where each key was.

PyYAML's ``safe_load`` forgets positions and silently keeps the last of two equal keys (two
nodes called ``camera`` would quietly become one). This loader builds :class:`Mapping` objects
(plain dicts that also know the line of the mapping and of each key) and rejects duplicate
keys. Merge keys (``<<: *anchor``) keep working.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from easymesh.launch.errors import ConfigError


class Mapping(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers its line and the line of each key (1-based)."""

    def __init__(self, line: int = 0) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}

    def line_of(self, key: Any) -> int:
        """The line of ``key``, or of the mapping itself when the key is absent."""
        return self.key_lines.get(key, self.line)


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: MappingNode) -> Iterator[Mapping]:
    own = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)  # merged (<<) entries come first; explicit keys override them
    first_own = len(node.value) - own
    data = Mapping(node.start_mark.line + 1)
    yield data
    explicit: set[Any] = set()
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise ConstructorError(
                "while reading a mapping",
                node.start_mark,
                "found a key that is not a plain value",
                key_node.start_mark,
            ) from None
        if index >= first_own:
            if key in explicit:
                raise ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first on line {data.key_lines[key]})",
                    key_node.start_mark,
                )
            explicit.add(key)
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = key_node.start_mark.line + 1


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text``; mappings come back as :class:`Mapping`.

    Raises ConfigError (with ``source`` and the line and column) when the text is not valid
    YAML or repeats a key within one mapping.
    """
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = "; ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError([f"{where}: not valid YAML: {what}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid YAML: {exc}"]) from None
