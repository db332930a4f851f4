# C versions of what the shared sources do per request, for the compiled builds (the shared
# sources define `_join_head`, `_with_tail`, `_same_text`, `_dict_version`, `_refs` and
# `_del_first` themselves only when they run uncompiled).
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DATA, PyUnicode_GET_LENGTH, PyUnicode_KIND
from libc.string cimport memcmp, memcpy


cdef inline char* _put(char* at, bytes piece) noexcept:
    cdef Py_ssize_t size = PyBytes_GET_SIZE(piece)
    memcpy(at, PyBytes_AS_STRING(piece), size)
    return at + size


cdef inline bytes _join_head(bytes status, list lines, bytes a, bytes b, bytes c, bytes end, bytes tail):
    """A response head, joined: the status line, the app's header lines (bytes, from encode_headers),
    up to three lines of the server's (None: not sent), the end, and a small body (`tail`, or None). CPython's bytes join spends most
    of its time on the buffer protocol for each of these few short pieces."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(lines)
    cdef Py_ssize_t total = PyBytes_GET_SIZE(status) + PyBytes_GET_SIZE(end)
    cdef bytes out
    cdef char* at
    for i in range(n):
        total += PyBytes_GET_SIZE(<bytes><PyObject*>PyList_GET_ITEM(lines, i))
    if a is not None:
        total += PyBytes_GET_SIZE(a)
    if b is not None:
        total += PyBytes_GET_SIZE(b)
    if c is not None:
        total += PyBytes_GET_SIZE(c)
    if tail is not None:
        total += PyBytes_GET_SIZE(tail)
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
    at = _put(at, end)
    if tail is not None:
        _put(at, tail)
    return out


cdef inline bytes _with_tail(bytes joined, Py_ssize_t size, bytes tail):
    """joined[:size] + tail (None: nothing) in one copy each."""
    cdef Py_ssize_t more = 0 if tail is None else PyBytes_GET_SIZE(tail)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size + more)
    cdef char* at = PyBytes_AS_STRING(out)
    memcpy(at, PyBytes_AS_STRING(joined), size)
    if more:
        memcpy(at + size, PyBytes_AS_STRING(tail), more)
    return out


cdef inline bint _same_text(str a, str b) noexcept:
    """a == b for two str objects (Cython's == calls PyUnicode_Compare, a function call with
    checks of its own)."""
    cdef Py_ssize_t n
    cdef int kind
    if a is b:
        return True
    n = PyUnicode_GET_LENGTH(a)
    kind = PyUnicode_KIND(a)
    if n != PyUnicode_GET_LENGTH(b) or kind != PyUnicode_KIND(b):
        return False
    return memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), n * kind) == 0


cdef extern from *:
    """
    /* A dict's version tag (PEP 509): CPython gives a dict a new one on every change. Read only
       where it is known to mean that (3.11); elsewhere ENV_REUSE is off and this is 0. */
    #if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    #define FC_ENV_REUSE 1
    #define FC_DICT_VERSION(d) (((PyDictObject *)(d))->ma_version_tag)
    #else
    #define FC_ENV_REUSE 0
    #define FC_DICT_VERSION(d) ((unsigned long long)0)
    #endif

    /* del items[0] for a connection's pipeline of requests (`pending`), keeping the list's item
       array: PyList_SetSlice frees the array when the last item goes, and the next request's
       append allocates it again (a free and a malloc each keep-alive request; benchmarks/README.md,
       Speed II, "Instructions"). The list is not
       empty; the item is released last, with the list already consistent. */
    static CYTHON_INLINE void fc_del_first(PyObject *list) {
        PyListObject *l = (PyListObject *)list;
        PyObject *first = l->ob_item[0];
        Py_ssize_t left = Py_SIZE(l) - 1;
        if (left)
            memmove(l->ob_item, l->ob_item + 1, left * sizeof(PyObject *));
        Py_SET_SIZE(l, left);
        Py_DECREF(first);
    }
    """
    bint ENV_REUSE "FC_ENV_REUSE"
    unsigned long long _dict_version "FC_DICT_VERSION" (dict d)
    Py_ssize_t _refs "Py_REFCNT" (object o)
    void _del_first "fc_del_first" (list items)
