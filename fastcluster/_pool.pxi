# The compiled loop's app threads (included by _parser.pyx): the primitives under the shared
# AppPool (_server.py), over the C side in _threads.pxd. Its twin is Pool in _parser_py.py.
#
# A token says whether a thread runs the loop: the thread that does lets it go for each app call
# (an atomic store) and takes it back after (a compare-and-swap); the monitor hands it to a spare
# thread when a call waits (fc_call_waits in _threads.pxd).

cdef class Pool(AppPool):
    def __cinit__(self):
        self.st = <fc_pool_t*>PyMem_Malloc(sizeof(fc_pool_t))
        if self.st is NULL:
            raise MemoryError()
        memset(self.st, 0, sizeof(fc_pool_t))
        self.st.token = 1               # the thread that calls serve() runs the loop
        self.st.psi_fd = -1
        self.st.proven = 1000           # (until calls handed over say otherwise: fc_pool_left)
        if sem_init(&self.st.promote, 0, 0) != 0 or sem_init(&self.st.wake, 0, 0) != 0:
            PyErr_SetFromErrno(OSError)

    def __dealloc__(self):
        if self.st is not NULL:
            self._stop_monitor()
            fc_pool_free(self.st)
            sem_destroy(&self.st.promote)
            sem_destroy(&self.st.wake)
            PyMem_Free(self.st)

    cdef int _start(self) except -1:
        if fc_pool_start(self.st, &self.monitor, self.limit) != 0:
            raise OSError("cannot start the app threads' monitor")
        self.monitoring = True
        return 0

    cdef int _stop_monitor(self) noexcept:
        fc_pool_end(self.st)
        if self.monitoring:
            self.monitoring = False
            with nogil:
                pthread_join(self.monitor, NULL)
        return 0

    cdef int _release(self) except -1:
        fc_pool_release(self.st)
        return 0

    cdef bint _reclaim(self) except -1:
        return fc_pool_take(self.st)

    cdef bint _left(self) except -1:
        return fc_pool_left(self.st)

    cdef double _load(self) except -1.0:
        return self.st.load / 1000.0

    cdef double _pressure(self) except -1.0:
        return self.st.pressure / 1000.0

    cdef int _restless(self) except -1:
        return self.st.restless

    cdef bint _held(self) except -1:
        return fc_pool_held(self.st, 100000000)     # (ns: _server.py's LONG_HOLD_NS)

    cdef bint _proven(self) except -1:
        return fc_pool_proven(self.st)

    cpdef block(self):
        if fc_pool_take(self.st):
            fc_pool_hand_over(self.st, FC_HOT_LONG if fc_pool_proven(self.st) else FC_HOT_BRIEF)

    cpdef bint follow(self) except -1:
        cdef int rc
        while True:
            with nogil:
                rc = sem_wait(&self.st.promote)
            if rc == 0:
                return not self.st.finished
            if errno != EINTR:
                PyErr_SetFromErrno(OSError)
            PyErr_CheckSignals()        # the main thread waits here too: its signal handlers run

    cpdef finish(self):
        cdef int i
        if self.st.finished:
            return
        self._stop_monitor()
        for i in range(self.total + 1):
            sem_post(&self.st.promote)

    @property
    def handovers(self):
        """Calls the monitor handed over (for tests and diagnostics)."""
        return self.st.handovers

    cpdef _spawn(self):
        _threading.Thread(target=self.server._follower, name="fastcluster-app", daemon=True).start()
