# The C side of the compiled loop's app threads (--threads > 1): the token that says which thread
# runs the loop, the semaphore a spare thread waits on, and the monitor thread. The monitor never
# takes the GIL. It watches the app call that runs on the loop's thread (the token free, no new
# call begun) and hands the loop to a spare thread only when that call waits for the world, or has
# held the loop FC_HOLD_MAX (fc_call_waits says which). A call that computes, or makes only short
# waits (a 0.1 ms query between pieces of Python), keeps the loop: a spare thread would only queue
# for the GIL that call needs, each hand-over costs a wake-up and GIL hand-offs, and a second call
# at once makes every later short wait queue for the GIL (issue 31: benchmarks/results/shortwaits.md,
# 3.8 context switches and 5.4 futex calls more per query, the worker's CPU a request doubled).
# It looks every 0.1 ms after a handover (for a second while most calls handed over lately waited
# indeed, 10 ms otherwise: `proven`, fc_pool_left); otherwise the time between looks doubles
# from 1 ms up to 10 ms (as Go's sysmon backs off): waking on the loop's CPU a thousand times a
# second preempts the loop as often, which the hello app's CPU per request shows
# (benchmarks/README.md, "Apps that wait"). After ten looks at 10 ms in which no call began and the
# loop's thread held the token (an idle worker), it sleeps on a semaphore until the next call
# begins: an idle worker's monitor does not wake at all (the call that wakes it pays one sem_post;
# the others, one atomic load). (At SCHED_IDLE it would never preempt the loop, but under load it
# starved for milliseconds before a handover: the fast clients' p99 next to a blocking endpoint grew
# several times over.) Pool in _pool.pxi drives it; its twin is Pool in _parser_py.py.

cdef extern from *:
    """
    #include <errno.h>
    #include <pthread.h>
    #include <semaphore.h>
    #include <signal.h>
    #include <time.h>
    #include <fcntl.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <unistd.h>
    #include <sys/syscall.h>

    typedef struct {
        int used;            /* 1: a call runs on the thread of `clock` */
        int restless;        /* 1: it computed over FC_SLEEPER of its time before it was handed over */
        clockid_t clock;
        long long last;      /* its CPU time at the last measure (ns) */
        long long since;     /* when the monitor first saw the call (CLOCK_MONOTONIC ns) */
        long long at;        /* when it was handed over (ns) */
        long long at_cpu;    /* and its CPU time then (ns) */
    } fc_slot_t;

    typedef struct {
        int token;           /* 1: a thread runs the loop; 0: the one that did is in an app call */
        unsigned long seq;   /* app calls begun */
        int finished;
        int hot;             /* looks left at the short interval */
        int proven;          /* per mille of the recent handed-over calls that waited indeed (fc_pool_left) */
        int parked;          /* 1: the monitor sleeps on `wake` until the next app call begins */
        clockid_t clock;     /* the CPU clock of the thread whose call began last */
        int tid;             /* and its id in the kernel */
        unsigned long handovers;   /* calls the monitor handed over (Pool.handovers: tests, diagnostics) */
        fc_slot_t *slots;    /* the calls the monitor handed over that still run, one slot each */
        int nslots;          /* (--threads of them) */
        int ntracked;        /* slots in use */
        int load;            /* their CPU, per mille of one CPU (fc_pool_measure) */
        int pressure;        /* per mille of the time some task on this machine waited for a CPU */
        long long spent;     /* CPU (ns) of tracked calls that returned since the last measure */
        int restless;        /* tracked calls that are not sleepers (fc_slot_t.restless) */
        int psi_fd;          /* /proc/pressure/cpu, or -1 */
        long long psi_last;  /* its "some" total (us) when last read */
        long long psi_at;    /* and when (ns) */
        long long load_at;   /* when `load` was measured (ns) */
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

    static __thread int fc_tid;      /* this thread's id in the kernel, once asked */

    static void fc_pool_release(fc_pool_t *p) {
        clockid_t clock;
        if (pthread_getcpuclockid(pthread_self(), &clock) == 0)   /* (glibc: no system call) */
            __atomic_store_n(&p->clock, clock, __ATOMIC_RELAXED);
        if (fc_tid == 0)
            fc_tid = (int)syscall(SYS_gettid);
        __atomic_store_n(&p->tid, fc_tid, __ATOMIC_RELAXED);
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

    #define FC_HOT_BRIEF 100          /* looks at 0.1 ms after a handover while most recent ones proved no waits (10 ms) */
    #define FC_HOT_LONG 10000         /* the others, and once a call proved to wait (1 s) */

    /* With the token just taken: a spare thread gets the loop, and the monitor looks every 0.1 ms
       for `hot` looks. */
    static void fc_pool_hand_over(fc_pool_t *p, int hot) {
        __atomic_store_n(&p->hot, hot, __ATOMIC_RELAXED);
        sem_post(&p->promote);
    }

    /* 1 while most of the recent handed-over calls waited indeed (`proven`: fc_pool_left). */
    static int fc_pool_proven(fc_pool_t *p) {
        return __atomic_load_n(&p->proven, __ATOMIC_RELAXED) >= 500;
    }

    static long long fc_ns(clockid_t clock) {
        struct timespec t;
        if (clock_gettime(clock, &t) != 0)
            return -1;
        return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
    }

    /* 1: thread `tid` sleeps in the kernel (state S or D: I/O, a sleep, a lock); 0: it runs, or is
       runnable and waits for a CPU (a busy machine, which a spare thread would only make busier).
       Unreadable: 1, as if the rule were not here. */
    static int fc_thread_sleeps(int tid) {
        char path[64], buf[256];
        const char *end;
        int fd, n;
        snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return 1;
        n = (int)read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
            return 1;
        buf[n] = 0;
        end = strrchr(buf, ')');          /* "tid (name) S ...": the name may hold a ')' */
        return end == NULL || end[1] == 0 || end[2] != 'R';
    }

    #define FC_OFF_MIN 500000LL       /* ns off the CPU (and half the time) before a call counts as waiting */
    #define FC_OFF_UNPROVEN 5000000LL /* the same while most recent handovers proved no waits (fc_pool_proven) */
    #define FC_HOLD_MAX 20000000LL    /* ns: a call keeps the loop this long at most, whatever it does */
    #define FC_SLEEPER 20LL           /* a call that computed under 1/20 of its time sleeps (a sleep, an API) */
    #define FC_PRESSURE_MAX 200       /* per mille: PRESSURE_MAX in _server.py */

    typedef struct {            /* the monitor's view of the call on the loop's thread */
        unsigned long seq;      /* which call (fc_pool_t.seq when it began) */
        clockid_t clock;
        int tid;
        long long first;        /* when the monitor first saw it: the window judged starts there */
        long long cpu, all;     /* the call's CPU and the process's then */
    } fc_watch_t;

    /* Does the call that holds the loop wait (hand the loop over: 1 for a sleeper, which computed
       under 1/FC_SLEEPER of the time, 2 for another) or not (0: let it keep it)? A call
       waits when, since the monitor first saw it, its thread was off the CPU at least FC_OFF_MIN
       (FC_OFF_UNPROVEN while most recent handovers proved no waits: fc_pool_left) and half the time (a query of 0.1 ms between pieces of Python is not: that call computes
       most of the time), sleeps in the kernel now (not runnable: a preempted thread does not wait
       for the world), and the worker's other threads used less than half a CPU meanwhile (when
       they keep the GIL busy, as calls handed over before that compute do, or the thread the call
       waits for computes, a spare running the loop would only queue for the GIL: the GIL wait of a
       call is such a case, and a wait on a lock or a future whose holder waits for the world is
       not); a call that is no sleeper only while the machine's CPUs have room (`pressure`). Any
       call is handed over once the monitor has seen it run FC_HOLD_MAX (head-of-line
       behind a long computation); whether another call then starts beside it is
       AppPool._can_call's decision, by `load`. */
    static int fc_call_waits(fc_pool_t *p, fc_watch_t *w, unsigned long seq) {
        long long now = fc_ns(CLOCK_MONOTONIC), cpu, all, wall, used, others, off_min;
        if (seq != w->seq) {            /* a call not seen before: its first window starts now */
            w->seq = seq;
            w->clock = __atomic_load_n(&p->clock, __ATOMIC_RELAXED);
            w->tid = __atomic_load_n(&p->tid, __ATOMIC_RELAXED);
            w->first = now;
            w->cpu = fc_ns(w->clock);
            w->all = fc_ns(CLOCK_PROCESS_CPUTIME_ID);
            return 0;
        }
        if (now - w->first >= FC_HOLD_MAX)
            return 2;
        wall = now - w->first;
        off_min = fc_pool_proven(p) ? FC_OFF_MIN : FC_OFF_UNPROVEN;
        if (wall < off_min)
            return 0;
        cpu = fc_ns(w->clock);
        all = fc_ns(CLOCK_PROCESS_CPUTIME_ID);
        if (cpu < 0 || w->cpu < 0 || all < 0 || w->all < 0)
            return 2;                   /* (no CPU clocks: any call that holds the loop a look waits) */
        used = cpu - w->cpu;
        others = (all - w->all) - used;
        if (wall - used >= off_min && 2 * used <= wall && 2 * others < wall && fc_thread_sleeps(w->tid)) {
            if (used * FC_SLEEPER < wall)
                return 1;
            /* (a call that also computes, on a machine whose CPUs are busy: no second call would
               start beside it (AppPool._can_call), so a hand-over would buy only context switches) */
            return __atomic_load_n(&p->pressure, __ATOMIC_RELAXED) < FC_PRESSURE_MAX ? 2 : 0;
        }
        return 0;
    }

    #define FC_LOAD_SPAN 1000000LL    /* ns: `load` is measured over spans this long at least */

    /* The handed-over call of `clock` runs on: its slot (the monitor is the only one that fills
       slots; a call's thread empties its own: fc_pool_left). No free slot: not counted. */
    static void fc_pool_track(fc_pool_t *p, clockid_t clock, int restless, long long since) {
        int i;
        for (i = 0; i < p->nslots; i++) {
            if (!__atomic_load_n(&p->slots[i].used, __ATOMIC_ACQUIRE)) {
                p->slots[i].clock = clock;
                p->slots[i].since = since;
                p->slots[i].last = fc_ns(clock);
                p->slots[i].at = fc_ns(CLOCK_MONOTONIC);
                p->slots[i].at_cpu = p->slots[i].last;
                p->slots[i].restless = restless;
                if (restless)
                    __atomic_add_fetch(&p->restless, 1, __ATOMIC_RELAXED);
                __atomic_store_n(&p->slots[i].used, 1, __ATOMIC_RELEASE);
                __atomic_add_fetch(&p->ntracked, 1, __ATOMIC_RELEASE);
                return;
            }
        }
    }

    /* An app call returned (on its own thread): if the monitor had handed it over, its CPU since
       the last measure is counted and its slot is free. 1: it was handed over as a sleeper.
       When it computed under half of its time since the handover, it waited indeed: the monitor
       looks every 0.1 ms for a second from now (FC_HOT_LONG), to catch the next call that waits as
       soon. One that computed most of that time had only paused (a query that took a few ms on a
       busy machine, which the judgement cannot tell from a sleep). `proven`, the share of recent
       handovers that waited indeed, sets how long the short looks last after the next handover:
       a second while most did (a slow endpoint beside fast ones: the next slow call is caught in
       0.5 ms), FC_HOT_BRIEF while most did not, after which the longer looks (1 ms to 10 ms) leave
       the loop to such calls (issue 31: with the database on the same host, Django's calls were
       judged to wait often, and a second of looks after each kept the monitor waking about 5,500
       times a second, CPU taken from the calls and the database). */
    static int fc_pool_left(fc_pool_t *p) {
        clockid_t clock;
        long long cpu;
        int i, sleeper = 0, waited, proven;
        if (__atomic_load_n(&p->ntracked, __ATOMIC_ACQUIRE) == 0)
            return 0;                   /* (every call that kept the loop: one load) */
        if (pthread_getcpuclockid(pthread_self(), &clock) != 0)
            return 0;
        for (i = 0; i < p->nslots; i++) {
            if (__atomic_load_n(&p->slots[i].used, __ATOMIC_ACQUIRE) && p->slots[i].clock == clock) {
                cpu = fc_ns(clock);
                if (cpu > p->slots[i].last)   /* (the monitor may measure it at the same time: a slip) */
                    __atomic_add_fetch(&p->spent, cpu - p->slots[i].last, __ATOMIC_RELAXED);
                waited = 2 * (cpu - p->slots[i].at_cpu) < fc_ns(CLOCK_MONOTONIC) - p->slots[i].at;
                proven = __atomic_load_n(&p->proven, __ATOMIC_RELAXED);
                __atomic_store_n(&p->proven, proven + ((waited ? 1000 : 0) - proven) / 8, __ATOMIC_RELAXED);
                if (waited)
                    __atomic_store_n(&p->hot, FC_HOT_LONG, __ATOMIC_RELAXED);
                if (p->slots[i].restless)
                    __atomic_sub_fetch(&p->restless, 1, __ATOMIC_RELAXED);
                else
                    sleeper = 1;
                __atomic_store_n(&p->slots[i].used, 0, __ATOMIC_RELEASE);
                __atomic_sub_fetch(&p->ntracked, 1, __ATOMIC_RELEASE);
            }
        }
        return sleeper;
    }

    /* 1: a call handed over and still running has run `hold` ns at least (AppPool._can_call:
       LONG_HOLD). Read by the loop's thread; the slots may change meanwhile (a slip of one call). */
    static int fc_pool_held(fc_pool_t *p, long long hold) {
        long long now = fc_ns(CLOCK_MONOTONIC);
        int i;
        for (i = 0; i < p->nslots; i++)
            if (__atomic_load_n(&p->slots[i].used, __ATOMIC_ACQUIRE) && now - p->slots[i].since >= hold)
                return 1;
        return 0;
    }

    #define FC_PRESSURE_SPAN 50000000LL   /* ns: `pressure` is measured over spans this long at least */

    /* `pressure`: the share of the last FC_PRESSURE_SPAN (or more) in which some task on this
       machine waited for a CPU (the kernel's pressure stall information: /proc/pressure/cpu,
       "some"; its total moves in steps of a few ms, hence the longer span), per mille; 0 where the
       kernel does not tell. */
    static void fc_pool_pressure(fc_pool_t *p, long long now) {
        char buf[128];
        const char *total;
        long long stalled;
        int n;
        if (p->psi_fd < 0 || now - p->psi_at < FC_PRESSURE_SPAN)
            return;
        n = (int)pread(p->psi_fd, buf, sizeof(buf) - 1, 0);
        if (n <= 0)
            return;
        buf[n] = 0;
        total = strstr(buf, "total=");
        if (total == NULL)
            return;
        stalled = atoll(total + 6);     /* (us) */
        if (p->psi_last > 0 && stalled >= p->psi_last)
            __atomic_store_n(&p->pressure, (int)((stalled - p->psi_last) * 1000000LL / (now - p->psi_at)), __ATOMIC_RELAXED);
        p->psi_last = stalled;
        p->psi_at = now;
    }

    /* `load`: the CPU the handed-over calls used over the last span (those still running and
       those that returned meanwhile), per mille of one CPU; `pressure`: the share of the span in
       which some task on this machine waited for a CPU (a database on the same host, say, keeping
       every CPU busy), per mille. AppPool._can_call reads both. */
    static void fc_pool_measure(fc_pool_t *p, long long now) {
        long long span = now - p->load_at, used, cpu;
        double load;
        int i;
        if (span < FC_LOAD_SPAN)
            return;
        used = __atomic_exchange_n(&p->spent, 0, __ATOMIC_RELAXED);
        for (i = 0; i < p->nslots; i++) {
            if (__atomic_load_n(&p->slots[i].used, __ATOMIC_ACQUIRE)) {
                cpu = fc_ns(p->slots[i].clock);
                if (cpu > p->slots[i].last)
                    used += cpu - p->slots[i].last;
                p->slots[i].last = cpu;
            }
        }
        load = (double)used * 1000.0 / (double)span;
        __atomic_store_n(&p->load, load > 1000000.0 ? 1000000 : (int)load, __ATOMIC_RELAXED);
        p->load_at = now;
        fc_pool_pressure(p, now);
    }

    static void *fc_pool_monitor(void *arg) {
        fc_pool_t *p = (fc_pool_t *)arg;
        sigset_t all;
        struct timespec ts;
        fc_watch_t watch;
        unsigned long last = (unsigned long)-1, seq;
        int hot, idle = 0, waits;
        memset(&watch, 0, sizeof(watch));
        watch.seq = (unsigned long)-1;
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
            waits = __atomic_load_n(&p->token, __ATOMIC_ACQUIRE) == 0 ? fc_call_waits(p, &watch, seq) : 0;
            if (waits && fc_pool_take(p)) {
                __atomic_add_fetch(&p->handovers, 1, __ATOMIC_RELAXED);
                fc_pool_track(p, watch.clock, waits == 2, watch.first);
                fc_pool_hand_over(p, fc_pool_proven(p) ? FC_HOT_LONG : FC_HOT_BRIEF);
            }
            fc_pool_measure(p, fc_ns(CLOCK_MONOTONIC));
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

    static int fc_pool_start(fc_pool_t *p, pthread_t *thread, int slots) {
        int rc;
        p->slots = (fc_slot_t *)calloc((size_t)slots, sizeof(fc_slot_t));
        if (p->slots == NULL)
            return ENOMEM;
        p->nslots = slots;
        p->psi_fd = open("/proc/pressure/cpu", O_RDONLY | O_CLOEXEC);
        p->load_at = fc_ns(CLOCK_MONOTONIC);
        rc = pthread_create(thread, NULL, fc_pool_monitor, p);
        if (rc == 0)
            pthread_setname_np(*thread, "fc-monitor");
        return rc;
    }

    static void fc_pool_free(fc_pool_t *p) {   /* after the monitor returned */
        free(p->slots);
        p->slots = NULL;
        p->nslots = 0;
        if (p->psi_fd >= 0)
            close(p->psi_fd);
        p->psi_fd = -1;
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
        int proven
        int parked
        unsigned long handovers
        int load
        int pressure
        int restless
        int psi_fd
        sem_t promote
        sem_t wake
    int sem_init(sem_t* sem, int pshared, unsigned int value) nogil
    int sem_wait(sem_t* sem) nogil
    int sem_post(sem_t* sem) nogil
    int sem_destroy(sem_t* sem) nogil
    int pthread_join(pthread_t thread, void** result) nogil
    bint fc_pool_take(fc_pool_t* p) nogil
    void fc_pool_release(fc_pool_t* p) nogil
    void fc_pool_hand_over(fc_pool_t* p, int hot) nogil
    int FC_HOT_LONG
    int FC_HOT_BRIEF
    bint fc_pool_proven(fc_pool_t* p) nogil
    int fc_pool_start(fc_pool_t* p, pthread_t* thread, int slots) nogil
    void fc_pool_free(fc_pool_t* p) nogil
    int fc_pool_left(fc_pool_t* p) nogil
    int fc_pool_held(fc_pool_t* p, long long hold) nogil
    void fc_pool_end(fc_pool_t* p) nogil
