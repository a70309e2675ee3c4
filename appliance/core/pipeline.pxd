# C types for pipeline.py when compiled (setup.py); pipeline.py is the reference.
cimport cython

ctypedef long long i64
from appliance.core.decode cimport Decoder
from appliance.core.flows cimport FlowTable


cdef class Pipeline:
    cdef dict __dict__  # callers may hang their own objects on a pipeline
    cdef public object cfg
    cdef public Decoder decoder
    cdef public FlowTable table
    cdef public long long packets, bytes, tcp_packets
    cdef public dict vni_stats, drops
    cdef public long long flow_errors
    cdef public dict errors
    cdef public object _ignored
    cdef public double next_sweep, last_ts

    @cython.locals(r=tuple)
    cpdef feed(self, double ts, long linktype, bytes frame)
    @cython.locals(nbytes=i64, count=Py_ssize_t, i=Py_ssize_t, off=Py_ssize_t,
                   cap=Py_ssize_t, ts=double, next_sweep=double, r=tuple, decoder=Decoder)
    cpdef feed_batch(self, long linktype, bytes buf, object meta)
    @cython.locals(view=object, count=Py_ssize_t, i=Py_ssize_t, n=Py_ssize_t, off=Py_ssize_t,
                   nbytes=i64, next_sweep=double, r=tuple, decoder=Decoder)
    cpdef feed_datagrams(self, double ts, long linktype, object buf, Py_ssize_t size, object lens)
    @cython.locals(vs=list)
    cpdef _tcp(self, double ts, tuple r, Py_ssize_t wire_len)
    cpdef sweep(self, double now)
    cpdef long long buffered(self)
