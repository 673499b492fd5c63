"""A wgrest test server as its own process on a fixed port, serving one interface's real state.

`python -m tests.faults.wgrest_proc IFACE PORT`: run inside the daemon's network
namespace, so killing and starting it again is a real wgrest restart (refused
connections in between), not a flag inside the test process.
"""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer

from tests.beds import wgrest_server
from tests.beds.wireguard import _run
from wgsyncd.sources import kernel as kernel_source


def main(iface: str, port: int) -> None:
    """Load the interface's peers from `wg show dump` and serve them until killed."""
    box = wgrest_server.ServerBox("v2")
    box.load_state(kernel_source.parse_wg_dump(_run("wg", "show", iface, "dump"), iface).values())

    class Handler(wgrest_server._Handler):
        server_box = box

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True
    box._httpd = httpd
    print("serving", flush=True)
    httpd.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
