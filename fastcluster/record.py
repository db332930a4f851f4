"""Records: the part of dataclasses fastcluster uses, without importing dataclasses.

dataclasses imports inspect, ast, dis and tokenize, and writes each class's methods as source it
compiles: about 1 MiB of memory. The master loads its modules before it forks, so every worker
carried that 1 MiB (issue 14's worker RSS). A record declares its fields as a dataclass does, as
annotated class attributes in order (a base class's first); the value is the default, and
`field(make)` is a default made anew for each instance (a dict, a list), `field(make, compare=False)`
one that == and hash() ignore. A record has keyword or positional __init__, ==, repr, `replace()`
and `as_dict()`; `class X(Record, frozen=True)` makes its attributes read-only and it hashable.
"""

from __future__ import annotations

_REQUIRED = object()


class field:
    """A default made by calling `make()` for each new record; `compare=False` leaves it out of ==."""

    __slots__ = ("make", "compare")

    def __init__(self, make, compare=True):
        self.make = make
        self.compare = compare


class FrozenError(AttributeError):
    """An attribute of a frozen record was set or deleted."""


class Record:
    FIELDS: tuple = ()          # the field names, in order
    _defaults: dict = {}        # name -> default value, field, or _REQUIRED
    _compared: tuple = ()       # the names == and hash() look at
    _frozen = False

    def __init_subclass__(cls, frozen=False, **kwargs):
        super().__init_subclass__(**kwargs)
        defaults = dict(cls._defaults)
        for name in cls.__dict__.get("__annotations__", {}):
            if name.startswith("_") or name == "FIELDS":
                continue
            defaults[name] = cls.__dict__.get(name, _REQUIRED)
            if name in cls.__dict__:
                delattr(cls, name)   # a missing attribute is an AttributeError, not the default
        cls._defaults = defaults
        cls.FIELDS = tuple(defaults)
        cls._compared = tuple(name for name, default in defaults.items()
                              if not (type(default) is field and not default.compare))
        cls._frozen = frozen or cls._frozen
        if cls._frozen:
            cls.__hash__ = Record._hash
            cls.__setattr__ = Record._frozen_setattr
            cls.__delattr__ = Record._frozen_delattr
        else:
            cls.__hash__ = None   # mutable and compared by value, as a dataclass: not hashable

    def __init__(self, *args, **kwargs):
        cls = type(self)
        if len(args) > len(cls.FIELDS):
            raise TypeError("%s() takes at most %d positional arguments" % (cls.__name__, len(cls.FIELDS)))
        for name, value in zip(cls.FIELDS, args):
            if name in kwargs:
                raise TypeError("%s() got two values for %r" % (cls.__name__, name))
            kwargs[name] = value
        for name, default in cls._defaults.items():
            if name in kwargs:
                value = kwargs.pop(name)
            elif default is _REQUIRED:
                raise TypeError("%s() missing the argument %r" % (cls.__name__, name))
            else:
                value = default.make() if type(default) is field else default
            object.__setattr__(self, name, value)
        if kwargs:
            raise TypeError("%s() got an unexpected argument %r" % (cls.__name__, next(iter(kwargs))))

    # (a frozen class's __setattr__ and __delattr__; a mutable record keeps object's, so that setting
    # its attributes costs what it costs on any object)
    def _frozen_setattr(self, name, value):
        raise FrozenError("cannot assign to field %r of a frozen %s" % (name, type(self).__name__))

    def _frozen_delattr(self, name):
        raise FrozenError("cannot delete field %r of a frozen %s" % (name, type(self).__name__))

    def _values(self):
        return tuple(getattr(self, name) for name in self._compared)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def _hash(self):
        return hash(self._values())

    def __repr__(self):
        return "%s(%s)" % (type(self).__qualname__,
                           ", ".join("%s=%r" % (name, getattr(self, name)) for name in self.FIELDS))

    def replace(self, **changes) -> "Record":
        """A new record of the same class: these fields changed, the others as they are here."""
        values = {name: getattr(self, name) for name in self.FIELDS}
        values.update(changes)
        return type(self)(**values)

    def as_dict(self) -> dict:
        """The fields as a dict, records in them (and in their lists, tuples and dicts) as dicts too."""
        return {name: _plain(getattr(self, name)) for name in self.FIELDS}


def _plain(value):
    if isinstance(value, Record):
        return value.as_dict()
    if type(value) in (list, tuple):
        return type(value)(_plain(item) for item in value)
    if type(value) is dict:
        return {key: _plain(item) for key, item in value.items()}
    return value
