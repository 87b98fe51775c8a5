# expect: ok value={"kill(-1, SIGKILL)": "sent", "children": ["SIGKILL", "SIGKILL", "SIGKILL"], "survived": true}
# victim: yes
# must-not: reach any process outside its own pid namespace with kill(-1, SIGKILL): the concurrent victim job, the zygote, the supervisor, the test runner (the runner checks the victim and the supervisor are alive)
import os
import signal
import time


def main():
    children = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
    os.kill(-1, signal.SIGKILL)
    endings = []
    for pid in children:
        _, status = os.waitpid(pid, 0)
        endings.append(signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else "exited")
    return {"kill(-1, SIGKILL)": "sent", "children": endings, "survived": True}
