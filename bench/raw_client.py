"""The throughput baseline, run as its own process so that it can be pinned to a CPU.

``python -m bench.raw_client PORT MESSAGE_FILE N`` sends the bytes in MESSAGE_FILE N times
with plain smtplib over one persistent connection to 127.0.0.1:PORT, one recipient per
message, and prints ``{"seconds": ..., "messages": N}``: the time of the N sends, without
the connection's setup or its QUIT.
"""

from __future__ import annotations

import json
import smtplib
import sys
import time
from pathlib import Path

SENDER = "course@harbor.example.org"


def main() -> None:
    port, path, messages = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    message = path.read_bytes()
    client = smtplib.SMTP("127.0.0.1", port)
    client.ehlo()
    start = time.perf_counter()
    for i in range(messages):
        client.sendmail(SENDER, [f"reader{i}@example.com"], message)
    seconds = time.perf_counter() - start
    client.quit()
    print(json.dumps({"seconds": seconds, "messages": messages}))


if __name__ == "__main__":
    main()
