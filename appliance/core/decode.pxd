# C types for decode.py when compiled (setup.py); decode.py is the reference.
cimport cython

# module constants that are C values when compiled (those no other module imports)
cdef long LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_RAW_ALT12, LINKTYPE_RAW_ALT14
cdef long LINKTYPE_LOOP, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2
cdef long ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD, ETH_MPLS_UC, ETH_MPLS_MC, ETH_TEB
cdef long ETH_PPPOE_SESSION, PPP_IPV4, PPP_IPV6, PROTO_TCP, PROTO_UDP, PROTO_IPIP, PROTO_IPV6
cdef long TEREDO_PORT, MAX_TUNNEL_DEPTH, _IPV6_FRAGMENT, _IPV6_AH, _IPV6_NONE

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
