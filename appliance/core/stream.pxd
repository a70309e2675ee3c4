# C types for stream.py when compiled (setup.py); stream.py is the reference.
cdef class Acct:
    cdef public long long n


cdef class StreamConsumer:
    cpdef data(self, int direction, long long offset, double ts, bytes payload)
    cpdef gap(self, int direction, long long offset, long long nbytes)
    cpdef ack(self, int direction, long long offset)
    cpdef eof(self, int direction)
