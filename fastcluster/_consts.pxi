# Sizes and limits of the compiled loop; the pure-Python twin states the same numbers.
cdef enum:
    RECV_SIZE = 65536
    HIGH_WATER = 1048576        # output queued before a streamed body is paused
    MAX_IOV = 64                # buffers per writev
    ACCEPT_BATCH = 16           # accepts per wake-up, so that busy workers leave some to idle ones
    MAX_EVENTS = 256            # epoll events per wait
    SENDFILE_CHUNK = 1048576
    SMALL_CHUNK = 8192          # chunked bodies below this are framed with one copy
