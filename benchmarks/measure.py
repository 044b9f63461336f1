"""Run a command and report its resource use: `python measure.py OUT.json -- CMD ...`.

A small launcher, so that the peak RSS it reports is the command's own: a child forked
straight from the (large) benchmark process would inherit its high-water mark.
"""

import json
import os
import sys
import time

out, command = sys.argv[1], sys.argv[3:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(command[0], command)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(out, "w") as f:
    json.dump({"wall": time.perf_counter() - started, "cpu": usage.ru_utime + usage.ru_stime,
               "rss_mb": usage.ru_maxrss / 1024, "status": os.waitstatus_to_exitcode(status)}, f)
sys.exit(0)
