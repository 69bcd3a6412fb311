"""Kubernetes label selectors (``metav1.LabelSelector``): ``matchLabels`` and
``matchExpressions`` with ``In``, ``NotIn``, ``Exists`` and ``DoesNotExist``, ANDed.
An empty selector matches everything. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})


class SelectorError(ValueError):
    """A selector that cannot be understood (the API server validates most of this)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values  # NotIn


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def everything(self) -> bool:
        return not self.requirements


EVERYTHING = LabelSelector()


def parse_selector(document: Any) -> LabelSelector:
    """A selector from its API form; :class:`SelectorError` for anything malformed."""
    if document is None:
        return EVERYTHING
    if not isinstance(document, dict):
        raise SelectorError("a selector is not an object")
    requirements: list[Requirement] = []
    match_labels = document.get("matchLabels") or {}
    if not isinstance(match_labels, dict):
        raise SelectorError("matchLabels is not an object")
    for key, value in sorted(match_labels.items()):
        if not isinstance(value, str):
            raise SelectorError(f"matchLabels {key!r} is not a string")
        requirements.append(Requirement(str(key), "In", frozenset((value,))))
    expressions = document.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise SelectorError("matchExpressions is not a list")
    for expression in expressions:
        if not isinstance(expression, dict):
            raise SelectorError("a match expression is not an object")
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        if not isinstance(key, str) or operator not in OPERATORS:
            raise SelectorError(f"match expression {key!r} has operator {operator!r}")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise SelectorError(f"match expression {key!r}: values are not strings")
        if operator in ("In", "NotIn") and not values:
            raise SelectorError(f"match expression {key!r}: {operator} needs values")
        if operator in ("Exists", "DoesNotExist") and values:
            raise SelectorError(f"match expression {key!r}: {operator} takes no values")
        requirements.append(Requirement(key, operator, frozenset(values)))
    return LabelSelector(tuple(requirements))
