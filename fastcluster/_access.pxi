# The compiled loop's access log writer (included by _parser.pyx): the default format rendered in
# C into a 64 KiB buffer that goes to the AccessLog (logs.py) in blocks. Other formats, and the
# pure-Python loop, render in Python (logs.compile_access_format); a test holds both to one output.

cdef Py_ssize_t ACCESS_BUF = 65536
cdef char* HEX = b"0123456789abcdef"


cdef Py_ssize_t escaped_size(object text):
    """Room `text` may take once escaped (\\U0010ffff is the longest escape)."""
    return 10 * PyUnicode_GET_LENGTH(text)


cdef Py_ssize_t put_escaped(char* out, object text):
    """Copy `text` as logs.escape() writes it: printable ASCII as is, \\" and \\\\, the rest as
    \\xHH, \\uHHHH or \\UHHHHHHHH; returns the bytes written."""
    cdef unsigned int kind = PyUnicode_KIND(text)
    cdef void* data = PyUnicode_DATA(text)
    cdef Py_ssize_t i, j = 0, n = PyUnicode_GET_LENGTH(text)
    cdef unsigned int c
    for i in range(n):
        c = <unsigned int>PyUnicode_READ(kind, data, i)
        if 0x20 <= c <= 0x7e and c != 34 and c != 92:
            out[j] = <char>c
            j += 1
        elif c == 34 or c == 92:
            out[j] = 92
            out[j + 1] = <char>c
            j += 2
        elif c < 256:
            out[j] = 92
            out[j + 1] = 120        # x
            out[j + 2] = HEX[c >> 4]
            out[j + 3] = HEX[c & 15]
            j += 4
        else:
            j += snprintf(out + j, 11, b"\\u%04x" if c < 0x10000 else b"\\U%08x", c)
    return j


cdef inline char* put_chars(char* out, const char* data, Py_ssize_t size) noexcept:
    memcpy(out, data, size)
    return out + size


cdef inline char* put_number(char* out, long long value):
    """Write a non-negative integer in decimal; returns the end (snprintf parses its format on
    every call: it was half of a line's cost, benchmarks/README.md, "What operability costs")."""
    cdef char digits[24]
    cdef int n = 0
    if value < 0:
        value = 0
    while True:
        digits[n] = 48 + <char>(value % 10)
        n += 1
        value //= 10
        if not value:
            break
    while n:
        n -= 1
        out[0] = digits[n]
        out += 1
    return out


cdef inline object env_text(dict env, str key, object missing):
    value = env.get(key, missing)
    return value if type(value) is str else str(value)


@cython.final
cdef class AccessWriter:
    def __cinit__(self, log):
        self.log = log
        self.buf = <char*>PyMem_Malloc(ACCESS_BUF)
        if self.buf is NULL:
            raise MemoryError()
        self.pid = str(log.pid).encode()
        self.second = -1

    def __dealloc__(self):
        PyMem_Free(self.buf)

    def add(self, env, status, size, usecs):
        """line() for tests."""
        self.line(env, status, size, usecs)

    def flush_now(self):
        self.flush()

    cdef int line(self, dict env, int status, long long size, long long usecs) except -1:
        cdef long now = c_time(NULL)
        cdef char* p
        cdef Py_ssize_t need
        addr = env_text(env, "REMOTE_ADDR", "")
        if not addr:
            addr = "-"
        method = env.get("REQUEST_METHOD")
        if method is not None:
            method = env_text(env, "REQUEST_METHOD", "")
            uri = env_text(env, "RAW_URI", "")
            protocol = env_text(env, "SERVER_PROTOCOL", "")
        referer = env_text(env, "HTTP_REFERER", "-")
        agent = env_text(env, "HTTP_USER_AGENT", "-")
        if now != self.second:
            self.second = now
            self.stamp = self.log.stamp_for(now).encode()
        need = escaped_size(addr) + escaped_size(referer) + escaped_size(agent) + 160 + PyBytes_GET_SIZE(self.stamp)
        if method is not None:
            need += escaped_size(method) + escaped_size(uri) + escaped_size(protocol)
        if need > ACCESS_BUF - self.used:
            self.flush()
            if need > ACCESS_BUF:     # a giant line: rendered in Python instead, in order
                self.log.log(env, status, size, usecs / 1e6)
                return 0
        p = self.buf + self.used
        p += put_escaped(p, addr)
        p = put_chars(p, b" - - ", 5)
        p = put_chars(p, PyBytes_AS_STRING(self.stamp), PyBytes_GET_SIZE(self.stamp))
        p = put_chars(p, b' "', 2)
        if method is None:
            p = put_chars(p, b"-", 1)
        else:
            p += put_escaped(p, method)
            p = put_chars(p, b" ", 1)
            p += put_escaped(p, uri)
            p = put_chars(p, b" ", 1)
            p += put_escaped(p, protocol)
        p = put_number(put_chars(p, b'" ', 2), status)
        p = put_number(put_chars(p, b" ", 1), size) if size else put_chars(p, b" -", 2)
        p = put_chars(p, b' "', 2)
        p += put_escaped(p, referer)
        p = put_chars(p, b'" "', 3)
        p += put_escaped(p, agent)
        p = put_chars(p, b'" ', 2)
        p = put_chars(p, PyBytes_AS_STRING(self.pid), PyBytes_GET_SIZE(self.pid))
        p = put_number(put_chars(p, b" ", 1), usecs)
        p[0] = 10
        self.used = p + 1 - self.buf
        return 0

    cdef int flush(self) except -1:
        if self.used:
            block = PyBytes_FromStringAndSize(self.buf, self.used)
            self.used = 0
            self.log.write_block(block)
        return 0
