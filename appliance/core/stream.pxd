# C types for stream.py when compiled (setup.py); stream.py is the reference.
cdef class Acct:
    cdef public long long n
