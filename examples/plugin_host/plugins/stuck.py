"""A plugin that never returns: the host's `timeout=` cuts it off."""

import time


def run(request: dict) -> dict:
    while True:
        time.sleep(1)
