"""Every public name of sandkit has a docstring: the API reference (mkdocs.yml) is made from them,
and `help()` shows them.

What counts as public: every module under ``sandkit/`` whose dotted name has no part starting
with an underscore (``sandkit._portal``, ``sandkit.security._codegen`` and ``sandkit.__main__``
are private); in it every class and function defined there (not imported) whose name does not
start with an underscore; and every method, property, classmethod, staticmethod and nested
class of such a class, again without a leading underscore. Each needs a docstring of its own,
the modules too. Tests are not part of the package, so not checked.

The rules for what is not checked:

- dunder methods (``__init__``, ``__enter__``, ``__iter__``...): Python defines what they do;
  a constructor's arguments are described in its class's docstring;
- what attrs generates (``__init__``, ``__eq__``, ``__repr__``...): dunders, so the rule above,
  and attrs fields are attributes, which need no docstring of their own;
- a method that overrides a documented method of a base class inherits its docstring, as
  `inspect.getdoc` and `help()` do (a cgroup v1 or v2 `set_memory` says what `CgroupBase`'s does);
- a class does *not* inherit one: an exception class without its own docstring would show its
  base's, which says less than it should. The text NamedTuple generates (``Name(field, ...)``)
  is not a docstring either.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import sandkit


def public_modules() -> Iterator[ModuleType]:
    yield sandkit
    for info in pkgutil.walk_packages(sandkit.__path__, prefix="sandkit."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        yield importlib.import_module(info.name)


def _defined_in(obj: Any, module: ModuleType) -> bool:
    return getattr(obj, "__module__", None) == module.__name__


def _own_class_doc(cls: type) -> str:
    doc = inspect.cleandoc(vars(cls).get("__doc__") or "")
    return "" if doc.startswith(f"{cls.__name__}(") else doc  # NamedTuple's generated text


def _function_of(member: Any) -> Any:
    """The function behind a class attribute, or None when it is not a method of any kind."""
    if isinstance(member, staticmethod | classmethod):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    if inspect.isfunction(member) or hasattr(member, "__wrapped__"):
        return member
    return None


def _class_members(cls: type, qualname: str) -> Iterator[tuple[str, bool]]:
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if inspect.isclass(member) and member.__qualname__ == f"{cls.__qualname__}.{name}":
            yield from _class(member, f"{qualname}.{name}")
        elif _function_of(member) is not None:
            # getattr on the class, so that getdoc finds an overridden method's docstring
            yield f"{qualname}.{name}", bool(inspect.getdoc(getattr(cls, name)))


def _class(cls: type, qualname: str) -> Iterator[tuple[str, bool]]:
    yield qualname, bool(_own_class_doc(cls))
    yield from _class_members(cls, qualname)


def public_definitions() -> Iterator[tuple[str, bool]]:
    """(dotted name, has a docstring) for every public definition."""
    for module in public_modules():
        yield module.__name__, bool(inspect.getdoc(module))
        for name, obj in vars(module).items():
            if name.startswith("_") or not _defined_in(obj, module):
                continue
            qualname = f"{module.__name__}.{name}"
            if inspect.isclass(obj):
                yield from _class(obj, qualname)
            elif callable(obj):
                yield qualname, bool(inspect.getdoc(obj))


def test_the_walk_finds_the_public_api() -> None:
    """A walk that found nothing would pass for the wrong reason."""
    names = {name for name, _ in public_definitions()}
    assert {
        "sandkit.api.Container.write_file",
        "sandkit.runtime.container.AsyncContainer.exec",
        "sandkit.images.image.Image.pull",
        "sandkit.errors.ImageNotFoundError",
        "sandkit.pytest_plugin.sandkit_factory",
    } <= names
    assert not any(".__" in name or "._" in name for name in names)


def test_every_public_name_has_a_docstring() -> None:
    missing = sorted(name for name, documented in public_definitions() if not documented)
    assert not missing, f"{len(missing)} public names have no docstring:\n" + "\n".join(missing)
