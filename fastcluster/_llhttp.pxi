# The compiled loop's parser (included by _parser.pyx): llhttp, still the one inside httptools, driven
# from C instead of through httptools' Python callbacks.
#
# httptools' extension module carries llhttp and exports its C API as dynamic symbols
# (llhttp_init, llhttp_execute, ...). At import they are looked up once in the loaded module
# (dlopen with RTLD_NOLOAD: the same library, never a second copy), the layout of
# llhttp_settings_t is told from the symbols (llhttp 9.3 added on_protocol, which moved every
# callback after the first), and a self-test parses two requests through C callbacks that only
# record what they saw. Only when all of that holds, and httptools' version is one this was
# checked against, does each Connection embed its own llhttp_t and call the shared HttpConnection's
# on_* methods as C functions; otherwise it keeps httptools' HttpRequestParser (the callbacks
# path, which the pure-Python loop always uses). `PARSER` says which one runs.

from libc.stdint cimport uint8_t
from libc.string cimport memcmp
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.memoryview cimport PyMemoryView_Check, PyMemoryView_GET_BUFFER
from cpython.bytes cimport PyBytes_Check
from cpython.object cimport PyObject

from httptools import HttpParserCallbackError as _CallbackError, HttpParserError as _ParserError
from httptools import HttpParserUpgrade as _Upgrade

cdef extern from "<dlfcn.h>" nogil:
    void* dlopen(const char* filename, int flag)
    void* dlsym(void* handle, const char* symbol)
    int RTLD_NOW
    int RTLD_NOLOAD

cdef enum:
    LL_SETTINGS_SLOTS = 40     # pointers kept for an llhttp_settings_t (llhttp 9.3's has 25)
    LL_REQUEST = 1             # HTTP_REQUEST
    LL_PAUSED_UPGRADE = 22     # HPE_PAUSED_UPGRADE
    LL_USER = 24               # HPE_USER

ctypedef int (*ll_cb)(void* p) noexcept
ctypedef int (*ll_data_cb)(void* p, const char* at, size_t length) noexcept

cdef struct LlhttpApi:
    void (*init)(void* p, int kind, void* settings) noexcept nogil
    void (*settings_init)(void* settings) noexcept nogil
    int (*execute)(void* p, const char* data, size_t length) noexcept
    void (*resume_after_upgrade)(void* p) noexcept nogil
    int (*should_keep_alive)(void* p) noexcept nogil
    uint8_t (*get_method)(void* p) noexcept nogil
    uint8_t (*get_http_major)(void* p) noexcept nogil
    uint8_t (*get_http_minor)(void* p) noexcept nogil
    uint8_t (*get_upgrade)(void* p) noexcept nogil
    const char* (*get_error_pos)(void* p) noexcept nogil
    const char* (*get_error_reason)(void* p) noexcept nogil
    void (*set_error_reason)(void* p, const char* reason) noexcept nogil
    const char* (*method_name)(int method) noexcept nogil

cdef LlhttpApi ll
cdef void* ll_settings[LL_SETTINGS_SLOTS]
cdef bint DIRECT = False
cdef list METHOD_NAMES = []            # llhttp's method numbers -> the environ's REQUEST_METHOD (256)
PARSER = "httptools"                   # "llhttp" once the direct path is in use
PARSER_WHY = ""                        # why not, when it is not

# The header fields this worker saw last, by their position in a head: (name, value, environ key,
# text), as on_header made them. Clients send the same fields in the same order on every request
# (and every client of one kind the same ones), so a field that equals the one seen at its position
# reuses that entry: no bytes objects, no decoding, no header_key lookup (_header_again). Every
# entry is immutable and only ever replaced, so an app thread that holds the loop reads it as safely.
cdef list HEADER_MEMO = []
cdef Py_ssize_t HEADER_MEMO_SIZE = 32

# callback slots in llhttp_settings_t: (before llhttp 9.3, since 9.3)
cdef int S_BEGIN = 0
cdef int S_URL, S_FIELD, S_VALUE, S_HEADERS, S_BODY, S_MESSAGE, S_CHUNK_HEADER, S_CHUNK_COMPLETE


# --- the callbacks: llhttp -> the connection's on_* methods, as httptools would call them ----------

cdef inline int _failed(Connection conn, void* p, object exc) noexcept:
    conn.parse_failure = exc
    ll.set_error_reason(p, "callback error")
    return LL_USER


cdef inline object _memo_entry(Py_ssize_t index):
    """HEADER_MEMO[index], or None past its end."""
    if index < PyList_GET_SIZE(HEADER_MEMO):
        return <object>PyList_GET_ITEM(HEADER_MEMO, index)
    return None


cdef inline bytes _same_or_new(bytes known, const char* at, size_t length):
    """`known` when it holds exactly these bytes, else a new bytes object of them."""
    if known is not None and <size_t>PyBytes_GET_SIZE(known) == length and \
            memcmp(PyBytes_AS_STRING(known), at, length) == 0:
        return known
    return at[:length]


cdef int _flush_header(Connection conn) except -1:
    cdef bytes name = conn.hname, value = conn.hvalue
    cdef Py_ssize_t index = conn.hindex
    cdef tuple entry = _memo_entry(index)
    conn.hname = conn.hvalue = None
    conn.hindex = index + 1
    if not conn.in_head or conn.asgi:
        conn.on_header(name, value)      # a trailer field, or an ASGI scope's (never memoized)
        return 0
    if entry is not None and entry[0] is name and entry[1] is value:
        if conn.reusing:
            # the environ is the kept one: this field must be the kept request's at this position
            if index < PyList_GET_SIZE(conn.fields) and <object>PyList_GET_ITEM(conn.fields, index) is entry:
                conn._field_kept(name, value, entry[2], entry[3])
                return 0
            conn._unreuse(index)
        conn._header_again(name, value, entry[2], entry[3])
        if conn.fields is not None:
            conn.fields.append(entry)
        return 0
    if conn.reusing:
        conn._unreuse(index)
    conn.on_header(name, value)
    if index < HEADER_MEMO_SIZE:
        entry = (name, value, conn.hkey, conn.htext)
        if index < PyList_GET_SIZE(HEADER_MEMO):
            HEADER_MEMO[index] = entry
        elif index == PyList_GET_SIZE(HEADER_MEMO):
            HEADER_MEMO.append(entry)
        if conn.fields is not None:
            conn.fields.append(entry)
    else:
        conn.fields = None
    return 0


cdef int _cb_begin(void* p) noexcept:
    cdef Connection conn = <Connection>(<CParser*>p).owner
    conn.hindex = 0
    try:
        conn.on_message_begin()
    except BaseException as exc:
        return _failed(conn, p, exc)
    return 0


cdef int _cb_url(void* p, const char* at, size_t length) noexcept:
    cdef Connection conn = <Connection>(<CParser*>p).owner
    try:
        conn.on_url(at[:length])
    except BaseException as exc:
        return _failed(conn, p, exc)
    return 0


cdef int _cb_field(void* p, const char* at, size_t length) noexcept:
    cdef Connection conn = <Connection>(<CParser*>p).owner
    cdef tuple entry
    try:
        if conn.hvalue is not None:
            _flush_header(conn)
        if conn.hname is None:
            entry = _memo_entry(conn.hindex)
            conn.hname = _same_or_new(entry[0] if entry is not None else None, at, length)
        else:
            conn.hname += at[:length]       # a name split across two reads
    except BaseException as exc:
        return _failed(conn, p, exc)
    return 0


cdef int _cb_value(void* p, const char* at, size_t length) noexcept:
    cdef Connection conn = <Connection>(<CParser*>p).owner
    cdef tuple entry
    try:
        if conn.hvalue is None:
            entry = _memo_entry(conn.hindex)
            conn.hvalue = _same_or_new(entry[1] if entry is not None else None, at, length)
        else:
            conn.hvalue += at[:length]
    except BaseException as exc:
        return _failed(conn, p, exc)
    return 0


cdef int _cb_headers(void* p) noexcept:
    cdef Connection conn = <Connection>(<CParser*>p).owner
    try:
        if conn.hvalue is not None:
            _flush_header(conn)
        conn.on_headers_complete()
    except BaseException as exc:
        return _failed(conn, p, exc)
    return 1 if ll.get_upgrade(p) else 0     # (an upgrade has no body: llhttp pauses after it)


cdef int _cb_body(void* p, const char* at, size_t length) noexcept:
    cdef Connection conn = <Connection>(<CParser*>p).owner
    try:
        conn.on_body(at[:length])
    except BaseException as exc:
        return _failed(conn, p, exc)
    return 0


cdef int _cb_message(void* p) noexcept:
    cdef Connection conn = <Connection>(<CParser*>p).owner
    try:
        conn.on_message_complete()
    except BaseException as exc:
        return _failed(conn, p, exc)
    return 0


cdef int _cb_chunk_header(void* p) noexcept:
    cdef Connection conn = <Connection>(<CParser*>p).owner
    if conn.hname is not None or conn.hvalue is not None:
        return _failed(conn, p, _ParserError("invalid headers state"))
    return 0


cdef int _cb_chunk_complete(void* p) noexcept:
    cdef Connection conn = <Connection>(<CParser*>p).owner
    try:
        if conn.hvalue is not None:
            _flush_header(conn)              # the last trailer field
    except BaseException as exc:
        return _failed(conn, p, exc)
    return 0


cdef object _parse_error(Connection conn, int err):
    """The httptools exception for a failed llhttp_execute."""
    cdef const char* reason = ll.get_error_reason(&conn.cp)
    failure = conn.parse_failure
    conn.parse_failure = None
    text = reason.decode("latin-1") if reason is not NULL else "llhttp error %d" % err
    exc = (_CallbackError if failure is not None else _ParserError)(text)
    if failure is not None:
        exc.__context__ = failure
    return exc


# --- the self-test: the same layout assumptions, through callbacks that only record -----------

cdef bytearray _seen = bytearray()


cdef int _t_begin(void* p) noexcept:
    _seen.extend(b"B|")
    return 0


cdef int _t_data(bytes tag, const char* at, size_t length) noexcept:
    _seen.extend(tag)
    _seen.extend(at[:length])
    _seen.extend(b"|")
    return 0


cdef int _t_url(void* p, const char* at, size_t length) noexcept:
    return _t_data(b"U", at, length)


cdef int _t_field(void* p, const char* at, size_t length) noexcept:
    return _t_data(b"F", at, length)


cdef int _t_value(void* p, const char* at, size_t length) noexcept:
    return _t_data(b"V", at, length)


cdef int _t_body(void* p, const char* at, size_t length) noexcept:
    return _t_data(b"D", at, length)


cdef int _t_headers(void* p) noexcept:
    _seen.extend(b"H%d %d.%d %d|" % (ll.get_method(p), ll.get_http_major(p), ll.get_http_minor(p),
                                     ll.should_keep_alive(p)))
    return 0


cdef int _t_message(void* p) noexcept:
    _seen.extend(b"M|")
    return 0


cdef int _t_chunk_header(void* p) noexcept:
    _seen.extend(b"C|")
    return 0


cdef int _t_chunk_complete(void* p) noexcept:
    _seen.extend(b"c|")
    return 0


SELF_TEST = (b"POST /p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
             b"PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"
             b"GET / HTTP/1.0\r\n\r\n")      # (last: nothing may follow a request that ends the connection)
SELF_TEST_SEEN = (b"B|U/p?q|FHost|Vh|FContent-Length|V3|H3 1.1 1|Dabc|M|"
                  b"B|U/c|FHost|Vh|FTransfer-Encoding|Vchunked|H4 1.1 1|C|Dz|c|C|c|M|"
                  b"B|U/|H1 1.0 0|M|")


cdef int _fill(void** settings, ll_cb begin, ll_data_cb url, ll_data_cb field, ll_data_cb value,
               ll_cb headers, ll_data_cb body, ll_cb message, ll_cb chunk_header, ll_cb chunk_complete) except -1:
    cdef int i
    for i in range(LL_SETTINGS_SLOTS):
        settings[i] = NULL
    ll.settings_init(settings)
    settings[S_BEGIN] = <void*>begin
    settings[S_URL] = <void*>url
    settings[S_FIELD] = <void*>field
    settings[S_VALUE] = <void*>value
    settings[S_HEADERS] = <void*>headers
    settings[S_BODY] = <void*>body
    settings[S_MESSAGE] = <void*>message
    settings[S_CHUNK_HEADER] = <void*>chunk_header
    settings[S_CHUNK_COMPLETE] = <void*>chunk_complete
    return 0


cdef object _self_test():
    """None when llhttp, driven this way, parses as expected; else what went wrong."""
    cdef void* settings[LL_SETTINGS_SLOTS]
    cdef CParser parser
    cdef bytes data = SELF_TEST
    cdef int err
    _fill(settings, _t_begin, _t_url, _t_field, _t_value, _t_headers, _t_body, _t_message, _t_chunk_header,
          _t_chunk_complete)
    ll.init(&parser, LL_REQUEST, settings)
    del _seen[:]
    err = ll.execute(&parser, data, len(data))
    if err != 0:
        return "the self-test request failed to parse (llhttp error %d)" % err
    if bytes(_seen) != SELF_TEST_SEEN:
        return "the self-test saw %r" % bytes(_seen)
    return None


cdef object _load_llhttp():
    """Resolve llhttp's API in httptools' loaded module; None when the direct path may be used,
    else why not."""
    global S_URL, S_FIELD, S_VALUE, S_HEADERS, S_BODY, S_MESSAGE, S_CHUNK_HEADER, S_CHUNK_COMPLETE
    cdef void* handle
    cdef void* symbol
    cdef int i
    import httptools
    import httptools.parser.parser as compiled_httptools

    try:
        release = tuple(int(part) for part in httptools.__version__.split(".")[:2])
    except ValueError:
        return "httptools %s: an unknown version" % httptools.__version__
    if not (0, 6) <= release < (1, 0):
        return "httptools %s: not a version this loop was checked against (0.6 to 0.9)" % httptools.__version__
    path = os.fsencode(compiled_httptools.__file__)
    handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if handle is NULL:
        return "cannot find the loaded httptools module %s" % compiled_httptools.__file__
    names = ("llhttp_init", "llhttp_settings_init", "llhttp_execute", "llhttp_resume_after_upgrade",
             "llhttp_should_keep_alive", "llhttp_get_method", "llhttp_get_http_major", "llhttp_get_http_minor",
             "llhttp_get_upgrade", "llhttp_get_error_pos", "llhttp_get_error_reason", "llhttp_set_error_reason",
             "llhttp_method_name")
    cdef void* found[13]
    for i, name in enumerate(names):
        found[i] = dlsym(handle, name.encode())
        if found[i] is NULL:
            return "httptools %s does not export %s" % (httptools.__version__, name)
    ll.init = <void (*)(void*, int, void*) noexcept nogil>found[0]
    ll.settings_init = <void (*)(void*) noexcept nogil>found[1]
    ll.execute = <int (*)(void*, const char*, size_t) noexcept>found[2]
    ll.resume_after_upgrade = <void (*)(void*) noexcept nogil>found[3]
    ll.should_keep_alive = <int (*)(void*) noexcept nogil>found[4]
    ll.get_method = <uint8_t (*)(void*) noexcept nogil>found[5]
    ll.get_http_major = <uint8_t (*)(void*) noexcept nogil>found[6]
    ll.get_http_minor = <uint8_t (*)(void*) noexcept nogil>found[7]
    ll.get_upgrade = <uint8_t (*)(void*) noexcept nogil>found[8]
    ll.get_error_pos = <const char* (*)(void*) noexcept nogil>found[9]
    ll.get_error_reason = <const char* (*)(void*) noexcept nogil>found[10]
    ll.set_error_reason = <void (*)(void*, const char*) noexcept nogil>found[11]
    ll.method_name = <const char* (*)(int) noexcept nogil>found[12]
    if dlsym(handle, "llhttp__on_protocol") is not NULL:     # llhttp 9.3 and later
        S_URL, S_FIELD, S_VALUE, S_HEADERS, S_BODY, S_MESSAGE = 2, 6, 7, 10, 11, 12
        S_CHUNK_HEADER, S_CHUNK_COMPLETE = 22, 23
    else:
        S_URL, S_FIELD, S_VALUE, S_HEADERS, S_BODY, S_MESSAGE = 1, 5, 6, 9, 10, 11
        S_CHUNK_HEADER, S_CHUNK_COMPLETE = 20, 21
    problem = _self_test()
    if problem is not None:
        return problem
    _fill(ll_settings, _cb_begin, _cb_url, _cb_field, _cb_value, _cb_headers, _cb_body, _cb_message,
          _cb_chunk_header, _cb_chunk_complete)
    METHOD_NAMES.extend([None] * 256)      # (filled as methods are seen: llhttp_method_name aborts
    return None                            # on a number it never produces)


def use_parser(str name):
    """Which parser new connections of the compiled loop use: "llhttp" (the direct path, when it
    passed its checks at import) or "httptools" (its callbacks). For tests and benchmarks."""
    global DIRECT, PARSER
    if name == "llhttp":
        if PARSER_WHY:
            raise RuntimeError("the direct llhttp path is not available: %s" % PARSER_WHY)
        DIRECT = True
    elif name == "httptools":
        DIRECT = False
    else:
        raise ValueError(name)
    PARSER = name


if os.environ.get("FASTCLUSTER_PARSER", "") == "httptools":
    PARSER_WHY = "FASTCLUSTER_PARSER=httptools"
else:
    PARSER_WHY = _load_llhttp() or ""
if not PARSER_WHY:
    DIRECT = True
    PARSER = "llhttp"
PARSER_DEFAULT = PARSER
