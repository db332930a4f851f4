"""WebSocket echo load: `python ws_client.py PORT SECONDS CONNECTIONS`. Each connection sends a
16-byte text message and waits for its echo, until SECONDS pass; prints the echoes counted.
Built on the sans-I/O protocol of `websockets` over raw asyncio streams, to keep the client light."""

import asyncio
import sys
import time

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

MESSAGE = b"0123456789abcdef"


async def one(port, deadline, counts, errors):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        proto = ClientProtocol(parse_uri("ws://127.0.0.1:%d/" % port))
        proto.send_request(proto.connect())
        for data in proto.data_to_send():
            writer.write(data)
        while not proto.events_received():
            proto.receive_data(await reader.read(65536))
        n = 0
        while time.monotonic() < deadline:
            proto.send_text(MESSAGE)
            for data in proto.data_to_send():
                writer.write(data)
            got = False
            while not got:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("closed")
                proto.receive_data(data)
                for event in proto.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        got = True
                        n += 1
        counts.append(n)
        writer.close()
    except Exception:
        errors.append(1)


async def main(port, seconds, conns):
    deadline = time.monotonic() + seconds
    counts, errors = [], []
    await asyncio.gather(*(one(port, deadline, counts, errors) for _ in range(conns)))
    print("messages %d errors %d" % (sum(counts), len(errors)))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])))
