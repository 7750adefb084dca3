"""Checks on configuration data that raise :class:`ConfigError` naming the offending key.

Configurations are plain data (mappings, lists, numbers, strings), typically read from YAML/JSON.
Every check here takes the dotted key path of the value it inspects (``"target.terms[1].slope"``) and
raises ``ConfigError("<key path>: <what is wrong>, got <value>")``, so an error message always starts
with the key to fix. Nothing here evaluates configuration content: values are data, never code.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Iterable, Mapping, NoReturn

import numpy as np


class ConfigError(ValueError):
    """A configuration value is invalid; the message starts with its dotted key path."""


def fail(key: str, message: str) -> NoReturn:
    """Raise ``ConfigError("<key>: <message>")``."""
    raise ConfigError(f"{key}: {message}")


def subkey(key: str, part: str | int) -> str:
    """The key path of a child: ``subkey("target", "slope") == "target.slope"``, ``subkey("x", 2) == "x[2]"``."""
    if isinstance(part, int):
        return f"{key}[{part}]"
    return f"{key}.{part}" if key else part


def check_mapping(key: str, value: Any, *, required: Iterable[str] = (), optional: Iterable[str] = ()) -> Mapping:
    """``value`` must be a mapping with string keys, all ``required`` keys and nothing else but ``optional`` ones.

    Unknown keys are refused (a typo must never be silently ignored); the error names the first
    unknown key (sorted), e.g. ``"target.slpoe: unknown key; allowed keys are [...]"``.
    """
    if not isinstance(value, Mapping):
        fail(key, f"must be a mapping, got {type(value).__name__} {value!r}")
    required, optional = list(required), list(optional)
    allowed = set(required) | set(optional)
    for name in value:
        if not isinstance(name, str):
            fail(key, f"keys must be strings, got {name!r}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        fail(subkey(key, unknown[0]), f"unknown key; allowed keys are {sorted(allowed)}")
    for name in required:
        if name not in value:
            fail(subkey(key, name), "is required")
    return value


def is_real(value: Any) -> bool:
    """A real number that is not a boolean (``True`` is an ``int`` in Python, but never a valid number here)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def real(key: str, value: Any, *, positive: bool = False, nonnegative: bool = False) -> float:
    """A finite real number (``int`` or ``float``, not ``bool``), returned as ``float``."""
    if not is_real(value):
        fail(key, f"must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        fail(key, f"must be finite, got {value!r}")
    if positive and not value > 0:
        fail(key, f"must be > 0, got {value!r}")
    if nonnegative and not value >= 0:
        fail(key, f"must be >= 0, got {value!r}")
    return value


def integer(key: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """A whole number given as an integer (``8``, not ``8.0``, ``8.5`` or ``True``)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        fail(key, f"must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        fail(key, f"must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        fail(key, f"must be an integer <= {maximum}, got {value!r}")
    return value


def whole_number(key: str, value: Any, *, minimum: int | None = None) -> int:
    """A whole number, given as an integer or as a float without fraction (``8`` or ``8.0``, as YAML may
    write ``1.0e+6``); not ``8.5`` or ``True``."""
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if isinstance(value, float):
        fail(key, f"must be a whole number, got {value!r}")
    return integer(key, value, minimum=minimum)


#: names of scenarios, cases and flows become path components: a safe alphabet only
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def check_name(key: str, value: Any) -> str:
    """A name of lower-case letters, digits and ``_`` starting with a letter, at most 64 characters."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        fail(
            key,
            f"must be a name of lower-case letters, digits and '_' starting with a letter "
            f"(at most 64 characters; it becomes part of file paths), got {value!r}",
        )
    return value


def boolean(key: str, value: Any) -> bool:
    """``true`` or ``false`` (no truthy numbers or strings)."""
    if not isinstance(value, (bool, np.bool_)):
        fail(key, f"must be true or false, got {type(value).__name__} {value!r}")
    return bool(value)


def check_kind(key: str, raw: Any, kinds: Iterable[str]) -> str:
    """``raw`` must be a mapping whose ``kind`` is one of ``kinds``; returns the kind."""
    kinds = list(kinds)
    if not isinstance(raw, Mapping):
        fail(key, f"must be a mapping with a 'kind', got {type(raw).__name__} {raw!r}")
    kind = raw.get("kind")
    if kind is None:
        fail(subkey(key, "kind"), f"is required; expected one of {kinds}")
    return choice(subkey(key, "kind"), kind, kinds)


def choice(key: str, value: Any, choices: Iterable[str]) -> str:
    """One of the strings ``choices``."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        fail(key, f"must be one of {choices}, got {value!r}")
    return value


def real_array(key: str, value: Any, *, ndim: int | Iterable[int] | None = None) -> np.ndarray:
    """A number or a (nested, rectangular) list of finite numbers as a float array.

    ``ndim`` (an int or a set of ints) restricts the number of dimensions. The error for a bad entry
    names its index, e.g. ``"target.values[3][1]: must be finite, got nan"``.
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()

    def convert(path: str, item: Any):
        if isinstance(item, np.ndarray):
            item = item.tolist()
        if isinstance(item, (list, tuple)):
            return [convert(subkey(path, i), x) for i, x in enumerate(item)]
        return real(path, item)

    nested = convert(key, value)

    def shape_of(path: str, item) -> tuple[int, ...]:
        if not isinstance(item, list):
            return ()
        if not item:
            return (0,)
        shapes = [shape_of(subkey(path, i), x) for i, x in enumerate(item)]
        for i, s in enumerate(shapes):
            if s != shapes[0]:
                fail(subkey(path, i), f"rows must all have the same shape: expected {shapes[0]}, got {s}")
        return (len(item),) + shapes[0]

    shape = shape_of(key, nested)
    array = np.array(nested, dtype=float).reshape(shape)
    if ndim is not None:
        allowed = {ndim} if isinstance(ndim, int) else set(ndim)
        if array.ndim not in allowed:
            names = {0: "a number", 1: "a list of numbers", 2: "a list of lists of numbers (a matrix)"}
            wanted = " or ".join(names.get(n, f"a {n}-dimensional nested list") for n in sorted(allowed))
            fail(key, f"must be {wanted}, got shape {array.shape}")
    return array


def to_json(array_or_number: Any) -> Any:
    """A float array (or number) as JSON-ready data: nested lists of Python floats (or a float)."""
    array = np.asarray(array_or_number, dtype=float)
    return array.tolist() if array.ndim else float(array)


def check_schema(value: Any, schema: Mapping, key: str = "") -> None:
    """``value`` must satisfy the JSON ``schema``; otherwise raise ``ConfigError`` naming the key path.

    The most relevant violation (``jsonschema.exceptions.best_match``) is reported as
    ``"scenarios[0].name: 'Bad Name' does not match '^[a-z]...' (scenario name; ...)"``: the same
    ``<key path>: <problem>`` form as every other check here, instead of a dump of the schema.
    """
    import jsonschema  # noqa: PLC0415 - only configuration checks need it

    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    error = jsonschema.exceptions.best_match(validator_cls(schema).iter_errors(value))
    if error is None:
        return
    path = key
    for part in error.absolute_path:
        path = subkey(path, part)
    hint = error.schema.get("description") if isinstance(error.schema, Mapping) else None
    message = error.message + (f" ({hint})" if hint else "")
    fail(path or "<top level>", message)
