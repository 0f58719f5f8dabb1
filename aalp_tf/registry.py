"""Name -> object registries for datasets, models, methods and attacks.

A registry refuses duplicate names and, on a miss, lists the names it knows, so a typo on the
command line becomes one clear line instead of a KeyError.
"""
from typing import Callable, Dict, Generic, Iterator, TypeVar

from aalp_tf.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of things of one kind (e.g. "dataset")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` on a function or class."""

        def add(item: T) -> T:
            self.add(name, item)
            return item

        return add

    def add(self, name: str, item: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered; accepted: a new name "
                             f"(registered: {', '.join(self.names())})")
        self._items[name] = item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UsageError(
                f"unknown {self.kind}: received {name!r}; accepted: {', '.join(self.names())}"
            ) from None

    def require(self, name: str, made: str, kind: str = "") -> None:
        """`made` (a run, an export, a saved model) was trained with the `kind` (default: this
        registry's) `name`: refused in one line that names --imports when nothing imported has
        registered it, rather than the model's argument check, which knows nothing of the file
        or of --imports."""
        kind = kind or self.kind
        if name not in self._items:
            raise UsageError(
                f"{made} was trained with the {kind} {name!r}, which nothing imported has "
                f"registered; accepted: the module that registers it, imported first "
                f"(--imports=MODULE; in Python, import it), or one trained with a built-in "
                f"{kind}: {', '.join(self.names())}")

    def names(self) -> list:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
