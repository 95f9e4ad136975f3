"""The YAML of recipes and ``--set`` values: PyYAML's safe loader, stricter where YAML 1.1 guesses.

Kept apart from ``config`` so that the command line reads ``--env-arg`` values
without loading the model libraries the recipe module needs.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class _RecipeLoader(yaml.SafeLoader):
    """A key given twice is an error (not the last one silently winning), and ``1e-3`` is a number as in
    YAML 1.2 (YAML 1.1 wants a dot: ``1.0e-3``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [(self.construct_object(key, deep=True), key) for key, _ in node.value
                if key.tag != "tag:yaml.org,2002:merge"]
        for index, (key, key_node) in enumerate(keys):
            if any(key == earlier for earlier, _ in keys[:index]):
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
        return super().construct_mapping(node, deep)


_RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                    list("-+0123456789"))


def parse_yaml(text: str) -> Any:
    """A recipe's YAML (or a ``--set`` value) as Python values; raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_RecipeLoader)
