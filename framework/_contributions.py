"""What a plugin contributes: a named, documented, parameterised builder.

A plugin answers a hook (see :mod:`wavelens.hookspecs`) with a list of
:class:`Contribution` objects. The framework validates the ``params`` a spec gives
against ``Contribution.params`` and then calls ``Contribution.build(params)`` to get
the component (a :class:`~wavelens.Dataset`, ``Model``, ``Probe``,
``Statistic`` or ``Metric``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["KINDS", "Kind", "Contribution", "Params"]

Kind = Literal["dataset", "model", "probe", "statistic", "metric"]
KINDS: tuple[Kind, ...] = ("dataset", "model", "probe", "statistic", "metric")

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


class Params(BaseModel):
    """Base class for a plugin's parameters.

    It forbids unknown fields, so a misspelt parameter in a spec is an error rather
    than a silently ignored value, and refuses NaN and infinite numbers in every
    float field (a field where infinity means something opts in with
    ``Annotated[float, pydantic.AllowInfNan(True)]``). Document each field with
    ``Field(description=...)``: ``wavelens plugins show NAME`` prints those
    descriptions.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True)
class Contribution:
    """One named thing a plugin offers to specs.

    Attributes:
        name: unique across all loaded plugins and kinds; lowercase letters, digits
            and underscores, starting with a letter (``feature_map_average``).
        params: the pydantic model of the parameters; must forbid extra fields
            (subclass :class:`Params`).
        description: one line shown by ``wavelens plugins``.
        build: called with a validated ``params`` instance; returns the component.
        version: the contribution's version; defaults to the version of the package
            or file that provides it. It is part of every stage's cache key, so bump
            it when results change.
    """

    name: str
    params: type[BaseModel]
    description: str
    build: Callable[[Any], Any]
    version: str | None = None
