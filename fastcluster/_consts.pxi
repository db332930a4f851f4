# Sizes of the compiled loop's I/O; the pure-Python twin states the same numbers (a test checks).
cdef enum:
    RECV_SIZE = 65536
    MAX_IOV = 64                # buffers per writev
    ACCEPT_BATCH = 16           # accepts per wake-up, so that busy workers leave some to idle ones
    MAX_EVENTS = 256            # epoll events per wait
    SENDFILE_CHUNK = 1048576
