"""Labels and label selectors, with Kubernetes semantics, for device and publisher alike.

A device's labels are assigned by the publisher in its signed ``Device`` document
(``spec.enrolment``); a resource under ``fleet/`` names the devices it is for with a
``metadata.selector``::

    selector:
      matchLabels: {site: north}
      matchExpressions:
        - {key: hw, operator: In, values: [pi4, pi5]}
        - {key: retired, operator: DoesNotExist}

Every ``matchLabels`` pair and every expression must hold (AND), as in Kubernetes:
``In`` (the label is set to one of ``values``), ``NotIn`` (it is unset or set to none of
them), ``Exists`` and ``DoesNotExist`` (no ``values``). An empty selector matches every
device. Keys and values are deliberately narrower than Kubernetes': lower-case
letters, digits, ``.``, ``_`` and ``-``, starting and ending with a letter or digit, at
most 63 characters, no ``prefix/`` - so a label can name a values file
(``values/labels/<key>/<value>.yaml``). Called by ``spec.enrolment``,
``spec.targeting`` and ``giter-bundle`` (enroll, label, lint, render).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from giter_agent.core.errors import ResourceError
from giter_agent.core.named_tuple import NamedTuple

LABEL_PATTERN = r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?"  # compiled when first used (re's cache)
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
MAX_LABELS = 64


def check_label(key: Any, value: Any, where: str) -> tuple[str, str]:
    """One ``key: value`` label, or ``ResourceError(InvalidLabels)`` saying what is wrong."""
    for what, text in (("key", key), ("value", value)):
        if not isinstance(text, str) or not re.fullmatch(LABEL_PATTERN, text):
            raise ResourceError(f"{where}: label {what} {text!r} must be lower-case letters, "
                                "digits, '.', '_' or '-', starting and ending with a letter "
                                "or digit (max 63)", reason="InvalidLabels")
    return key, value


def check_labels(raw: Any, where: str) -> dict[str, str]:
    """A label mapping as it appears in a ``Device`` document."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ResourceError(f"{where}: labels must be a mapping of key: value",
                            reason="InvalidLabels")
    if len(raw) > MAX_LABELS:
        raise ResourceError(f"{where}: at most {MAX_LABELS} labels", reason="InvalidLabels")
    return dict(sorted(check_label(k, v, where) for k, v in raw.items()))


class Requirement(NamedTuple):
    """One ``matchExpressions`` entry."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def holds(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # NotIn: unset counts as not in

    def text(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        op = "in" if self.operator == "In" else "notin"
        return f"{self.key} {op} ({','.join(self.values)})"


class Selector(NamedTuple):
    """A parsed label selector: every requirement must hold."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.holds(labels) for r in self.requirements)

    def text(self) -> str:
        """``site=north,hw in (pi4,pi5),!retired`` (kubectl's notation)."""
        parts = [f"{r.key}={r.values[0]}" if r.operator == "In" and len(r.values) == 1
                 else r.text() for r in self.requirements]
        return ",".join(parts) or "(every device)"


def parse_selector(raw: Any, where: str) -> Selector:
    """A ``metadata.selector`` mapping, or ``ResourceError(InvalidSelector)``."""
    def bad(message: str) -> ResourceError:
        return ResourceError(f"{where}: selector {message}", reason="InvalidSelector")

    if not isinstance(raw, dict):
        raise bad("must be a mapping with matchLabels and/or matchExpressions")
    unknown = set(raw) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise bad(f"has unknown field(s) {', '.join(sorted(map(str, unknown)))} "
                  "(only matchLabels and matchExpressions)")
    reqs: list[Requirement] = []
    match_labels = raw.get("matchLabels") or {}
    if not isinstance(match_labels, dict):
        raise bad("matchLabels must be a mapping of key: value")
    for key, value in match_labels.items():
        try:
            check_label(key, value, where)
        except ResourceError as exc:
            raise bad(f"matchLabels: {exc}".replace(f"{where}: ", "")) from None
        reqs.append(Requirement(key, "In", (value,)))
    exprs = raw.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise bad("matchExpressions must be a list")
    for i, expr in enumerate(exprs):
        at = f"matchExpressions[{i}]"
        if not isinstance(expr, dict) or set(expr) - {"key", "operator", "values"}:
            raise bad(f"{at} must be a mapping of key, operator and values")
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values")
        if not isinstance(key, str) or not re.fullmatch(LABEL_PATTERN, key):
            raise bad(f"{at}.key {key!r} is not a label key")
        if op not in OPERATORS:
            raise bad(f"{at}.operator {op!r} must be one of {', '.join(OPERATORS)}")
        if op in ("In", "NotIn"):
            if (not isinstance(values, list) or not values
                    or not all(isinstance(v, str) and re.fullmatch(LABEL_PATTERN, v)
                               for v in values)):
                raise bad(f"{at}: {op} needs a non-empty list of label values")
            reqs.append(Requirement(key, op, tuple(values)))
        else:
            if values not in (None, []):
                raise bad(f"{at}: {op} takes no values")
            reqs.append(Requirement(key, op))
    return Selector(tuple(reqs))
