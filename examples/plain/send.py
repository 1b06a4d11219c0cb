"""Send work to the worker and print what comes back: ``python send.py``.

With ``--eager``, run the tasks here instead (``Task.apply``), with no worker at all.
"""

from __future__ import annotations

import sys

from tasks import add, hub, shaky, word_count


def main(eager: bool) -> None:
    if eager:
        print("add:", add.apply((2, 3)).get())
        print("shaky:", shaky.apply((2,)).get())
        return
    sums = add.delay_many([(i, i) for i in range(10)])
    words = word_count.delay("the quick brown fox jumps over the lazy dog")
    retried = shaky.delay(2)
    print("sums:", [r.get(timeout=60) for r in sums])
    print("words:", words.get(timeout=60))
    print("shaky:", retried.get(timeout=60))
    hub.close()


if __name__ == "__main__":
    main("--eager" in sys.argv[1:])
