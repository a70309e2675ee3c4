# C types for session.py when compiled (setup.py); session.py is the reference.
cimport cython
from appliance.core.http.parser cimport Hooks, HttpParser, ParserConfig
from appliance.core.pair cimport Message, Pair
from appliance.core.stream cimport Acct

# the session states, C values when compiled
cdef int DETECT, HTTP, TENTATIVE, NOT_HTTP


cdef class SessionConfig:
    cdef public ParserConfig parser
    cdef public long max_outstanding
    cdef public bint ack_evidence
    cdef public long long detect_limit


cdef class HttpStats:
    cdef public long long requests, responses, pairs, pending, interim, tunnels, waits, resyncs
    cdef public dict orphans, violations, not_http
    cdef public long long connections_http


cdef class HttpSession(Hooks):
    cdef public SessionConfig cfg
    cdef public HttpStats stats
    cdef public object emit
    cdef public Acct acct
    cdef public tuple parsers
    cdef public int client, state
    cdef public object reqs
    cdef public Py_ssize_t a
    cdef public bint client_desync, server_zone
    cdef public long server_skip
    cdef public list last_ack
    cdef public int midstream
    cdef public list held
    cdef public Message lone
    cdef public bint waiting, switch
    cdef public long forgotten
    cdef public int eof_pending, confirm

    cpdef data(self, int direction, long long offset, double ts, bytes payload)
    cpdef gap(self, int direction, long long offset, long long nbytes)
    cpdef ack(self, int direction, long long offset)
    cpdef eof(self, int direction)
    cpdef close(self)
    cpdef long long buffered(self)
    cpdef detach(self)
    cpdef bint start_line(self, HttpParser p, int kind, long long offset)
    cpdef _tentative(self, int confirm)
    cpdef bint request_head(self, HttpParser p, Message msg)
    @cython.locals(status=int)
    cpdef Message response_head(self, HttpParser p, Message msg, bint force)
    @cython.locals(i=Py_ssize_t)
    cpdef bint simple_response(self, HttpParser p)
    cpdef message_done(self, HttpParser p, Message msg)
    cpdef framing_lost(self, HttpParser p, str reason)
    cpdef progress(self, HttpParser p)
    @cython.locals(evidence=bint, lo=Py_ssize_t, hi=Py_ssize_t, take=long)
    cpdef Message _place(self, Message resp, bint force)
    cpdef _unplace(self, Message req)
    cpdef _lose_until(self, Py_ssize_t index)
    cpdef _orphan(self, Message resp, str reason)
    cpdef _retry(self, bint force)
    cpdef _flush(self)
    @cython.locals(a=Py_ssize_t)
    cpdef _too_many(self)
    cpdef _out(self, Message req, Message resp, str note)
    cpdef _roles(self, int client)
    cpdef _accept(self)
    cpdef _release(self)
