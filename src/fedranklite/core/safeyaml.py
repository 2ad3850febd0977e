"""YAML that a hostile or careless file cannot turn into a memory bomb or a silent surprise.

`yaml.safe_load` constructs no Python objects, but it still (a) shares aliased nodes, so nine nested levels
of nine aliases ("billion laughs", about 1 kB) become 9^9 entries as soon as anything walks the tree, and
(b) lets a repeated key silently win. `load_yaml_text` composes the document first and refuses it when the
tree that aliases expand to would exceed `MAX_NODES`, and refuses duplicate keys naming both lines.
`read_yaml_file` adds a size cap and refuses what is not a regular file (`/dev/zero` would read forever).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fedranklite.core.messages import one_line

MAX_BYTES = 1 << 20  # a config file; the largest shipped one is a few kB
MAX_NODES = 100_000  # nodes after alias expansion; base.yaml is about 300


class YamlError(ValueError):
    """A YAML text that is refused; the message is one line without the file name (the caller adds it)."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (with both line numbers)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise YamlError(f"line {key_node.start_mark.line + 1}: a mapping key must be a plain value") from None
            line = key_node.start_mark.line + 1
            if key in seen:
                raise YamlError(f"duplicate key {one_line(repr(key), 60)} on lines {seen[key]} and {line}")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes in the tree `root` becomes once aliases are expanded (an aliased node counts at each use),
    computed bottom-up over the shared graph, so a bomb is measured without being expanded."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path: meeting one again is a recursive alias
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if ready or not children:
            open_nodes.discard(id(node))
            sizes[id(node)] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if id(node) in open_nodes:
            raise YamlError("a recursive alias (an anchor used inside itself)")
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise YamlError("a recursive alias (an anchor used inside itself)")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document safely: bounded alias expansion, no duplicate keys. Raises YamlError."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, MAX_NODES)
        if size > MAX_NODES:
            raise YamlError(
                f"anchors and aliases expand to more than {MAX_NODES:,} values (a 'billion laughs' file?); "
                "write the values out or use fewer aliases"
            )
        return loader.construct_document(node)
    except YamlError:
        raise
    except yaml.YAMLError as exc:
        raise YamlError(f"not valid YAML: {one_line(exc)}") from None
    except RecursionError:
        raise YamlError("nested too deeply (or a recursive alias)") from None
    except (ValueError, KeyError, TypeError, OverflowError) as exc:  # a value its tag cannot hold: 2024-02-30,
        # a 5,000-digit integer, !!bool maybe, !!float abc
        raise YamlError(f"a value cannot be read: {one_line(exc, 160)}") from None
    finally:
        loader.dispose()


def read_yaml_file(path: Path) -> Any:
    """A YAML file -> its value. Refuses non-regular files and files over MAX_BYTES. Raises YamlError,
    FileNotFoundError, IsADirectoryError or OSError / UnicodeDecodeError for unreadable files."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(path)
    if not path.exists():
        raise FileNotFoundError(path)
    if not (path.is_file() or path.is_fifo()):  # a pipe (`-c <(envsubst < x.yaml)`) is read up to the cap
        raise YamlError("not a regular file (a device or socket)")
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise YamlError(f"larger than {MAX_BYTES // 1024} kB; a config file is a few kB (is this the right file?)")
    text = data.decode("utf-8")
    if "\x00" in text:
        raise YamlError("holds NUL bytes: a binary file, not YAML")
    return load_yaml_text(text)
