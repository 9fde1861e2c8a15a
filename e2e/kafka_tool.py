#!/usr/bin/env python3
"""Small Kafka client for the scaler tests, run as a subprocess against the brokers of
e2e/sources.sh (`EVENTSCALE_KAFKA_TOOL` there names a wrapper that runs this file with the
virtualenv's interpreter, where confluent-kafka is installed).

  kafka_tool.py [CONNECTION] create-topic NAME --partitions N
  kafka_tool.py [CONNECTION] produce TOPIC --partition P --count N
  kafka_tool.py [CONNECTION] commit GROUP TOPIC --partition P --offset O
  kafka_tool.py [CONNECTION] watermarks TOPIC --partition P      -> "LOW HIGH"
  kafka_tool.py [CONNECTION] committed GROUP TOPIC --partition P -> offset, or -1
  kafka_tool.py [CONNECTION] metadata                            -> "BROKERS TOPICS" (readiness)

CONNECTION: --bootstrap HOST:PORT [--sasl-mechanism PLAIN|SCRAM-SHA-256|SCRAM-SHA-512 --user U
--password P] [--ca FILE (TLS, verifying the broker against FILE)] [--timeout SECONDS].

`produce` sends one record per batch and waits for each, because the broker (tansu) reports
a partition's high watermark as the base offset of its last batch + 1. `commit` commits a
group offset without joining the group (a "simple" commit: generation -1, no member id).
A missing topic or partition is an error (nothing is created on the fly). Every call is
bounded by --timeout (default 20 s, at most 30 s); failures exit non-zero (124 when the
deadline passed) with a message on stderr.
"""

import argparse
import collections
import logging
import os
import re
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

MAX_TIMEOUT = 30.0


class Recent(logging.Handler):
    """Keeps librdkafka's last log lines (instead of printing them all) to explain a failure."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = collections.deque(maxlen=50)

    def emit(self, record):
        self.lines.append(record.getMessage())


RECENT = Recent()
LOGGER = logging.getLogger("kafka_tool.librdkafka")
LOGGER.propagate = False
LOGGER.addHandler(RECENT)
LOGGER.setLevel(logging.WARNING)


def fail(msg, code=1):
    """Prints msg and the last distinct librdkafka complaints not already in it; exits."""
    print(f"kafka_tool: {msg}", file=sys.stderr)
    said = re.sub(r" \(after \d+ms in state \w+\)", "", msg)
    seen = []
    for line in reversed(RECENT.lines):
        # "[thrd:...]: host:port/bootstrap: reason (after 3ms in state X)" -> the reason
        reason = re.sub(r" \(after \d+ms in state \w+\)", "", line.split("]: ", 1)[-1])
        if reason not in seen and reason not in said:
            seen.append(reason)
        if len(seen) == 3:
            break
    for reason in reversed(seen):
        print(f"kafka_tool:   librdkafka: {reason}", file=sys.stderr)
    sys.stderr.flush()
    os._exit(code)


def watchdog(seconds, what):
    """Ends the process when a client call hangs past the deadline (librdkafka calls are
    not always interruptible)."""

    def expire():
        fail(f"{what} timed out after {seconds:g}s", code=124)

    t = threading.Timer(seconds, expire)
    t.daemon = True
    t.start()


# Errors that no retry within the deadline will cure: the call fails at once with them.
FATAL = {
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._SSL,
    KafkaError._ALL_BROKERS_DOWN,
}


def client_config(args, what):
    def on_error(err):
        # Served by poll()/flush() (see call()); ends the process with the cause.
        if err.fatal() or err.code() in FATAL:
            fail(f"{what}: {err.str()}")

    conf = {
        "bootstrap.servers": args.bootstrap,
        "socket.timeout.ms": int(args.timeout * 1000),
        "socket.connection.setup.timeout.ms": int(args.timeout * 1000),
        "logger": LOGGER,
        "log_level": 4,
        "error_cb": on_error,
        # A missing topic is an error, not created on the fly with the broker's default
        # partition count (tansu creates one when a producer's metadata request allows it).
        "allow.auto.create.topics": False,
    }
    tls = args.ca is not None
    if args.sasl_mechanism:
        if not args.user or args.password is None:
            fail("--sasl-mechanism needs --user and --password")
        conf["security.protocol"] = "SASL_SSL" if tls else "SASL_PLAINTEXT"
        conf["sasl.mechanism"] = args.sasl_mechanism
        conf["sasl.username"] = args.user
        conf["sasl.password"] = args.password
    else:
        conf["security.protocol"] = "SSL" if tls else "PLAINTEXT"
    if tls:
        if not os.path.isfile(args.ca):
            fail(f"CA file {args.ca} does not exist")
        conf["ssl.ca.location"] = args.ca
        conf["ssl.endpoint.identification.algorithm"] = "https"
    if args.cert or args.key:
        if not (tls and args.cert and args.key):
            fail("--cert and --key go together, with --ca")
        conf["ssl.certificate.location"] = args.cert
        conf["ssl.key.location"] = args.key
    return conf


def call(handle, fn):
    """Runs the blocking client call fn() in a thread while this one polls handle, so that
    error and log callbacks are served (and a fatal error ends the wait at once). For an
    AdminClient: a Consumer's poll() waits until its own blocking call is over."""
    result = {}

    def work():
        try:
            result["value"] = fn()
        except BaseException as e:  # re-raised below, in the calling thread
            result["error"] = e

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    while worker.is_alive():
        handle.poll(0.05)
        worker.join(0.0)
    if "error" in result:
        raise result["error"]
    return result["value"]


def kafka_error(e):
    err = e.args[0] if e.args else None
    return err.str() if isinstance(err, KafkaError) else str(e)


def consumer(args, group, what):
    conf = client_config(args, what)
    conf.update({"group.id": group, "enable.auto.commit": False, "enable.auto.offset.store": False})
    return Consumer(conf)


def preflight(args, what, topic=None, partition=None):
    """Connects with an AdminClient, which fails at once on a bad password or certificate
    (a Consumer serves no error callback while one of its blocking calls runs, and a
    Producer retries a missing topic until its deadline); with topic, checks that the
    topic and partition exist."""
    admin = AdminClient(client_config(args, what))
    try:
        md = call(admin, lambda: admin.list_topics(topic=topic, timeout=args.timeout))
    except KafkaException as e:
        fail(f"{what}: {kafka_error(e)}")
    if topic is not None:
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            fail(f"{what}: topic {topic}: {t.error.str() if t is not None else 'not in metadata'}")
        if partition is not None and partition not in t.partitions:
            fail(f"{what}: topic {topic} has no partition {partition} (it has {len(t.partitions)})")


def cmd_create_topic(args):
    what = f"create-topic {args.name}"
    admin = AdminClient(client_config(args, what))
    futures = admin.create_topics(
        [NewTopic(args.name, num_partitions=args.partitions, replication_factor=1)],
        operation_timeout=args.timeout,
        request_timeout=args.timeout,
    )
    try:
        call(admin, lambda: futures[args.name].result(timeout=args.timeout))
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            fail(f"{what}: {kafka_error(e)}")
    except Exception as e:  # concurrent.futures.TimeoutError and the like
        fail(f"{what}: no answer within {args.timeout:g}s ({type(e).__name__})")


def cmd_metadata(args):
    admin = AdminClient(client_config(args, "metadata"))
    try:
        md = call(admin, lambda: admin.list_topics(timeout=args.timeout))
    except KafkaException as e:
        fail(f"metadata: {kafka_error(e)}")
    print(len(md.brokers), len(md.topics))


def cmd_produce(args):
    what = f"produce to {args.topic}[{args.partition}]"
    conf = client_config(args, what)
    conf.update(
        {
            "linger.ms": 0,
            "batch.num.messages": 1,
            "enable.idempotence": False,
            "acks": "all",
            "compression.type": "none",
            "message.timeout.ms": int(args.timeout * 1000),
        }
    )
    preflight(args, what, args.topic, args.partition)
    producer = Producer(conf)
    delivered = []

    def on_delivery(err, msg):
        delivered.append(err)

    for i in range(args.count):
        delivered.clear()
        try:
            producer.produce(args.topic, value=f"record-{i}".encode(), partition=args.partition, on_delivery=on_delivery)
        except KafkaException as e:
            fail(f"{what}: record {i}: {kafka_error(e)}")
        # One record per batch: wait for each before sending the next.
        left = producer.flush(args.timeout)
        if left or not delivered:
            fail(f"{what}: record {i} not delivered within {args.timeout:g}s")
        if delivered[0] is not None:
            fail(f"{what}: record {i}: {delivered[0].str()}")


def cmd_commit(args):
    what = f"commit {args.group} {args.topic}[{args.partition}]={args.offset}"
    done = []

    def on_commit(err, partitions):
        done.append((err, partitions))

    conf = client_config(args, what)
    conf.update({"group.id": args.group, "enable.auto.commit": False, "on_commit": on_commit})
    c = Consumer(conf)
    # A "simple" commit (generation -1, no member id): the group is never joined. The
    # asynchronous form lets poll() serve errors and bounds the wait (the synchronous one
    # has no timeout and waits for a coordinator forever).
    try:
        c.commit(offsets=[TopicPartition(args.topic, args.partition, args.offset)], asynchronous=True)
    except KafkaException as e:
        fail(f"{what}: {kafka_error(e)}")
    deadline = time.monotonic() + args.timeout
    while not done and time.monotonic() < deadline:
        c.poll(0.05)
    if not done:
        fail(f"{what}: no answer within {args.timeout:g}s")
    err, partitions = done[0]
    if err is not None:
        fail(f"{what}: {err.str()}")
    for tp in partitions or []:
        if tp.error is not None:
            fail(f"{what}: {tp.error.str()}")


def cmd_watermarks(args):
    what = f"watermarks {args.topic}[{args.partition}]"
    preflight(args, what, args.topic, args.partition)
    c = consumer(args, "eventscale-kafka-tool", what)
    tp = TopicPartition(args.topic, args.partition)
    try:
        low, high = call(c, lambda: c.get_watermark_offsets(tp, timeout=args.timeout, cached=False))
    except KafkaException as e:
        fail(f"{what}: {kafka_error(e)}")
    print(low, high)


def cmd_committed(args):
    what = f"committed {args.group} {args.topic}[{args.partition}]"
    preflight(args, what)
    c = consumer(args, args.group, what)
    try:
        [tp] = call(c, lambda: c.committed([TopicPartition(args.topic, args.partition)], timeout=args.timeout))
    except KafkaException as e:
        fail(f"{what}: {kafka_error(e)}")
    if tp.error is not None:
        fail(f"{what}: {tp.error.str()}")
    print(tp.offset if tp.offset >= 0 else -1)


def parse(argv):
    p = argparse.ArgumentParser(prog="kafka_tool.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True, help="HOST:PORT of the broker")
    p.add_argument("--sasl-mechanism", choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--ca", help="CA certificate (PEM): connect with TLS and verify the broker")
    p.add_argument("--cert", help="client certificate (PEM), for a broker that requires one")
    p.add_argument("--key", help="the client certificate's key (PEM)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds for the whole call (at most 30)")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("create-topic")
    s.add_argument("name")
    s.add_argument("--partitions", type=int, required=True)
    s.set_defaults(func=cmd_create_topic)

    s = sub.add_parser("produce")
    s.add_argument("topic")
    s.add_argument("--partition", type=int, required=True)
    s.add_argument("--count", type=int, required=True)
    s.set_defaults(func=cmd_produce)

    s = sub.add_parser("commit")
    s.add_argument("group")
    s.add_argument("topic")
    s.add_argument("--partition", type=int, required=True)
    s.add_argument("--offset", type=int, required=True)
    s.set_defaults(func=cmd_commit)

    s = sub.add_parser("watermarks")
    s.add_argument("topic")
    s.add_argument("--partition", type=int, required=True)
    s.set_defaults(func=cmd_watermarks)

    s = sub.add_parser("committed")
    s.add_argument("group")
    s.add_argument("topic")
    s.add_argument("--partition", type=int, required=True)
    s.set_defaults(func=cmd_committed)

    s = sub.add_parser("metadata")
    s.set_defaults(func=cmd_metadata)

    args = p.parse_args(argv)
    if not 0 < args.timeout <= MAX_TIMEOUT:
        p.error(f"--timeout must be in (0, {MAX_TIMEOUT:g}]")
    return args


def main(argv=None):
    args = parse(argv)
    # The client calls each get args.timeout; the watchdog bounds the whole process a little
    # above that (connection set-up, close) and never past MAX_TIMEOUT.
    watchdog(min(args.timeout + 5.0, MAX_TIMEOUT), args.cmd)
    args.func(args)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
