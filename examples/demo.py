"""Sends a pandas transform and an exec job to a running supervisor."""

import sys
import time

import pandas as pd

import pyclave

CODE = """
def transform(table, params):
    table["total"] = table["price"] * table["quantity"] * (1 - params["discount"])
    return table.groupby("region", as_index=False)["total"].sum()
"""


def main(socket_path: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            client = pyclave.Client(socket_path)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with client:
        sales = pd.DataFrame({
            "region": ["north", "south", "north", "east", "south"] * 200_000,
            "price": [9.5, 3.0, 12.25, 7.0, 1.5] * 200_000,
            "quantity": [3, 10, 1, 4, 20] * 200_000,
        })
        outcome = client.transform(CODE, sales, params={"discount": 0.1})
        print(f"transform: {outcome.kind}, {len(sales):,} rows in, wall {outcome.usage.wall_time_us / 1000:.1f} ms")
        print(outcome.table)
        outcome = client.exec("def main():\n    import sys\n    return sys.version.split()[0]\n")
        print(f"exec: {outcome.kind} -> {outcome.value!r}")


if __name__ == "__main__":
    main(sys.argv[1])
