"""Kafka sink: Akto's topic and message, produced safely.

- confluent-kafka producer with acks=all, idempotence and lz4; batching from
  ``AKTO_TRAFFIC_BATCH_SIZE`` (messages) and ``AKTO_TRAFFIC_BATCH_TIME_SECS`` (linger).
- Message **value**: the pair record as compact JSON (every value a string).  Message
  **key**: ``client_ip:client_port>server_ip:server_port`` — every pair of one
  connection lands on one partition, in order, and connections spread evenly.
- A record larger than ``APPLIANCE_MAX_MESSAGE_BYTES`` (default 1,000,000, under
  Kafka's default 1 MB limit) has its payloads shortened, largest first, and carries the
  anomaly ``message_trimmed``.
- **One producer, and librdkafka retries.**  Idempotence (no duplicates, no reordering)
  holds only within one producer instance, so the producer is kept for the life of the
  sink and messages never time out in it: behind a slow broker they wait, and what no
  longer fits the in-memory queue (``APPLIANCE_QUEUE_MAX`` messages and a byte budget)
  goes to the on-disk spool (``sinks/spool.py``).  The producer is replaced only after a
  fatal error, and then only messages without a successful delivery report are re-sent.
- **Nothing is lost silently.**  When every broker is down (or authentication fails) the
  messages held in memory are moved to the spool, so a crash loses none of them, and new
  ones are appended to the spool; one spooled message a second probes the broker.  The
  spool is drained in order, in bounded batches, once the broker takes messages again and
  every message produced directly has its delivery report.  Messages that were produced
  directly and then failed go to the spool's retry lane, which is read before newer
  spooled messages, so a connection's pairs keep their order.  Only beyond the spool cap
  (``APPLIANCE_SPOOL_MAX_MB``) are messages dropped: counted and logged at ERROR.
- ``close(timeout)`` delivers what it can within ``timeout`` and spools the rest.
"""

from __future__ import annotations

import logging
import shutil
import time

from appliance.format.record import encode

log = logging.getLogger("appliance.kafka")

TRIM_KEYS = ("responsePayload", "requestPayload", "responseHeaders", "requestHeaders")
DRAIN_BATCH = 500  # spooled messages in flight at most (and at most half the queue budget)
FLUSH_AFTER = 0.2  # a full drain window without a report this long: flush past linger.ms
STALL_SECS = 60.0  # messages waiting and no delivery report at all for this long: down
PROBE_SECS = 1.0
DEFAULT_QUEUE_BYTES = 128 << 20
# broker answers that no retry can change (this message is too large or invalid)
PERMANENT = frozenset({2, 10, 87})  # INVALID_MSG, MSG_SIZE_TOO_LARGE, INVALID_RECORD
# the broker no longer knows this producer's id (it lost its state, or another producer
# took the id over): only a new producer, with a new id, gets messages in again
PRODUCER_STATE = frozenset({45, 47, 59, 90})  # OUT_OF_ORDER_SEQUENCE_NUMBER,
# INVALID_PRODUCER_EPOCH, UNKNOWN_PRODUCER_ID, PRODUCER_FENCED


class LibrdkafkaLog:
    """librdkafka's own log lines (one per reconnect attempt while a broker is down) go
    to DEBUG; what an operator must see arrives through error_cb and delivery reports,
    which the sink logs once per state change."""

    def __init__(self):
        self.logger = logging.getLogger("appliance.librdkafka")

    def log(self, level, fmt, *args):
        self.logger.debug(fmt, *args)


def fit(rec: dict, limit: int) -> bytes:
    """Encode a record, shortening payloads until it fits in `limit` bytes."""
    value = encode(rec)
    if len(value) <= limit:
        return value
    rec = dict(rec)
    over = len(value) - limit
    for key in sorted(TRIM_KEYS, key=lambda k: -len(rec.get(k, ""))):
        text = rec.get(key, "")
        if not text:
            continue
        # JSON escaping can expand a character up to 6 bytes: cut generously
        cut = min(len(text), over + 64)
        rec[key] = text[: len(text) - cut] if key.endswith("Payload") else "{}"
        anomalies = rec.get("anomalies", "")
        if "message_trimmed" not in anomalies:
            rec["anomalies"] = (anomalies + "," if anomalies else "") + "message_trimmed"
        value = encode(rec)
        if len(value) <= limit:
            return value
        over = len(value) - limit
    return value


def message_key(rec: dict) -> bytes:
    return f"{rec['ip']}:{rec['srcPort']}>{rec['destIp']}:{rec['destPort']}".encode()


class KafkaSink:
    """write(records) / poll() / stats() / close(timeout): the runtime's sink interface."""

    def __init__(self, settings, spool_dir: str, producer_factory=None, *,
                 queue_bytes: int | None = None, adopt: tuple[str, ...] = (),
                 lock_timeout: float = 0.0, drain_at_close: bool = True):
        from confluent_kafka import Producer

        from appliance.sinks.spool import Spool

        self.topic = settings.kafka_topic
        self.max_message = settings.max_message_bytes
        self.queue_max = settings.queue_max
        self.queue_bytes = queue_bytes or DEFAULT_QUEUE_BYTES
        self.drain_at_close = drain_at_close  # a batch job (replay) waits for the spool too
        conf = settings.kafka_config()
        conf["error_cb"] = self._on_error
        conf["logger"] = LibrdkafkaLog()
        # never time a message out inside the producer: a retry from a second attempt
        # of ours could duplicate what the broker already holds; waiting is bounded by
        # the queue limits below, and a dead broker moves the messages to the spool
        conf["message.timeout.ms"] = 0
        conf["queue.buffering.max.kbytes"] = max(1024, self.queue_bytes >> 10)
        self.conf = conf
        self.factory = producer_factory or Producer
        self.brokers = settings.kafka_brokers
        self.spool = Spool(spool_dir, settings.spool_max_mb << 20, lock_timeout=lock_timeout)
        self.adopted: list = []
        for path in adopt:
            try:
                sp = Spool(path, 1 << 62, lock_timeout=lock_timeout)
            except Exception as exc:  # noqa: BLE001 - one unreadable spool must not stop us
                log.error("cannot adopt spool %s: %s", path, exc)
                continue
            if len(sp) or sp.bytes:
                log.warning("adopted spool %s with %d messages", path, len(sp))
            self.adopted.append(sp)
        self.producer = self.factory(conf)
        self.delivered = 0
        self.failed = 0
        self.produced = 0
        self.live = 0  # produced directly, no report yet
        self.in_flight_spooled: dict = {}  # (spool, id) -> spool, produced from a spool
        self.lost_in_producer = 0
        self.in_memory_bytes = 0
        self.state = "up"
        self.reason: str | None = None
        self.reason_kind: str | None = None
        self.need_reset = False
        self.resets = 0
        self.last_progress = time.monotonic()
        self.last_probe = 0.0
        self.last_drop_log = 0.0
        self.error_logged: dict[int, float] = {}
        self.rejected = 0
        if self.spooled():  # the first drain tells whether the broker is there
            log.warning("spool %s holds %d messages from an earlier run; draining them first",
                        spool_dir, self.spooled())

    # -- state ----------------------------------------------------------------------------
    def _set_state(self, state: str, kind: str | None, reason: str | None) -> None:
        if state == self.state and kind == self.reason_kind:
            self.reason = reason
            return
        self.state, self.reason, self.reason_kind = state, reason, kind
        if state == "up":
            log.warning("Kafka reachable again; %d spooled messages to deliver", self.spooled())
        elif kind == "auth":
            log.error("Kafka authentication failed (%s); spooling to disk — check "
                      "APPLIANCE_KAFKA_SASL_USERNAME / APPLIANCE_KAFKA_SASL_PASSWORD and the "
                      "mechanism", reason)
        else:
            log.warning("Kafka unreachable (%s); spooling to disk", reason)

    # -- callbacks (run inside poll/flush) ------------------------------------------------
    def _on_error(self, err) -> None:
        from confluent_kafka import KafkaError

        code = err.code()
        if err.fatal() or code == KafkaError._FATAL:
            self._fatal(err)
        elif code == KafkaError._ALL_BROKERS_DOWN:
            self._set_state("down", "unreachable", err.str())
        elif code == KafkaError._AUTHENTICATION:
            self._set_state("down", "auth", err.str())
        elif code in (KafkaError._TRANSPORT, KafkaError._RESOLVE):
            log.debug("Kafka: %s", err.str())  # one connection; ALL_BROKERS_DOWN says more
        else:
            now = time.monotonic()
            if now - self.error_logged.get(code, -1e9) >= 60:
                self.error_logged[code] = now
                log.warning("Kafka: %s", err.str())

    def _fatal(self, err) -> None:
        if not self.need_reset:
            log.error("Kafka producer fatal error (%s); replacing the producer", err.str())
        self.need_reset = True

    def _call(self, method, *args, **kw):
        """A producer call; a fatal error raised through it marks the producer for
        replacement instead of ending the worker."""
        from confluent_kafka import KafkaException

        try:
            return method(*args, **kw)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if err is not None and hasattr(err, "fatal") and err.fatal():
                self._fatal(err)
                return None
            raise

    def _account(self, msg) -> None:
        key = msg.key()
        self.in_memory_bytes -= len(msg) + (len(key) if key else 0)

    def _on_live(self, err, msg) -> None:
        """Delivery report of a message produced directly from the pipeline."""
        self.live -= 1
        self._account(msg)
        if err is None:
            self._delivered()
            return
        self.failed += 1
        if self._rejected(err):
            return
        self._store(msg.key(), msg.value(), retry=True)

    def _spooled_report(self, spool, rid):
        def report(err, msg):
            self.in_flight_spooled.pop((id(spool), rid), None)
            self._account(msg)
            if err is None:
                spool.ack(rid)
                self._delivered()
                return
            self.failed += 1
            if self._rejected(err):
                spool.ack(rid)  # the broker will never take it: do not retry it forever
                return
            spool.nack(rid)  # it stays in the spool, and keeps its place
        return report

    def _rejected(self, err) -> bool:
        """Classify a failed delivery: True when the broker rejects this message for good
        (dropped, counted, logged); otherwise the broker is treated as down (unless we
        purged the message ourselves) and the message will be sent again."""
        from confluent_kafka import KafkaError

        code = err.code()
        if code in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
            return False
        if code in PERMANENT:
            self.rejected += 1
            now = time.monotonic()
            if now - self.error_logged.get(code, -1e9) >= 60:
                self.error_logged[code] = now
                log.error("Kafka rejected a message for good (%s): %d dropped so far",
                          err.str(), self.rejected)
            return True
        if code in PRODUCER_STATE:
            self._fatal(err)
        self._set_state("down", "failed", err.str())
        return False

    def _delivered(self) -> None:
        self.delivered += 1
        self.last_progress = time.monotonic()
        if self.state != "up":
            self._set_state("up", None, None)

    def _store(self, key, value, retry: bool = False) -> None:
        ok = self.spool.append_retry(key, value) if retry else self.spool.append(key, value)
        if not ok:
            now = time.monotonic()
            if now - self.last_drop_log > 5:
                log.error("spool full (%d MB): %d pairs dropped so far",
                          self.spool.max_bytes >> 20, self.spool.dropped)
                self.last_drop_log = now

    # -- writing ----------------------------------------------------------------------------
    def write(self, records: list[dict]) -> None:
        spool_first = self._spooling()
        for rec in records:
            value = fit(rec, self.max_message)
            key = message_key(rec)
            if spool_first:
                self._store(key, value)
            else:
                spool_first = not self._produce_live(key, value)
        self.spool.flush()
        self.poll()

    def _spooling(self) -> bool:
        return self.state != "up" or self.spooled() > 0

    def spooled(self) -> int:
        return len(self.spool) + sum(len(a) for a in self.adopted)

    @property
    def in_memory(self) -> int:
        """Messages handed to librdkafka and not yet reported on.  Every produced message
        gets exactly one delivery report (success, failure or purge), so this is exact;
        ``len(producer)`` is not a message count: it also counts protocol requests."""
        return self.produced - self.delivered - self.failed

    def _produce_live(self, key, value) -> bool:
        from confluent_kafka import KafkaException

        try:
            self.producer.produce(self.topic, value, key, on_delivery=self._on_live)
        except (BufferError, KafkaException) as exc:
            if isinstance(exc, KafkaException):
                self.need_reset = True
            self._store(key, value)
            return False
        self.produced += 1
        self.live += 1
        self.in_memory_bytes += len(value) + len(key)
        return True

    def _produce_spooled(self, spool, rid, key, value) -> bool:
        from confluent_kafka import KafkaException

        try:
            self.producer.produce(self.topic, value, key,
                                  on_delivery=self._spooled_report(spool, rid))
        except (BufferError, KafkaException) as exc:
            if isinstance(exc, KafkaException):
                self.need_reset = True
            return False
        self.in_flight_spooled[(id(spool), rid)] = spool
        self.produced += 1
        self.in_memory_bytes += len(value) + (len(key) if key else 0)
        return True

    def poll(self, drain: bool = True) -> None:
        self._call(self.producer.poll, 0)
        if self.need_reset:
            self._replace_producer()
        now = time.monotonic()
        if self.in_memory == 0:
            self.last_progress = now
        elif self.state == "up" and now - self.last_progress > STALL_SECS:
            self._set_state("down", "stalled", f"no delivery report for {STALL_SECS:.0f}s")
        if self.state != "up" and self.live:
            # every broker is down: what waits in memory goes to disk, where a crash
            # cannot take it (and the retry lane keeps it ahead of newer messages)
            self._call(self.producer.purge, in_queue=True, in_flight=True)
            self._call(self.producer.poll, 0)
        if drain:
            self._drain(now)
        self.spool.tick()
        for a in self.adopted:
            a.tick()

    def _drain(self, now: float) -> None:
        if not self.spooled() or self.live:
            return  # older messages produced directly go first
        if self.state == "up":
            # one batch in flight at a time: a crash re-sends at most that many
            window = DRAIN_BATCH - len(self.in_flight_spooled)
            if window <= 0:
                if now - self.last_progress > FLUSH_AFTER:
                    # a partial batch would wait out linger.ms (10 s by Akto's default):
                    # send it now
                    self._call(self.producer.flush, 0.01)
                return
            room = min(window, self.queue_max // 2 - self.in_memory)
            room_bytes = self.queue_bytes // 2 - self.in_memory_bytes
        elif now - self.last_probe >= PROBE_SECS and not self.in_memory:
            self.last_probe = now  # one message at a time tells us when the broker is back
            room, room_bytes = 1, 1 << 62
        else:
            return
        if room <= 0 or room_bytes <= 0:
            return
        for spool in self._drain_order():
            batch = spool.read(room, room_bytes)
            for i, (rid, key, value) in enumerate(batch):
                if not self._produce_spooled(spool, rid, key, value):
                    for rest in batch[i:]:
                        spool.nack(rest[0])
                    break
            if batch or len(spool):
                break  # strictly one spool after the other
        self._retire_adopted()

    def _drain_order(self):
        return [*self.adopted, self.spool]

    def _retire_adopted(self) -> None:
        for sp in [a for a in self.adopted if not len(a) and not a.outstanding()]:
            self.adopted.remove(sp)
            sp.close()
            if not sp.bytes:
                shutil.rmtree(sp.dir, ignore_errors=True)
                log.info("adopted spool %s drained and removed", sp.dir)

    def _replace_producer(self) -> None:
        """After a fatal error only: take every unreported message back (the spool), then
        start a new producer.  Messages with a successful report are never re-sent."""
        log.warning("replacing the Kafka producer; %d unreported messages go back to the "
                    "spool", self.in_memory)
        self._purge_all(5.0)
        self._abandon()
        self.producer = self.factory(self.conf)
        self.resets += 1
        self.need_reset = False
        self.last_progress = time.monotonic()

    def _purge_all(self, wait: float) -> None:
        self._call(self.producer.purge, in_queue=True, in_flight=True)
        end = time.monotonic() + wait
        while self.in_memory and time.monotonic() < end:
            self._call(self.producer.poll, 0.05)

    def _abandon(self) -> None:
        """Messages of a dead producer that never got a report: spooled ones are read
        again (they never left the spool); direct ones are lost, counted."""
        for (_, rid), spool in list(self.in_flight_spooled.items()):
            spool.nack(rid)
        self.in_flight_spooled.clear()
        if self.live:
            self.lost_in_producer += self.live
            log.error("%d messages lost with the failed Kafka producer", self.live)
        self.produced = self.delivered + self.failed
        self.live = 0
        self.in_memory_bytes = 0

    def stats(self) -> dict:
        corrupt = self.spool.corrupt + sum(a.corrupt for a in self.adopted)
        return {"state": self.state, "reason": self.reason, "brokers": self.brokers,
                # queued: produced straight from the pipeline, no report yet (memory only);
                # spooled: on disk and not yet delivered (some may be in flight again)
                "topic": self.topic, "queued": self.live, "spooled": self.spooled(),
                "spool_bytes": self.spool.bytes + sum(a.bytes for a in self.adopted),
                "delivered": self.delivered, "failed": self.failed,
                "dropped": self.spool.dropped + self.rejected + self.lost_in_producer,
                "corrupt": corrupt,
                "queued_bytes": self.in_memory_bytes}

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what we can within `timeout` (the spool too, for a batch job), then
        hand every unreported message to the spool, fsync it and release it."""
        drain_spool = self.drain_at_close
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(drain=drain_spool)
            pending = self.in_memory or (drain_spool and self.spooled())
            if not pending or self.state != "up":
                break
            self._call(self.producer.flush, max(0.0, min(0.2, deadline - time.monotonic())))
            if self.need_reset:
                self._replace_producer()
        if self.in_memory:
            self._purge_all(2.0)
        self.spool.close()
        for a in self.adopted:
            a.close()
        if self.in_memory:
            log.error("%d messages had no delivery report at close", self.in_memory)

    def lost(self) -> int:
        """Pairs this sink could neither deliver nor spool."""
        return self.spool.dropped + self.rejected + self.lost_in_producer + max(0, self.live)

