"""YAML as a config may be written: PyYAML's safe loader, minus the legal YAML that would
surprise a user. A key given twice in one mapping is refused (YAML silently keeps the last),
and aliases may not expand a small file into a huge document (a "billion laughs" bomb): the
expansion is measured on the node graph before anything is built.
"""

from __future__ import annotations

from typing import Any

import yaml

from spinebench.errors import shown

#: Most values aliases may add to a YAML document (each use counted): a config has a few
#: hundred, and a few nested aliases ("billion laughs") would otherwise expand to gigabytes.
MAX_YAML_VALUES = 10_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class Refused(yaml.YAMLError):
    """Legal YAML that a config must not be: a repeated key, a bomb, a value that is itself."""

    def __init__(self, problem: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is refused: YAML
    keeps only the last silently, so the first value the user wrote would be ignored."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue  # a merge (<<) is overridden by design; other keys fail below
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise Refused(
                    f"key {shown(key)} is given twice in one mapping (lines {seen[key]} and "
                    f"{line}) and YAML would silently keep the last; remove one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases add more than :data:`MAX_YAML_VALUES` values to what
    is written out, or that contains itself (an alias inside its own anchor); counted on the
    node graph, so a bomb is measured without being expanded."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise Refused("an alias refers to the value that contains it", node.start_mark)
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        if total - len(sizes) > MAX_YAML_VALUES:  # len(sizes): the values written out so far
            raise Refused(
                f"its aliases expand to more than {MAX_YAML_VALUES} values (a YAML alias "
                "bomb?); write the values out",
                node.start_mark,
            )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root)


def load(text: str) -> Any:
    """Parse YAML as a config may be written: safe tags only, no repeated keys, bounded
    alias expansion. Raises :class:`yaml.YAMLError` (:class:`Refused` for the last two) and
    :class:`RecursionError` for a document nested thousands deep."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()
