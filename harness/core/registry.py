"""A name → object table that fails with a message naming the key and the allowed names."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    """Immutable, ordered table of named objects (losses, activations, delta rules)."""

    def __init__(self, key: str, items: Iterable[T]) -> None:
        self.key = key
        self._items = {item.name: item for item in items}

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            allowed = ", ".join(self._items)
            raise KeyError(f"unknown {self.key} {name!r}; allowed: {allowed}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.key!r}, {self.names()})"
