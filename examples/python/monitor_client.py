#!/usr/bin/python3
"""Read a twinloop daemon's monitoring stream (docs/monitoring.md) and print one line per message.

Subscribes to every topic (or those given with --topic), decodes the fixed header, the JSON
bodies and the packed spike records, and counts messages that went missing from the gaps in each
topic's sequence numbers. Ends after --count messages, after --seconds, once every topic has
been seen (--until-all-topics), or on Ctrl-C, and then prints a summary line per topic.

Needs only Python 3 and pyzmq (Debian: python3-zmq).
"""

import argparse
import json
import struct
import sys
import time

import zmq

MAGIC = b"TWMN"
VERSION = 1
HEADER = struct.Struct("<4sHHQq")  # magic, version, encoding, sequence, send_time_ns
SPIKE_BODY = struct.Struct("<qqII")  # first_sample, end_sample, count, flags
SPIKE_RECORD = struct.Struct("<qIf")  # sample, channel, amplitude_uv
ENCODING_JSON = 1
ENCODING_SPIKES = 2
TOPICS = ("spikes", "trial", "posterior", "health", "session")


class Malformed(Exception):
    pass


def decode(topic, payload):
    """Returns (sequence, send_time_ns, body) for one message; body is a dict."""
    if len(payload) < HEADER.size:
        raise Malformed("shorter than the header")
    magic, version, encoding, sequence, send_ns = HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise Malformed("bad magic")
    if version != VERSION:
        raise Malformed("version %d, this client reads %d" % (version, VERSION))
    body = payload[HEADER.size:]
    if encoding == ENCODING_JSON:
        return sequence, send_ns, json.loads(body.decode("utf-8"))
    if encoding == ENCODING_SPIKES:
        if len(body) < SPIKE_BODY.size:
            raise Malformed("spike body too short")
        first, end, count, flags = SPIKE_BODY.unpack_from(body)
        if len(body) != SPIKE_BODY.size + count * SPIKE_RECORD.size:
            raise Malformed("spike count does not match the length")
        spikes = [SPIKE_RECORD.unpack_from(body, SPIKE_BODY.size + i * SPIKE_RECORD.size)
                  for i in range(count)]
        return sequence, send_ns, {"first_sample": first, "end_sample": end,
                                   "continued": bool(flags & 1), "spikes": spikes}
    raise Malformed("unknown encoding %d" % encoding)


def describe(topic, body):
    if topic == "spikes":
        channels = sorted({s[1] for s in body["spikes"]})
        return "samples [%d, %d) %d spikes on %d channels%s" % (
            body["first_sample"], body["end_sample"], len(body["spikes"]), len(channels),
            " (continued)" if body["continued"] else "")
    if topic == "trial":
        stim = ", ".join("%s=%g" % kv for kv in body["stimulus"].items())
        return "trial %d %s candidate %d [%s] onset %d spikes %d" % (
            body["trial"], body["stage"], body["candidate"], stim, body["onset_sample"],
            body["counts"]["total"])
    if topic == "posterior":
        return "after trial %d: %s" % (body["trial"], " ".join(
            "%s=%.3f" % (h["name"], h["probability"] if h["probability"] is not None else 0.0)
            for h in body["hypotheses"]))
    if topic == "health":
        pub = body["publisher"]
        drops = sum(t["queue_dropped"] + t["hwm_dropped"] for t in pub["topics"].values())
        return "uptime %.1f s cpu %.0f%% block p99 %.2f ms designer %.1f ms publisher drops %d" % (
            body["uptime_s"], body["cpu_percent"], body["block_latency_ms"]["p99"],
            body["designer_latency_ms"]["last"], drops)
    if topic == "session":
        return "%s protocol %s state %s hypotheses %s" % (
            body["name"], body["protocol"], body["state"], ",".join(body["hypotheses"]))
    return json.dumps(body)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Print a twinloop daemon's monitoring stream, one line per message, and "
                    "count messages lost (from sequence gaps).")
    parser.add_argument("endpoint", help="the daemon's publish endpoint, e.g. tcp://rig:5560")
    parser.add_argument("--count", type=int, default=0,
                        help="stop after this many messages (default 0: no limit)")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="stop after this many seconds (default 0: no limit)")
    parser.add_argument("--topic", action="append", choices=TOPICS,
                        help="subscribe to this topic only (repeatable; default: all)")
    parser.add_argument("--until-all-topics", action="store_true",
                        help="stop once every subscribed topic has been received")
    parser.add_argument("--quiet", action="store_true",
                        help="print only the summary, not a line per message")
    args = parser.parse_args(argv)

    topics = args.topic or list(TOPICS)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 10000)
    for t in topics:
        sock.setsockopt(zmq.SUBSCRIBE, t.encode())
    sock.connect(args.endpoint)

    seen = {t: {"messages": 0, "missing": 0, "last": None} for t in topics}
    malformed = 0
    total = 0
    start = time.monotonic()
    try:
        while True:
            if args.count and total >= args.count:
                break
            if args.until_all_topics and all(s["messages"] for s in seen.values()):
                break
            timeout_ms = 100
            if args.seconds:
                left = args.seconds - (time.monotonic() - start)
                if left <= 0:
                    break
                timeout_ms = max(1, min(100, int(left * 1000)))
            if not sock.poll(timeout_ms):
                continue
            frames = sock.recv_multipart()
            if len(frames) != 2:
                malformed += 1
                continue
            topic = frames[0].decode("utf-8", "replace")
            if topic not in seen:
                continue  # a topic this client does not know: a newer daemon may add some
            try:
                sequence, send_ns, body = decode(topic, frames[1])
            except (Malformed, ValueError, KeyError) as e:
                malformed += 1
                print("malformed %s: %s" % (topic, e), file=sys.stderr)
                continue
            s = seen[topic]
            if s["last"] is not None and sequence > s["last"] + 1:
                s["missing"] += sequence - s["last"] - 1
            s["last"] = sequence
            s["messages"] += 1
            total += 1
            if not args.quiet:
                print("%-9s seq %-6d %s" % (topic, sequence, describe(topic, body)), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        ctx.term()
    for t in topics:
        print("summary %s messages %d missing %d" % (t, seen[t]["messages"], seen[t]["missing"]))
    print("summary total %d malformed %d" % (total, malformed))
    return 0 if malformed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
