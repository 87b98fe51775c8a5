# expect: ok value={"interfaces": ["lo"], "ipv4_routes": 0, "ipv6_addresses": 0}
# must-not: see any network interface but its own loopback (down), any route or any address
def main():
    with open("/proc/net/dev") as devices:
        interfaces = sorted(line.split(":")[0].strip() for line in devices.readlines()[2:])
    with open("/proc/net/route") as routes:
        ipv4_routes = len([line for line in routes if not line.startswith("Iface")])
    with open("/proc/net/if_inet6") as addresses:
        ipv6_addresses = len(addresses.readlines())
    return {"interfaces": interfaces, "ipv4_routes": ipv4_routes, "ipv6_addresses": ipv6_addresses}
