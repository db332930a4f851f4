# The C side of _request.py: Cython compiles that plain-Python file as fastcluster._request_c with
# these declarations (pure-Python mode with an augmenting .pxd).

cimport cython
from fastcluster._server_c cimport HttpServer
from fastcluster._settings_c cimport Settings
from fastcluster._inline cimport ENV_REUSE, _dict_version, _refs
from fastcluster._exchange_c cimport Exchange, AsgiRequest, new_exchange
from fastcluster._transport_c cimport Transport

cdef object header_key, split_target, split_asgi_target, forwarded_client, parse_proxy_header
cdef object Reject, log, refusal_cell
cdef dict HEADER_KEYS, PROTOCOLS, LOWER_NAMES
cdef frozenset FORBIDDEN_TRAILERS
cdef str K_CONTENT_LENGTH, K_TRANSFER_ENCODING, K_FORWARDED_FOR, K_FORWARDED_PROTO, K_FORWARDED, K_HOST
cdef int SEEN_BODY, SEEN_FORWARDED
cdef str HTTP11, HTTP10, M_HEAD, V11, V10, V2, LAST_PLAIN_HOST
cdef tuple LINE_KEYS

@cython.locals(port=bint, c=Py_UCS4)
cpdef bint plain_host(str host)
cdef bint _known_plain_host(str host) except -1
@cython.locals(lowered=bytes)
cpdef bytes lower_name(bytes name)
@cython.locals(n=Py_ssize_t, i=Py_ssize_t, query=Py_ssize_t, c=Py_UCS4)
cdef Py_ssize_t _query_at(str uri) except -3


cdef class RequestBuilder(Transport):
    cdef:
        public dict base_environ       # the server's environ plus this client's address
        public bint asgi               # the app is an ASGI app
        dict scope_base                # ASGI: what every request's scope on this connection starts from
        public int trusted             # 1: the peer is a proxy whose Forwarded headers count (--forwarded-allow-ips);
                                       # 0: it is not; -1: not asked yet
        # the head being built (one at a time on a connection)
        public Exchange cur            # its request
        bytes url
        bint in_head                   # between a request's first byte and the end of its headers
        Py_ssize_t nheaders
        Py_ssize_t header_bytes
        int seen                       # SEEN_BODY, SEEN_FORWARDED: what on_header noted of this request
        str host                       # the request's Host field as the environ has it (None: none yet)
        list hlist                     # ASGI: the headers of the request being parsed, as the scope has them
        object hkey, htext             # the environ key and text on_header made of its last field (or None)
        # the memos
        dict line_env                  # base_environ plus the keys of a request line sent twice in a row
        bytes line_url                 # the last request line: its target, method and protocol
        str line_method, line_protocol
        list fields                    # the HEADER_MEMO entries of this request's fields, in order (None: not kept)
        bint reusing                   # its environ is kept_env, while its fields are kept_fields
        dict kept_env                  # the environ of the last request, handed back unchanged and unshared
        list kept_fields               # that request's `fields`
        unsigned long long kept_version   # kept_env's dict version when it was built

    cdef int _client(self, HttpServer server, dict env) except -1
    cdef dict _client_environ(self)
    @cython.locals(server=HttpServer, ex=Exchange, scope=dict, env=dict)
    cdef Exchange _begin_head(self, bint memo)
    cpdef on_url(self, bytes url)
    @cython.locals(server=HttpServer)
    cdef int _count_field(self, bytes name, bytes value) except -1
    @cython.locals(start=Py_ssize_t, end=Py_ssize_t)
    cpdef on_header(self, bytes name, bytes value)
    cdef int _header_again(self, bytes name, bytes value, str key, str text) except -1
    @cython.locals(env=dict, size=Py_ssize_t, combined=str)
    cdef int _store_header(self, str key, str text) except -1
    cdef int _field_kept(self, bytes name, bytes value, str key, str text) except -1
    @cython.locals(line=dict)
    cdef dict _new_environ(self)
    @cython.locals(ex=Exchange, entry=tuple)
    cdef int _unreuse(self, Py_ssize_t count) except -1
    @cython.locals(env=dict, settings=Settings, url=bytes, protocol=str, same_line=bint)
    cdef str _build_head(self, Exchange ex, str method, str version)
    @cython.locals(server=HttpServer, uri=str, query=Py_ssize_t, scope=dict, line=dict, key=str)
    cdef int _request_line(self, Exchange ex, dict env, str method, str version, str protocol, bytes url,
                           bint same_line) except -1
    @cython.locals(path=str)
    cdef int _strip_root(self, dict env, str root) except -1
    @cython.locals(addr=str)
    cdef bint _trusts_peer(self) except -1
    @cython.locals(scope=dict)
    cdef int _forwarded(self, Exchange ex, dict env) except -1
    @cython.locals(buf=bytes, env=dict, size=Py_ssize_t)
    cdef object _proxy_header(self, object data)
    @cython.locals(env=dict)
    cdef int _keep_environ(self, Exchange ex) except -1
