# expect: output_rejected reason~="the worker broke the protocol: frame of 200000" reason~="bytes exceeds the limit of 17825792 bytes"
# must-not: make the supervisor accept (or buffer) a result larger than max_result_json_bytes (16 MiB)


def main():
    return "x" * 20_000_000
