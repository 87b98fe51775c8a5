# expect: ok value={"error": ["RuntimeError", "can't start new thread"], "started": 63}
# must-not: start more than max_processes (64) tasks: threads count against the same pids limit
import threading


def main():
    release = threading.Event()
    threads = []
    error = None
    for _ in range(500):
        thread = threading.Thread(target=release.wait, daemon=True)
        try:
            thread.start()
        except RuntimeError as failure:
            error = [type(failure).__name__, str(failure)]
            break
        threads.append(thread)
    release.set()
    for thread in threads:
        thread.join()
    return {"error": error, "started": len(threads)}
