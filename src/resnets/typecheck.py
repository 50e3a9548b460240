"""Values against type hints: the one check behind `TrainConfig`'s fields, weights metadata and the public
API's arguments, so a wrong type is named where it enters ("create_model(num_classes='10'): expected int or
None, got str"), never met later as a library-internal error."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

F = TypeVar("F", bound=Callable[..., Any])


def has_type(value: Any, hint: Any, literals: bool = True) -> bool:
    """Whether `value` fits `hint`: unions, Literal, None, tuples (each item), other generics by their outer
    type; ints count as floats, bools as neither ints nor floats. `literals=False` takes any value of a
    Literal's type (a function that lists its choices in a ValueError checks the value itself)."""
    origin = get_origin(hint)
    if hint is Any:
        return True
    if origin is Literal:
        return value in get_args(hint) if literals else any(type(value) is type(v) for v in get_args(hint))
    if origin in (Union, UnionType):
        return any(has_type(value, h, literals) for h in get_args(hint))
    if hint is type(None) or hint is None:
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:  # (a list is taken for a tuple: JSON and callers give lists)
        args = get_args(hint)
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
            return all(has_type(v, args[0]) for v in value)
        return len(value) == len(args) and all(has_type(v, h) for v, h in zip(value, args, strict=True))
    if origin is Sequence or hint is Sequence:  # a sequence of items, not a string of characters
        return isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    if origin is Mapping:
        return isinstance(value, Mapping)
    target = origin or hint
    return not isinstance(target, type) or isinstance(value, target)  # (unresolvable hints pass)


def type_name(hint: Any) -> str:
    """A hint as a reader says it: "int or None", "one of 'A', 'B'"."""
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(map(repr, get_args(hint)))
    if get_origin(hint) in (Union, UnionType):
        return " or ".join(type_name(h) for h in get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(get_origin(hint) or hint, "__name__", str(hint))


@functools.cache
def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """`fn`'s parameter hints, evaluated one by one (a hint naming a type imported only for type checkers is
    left out, not fatal)."""
    found = {}
    for name, annotation in inspect.get_annotations(fn).items():
        if name == "return":
            continue
        try:
            found[name] = eval(annotation, fn.__globals__) if isinstance(annotation, str) else annotation  # noqa: S307 (our own annotations)
        except Exception:  # noqa: BLE001, S112 (a hint we cannot evaluate is not checked)
            continue
    return found


def checked(fn: F | None = None, *, advice: Mapping[str, str] | None = None) -> Any:
    """Check a public function's arguments against its type hints at every call, naming the wrong one (with
    `advice[name]` where a likely mistake deserves a sentence); `@checked` or `@checked(advice=...)`."""
    if fn is None:
        return functools.partial(checked, advice=advice)
    signature, advice = inspect.signature(fn), advice or {}

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hints = _hints(fn)  # evaluated at the first call, when every module it names is loaded
        bound = signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            plain = kind not in (kind.VAR_POSITIONAL, kind.VAR_KEYWORD)
            if plain and name in hints and not has_type(value, hints[name], literals=False):
                hint = f": {advice[name]}" if name in advice else ""
                raise TypeError(f"{fn.__name__}({name}={value!r:.60}): expected {type_name(hints[name])}, "
                                f"got {type(value).__name__}{hint}")  # fmt: skip
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
