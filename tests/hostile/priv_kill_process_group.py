# expect: ok value={"getpgrp": 0, "kill(0, SIGKILL)": "sent", "survived": true}
# victim: yes
# must-not: kill the members of the process group it inherited from the zygote (the supervisor, the zygote, other workers: the victim job and the idle worker run under other uids) with kill(0, SIGKILL)
import os
import signal


def main():
    os.kill(0, signal.SIGKILL)
    return {"getpgrp": os.getpgrp(), "kill(0, SIGKILL)": "sent", "survived": True}
