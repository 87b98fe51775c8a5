# expect: ok value={"TIOCSTI stdin": "EPERM", "TIOCSTI stdout": "EPERM", "TIOCLINUX stdin": "EPERM", "/dev/tty": "FileNotFoundError"}
# must-not: inject keystrokes into a terminal (TIOCSTI) or use console tricks (TIOCLINUX); there is no controlling terminal either
# EPERM (not ENOTTY, which /dev/null and pipes would answer) shows the seccomp
# errno filter refused the ioctl before any driver saw it.
import errno
import fcntl
import termios


def attempt(call):
    try:
        call()
        return "succeeded"
    except OSError as error:
        return errno.errorcode[error.errno] if error.errno else type(error).__name__


def main():
    def open_tty():
        with open("/dev/tty", "rb"):
            pass

    return {
        "TIOCSTI stdin": attempt(lambda: fcntl.ioctl(0, termios.TIOCSTI, b"x")),
        "TIOCSTI stdout": attempt(lambda: fcntl.ioctl(1, termios.TIOCSTI, b"x")),
        "TIOCLINUX stdin": attempt(lambda: fcntl.ioctl(0, 0x541C, b"\x0b")),
        "/dev/tty": type_of(open_tty),
    }


def type_of(call):
    try:
        call()
        return "opened"
    except OSError as error:
        return type(error).__name__
