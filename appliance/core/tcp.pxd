# C types for tcp.py when compiled (setup.py); tcp.py is the reference.
cimport cython

ctypedef long long i64

# module constants that are C values when compiled (MASK stays a Python name: other
# modules import it; _MASK is its C twin)
cdef long long HALF, WRAP, _MASK, SEGMENT_OVERHEAD
from appliance.core.stream cimport Acct, StreamConsumer


cdef class TcpConfig:
    cdef public long long max_held_bytes
    cdef public long max_held_segments, grace_packets
    cdef public double grace_time, gap_timeout


cdef class TcpStats:
    cdef public long long gaps, gap_bytes, retransmits, inconsistent_overlaps, ooo_segments
    cdef public long long held_cap_skips, discarded_before_start, late_syns, midstream


cdef class TcpStream:
    cdef public int d
    cdef public StreamConsumer consumer
    cdef public TcpStats stats
    cdef public TcpConfig cfg
    cdef public Acct acct
    cdef public TcpStream peer
    cdef public long long base, syn_ack, next, fin, max_ack, emitted_ack
    cdef public bint from_syn, done
    cdef public list held_offs, held
    cdef public long long held_bytes
    cdef public double hole_ts, ev_ts, pre_ts
    cdef public long long ev_pkt, pre_pkt
    cdef public list pre
    cdef public long long last_off
    cdef public bytes last

    @cython.locals(d=i64)
    cpdef long long offset(self, long long seq)
    cpdef note_ack(self, long long ack)
    @cython.locals(n=Py_ssize_t, off=i64, nxt=i64, end=i64, a=i64)
    cpdef segment(self, double ts, long long pkt, long long seq, long long ack, int flags,
                  bytes payload)
    cpdef _syn(self, long long seq)
    cpdef _start(self, long long base, bint midstream)
    cpdef _pre_hold(self, double ts, long long pkt, long long seq, int flags, bytes payload,
                    long long ack)
    @cython.locals(first=i64, behind=i64)
    cpdef _fix_start(self, double ts, long long pkt)
    @cython.locals(a=i64, n=Py_ssize_t)
    cpdef _deliver(self, long long off, bytes payload, double ts, long long ack)
    @cython.locals(d=i64, common=Py_ssize_t)
    cpdef _check_overlap(self, long long off, bytes payload)
    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, grow=Py_ssize_t, cost=i64)
    cpdef _hold(self, double ts, long long off, bytes payload, long long ack)
    @cython.locals(nxt=i64)
    cpdef check(self, double ts, long long pkt)
    @cython.locals(first=i64, missing=i64)
    cpdef skip_hole(self)
    @cython.locals(i=Py_ssize_t, count=Py_ssize_t, released=i64, end=i64,
                   nxt=i64, off=i64)
    cpdef _drain(self)
    cpdef _eof(self)
    @cython.locals(missing=i64)
    cpdef close(self, double ts)
