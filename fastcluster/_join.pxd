# A response head, joined, for the compiled builds, where plain Python joins a list (the shared
# sources define `_join_head` only when they run uncompiled): the status line, the app's header
# lines, up to three lines of the server's (None: not sent) and the end. CPython's bytes join
# spends most of its time on the buffer protocol for each of these few short pieces.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from libc.string cimport memcpy


cdef inline char* _put(char* at, bytes piece) noexcept:
    cdef Py_ssize_t size = PyBytes_GET_SIZE(piece)
    memcpy(at, PyBytes_AS_STRING(piece), size)
    return at + size


cdef inline bytes _join_head(bytes status, list lines, bytes a, bytes b, bytes c, bytes end):
    cdef Py_ssize_t i, n = PyList_GET_SIZE(lines)
    cdef Py_ssize_t total = PyBytes_GET_SIZE(status) + PyBytes_GET_SIZE(end)
    cdef bytes out
    cdef char* at
    for i in range(n):
        total += PyBytes_GET_SIZE(<bytes><PyObject*>PyList_GET_ITEM(lines, i))   # (encode_headers: all bytes)
    if a is not None:
        total += PyBytes_GET_SIZE(a)
    if b is not None:
        total += PyBytes_GET_SIZE(b)
    if c is not None:
        total += PyBytes_GET_SIZE(c)
    out = PyBytes_FromStringAndSize(NULL, total)
    at = _put(PyBytes_AS_STRING(out), status)
    for i in range(n):
        at = _put(at, <bytes><PyObject*>PyList_GET_ITEM(lines, i))
    if a is not None:
        at = _put(at, a)
    if b is not None:
        at = _put(at, b)
    if c is not None:
        at = _put(at, c)
    _put(at, end)
    return out
