# expect: ok value={"connect": ["FileNotFoundError", "ENOENT"]}
# must-not: connect to the supervisor's own socket ({{SOCKET_PATH}}) and submit jobs or protocol garbage to it
import errno
import socket


def main():
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect("{{SOCKET_PATH}}")
    except OSError as error:
        return {"connect": [type(error).__name__, errno.errorcode[error.errno]]}
    client.sendall(b"\x00\x00\x00\x02\x08\x01")
    return {"connect": "connected"}
