# C types for flows.py when compiled (setup.py); flows.py is the reference.
cimport cython

ctypedef long long i64

cdef long long LATE_SYN_WINDOW
from appliance.core.http.session cimport HttpSession, HttpStats, SessionConfig
from appliance.core.pair cimport Pair
from appliance.core.stream cimport Acct
from appliance.core.tcp cimport TcpConfig, TcpStats, TcpStream


cdef class Flow:
    cdef public tuple key
    cdef public FlowTable table
    cdef public Acct acct
    cdef public tuple tcp
    cdef public HttpSession session
    cdef public double last
    cdef public long long pkts
    cdef public bint ended

    cpdef emit(self, Pair pair)
    @cython.locals(first=int, client=int)
    cpdef close(self, double ts)
    cpdef bint done(self)
    cpdef release(self)


cdef class FlowTable:
    cdef public SessionConfig session_cfg
    cdef public TcpConfig tcp_cfg
    cdef public HttpStats http_stats
    cdef public TcpStats tcp_stats
    cdef public long long max_flows, budget
    cdef public double idle_timeout
    cdef public object flows
    cdef public set holey
    cdef public long long held
    cdef public list out
    cdef public long long out_bytes, opened
    cdef public dict evicted, vni_pairs

    @cython.locals(d=int, before=i64, pkt=i64, flow=Flow, t=TcpStream, other=TcpStream,
                   t0=TcpStream, t1=TcpStream, acct=Acct)
    cpdef segment(self, double ts, long long vni, bytes src, bytes dst, long sport, long dport,
                  long long seq, long long ack, int flags, bytes payload)
    @cython.locals(t=TcpStream, start=i64, behind=i64)
    cpdef bint _new_connection(self, Flow flow, int d, long long seq)
    cpdef Flow _open(self, tuple key, double ts)
    @cython.locals(before=i64, acct=Acct)
    cpdef close(self, Flow flow, double ts)
    cpdef _forget(self, Flow flow, long long accounted)
    cpdef emitted(self, Flow flow, Pair pair)
    @cython.locals(flow=Flow, limit=double, before=i64, acct=Acct, t=TcpStream, t0=TcpStream,
                   t1=TcpStream)
    cpdef sweep(self, double now)
    cpdef long long bytes_held(self)
    cpdef enforce_budget(self, double now)
    cpdef take(self)
