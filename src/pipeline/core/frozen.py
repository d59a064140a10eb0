"""Immutable building blocks shared by specs, hardware and plans."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from typing_extensions import Self

from pipeline.errors import SpecError

M = TypeVar("M", bound="Frozen")


class FrozenDict(dict):
    """A dict that refuses change and hashes by content.

    >>> d = FrozenDict(a=1)
    >>> d == {"a": 1}, hash(d) == hash(FrozenDict(a=1))
    (True, True)
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("this mapping is immutable; derive a new value with evolve()")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: str(kv[0]))))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"


def freeze(value: Any) -> Any:
    """Deep copy of plain data with dicts frozen and lists made tuples, so it hashes.

    >>> freeze({"a": [1, {"b": 2}]})
    FrozenDict({'a': (1, FrozenDict({'b': 2}))})
    """
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(v) for v in value)
    return value


FrozenMapping = Annotated[dict[str, Any], AfterValidator(freeze)]
"""A pydantic field type: any mapping in, a deep-frozen copy stored."""


def thaw(value: Any) -> Any:
    """Plain mutable copy of frozen data, as the libraries we call expect it.

    >>> thaw(FrozenDict(a=(1, FrozenDict(b=2))))
    {'a': [1, {'b': 2}]}
    """
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (tuple, frozenset)):
        return [thaw(v) for v in value]
    return value


def suggest(word: str, choices: Any) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``.

    >>> suggest("learning_rte", ["learning_rate", "seed"])
    "; did you mean 'learning_rate'?"
    """
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def problems_of(error: ValidationError, unknown: Any = None) -> list[str]:
    """One ``field.path: message (got value)`` line per problem pydantic found.

    ``unknown(key)``: a hint for a key the value does not have (e.g. "did you mean ...").
    """
    lines = []
    for e in error.errors(include_url=False):
        where = ".".join(str(p) for p in e["loc"])
        if e["type"] == "value_error":
            # Our validators name the value and the fix, one problem a line; a line that
            # starts with ".key:" is about a key inside this field.
            for line in str(e["ctx"]["error"]).splitlines():
                lines.append(f"{where}{line}" if line.startswith(".") else f"{where}: {line}" if where else line)
        elif e["type"] == "extra_forbidden" and unknown and len(e["loc"]) == 1:
            lines.append(f"{where}: unknown field{unknown(str(e['loc'][0]))}")
        elif e["type"] in ("missing", "extra_forbidden"):
            lines.append(f"{where}: {e['msg'].lower()}")
        else:
            lines.append(f"{where}: {e['msg'].replace('Input should', 'should')} (got {e['input']!r})")
    return lines


class Frozen(BaseModel):
    """Base of every value: immutable, unknown fields rejected, errors from our tree."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    _error: ClassVar[type[SpecError]] = SpecError

    @classmethod
    def _unknown(cls, key: str) -> str:
        """A hint for an unknown field ``key``: the closest field name."""
        return suggest(key, cls.model_fields) or f"; the fields are {', '.join(cls.model_fields)}"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise self._error(problems_of(e, self._unknown)) from None

    # Tells pydantic this __init__ only validates, so nested validation need not call it.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:  # type: ignore[override]
        """Validate plain data (e.g. a parsed spec file) into this value."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as e:
            raise cls._error(problems_of(e, cls._unknown)) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes, **kwargs: Any) -> Self:  # type: ignore[override]
        """Validate a JSON document into this value."""
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as e:
            raise cls._error(problems_of(e, cls._unknown)) from None


def evolve(value: M, **changes: Any) -> M:
    """A copy of ``value`` with ``changes``, validated again (``model_copy`` would not); the fields the
    original was given stay the given ones (defaults stay defaults, and the plan says so).

    Raises `SpecError` when the changed value is invalid.
    """
    kept = {name: getattr(value, name) for name in value.model_fields_set}  # fields left out stay left out
    return type(value)(**{**kept, **changes})
