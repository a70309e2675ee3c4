# C types for pair.py when compiled (setup.py); pair.py is the reference.
cdef class Message:
    cdef public long long start, end
    cdef public double ts
    cdef public object ack
    cdef public str method, target, version, reason, te, encoding
    cdef public int status
    cdef public list headers, parts
    cdef public long long stored, body_len, mem
    cdef public list flags, notes
    cdef public bint complete, upgrade
    cdef public Message peer

    cpdef flag(self, str name)
    cpdef note(self, str name)
    cpdef bint has_flag(self, str name)
    cpdef bytes body(self)


cdef class Pair:
    cdef public Message request, response
    cdef public list anomalies
    cdef public bytes client_ip, server_ip
    cdef public int client_port, server_port
    cdef public long long vni
    cdef public object meta

    cpdef long long mem(self)
