"""Kafka sink: Akto's topic and message, produced safely.

- confluent-kafka producer with acks=all, idempotence and lz4; batching from
  ``AKTO_TRAFFIC_BATCH_SIZE`` (messages) and ``AKTO_TRAFFIC_BATCH_TIME_SECS`` (linger).
- Message **value**: the pair record as compact JSON (every value a string).  Message
  **key**: ``client_ip:client_port>server_ip:server_port`` — every pair of one
  connection lands on one partition, in order, and connections spread evenly.
- A record larger than ``APPLIANCE_MAX_MESSAGE_BYTES`` (default 1,000,000, under
  Kafka's default 1 MB limit) has its payloads shortened, largest first, and carries the
  anomaly ``message_trimmed``.
- Nothing is lost silently.  The producer's in-memory queue is bounded
  (``APPLIANCE_QUEUE_MAX`` messages).  When it is full, or a delivery fails (broker
  down past ``message.timeout.ms``), the message goes to the on-disk spool
  (``APPLIANCE_SPOOL_DIR``, at most ``APPLIANCE_SPOOL_MAX_MB``).  While the spool holds
  anything, new messages are appended behind it, and the spool is drained in order as
  soon as the broker accepts messages again (one probe message at a time while it is
  down).  Only beyond the spool cap are messages dropped, counted and logged at ERROR.
  On shutdown, messages still queued are purged back to the spool, so a restart
  delivers them (at-least-once: a message in flight at shutdown may arrive twice).
"""

from __future__ import annotations

import logging
import time

from appliance.format.record import encode

log = logging.getLogger("appliance.kafka")

TRIM_KEYS = ("responsePayload", "requestPayload", "responseHeaders", "requestHeaders")


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
    def __init__(self, settings, spool_dir: str, producer_factory=None):
        from confluent_kafka import Producer

        from appliance.sinks.spool import Spool

        self.topic = settings.kafka_topic
        self.max_message = settings.max_message_bytes
        conf = settings.kafka_config()
        conf["error_cb"] = self._on_error
        conf["logger"] = LibrdkafkaLog()
        self.conf = conf
        self.factory = producer_factory or Producer
        self.producer = self.factory(conf)
        # no delivery at all for this long while messages wait means the producer is
        # wedged (e.g. an idempotent producer the broker no longer knows after it lost its
        # state): hand its messages to the spool and start a fresh producer
        self.stall_secs = settings.batch_time_secs + 10.0
        self.last_progress = time.monotonic()
        self.resets = 0
        self.need_reset = False
        self.queue_max = settings.queue_max
        self.spool = Spool(spool_dir, settings.spool_max_mb << 20)
        self.delivered = 0
        self.failed = 0
        self.produced = 0
        self.state = "up"
        self.last_probe = 0.0
        self.last_drop_log = 0.0
        self.brokers = settings.kafka_brokers
        if len(self.spool):
            self.state = "down"  # deliver what a previous run left, in order, first
            log.warning("spool %s holds %d messages from an earlier run; draining them first",
                        spool_dir, len(self.spool))

    # -- callbacks (run inside poll/flush) ------------------------------------------------
    def _on_error(self, err) -> None:
        from confluent_kafka import KafkaError

        if err.fatal():
            log.error("Kafka producer fatal error (%s); it will be recreated", err.str())
            self.need_reset = True
            return
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT,
                          KafkaError._RESOLVE):
            if self.state != "down":
                log.warning("Kafka unreachable (%s); spooling to disk", err.str())
            self.state = "down"
        else:
            log.warning("Kafka: %s", err.str())

    def _on_delivery(self, err, msg) -> None:
        if err is None:
            self.delivered += 1
            self.last_progress = time.monotonic()
            if self.state != "up":
                log.warning("Kafka reachable again; draining %d spooled messages", len(self.spool))
            self.state = "up"
            return
        self.failed += 1
        self.state = "down"
        self._to_spool(msg.key(), msg.value())

    def _to_spool(self, key, value) -> None:
        if not self.spool.append(key, value):
            now = time.monotonic()
            if now - self.last_drop_log > 5:
                log.error("spool full (%d MB): %d pairs dropped so far", self.spool.max_bytes >> 20,
                          self.spool.dropped)
                self.last_drop_log = now

    # -- writing ----------------------------------------------------------------------------
    def write(self, records: list[dict]) -> None:
        spool_first = len(self.spool) > 0
        for rec in records:
            value = fit(rec, self.max_message)
            key = message_key(rec)
            if spool_first:
                self._to_spool(key, value)
            else:
                spool_first = not self._produce(key, value)
        self.poll()

    @property
    def in_memory(self) -> int:
        """Messages handed to librdkafka and not yet reported on.  Every produced message
        gets exactly one delivery report (success, failure or purge), so this is exact;
        ``len(producer)`` is not a message count: it also counts protocol requests such as
        the idempotent producer's InitProducerId while the broker is down."""
        return self.produced - self.delivered - self.failed

    def _produce(self, key, value) -> bool:
        try:
            self.producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
            self.produced += 1
            return True
        except BufferError:
            self._to_spool(key, value)
            return False

    def poll(self) -> None:
        self.producer.poll(0)
        now = time.monotonic()
        if not self.in_memory:
            self.last_progress = now
        elif self.need_reset or now - self.last_progress > self.stall_secs:
            self._reset_producer()
        if not len(self.spool):
            return
        if self.state == "up":
            room = self.queue_max // 2 - self.in_memory
            if room > 0:
                self.spool.flush()
                for key, value in self.spool.read(min(room, 5000)):
                    if not self._produce(key, value):
                        break
        else:
            now = time.monotonic()
            if now - self.last_probe >= 1.0 and not self.in_memory:
                # one message at a time tells us when the broker is back
                self.last_probe = now
                self.spool.flush()
                for key, value in self.spool.read(1):
                    self._produce(key, value)

    def _reset_producer(self) -> None:
        reason = "fatal error" if self.need_reset else f"no delivery for {self.stall_secs:.0f}s"
        log.warning("recreating the Kafka producer (%s); %d queued messages go to the spool",
                    reason, self.in_memory)
        self._purge_to_spool()
        self.producer = self.factory(self.conf)
        self.resets += 1
        self.need_reset = False
        self.state = "down"
        self.last_progress = time.monotonic()

    def stats(self) -> dict:
        return {"state": self.state, "brokers": self.brokers, "topic": self.topic,
                "queued": self.in_memory, "spooled": len(self.spool),
                "spool_bytes": self.spool.bytes, "delivered": self.delivered,
                "failed": self.failed, "dropped": self.spool.dropped}

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what we can within `timeout`; spool the rest for the next start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if not len(self.spool) and not self.in_memory:
                break
            self.producer.flush(0.2)
            if self.state == "down" and not self.in_memory:
                break
        if self.in_memory:
            self._purge_to_spool()
        self.spool.close()

    def _purge_to_spool(self) -> None:
        """Take every queued or in-flight message back from librdkafka into the spool
        (its delivery callbacks fire with a purge error, and spool the message)."""
        self.producer.purge(in_queue=True, in_flight=True)
        self.producer.flush(1.0)

