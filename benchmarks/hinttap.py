"""A separate process that subscribes to a leadpush deployment's hint channel and time-stamps each pushed
notification as Redis hands it out (time.perf_counter(): CLOCK_MONOTONIC, comparable with the benchmark
process's own stamps on one machine). Used by benchmarks.ws_5000 to split a cross-process push's time into
"response → hint on Redis" and "hint → socket". Writes {"stamps": {"customerId": seconds, ...}, "sizes": [...]} as JSON to stdout when
its stdin closes, with the number of notifications each hint message carried.

    python -m benchmarks.hinttap REDIS_URL CHANNEL
"""

from __future__ import annotations

import json
import sys
import threading
import time

import redis


def main() -> None:
    url, channel = sys.argv[1], sys.argv[2]
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    stamps: dict[str, float] = {}
    sizes: list[int] = []  # notifications per hint message
    done = threading.Event()

    def wait_stdin() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    print("ready", flush=True)
    while not done.is_set():
        msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if msg is None:
            continue
        now = time.perf_counter()
        payload = json.loads(msg["data"])
        sizes.append(len(payload.get("messages") or ()))
        for _uid, message in payload.get("messages") or ():
            customer = (message.get("data") or {}).get("customerId")
            if customer is not None:
                stamps.setdefault(str(customer), now)
    sys.stdout.write(json.dumps({"stamps": stamps, "sizes": sizes}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
