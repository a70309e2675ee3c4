"""Traffic for runtime tests, built in code."""

from appliance import synth


def connections(n, exchanges=3, client_net="10.60", server="10.70.0.10", t=1_700_000_000.0,
                close=True, body=b""):
    """n keep-alive connections; returns (frames sorted by time, expected set of pairs).
    `body` (bytes, or a function of connection and exchange numbers) ends each response."""
    frames = []
    expected = set()
    for i in range(n):
        c = synth.Conversation(client=f"{client_net}.{i // 200}.{i % 200 + 1}", server=server,
                               cport=30000 + i, sport=8080, t=t + i * 0.001)
        c.handshake()
        for j in range(exchanges):
            path = f"/api/c{i}/r{j}"
            payload = b'{"conn":%d,"req":%d}' % (i, j) + (body(i, j) if callable(body) else body)
            c.exchange(synth.http_request("POST", path, b'{"q":%d}' % j,
                                          [("Content-Type", "application/json")]),
                       synth.http_response(200, payload, [("Content-Type", "application/json")]))
            expected.add((c.client, str(c.cport), path, "200", payload.decode()))
        if close:
            c.close()
        frames += c.frames
    frames.sort(key=lambda f: f[0])
    return frames, expected


def key(rec):
    return (rec["ip"], rec["srcPort"], rec["path"], rec["statusCode"], rec["responsePayload"])
