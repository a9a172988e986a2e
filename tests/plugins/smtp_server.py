#!/usr/bin/python3
"""A real SMTP server for the smtp plugin's tests: aiosmtpd with a handler
that answers on cue.

A recipient whose local part is cueNNNxK (cue550x0@example.com) is answered
with reply NNN below K times, then accepted; K = 0 means always. Replies at
RCPT unless marked "data" (answered after the message body instead). A
recipient lateS@ (late3@example.com) has the end of its data answered S
seconds late, with a 554; hang@ has it never answered (the connection
stays open). A recipient stall@ has its data read no further than its
first line (the connection stays open: a large message is cut off in the
middle). A recipient oddNNN@ is answered with reply NNN at RCPT (a
code outside SMTP's, such as 999).

Every connection and every reply is one JSON line in DIR/log.jsonl; every
accepted message is DIR/N.eml. The port (bound on 127.0.0.1, chosen by the
kernel) is written to DIR/port once the server listens.

    smtp_server.py DIR [--tls CERT KEY [--implicit]] [--auth USER:PASS]

--auth refuses the user `busy` for now (454 4.7.0), whatever its password.
--tls offers STARTTLS and requires it; with --implicit the connection is
TLS from the start instead (smtps, port 465 style).
"""
import argparse
import asyncio
import json
import logging
import os
import re
import ssl
import warnings

from aiosmtpd.smtp import SMTP, AuthResult

CUES = {
    "421": ("rcpt", "421 4.7.0 Try again later, closing connection. (unsolicited rate)"),
    "450": ("rcpt", "450 4.2.1 The user you are trying to contact is receiving mail too fast."),
    "452": ("rcpt", "452 4.5.3 Your message has too many recipients."),
    "550": ("rcpt", "550 5.1.1 The email account that you tried to reach does not exist."),
    "554": ("data", "554 5.7.1 Message rejected: content policy."),
    "451": ("data", "451 4.3.0 Mail server temporarily rejected message."),
}
CUE = re.compile(r"^cue(\d{3})x(\d+)@", re.IGNORECASE)
LATE = re.compile(r"^late(\d+)@", re.IGNORECASE)
ODD = re.compile(r"^odd(\d{3})@", re.IGNORECASE)


class Log:
    def __init__(self, directory):
        self.dir = directory
        self.file = open(os.path.join(directory, "log.jsonl"), "a", buffering=1)
        self.messages = 0

    def write(self, **fields):
        self.file.write(json.dumps(fields) + "\n")


class Handler:
    def __init__(self, log):
        self.log = log
        self.answered = {}  # recipient -> times its cue was answered

    def cue(self, address, stage):
        m = CUE.match(address)
        if not m or m.group(1) not in CUES or CUES[m.group(1)][0] != stage:
            return None
        times = int(m.group(2))
        n = self.answered.get(address.lower(), 0)
        if times and n >= times:
            return None
        self.answered[address.lower()] = n + 1
        return CUES[m.group(1)][1]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        odd = ODD.match(address)
        reply = odd.group(1) + " what" if odd else self.cue(address, "rcpt")
        if reply:
            self.log.write(event="reply", stage="rcpt", rcpt=address, reply=reply)
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        for address in envelope.rcpt_tos:
            if address.lower().startswith("hang@"):
                self.log.write(event="hang", rcpt=address)
                await asyncio.sleep(3600)
            late = LATE.match(address)
            if late:
                await asyncio.sleep(int(late.group(1)))
                reply = "554 5.7.1 Message rejected as spam"
                self.log.write(event="reply", stage="data", rcpt=address, reply=reply)
                return reply
        for address in envelope.rcpt_tos:
            reply = self.cue(address, "data")
            if reply:
                self.log.write(event="reply", stage="data", rcpt=address, reply=reply)
                return reply
        self.log.messages += 1
        name = "%d.eml" % self.log.messages
        with open(os.path.join(self.log.dir, name), "wb") as f:
            f.write(envelope.original_content)
        qid = "Q%06d" % self.log.messages
        self.log.write(event="accepted", mail_from=envelope.mail_from, rcpt=envelope.rcpt_tos,
                       file=name, id=qid, tls=session.ssl is not None,
                       auth=session.auth_data)
        # Other servers' ways of saying the id: Gmail's (two spaces after
        # OK), Exim's (id=...).
        first = envelope.rcpt_tos[0].lower()
        if first.startswith("gmailid@"):
            return "250 2.0.0 OK  1711111111 " + qid + " - gsmtp"
        if first.startswith("eximid@"):
            return "250 OK id=" + qid
        return "250 2.0.0 Ok: queued as " + qid


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--implicit", action="store_true")
    p.add_argument("--auth", metavar="USER:PASS")
    a = p.parse_args()
    # aiosmtpd's own messages (a refused TLS handshake's traceback) go to a
    # file, not into the test's output.
    logging.basicConfig(filename=os.path.join(a.dir, "server.log"), level=logging.INFO)
    warnings.simplefilter("ignore")  # aiosmtpd's advice on AUTH without TLS, for --implicit
    log = Log(a.dir)
    handler = Handler(log)
    kwargs = {}
    server_ssl = None
    if a.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.tls[0], a.tls[1])
        if a.implicit:
            server_ssl = ctx
        else:
            kwargs.update(tls_context=ctx, require_starttls=True)
    if a.auth:
        user, password = a.auth.split(":", 1)

        def authenticate(server, session, envelope, mechanism, auth_data):
            if auth_data.login.decode() == "busy":  # a refusal for now
                log.write(event="auth", mechanism=mechanism, ok=False)
                return AuthResult(success=False, handled=False,
                                  message="454 4.7.0 Too many login attempts, try again later")
            ok = auth_data.login.decode() == user and auth_data.password.decode() == password
            log.write(event="auth", mechanism=mechanism, ok=ok)
            # handled=False: aiosmtpd answers a failure itself (535 5.7.8).
            return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

        kwargs.update(authenticator=authenticate, auth_required=True,
                      auth_require_tls=bool(a.tls) and not a.implicit)

    class Server(SMTP):
        def connection_made(self, transport):
            log.write(event="connect")
            super().connection_made(transport)

        async def smtp_DATA(self, arg):
            if not any(r.lower().startswith("stall@") for r in self.envelope.rcpt_tos):
                return await super().smtp_DATA(arg)
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readuntil(b"\r\n")
            log.write(event="stall")
            await asyncio.sleep(3600)

    async def serve():
        server = await asyncio.get_running_loop().create_server(
            lambda: Server(handler, hostname="waymark-test", **kwargs), "127.0.0.1", 0,
            ssl=server_ssl)
        port = server.sockets[0].getsockname()[1]
        with open(os.path.join(a.dir, "port.tmp"), "w") as f:
            f.write(str(port))
        os.rename(os.path.join(a.dir, "port.tmp"), os.path.join(a.dir, "port"))
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
