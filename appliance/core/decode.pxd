# C types for decode.py when compiled (setup.py); decode.py is the reference.
cimport cython

@cython.locals(end=Py_ssize_t, doff=Py_ssize_t, t=Py_ssize_t)
cpdef object _fast_ether_tcp(bytes buf, Py_ssize_t o, long long vni, Py_ssize_t last)


cdef class FragmentCache:
    cdef public dict pending
    cdef public long max_datagrams
    cdef public long long max_bytes
    cdef public double timeout
    cdef public long long bytes
    cdef public dict counts

    cpdef object add(self, double ts, object key, long offset, bint more, bytes data)


cdef class Decoder:
    cdef public long vxlan_port, geneve_port
    cdef public bint teredo
    cdef public dict counts
    cdef public FragmentCache frags

    cpdef _count(self, str reason)
    cpdef object decode(self, double ts, long linktype, bytes buf)
    cpdef object decode_at(self, double ts, long linktype, bytes buf, Py_ssize_t start,
                           Py_ssize_t last)
    cpdef object _fast(self, long linktype, bytes buf, Py_ssize_t o, Py_ssize_t last)
    cpdef object _general(self, double ts, long linktype, bytes buf)
    cpdef object _bad(self, str reason)
    cpdef object _ether(self, double ts, bytes buf, Py_ssize_t off, long long vni, int depth)
    @cython.locals(etype=long, proto=long, nib=int)
    cpdef object _ethertype(self, double ts, bytes buf, Py_ssize_t off, long etype, long long vni,
                            int depth)
    @cython.locals(ver=int, ihl=Py_ssize_t, total=Py_ssize_t, ident=long, frag=long, proto=int,
                   l4=Py_ssize_t, plen=Py_ssize_t, nxt=int, p=Py_ssize_t, hlen=Py_ssize_t,
                   fnext=int, offflags=long)
    cpdef object _ip(self, double ts, bytes buf, Py_ssize_t off, Py_ssize_t end, long long vni,
                     int depth)
    @cython.locals(doff=Py_ssize_t, p=Py_ssize_t)
    cpdef object _l4(self, double ts, bytes buf, Py_ssize_t off, Py_ssize_t end, int proto,
                     bytes src, bytes dst, long long vni, int depth)
    cpdef object _vxlan(self, double ts, bytes buf, Py_ssize_t p, Py_ssize_t end, long long vni,
                        int depth)
    @cython.locals(optlen=Py_ssize_t, q=Py_ssize_t)
    cpdef object _geneve(self, double ts, bytes buf, Py_ssize_t p, Py_ssize_t end, long long vni,
                         int depth)
    cpdef object _teredo(self, double ts, bytes buf, Py_ssize_t p, Py_ssize_t end, long long vni,
                         int depth)
