"""Only HTTP is HTTP: in all-ports capture, FTP, SMTP, IMAP, Redis and Gnutella sessions
carry text lines that look like ``WORD WORD``; they must produce zero records, whether
the capture saw them from the start, from the middle, or with the directions reordered."""

from __future__ import annotations

import pytest

from appliance import synth
from helpers import run_frames

# (who speaks, line): True = client
FTP = [
    (False, b"220 ProFTPD 1.3.8 Server (Debian) [10.0.0.2]\r\n"),
    (True, b"USER anonymous\r\n"),
    (False, b"331 Anonymous login ok, send your complete email address as your password\r\n"),
    (True, b"PASS secret-password\r\n"),
    (False, b"230 Anonymous access granted, restrictions apply\r\n"),
    (True, b"CWD /pub\r\n"),
    (False, b"250 CWD command successful\r\n"),
    (True, b"GET /etc/passwd\r\n"),
    (False, b"500 GET not understood\r\n"),
    (True, b"RETR index.html\r\n"),
    (False, b"150 Opening BINARY mode data connection\r\n226 Transfer complete\r\n"),
    (True, b"QUIT\r\n"),
    (False, b"221 Goodbye.\r\n"),
]
SMTP = [
    (False, b"220 mx.example.com ESMTP Postfix\r\n"),
    (True, b"EHLO client.example.org\r\n"),
    (False, b"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n"),
    (True, b"MAIL FROM:<alice@example.org>\r\n"),
    (False, b"250 2.1.0 Ok\r\n"),
    (True, b"RCPT TO:<bob@example.com>\r\n"),
    (False, b"250 2.1.5 Ok\r\n"),
    (True, b"DATA\r\n"),
    (False, b"354 End data with <CR><LF>.<CR><LF>\r\n"),
    (True, b"Subject: an HTTP request in a mail\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n.\r\n"),
    (False, b"250 2.0.0 Ok: queued as 12345\r\n"),
    (True, b"QUIT\r\n"),
    (False, b"221 2.0.0 Bye\r\n"),
]
IMAP = [
    (False, b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS] Dovecot ready.\r\n"),
    (True, b"a001 LOGIN alice password123\r\n"),
    (False, b"a001 OK [CAPABILITY IMAP4rev1] Logged in\r\n"),
    (True, b"a002 SELECT INBOX\r\n"),
    (False, b"* 18 EXISTS\r\n* 2 RECENT\r\na002 OK [READ-WRITE] Select completed.\r\n"),
    (True, b"a003 FETCH 1 BODY[]\r\n"),
    (False, b"* 1 FETCH (BODY[] {31}\r\nGET / HTTP/1.1\r\nHost: y\r\n\r\n)\r\na003 OK\r\n"),
    (True, b"a004 LOGOUT\r\n"),
    (False, b"* BYE\r\na004 OK Logout completed.\r\n"),
]
REDIS = [
    (True, b"*2\r\n$3\r\nGET\r\n$9\r\n/api/user\r\n"),
    (False, b"$5\r\nalice\r\n"),
    (True, b"GET /api/session\r\n"),  # an inline command that looks like HTTP/0.9
    (False, b"$-1\r\n"),
    (True, b"SET /api/session token\r\n"),
    (False, b"+OK\r\n"),
    (True, b"PING\r\n"),
    (False, b"+PONG\r\n"),
]
REDIS_INLINE_FIRST = [
    (True, b"GET /api/session\r\n"),
    (False, b"$-1\r\n"),
    (True, b"SET /api/session token\r\n"),
    (False, b"+OK\r\n"),
]
GNUTELLA = [
    (True, b"GNUTELLA CONNECT/0.6\r\nUser-Agent: LimeWire/4.12\r\nX-Ultrapeer: False\r\n\r\n"),
    (False, b"GNUTELLA/0.6 200 OK\r\nUser-Agent: gtk-gnutella/1.2\r\nX-Ultrapeer: True\r\n\r\n"),
    (True, b"GNUTELLA/0.6 200 OK\r\n\r\n"),
    (True, b"\x8a\x1f" + b"\x00" * 21),
    (False, b"GET /uri-res/N2R?urn:sha1:ABC HTTP/1.1\r\n"),
]
CONVERSATIONS = {"ftp": (FTP, 21), "smtp": (SMTP, 25), "imap": (IMAP, 143),
                 "redis": (REDIS, 6379), "redis-inline-first": (REDIS_INLINE_FIRST, 6379),
                 "gnutella": (GNUTELLA, 6346)}


def play(lines, port, handshake=True):
    c = synth.Conversation(sport=port, mss=40)
    if handshake:
        c.handshake()
    else:
        c.cseq += 1
        c.sseq += 1
    for from_client, data in lines:
        c.send(from_client, data)
    c.close()
    return c.frames


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_other_protocols_give_zero_records(name):
    lines, port = CONVERSATIONS[name]
    recs, p = run_frames(play(lines, port))
    assert recs == []
    assert sum(p.stats()["not_http"].values()) == 1, p.stats()["not_http"]


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_other_protocols_seen_from_the_middle_give_zero_records(name):
    lines, port = CONVERSATIONS[name]
    frames = play(lines, port, handshake=False)
    for start in range(0, min(len(frames), 12), 3):
        recs, _ = run_frames(frames[start:])
        assert recs == [], (name, start)


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_other_protocols_with_directions_reordered_give_zero_records(name):
    lines, port = CONVERSATIONS[name]
    frames = play(lines, port)
    for i in range(3, len(frames) - 1, 2):
        swapped = list(frames)
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        recs, _ = run_frames(swapped)
        assert recs == [], (name, i)


def test_http_on_the_same_ports_still_works():
    # the same machinery must not lose real HTTP: on port 25, mid-stream, reordered
    c = synth.Conversation(sport=25)
    c.handshake()
    c.exchange(synth.http_request("GET", "/on-port-25"), synth.http_response(200, b"fine"))
    c.close()
    recs, _ = run_frames(c.frames)
    assert [r["path"] for r in recs] == ["/on-port-25"]
