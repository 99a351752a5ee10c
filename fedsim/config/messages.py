"""Validation errors as lines a user can act on: the key path, what is wrong, what is allowed."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from channels import Dispatch, UnknownName
from fedsim.config.experiment import ExperimentConfig


def format_errors(exc: ValidationError, data: dict[str, Any]) -> str:
    """One line per error of ``exc``, raised while validating ``data`` as an ExperimentConfig."""
    lines = []
    for err in exc.errors(include_url=False):
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = allowed_keys(err["loc"][:-1], data)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            if allowed == ["name"]:
                hint += " (this part takes no parameters; choose another part for them)"
            guess = did_you_mean(err["loc"], data, allowed)
            lines.append(f"  {key}: unknown key" + (f"; did you mean {guess}?" if guess else "") + hint)
        else:
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            got = "" if isinstance(value, dict) else f" (got {value!r})"  # a whole table says nothing new
            lines.append(f"  {msg}{got}" if key == "(top level)" else f"  {key}: {msg}{got}")
    return "\n".join(lines)


def did_you_mean(loc: tuple[Any, ...], data: dict[str, Any], allowed: list[str]) -> str | None:
    """The dotted key a typo at ``loc`` most likely meant (``chanel.scale`` -> ``channel.scale``),
    or None. The keys set below the typo are corrected too, where the schema knows them."""
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    if not close:
        return None
    path = [*(str(p) for p in loc[:-1]), close[0]]
    node = _at(data, loc)
    while isinstance(node, dict) and len(node) == 1:
        ((key, node),) = node.items()
        below = allowed_keys(tuple(path), data)
        match = key if key in below else next(iter(difflib.get_close_matches(key, below, n=1)), None)
        if match is None:
            break
        path.append(match)
    return ".".join(path)


def _at(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        data = data.get(str(part)) if isinstance(data, dict) else None
    return data


def allowed_keys(loc: tuple[Any, ...], data: dict[str, Any]) -> list[str]:
    """Field names of the model that validates ``data`` at ``loc`` (best effort)."""
    model: type[BaseModel] | None = ExperimentConfig
    node: Any = data
    for part in loc:
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            return []
        node = node.get(str(part)) if isinstance(node, dict) else None
        model = field_model(field, node)
    return sorted(model.model_fields) if model is not None else []


def field_model(field: Any, node: Any) -> type[BaseModel] | None:
    """The model that validates ``node`` in ``field``: a registered part's own model for a field
    that names one, else the field's model type."""
    for meta in field.metadata:
        if isinstance(meta, Dispatch):
            try:
                return meta.model_for(node if isinstance(node, dict) else {"name": node})
            except (UnknownName, KeyError, TypeError):
                return None
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
