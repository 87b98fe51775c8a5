# expect: ok value={"error": "ENOSPC", "written_mib": 16}
# must-not: write more than tmp_size_bytes (16 MiB) into /tmp
import errno


def main():
    chunk = b"t" * (1 << 20)
    written = 0
    try:
        with open("/tmp/fill", "wb") as fill:
            for _ in range(64):
                fill.write(chunk)
                fill.flush()
                written += len(chunk)
    except OSError as error:
        return {"error": errno.errorcode[error.errno], "written_mib": written >> 20}
    return {"error": None, "written_mib": written >> 20}
