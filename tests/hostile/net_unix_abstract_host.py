# expect: ok value={"connect": ["ConnectionRefusedError", "ECONNREFUSED"]}
# must-not: connect to the abstract Unix socket the runner listens on in the host's network namespace (\0{{ABSTRACT_SOCKET}})
import errno
import socket


def main():
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect("\0{{ABSTRACT_SOCKET}}")
    except OSError as error:
        return {"connect": [type(error).__name__, errno.errorcode[error.errno]]}
    return {"connect": "connected"}
