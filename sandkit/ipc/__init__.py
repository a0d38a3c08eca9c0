"""The control protocol between the host and a container's init, without any I/O (sans-IO).

Message types are attrs classes (`messages`); `codec` turns them into single packets and back,
strictly; `Connection` tracks request ids and which replies and file descriptors belong to which
request. Sockets live one layer up, in `sandkit.runtime.channel`. The wire format is written down
in docs/protocol.md, which the C init (`sandkit/_init/`) implements too.
"""

from .codec import MAX_FDS, MAX_PACKET, PROTOCOL_VERSION, decode, encode
from .connection import Connection
from .messages import (
    Connect,
    Connected,
    Error,
    Exec,
    Exit,
    File,
    Hostname,
    Interface,
    Netif,
    Ok,
    Open,
    Opened,
    Output,
    Ping,
    Pong,
    Ready,
    Reply,
    Request,
    Setup,
    Signal,
    Started,
)

__all__ = [
    "MAX_FDS",
    "MAX_PACKET",
    "PROTOCOL_VERSION",
    "Connect",
    "Connected",
    "Connection",
    "Error",
    "Exec",
    "Exit",
    "File",
    "Hostname",
    "Interface",
    "Netif",
    "Ok",
    "Open",
    "Opened",
    "Output",
    "Ping",
    "Pong",
    "Ready",
    "Reply",
    "Request",
    "Setup",
    "Signal",
    "Started",
    "decode",
    "encode",
]
