"""The worker's Redis transport (workers/broker.py) against a real Redis at its maxmemory: kombu's
own consumer, prefetch and acks, as Celery's worker drives them (prefetch 1, acks late, an ack's
error logged and swallowed by ``Message.ack_log_error``)."""

from __future__ import annotations

import logging
import os
import signal

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from tests.helpers import throwaway_redis


@pytest.fixture
def redis_url(tmp_path):
    server, url = throwaway_redis(tmp_path)
    yield url
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def fill(raw: redis.Redis) -> None:
    """maxmemory just under what Redis uses: every write that may grow it is refused (OOM),
    and so is every command queued inside MULTI (Redis refuses those whatever they are)."""
    raw.config_set("maxmemory-policy", "noeviction")
    raw.config_set("maxmemory", str(int(raw.info("memory")["used_memory"]) - 1024))


def test_an_ack_refused_by_a_full_redis_does_not_stop_the_consumer_for_good(redis_url):
    """Issue 44 (1): kombu's Redis ack removes the message from its unacked index in a MULTI, which
    a full Redis refuses; the ack raised before the in-memory QoS let the message go, so the
    consumer (prefetch 1) never took another one, though Redis had room again."""
    from workers.broker import use_for_redis_urls

    use_for_redis_urls()
    raw = redis.Redis.from_url(redis_url)
    queue = Queue("dnnprof.test", Exchange("dnnprof.test"), routing_key="dnnprof.test")
    received = []
    with Connection(redis_url) as conn:
        channel = conn.channel()
        channel.basic_qos(prefetch_size=0, prefetch_count=1)
        producer = Producer(conn.channel(), exchange=queue.exchange, routing_key="dnnprof.test")
        consumer = Consumer(channel, [queue], callbacks=[lambda body, message: received.append(message)])
        consumer.declare()
        consumer.consume()
        producer.publish({"n": 1}, declare=[queue])
        conn.drain_events(timeout=10)
        [first] = received

        fill(raw)
        first.ack_log_error(logging.getLogger("test"), conn.connection_errors + conn.channel_errors)
        raw.config_set("maxmemory", "0")  # room again

        producer.publish({"n": 2}, declare=[queue])
        conn.drain_events(timeout=10)  # socket.timeout before: the consumer took nothing more
        assert [m.payload for m in received] == [{"n": 1}, {"n": 2}]
        received[1].ack()
        # The first message's bookkeeping is removed once Redis has room (kombu's periodic
        # restore_visible): it is never delivered again an hour later.
        channel.qos.restore_visible(num=10, interval=1)
        assert raw.hlen("unacked") == 0 and raw.zcard("unacked_index") == 0
