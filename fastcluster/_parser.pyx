# cython: language_level=3
"""The compiled request loop of a fastcluster worker.

One worker runs one `Server`: a level-triggered epoll over the shared listening socket, a signal
wake-up fd and its connections, driven with direct system calls (epoll_wait, accept4, recv,
writev, sendfile) instead of socket objects. What HTTP/1.1 asks of a server is not here: it is
written once, in the shared sources (`_server.py`, `_exchange.py`, `_transport.py`, `_request.py`,
`_dispatch.py`, `_http.py`), which this module's classes subclass (compiled, as `_server_c`, ...,
`_http_c`). Here is only their I/O, in the included files:

- `_server.pxi`: `Server`, the epoll wait, accept and adopt;
- `_pool.pxi`: `Pool`, the app threads' primitives (with the C side in `_threads.pxd`);
- `_connection.pxi`: `Connection`, recv into one buffer, one writev for the queued output,
  sendfile, epoll interest, shutdown and close;
- `_access.pxi`: `AccessWriter`, the default access log format rendered in C.

The pure-Python twin, `_parser_py.py`, subclasses the same shared classes with socket objects.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Copy
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_READ
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport PyUnicode_DATA, PyUnicode_GET_LENGTH, PyUnicode_KIND, PyUnicode_READ
from libc.errno cimport EAGAIN, EINTR, EMFILE, ENFILE, ENOBUFS, ENOMEM, errno
from libc.stdio cimport snprintf
from libc.string cimport memcpy
from libc.time cimport time as c_time
from posix.uio cimport iovec
from posix.unistd cimport close as c_close, read as c_read, write as c_write
from libc.string cimport memset
from posix.types cimport off_t

from ._syscalls cimport *
from fastcluster._clock cimport monotonic, ticks
from fastcluster._server_c cimport DRAIN_LINGER
from fastcluster._exchange_c cimport LINGERING, CLOSED, PEER_CLOSED, SendFile
from fastcluster._threads cimport *

import os
import signal as _signal_module
import sys as _sys
import threading as _threading

from . import board as _board
from .errors import Demoted

IMPLEMENTATION = "cython"
# the sizes above (_consts.pxi), as the twin states them too (tests/test_extension.py compares)
SIZES = {"RECV_SIZE": RECV_SIZE, "MAX_IOV": MAX_IOV, "ACCEPT_BATCH": ACCEPT_BATCH, "MAX_EVENTS": MAX_EVENTS,
         "SENDFILE_CHUNK": SENDFILE_CHUNK}

# This worker's cells on the board (board.py): offsets in its slot
cdef Py_ssize_t B_BYTES_IN = _board.BYTES_IN, B_BYTES_OUT = _board.BYTES_OUT
cdef int SIGTERM_NUMBER = _signal_module.SIGTERM
cdef double LATER_SHARE = 0.5   # answers wait for their batch's end at most this share of LONG_CALL
cdef str V11 = _sys.intern("1.1"), V10 = _sys.intern("1.0")   # the versions _version() gives (_http.py's too)


cdef extern from *:
    """
    /* del out[:n] for the output queue (a list of bytes), keeping the list's item array: deleting
       every item through PyList_SetSlice frees the array, and the next response's append allocates
       it again. The items are bytes, whose release runs no Python code. */
    static CYTHON_INLINE void fc_drop_front(PyObject *list, Py_ssize_t n) {
        PyListObject *l = (PyListObject *)list;
        Py_ssize_t k, left = Py_SIZE(l) - n;
        for (k = 0; k < n; k++)
            Py_DECREF(l->ob_item[k]);
        if (left)
            memmove(l->ob_item, l->ob_item + n, left * sizeof(PyObject *));
        Py_SET_SIZE(l, left);
    }
    """
    void drop_front "fc_drop_front" (list lst, Py_ssize_t n)


cdef extern from "sys/prctl.h":
    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)
    int PR_SET_PDEATHSIG


def set_parent_death_signal(int signum):
    """prctl(PR_SET_PDEATHSIG): the kernel sends `signum` to this process when its parent dies."""
    if prctl(PR_SET_PDEATHSIG, <unsigned long>signum, 0, 0, 0) != 0:
        PyErr_SetFromErrno(OSError)


cdef inline void ipv4_text(const unsigned char* a, char* out) noexcept:
    """inet_ntop for AF_INET, "10.0.0.1" (NUL-terminated), without glibc's sprintf, which
    parses its format string again for each accepted connection."""
    cdef int i, v
    cdef Py_ssize_t n = 0
    for i in range(4):
        v = a[i]
        if v >= 100:
            out[n] = <char>(48 + v // 100)
            n += 1
        if v >= 10:
            out[n] = <char>(48 + v // 10 % 10)
            n += 1
        out[n] = <char>(48 + v % 10)
        out[n + 1] = 46 if i < 3 else 0     # "." or the end
        n += 2


cdef inline int set_nodelay(int fd) noexcept:
    cdef int one = 1
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))


include "_llhttp.pxi"
include "_access.pxi"
include "_pool.pxi"
include "_server.pxi"
include "_connection.pxi"

cdef object _tls = None          # fastcluster.tls, imported with the first TLS connection (ssl is loaded
cdef Py_ssize_t SEAL_SIZE = 0    # only by a worker that serves TLS), and its SEAL_SIZE


cdef object _load_tls():
    global _tls, SEAL_SIZE
    from . import tls
    SEAL_SIZE = tls.SEAL_SIZE
    _tls = tls
    return tls


# The C helpers of _inline.pxd as Python functions, only for the test that holds each to the
# plain-Python version the pure loop runs (tests/unit/test_inline.py): one behaviour, written twice
# for speed, checked as one.
from fastcluster._inline cimport _join_head, _same_text, _with_tail, _del_first


def _inline_join_head(bytes status, list lines, bytes a, bytes b, bytes c, bytes end, bytes tail):
    return _join_head(status, lines, a, b, c, end, tail)


def _inline_same_text(str a, str b):
    return _same_text(a, b)


def _inline_with_tail(bytes joined, Py_ssize_t size, bytes tail):
    return _with_tail(joined, size, tail)


def _inline_del_first(list items):
    if not items:
        raise IndexError("the list is empty")    # (the C helper's callers never pass one)
    _del_first(items)
