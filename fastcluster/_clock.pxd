# CLOCK_MONOTONIC for the compiled builds, where plain Python calls time.monotonic() (the shared
# sources import that name only when they run uncompiled).
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec


cdef inline double monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9
