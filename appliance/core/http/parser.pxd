# C types for parser.py when compiled (setup.py); parser.py is the reference.
cimport cython

ctypedef long long i64
from appliance.core.pair cimport Message
from appliance.core.stream cimport Acct, StreamConsumer

ctypedef unsigned long long u64

# module constants that are C values when compiled (the states the session does not
# import, the limits)
cdef int IDLE, BODY_LEN, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, BODY_EOF, HEAD_BIG
cdef int RESYNC, PAUSED, HEAD_SKIP, TUNNEL, DEAD, LINE_REQUEST, LINE_BAD
cdef long long MAX_LINE, MAX_DEFER, MIN_MESSAGE
cdef dict _VERSIONS


@cython.locals(a=Py_ssize_t, b=Py_ssize_t)
cpdef Py_ssize_t _head_end(object data, Py_ssize_t start)


cdef bytes _TCHAR

@cython.locals(q=Py_ssize_t, v=Py_ssize_t, name_end=Py_ssize_t, c=int, out=list)
cpdef list _plain_fields(bytes data, Py_ssize_t p, Py_ssize_t end, Py_ssize_t cap)


cdef class HttpParser


cdef class Hooks(StreamConsumer):
    cpdef bint start_line(self, HttpParser p, int kind, long long offset)
    cpdef bint request_head(self, HttpParser p, Message msg)
    cpdef Message response_head(self, HttpParser p, Message msg, bint force)
    cpdef bint simple_response(self, HttpParser p)
    cpdef message_done(self, HttpParser p, Message msg)
    cpdef framing_lost(self, HttpParser p, str reason)
    cpdef progress(self, HttpParser p)


cdef class ParserConfig:
    cdef public long long max_body, max_head
    cdef public long max_headers
    cdef public frozenset methods
    cdef public dict method_names
    cdef public object at_req, at_resp, resync_req, resync_resp


cdef class HttpParser:
    cdef public Hooks hooks
    cdef public int d
    cdef public ParserConfig cfg
    cdef public Acct acct
    cdef public int role, state
    cdef public long long pos
    cdef public object buf
    cdef public long long buf_off
    cdef public list marks
    cdef public long long cur_off
    cdef public double cur_ts
    cdef public object cur_ack
    cdef public long long searched
    cdef public Message msg
    cdef public u64 remaining  # a chunk size may take 16 hex digits
    cdef public bint accepted, line_start
    cdef public list cl, te, ce
    cdef public bint pause_after, forcing, closing, ended
    cdef public long violations

    @cython.locals(n=Py_ssize_t, state=int)
    cpdef feed(self, long long off, double ts, object ack, bytes data)
    @cython.locals(state=int)
    cpdef gap(self, long long off, long long nbytes)
    cpdef end(self)
    @cython.locals(state=int, off=i64)
    cpdef resume(self, bint force)
    cpdef tunnel(self)
    cpdef kill(self)
    @cython.locals(p=Py_ssize_t, n=Py_ssize_t, state=int, take=u64, r=Py_ssize_t,
                   i=Py_ssize_t)
    cpdef _parse(self, bytes data, long long base)
    cpdef _keep(self, object data, long long off)
    cpdef _drop_buf(self)
    @cython.locals(i=Py_ssize_t)
    cpdef tuple _at(self, long long off)
    @cython.locals(i=Py_ssize_t, role=int)
    cpdef Py_ssize_t _head(self, bytes data, Py_ssize_t p, long long base)
    @cython.locals(start=Py_ssize_t)
    cpdef Py_ssize_t _head_end(self, bytes data, Py_ssize_t p, Py_ssize_t i)
    @cython.locals(np=Py_ssize_t, kind=int, j=Py_ssize_t, k=Py_ssize_t, end=Py_ssize_t)
    cpdef Py_ssize_t _request_head(self, bytes data, Py_ssize_t p, Py_ssize_t i, bytes line,
                                   long long base)
    @cython.locals(length=i64)
    cpdef Py_ssize_t _request_framing(self, Message msg, long long end_off, Py_ssize_t end)
    @cython.locals(bad_status=bint, end=Py_ssize_t)
    cpdef Py_ssize_t _response_head(self, bytes data, Py_ssize_t p, Py_ssize_t i, bytes line,
                                    long long base)
    @cython.locals(status=int, length=i64)
    cpdef Py_ssize_t _response_framing(self, Message msg, Message req, long long end_off,
                                       Py_ssize_t end)
    cpdef Py_ssize_t _simple_response(self, long long off, Py_ssize_t p)
    cpdef _take(self, Message msg)
    cpdef Py_ssize_t _enter_head_big(self, Message msg, bytes data, Py_ssize_t i)
    @cython.locals(n=Py_ssize_t, i=Py_ssize_t)
    cpdef Py_ssize_t _head_big(self, bytes data, Py_ssize_t p, long long base)
    @cython.locals(i=Py_ssize_t)
    cpdef Py_ssize_t _head_skip(self, bytes data, Py_ssize_t p)
    cpdef Py_ssize_t _head_done(self, Message msg, long long end_off, Py_ssize_t end=*)
    cpdef _head_fields(self, Message msg, bytes data, Py_ssize_t start, Py_ssize_t end)
    @cython.locals(plain=bint, i=Py_ssize_t)
    cpdef _field_block(self, Message msg, str block)
    @cython.locals(nl=Py_ssize_t)
    cpdef _framing_fields(self, Message msg)
    cpdef _framing_field(self, Message msg, str lname, str value)
    @cython.locals(mem=i64, nl=Py_ssize_t, cap=long)
    cpdef _fields(self, Message msg, list lines)
    @cython.locals(chunked=bint, odd=bint, last=Py_ssize_t, k=Py_ssize_t)
    cpdef bint _codings(self, Message msg, list te)
    @cython.locals(length=i64)
    cpdef long long _length(self, Message msg, list cl)
    cpdef _chunk_size(self, bytes line, long long off)
    cpdef _bad_chunk(self, long long off)
    @cython.locals(n=Py_ssize_t, cost=i64)
    cpdef _body(self, bytes chunk)
    cpdef _finish(self, long long end_off)
    cpdef _violation(self, str reason, long long off)
    cpdef _lose(self, str reason)
    @cython.locals(start=Py_ssize_t, found=Py_ssize_t, seg=i64, n=Py_ssize_t, k=Py_ssize_t,
                   tail_off=Py_ssize_t)
    cpdef Py_ssize_t _resync(self, bytes data, Py_ssize_t p, long long base)
