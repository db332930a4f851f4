"""What the shared sources need of the `cython` module when they run as plain Python.

`_http.py` is run as it is by the pure-Python loop and compiled by Cython for the compiled one.
It says `import cython`, which Cython understands at compile time; where Cython is not
installed (it is only a build requirement), this module stands in, and its decorators change
nothing.
"""

compiled = False


def cclass(cls):
    return cls


def final(obj):
    return obj


def freelist(size):
    return lambda cls: cls


def cast(kind, value):
    return value


def boundscheck(flag):
    return lambda func: func


def wraparound(flag):
    return lambda func: func
