"""A real SMTP server for authvault's tests (aiosmtpd), listening on 127.0.0.1 only.

    python server.py PORT DIR [USER PASS]

PORT 0 picks a free port. Every message accepted is stored as DIR/<n>.eml (n = 1, 2, ...), the
raw RFC 5322 bytes as received, written under a temporary name and then renamed, so a reader
never sees half a message. Prints `READY <port>` once listening. With USER and PASS, AUTH PLAIN
or LOGIN with exactly those is required before MAIL FROM (over plain text: local tests only).
"""

import asyncio
import itertools
import logging
import os
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.numbers = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        n = next(self.numbers)
        final = os.path.join(self.directory, f"{n}.eml")
        partial = final + ".partial"
        with open(partial, "wb") as f:
            f.write(envelope.original_content)
        os.replace(partial, final)
        return "250 OK stored"


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            mechanism in ("PLAIN", "LOGIN")
            and isinstance(auth_data, LoginPassword)
            and auth_data.login == user
            and auth_data.password == password
        )
        if not ok:
            print(f"refused AUTH {mechanism}", file=sys.stderr, flush=True)
        # handled=False: aiosmtpd answers a refusal with 535 itself.
        return AuthResult(success=ok, handled=False)

    return authenticate


async def main(port, directory, credentials):
    os.makedirs(directory, exist_ok=True)
    sink = Sink(directory)
    options = {"hostname": "smtp-sink.test"}
    if credentials is not None:
        user, password = credentials
        options.update(
            authenticator=authenticator_for(user.encode(), password.encode()),
            auth_required=True,
            # Plain-text AUTH is fine on the loopback interface of a test.
            auth_require_tls=False,
        )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, **options), host="127.0.0.1", port=port
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 5):
        sys.exit(__doc__)
    # aiosmtpd warns on every connection about AUTH without TLS (the point here) and about its
    # own deprecated attributes; errors still reach stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    creds = (sys.argv[3], sys.argv[4]) if len(sys.argv) == 5 else None
    try:
        asyncio.run(main(int(sys.argv[1]), sys.argv[2], creds))
    except KeyboardInterrupt:
        pass
