"""Model families: one file each, holding everything the toolchain knows about that family.

    from edit_mobile.models.families import family_of, get_family
    family = family_of(model)          # the Family of a loaded transformer (teacher or student)
    family = get_family("pixart")      # by name, e.g. from a manifest

A new family is one module here exposing `FAMILY`, named as the family (`FAMILY.name`): it is
found by its file, with no list to add it to. Its presets, text encoder, VAE, sampler and
conversion live in that file.
"""

from __future__ import annotations

import importlib
import pkgutil

from edit_mobile.errors import UserError
from edit_mobile.models.families.base import Family

# Every module of this package but the shared base, alphabetically (preset listings follow).
FAMILY_MODULES = {m.name: f"{__name__}.{m.name}" for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)
                  if m.name != "base"}


def get_family(name: str) -> Family:
    if name not in FAMILY_MODULES:
        raise UserError(f"unknown model family {name!r}; known: {', '.join(FAMILY_MODULES)}")
    family = importlib.import_module(FAMILY_MODULES[name]).FAMILY
    assert family.name == name, f"{FAMILY_MODULES[name]} holds family {family.name!r}: name the file after it"
    return family


def all_families() -> list[Family]:
    return [get_family(name) for name in FAMILY_MODULES]


def family_of(model) -> Family:
    """The family of a transformer instance (students subclass their teachers)."""
    for family in all_families():
        if isinstance(model, family.teacher_class):
            return family
    names = " or ".join(family.teacher_class.__name__ for family in all_families())
    raise UserError(f"{type(model).__name__} is not a transformer of a known family; pass a {names}")


def family_of_class_name(class_name: str) -> Family | None:
    """The family whose teacher or student class has this diffusers `_class_name`."""
    return next((f for f in all_families() if class_name in (f.teacher_class.__name__, f.student_class.__name__)), None)


__all__ = ["Family", "all_families", "family_of", "family_of_class_name", "get_family"]
