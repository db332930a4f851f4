# The C side of the compiled loop's app threads (--threads > 1): the token that says which thread
# runs the loop, the semaphore a spare thread waits on, and the monitor thread. The monitor never
# takes the GIL. When the token has been free through one whole look with no new app call begun,
# the call has blocked; it takes the token then and wakes a spare thread with it, which runs the
# loop from then on. It looks every 0.1 ms for a second after a handover; otherwise the time
# between looks doubles from 1 ms up to 10 ms (as Go's sysmon backs off): waking on the loop's
# CPU a thousand times a second preempts the loop as often, which the hello app's CPU per request
# shows (benchmarks/README.md, "Apps that wait"). After ten
# looks at 10 ms in which no call began and the loop's thread held the token (an idle worker), it
# sleeps on a semaphore until the next call begins: an idle worker's monitor does not wake at all
# (the call that wakes it pays one sem_post; the others, one atomic load). (At SCHED_IDLE
# it would never preempt the loop, but under load it starved for milliseconds before a handover:
# the fast clients' p99 next to a blocking endpoint grew several times over.)
# Pool in _pool.pxi drives it; its twin is Pool in _parser_py.py.

cdef extern from *:
    """
    #include <errno.h>
    #include <pthread.h>
    #include <semaphore.h>
    #include <signal.h>
    #include <time.h>

    typedef struct {
        int token;           /* 1: a thread runs the loop; 0: the one that did is in an app call */
        unsigned long seq;   /* app calls begun */
        int finished;
        int hot;             /* looks left at the short interval */
        int parked;          /* 1: the monitor sleeps on `wake` until the next app call begins */
        sem_t promote;       /* a spare thread waits here to be given the loop */
        sem_t wake;
    } fc_pool_t;

    static void fc_pool_unpark(fc_pool_t *p) {
        if (__atomic_load_n(&p->parked, __ATOMIC_SEQ_CST) && __atomic_exchange_n(&p->parked, 0, __ATOMIC_SEQ_CST))
            sem_post(&p->wake);
    }

    static int fc_pool_take(fc_pool_t *p) {
        int expected = 0;
        return __atomic_compare_exchange_n(&p->token, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }

    static void fc_pool_release(fc_pool_t *p) {
        __atomic_add_fetch(&p->seq, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&p->token, 0, __ATOMIC_RELEASE);
        fc_pool_unpark(p);   /* (seq, then parked; the monitor: parked, then seq: one sees the other) */
    }

    static void fc_pool_park(fc_pool_t *p, unsigned long last) {
        __atomic_store_n(&p->parked, 1, __ATOMIC_SEQ_CST);
        if ((__atomic_load_n(&p->seq, __ATOMIC_SEQ_CST) != last || __atomic_load_n(&p->finished, __ATOMIC_SEQ_CST))
                && __atomic_exchange_n(&p->parked, 0, __ATOMIC_SEQ_CST))
            return;          /* a call began (or the end came) meanwhile, and nobody posted */
        while (sem_wait(&p->wake) != 0 && errno == EINTR) {}
    }

    static void fc_pool_hand_over(fc_pool_t *p) {   /* with the token just taken */
        __atomic_store_n(&p->hot, 10000, __ATOMIC_RELAXED);
        sem_post(&p->promote);
    }

    static void *fc_pool_monitor(void *arg) {
        fc_pool_t *p = (fc_pool_t *)arg;
        sigset_t all;
        struct timespec ts;
        unsigned long last = (unsigned long)-1, seq;
        int hot, idle = 0;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);   /* signals are the main thread's business */
        long period = 1000000;   /* ns; doubles up to 10 ms while no call blocks */
        while (!__atomic_load_n(&p->finished, __ATOMIC_ACQUIRE)) {
            hot = __atomic_load_n(&p->hot, __ATOMIC_RELAXED);
            ts.tv_sec = 0;
            if (hot > 0) {
                __atomic_store_n(&p->hot, hot - 1, __ATOMIC_RELAXED);
                ts.tv_nsec = 100000;
                period = 1000000;
            } else {
                ts.tv_nsec = period;
                if (period < 10000000)
                    period *= 2;
            }
            nanosleep(&ts, NULL);
            seq = __atomic_load_n(&p->seq, __ATOMIC_ACQUIRE);
            if (seq == last && __atomic_load_n(&p->token, __ATOMIC_ACQUIRE) == 0 && fc_pool_take(p))
                fc_pool_hand_over(p);
            if (seq == last && hot <= 0 && period >= 10000000 && __atomic_load_n(&p->token, __ATOMIC_ACQUIRE) == 1)
                idle++;
            else
                idle = 0;
            if (idle >= 10) {
                fc_pool_park(p, seq);
                idle = 0;
                period = 1000000;
                seq = __atomic_load_n(&p->seq, __ATOMIC_ACQUIRE);
            }
            last = seq;
        }
        return NULL;
    }

    static int fc_pool_start(fc_pool_t *p, pthread_t *thread) {
        int rc = pthread_create(thread, NULL, fc_pool_monitor, p);
        if (rc == 0)
            pthread_setname_np(*thread, "fc-monitor");
        return rc;
    }

    static void fc_pool_end(fc_pool_t *p) {   /* the monitor returns at its next look */
        __atomic_store_n(&p->finished, 1, __ATOMIC_SEQ_CST);
        fc_pool_unpark(p);
    }
    """
    ctypedef unsigned long pthread_t
    ctypedef struct sem_t:
        pass
    ctypedef struct fc_pool_t:
        int token
        unsigned long seq
        int finished
        int hot
        int parked
        sem_t promote
        sem_t wake
    int sem_init(sem_t* sem, int pshared, unsigned int value) nogil
    int sem_wait(sem_t* sem) nogil
    int sem_post(sem_t* sem) nogil
    int sem_destroy(sem_t* sem) nogil
    int pthread_join(pthread_t thread, void** result) nogil
    bint fc_pool_take(fc_pool_t* p) nogil
    void fc_pool_release(fc_pool_t* p) nogil
    void fc_pool_hand_over(fc_pool_t* p) nogil
    int fc_pool_start(fc_pool_t* p, pthread_t* thread) nogil
    void fc_pool_end(fc_pool_t* p) nogil
