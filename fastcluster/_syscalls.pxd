# The C side of the compiled loop: the Linux calls it makes directly, without socket objects.
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from posix.types cimport off_t
from posix.uio cimport iovec

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    int setsockopt(int fd, int level, int optname, const void* optval, socklen_t optlen)
    int getsockopt(int fd, int level, int optname, void* optval, socklen_t* optlen)
    int shutdown(int fd, int how)
    enum:
        AF_INET
        AF_INET6
        AF_UNIX
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        MSG_NOSIGNAL
        MSG_PEEK
        MSG_DONTWAIT
        SHUT_WR

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr
    struct in6_addr:
        unsigned char s6_addr[16]
    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        in6_addr sin6_addr
    enum:
        IPPROTO_TCP
        INET6_ADDRSTRLEN
    uint16_t ntohs(uint16_t)

cdef extern from "<netinet/tcp.h>" nogil:
    enum:
        TCP_NODELAY
        TCP_DEFER_ACCEPT

cdef extern from "<arpa/inet.h>" nogil:
    const char* inet_ntop(int af, const void* src, char* dst, socklen_t size)

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLEXCLUSIVE
        EPOLL_CLOEXEC
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL

cdef extern from "<sys/sendfile.h>" nogil:
    ssize_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count)

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd* fds, unsigned long nfds, int timeout)
    enum:
        POLLIN
        POLLOUT

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC

cdef extern from *:
    """
    #include <unistd.h>
    #include <sys/syscall.h>
    #include <sys/socket.h>
    #include <sys/uio.h>
    /* The calls made per request and per connection, as plain system calls. glibc's recv, send,
       writev, accept4 and close are cancellation points: in a process with more than one thread
       (a worker with app threads has their monitor and a spare) each call first switches the
       thread to asynchronous cancellation and back, two atomic updates of its cancel state, which
       show in a keep-alive worker's profile (perf: __pthread_enable/disable_asynccancel; see
       benchmarks/README.md, "glibc's cancellation points"). Nothing here
       cancels threads. syscall() sets errno and returns -1 on failure, as the wrappers do. */
    static inline ssize_t fc_recv(int fd, void *buf, size_t n, int flags) {
        return (ssize_t)syscall(SYS_recvfrom, fd, buf, n, flags, (void *)0, (void *)0);
    }
    static inline ssize_t fc_send(int fd, const void *buf, size_t n, int flags) {
        return (ssize_t)syscall(SYS_sendto, fd, buf, n, flags, (void *)0, 0);
    }
    static inline ssize_t fc_writev(int fd, const struct iovec *iov, int count) {
        return (ssize_t)syscall(SYS_writev, fd, iov, count);
    }
    static inline int fc_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
        return (int)syscall(SYS_accept4, fd, addr, len, flags);
    }
    static inline int fc_close(int fd) {
        return (int)syscall(SYS_close, fd);
    }
    """
    ssize_t fc_recv(int fd, void* buf, size_t n, int flags) nogil
    ssize_t fc_send(int fd, const void* buf, size_t n, int flags) nogil
    ssize_t fc_writev(int fd, const iovec* iov, int count) nogil
    int fc_accept4(int fd, sockaddr* addr, socklen_t* addrlen, int flags) nogil
    int fc_close(int fd) nogil
