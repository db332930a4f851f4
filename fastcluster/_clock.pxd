# CLOCK_MONOTONIC for the compiled builds, where plain Python calls time.monotonic() (the shared
# sources import that name only when they run uncompiled), and a cheaper tick counter for timing
# app calls.
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec


cdef inline double monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef extern from *:
    """
    /* The CPU's own counter, read without the kernel's help: x86's TSC (rdtsc) or ARM's virtual
       counter, one instruction, where CLOCK_MONOTONIC goes through the vDSO and its data page (two
       such reads an app call showed in a keep-alive worker's profile: benchmarks/README.md,
       Speed II, "App calls timed by the CPU's counter"). It is used only where the kernel keeps time
       by it too (its clocksource: HttpServer looks), so that it runs at one rate on every CPU;
       elsewhere fc_ticks() is CLOCK_MONOTONIC in nanoseconds. */
    #include <time.h>
    #if defined(__x86_64__) || defined(__i386__)
    #include <x86intrin.h>
    #define FC_CPU_TICKS() ((long long)__rdtsc())
    #elif defined(__aarch64__)
    static inline long long fc_cntvct(void) {
        unsigned long long v;
        __asm__ __volatile__("isb; mrs %0, cntvct_el0" : "=r"(v));
        return (long long)v;
    }
    #define FC_CPU_TICKS() fc_cntvct()
    #endif
    static inline long long fc_clock_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }
    static inline long long fc_ticks(int cpu) {   /* cpu: what fc_cpu_tick_rate() said */
    #ifdef FC_CPU_TICKS
        if (cpu)
            return FC_CPU_TICKS();
    #endif
        return fc_clock_ns();
    }
    /* The CPU counter's ticks per second, measured against CLOCK_MONOTONIC over 200 us: each end
       is a counter read between two clock reads less than 1 us apart (so that being descheduled
       there cannot skew it), which bounds the error at 1%. 0: no such counter, or no such pair.
       Both are static inline like the rest of this header, so that a module which cimports this
       file but never measures the rate gets no "defined but not used" warning from the compiler. */
    static inline int fc_tick_pair(long long *t, long long *k) {
    #ifdef FC_CPU_TICKS
        long long a, c, b;
        int i;
        for (i = 0; i < 1000; i++) {
            a = fc_clock_ns(); c = FC_CPU_TICKS(); b = fc_clock_ns();
            if (b - a < 1000) {
                *t = a + (b - a) / 2;
                *k = c;
                return 1;
            }
        }
    #endif
        return 0;
    }
    static inline double fc_cpu_tick_rate(void) {
        long long t0, k0, t1, k1;
        if (!fc_tick_pair(&t0, &k0))
            return 0.0;
        do {
            if (!fc_tick_pair(&t1, &k1))
                return 0.0;
        } while (t1 - t0 < 200000);
        return k1 > k0 ? (double)(k1 - k0) * 1e9 / (double)(t1 - t0) : 0.0;
    }
    """
    long long ticks "fc_ticks" (bint cpu) noexcept nogil
    double cpu_tick_rate "fc_cpu_tick_rate" () noexcept nogil
