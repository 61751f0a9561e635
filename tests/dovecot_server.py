"""A real Dovecot IMAP/POP3 server on loopback for the bounce-mailbox tests.

Started in the foreground (``dovecot -F -c CONFIG``) with a generated configuration: one
user from a passwd-file, Maildir storage, TLS with a test certificate, every listener on
127.0.0.1 at a free port. As root, Dovecot will not store mail as uid 0, so mail belongs to
``nobody`` in a folder outside pytest's private tmp tree; as another user, everything runs
as that user.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER = "bounces"
PASSWORD = "mailbox-test-password"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Dovecot:
    """A running Dovecot: its ports, its test user and the CA file that verifies it."""

    process: subprocess.Popen[bytes]
    root: Path
    imap_port: int
    imaps_port: int
    pop3_port: int
    cafile: Path
    host: str = "127.0.0.1"
    user: str = USER
    password: str = PASSWORD

    def imap(self) -> imaplib.IMAP4_SSL:
        """A logged-in IMAP connection (TLS, certificate checked)."""
        context = ssl.create_default_context(cafile=str(self.cafile))
        client = imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=context, timeout=10)
        client.login(self.user, self.password)
        return client

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        """Deliver one message into a folder."""
        client = self.imap()
        try:
            status, data = client.append(folder, None, None, raw)
            assert status == "OK", data
        finally:
            client.logout()

    def folder(self, name: str = "INBOX") -> list[bytes]:
        """The messages in a folder (not deleted), in order; [] if it does not exist."""
        client = self.imap()
        try:
            status, _ = client.select(f'"{name}"', readonly=True)
            if status != "OK":
                return []
            _, data = client.uid("SEARCH", "UNDELETED")
            messages = []
            for uid in (data[0] or b"").split():
                _, parts = client.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
                messages += [item[1] for item in parts if isinstance(item, tuple)]
            return messages
        finally:
            client.logout()

    def flags(self, name: str = "INBOX") -> list[str]:
        """The flags of each message in a folder."""
        client = self.imap()
        try:
            client.select(f'"{name}"', readonly=True)
            _, data = client.fetch("1:*", "(FLAGS)")
            return [item.decode() for item in data if isinstance(item, bytes)]
        finally:
            client.logout()

    def pop3_count(self) -> int:
        """Messages in the mailbox as POP3 sees them."""
        context = ssl.create_default_context(cafile=str(self.cafile))
        client = poplib.POP3(self.host, self.pop3_port, timeout=10)
        client.stls(context=context)
        client.user(self.user)
        client.pass_(self.password)
        count = int(client.stat()[0])
        client.quit()
        return count

    def stop(self) -> None:
        """Stop the server and remove its files."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def start(certificate: tuple[Path, Path]) -> Dovecot:
    """Start Dovecot with a fresh mailbox; raises FileNotFoundError if it is not installed."""
    if not os.path.exists(DOVECOT):
        raise FileNotFoundError(DOVECOT)
    # A short path of its own: unix socket paths are limited to 108 bytes, and as root the
    # mail user (nobody) must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="digest-dovecot-", dir="/tmp"))
    root.chmod(0o755)
    home = root / "home"
    home.mkdir()
    if os.getuid() == 0:
        mail_user = pwd.getpwnam("nobody")
        os.chown(home, mail_user.pw_uid, mail_user.pw_gid)
        service_user = "root"
        login_user = "nobody"
        chroot = ""
    else:
        mail_user = pwd.getpwuid(os.getuid())
        service_user = login_user = mail_user.pw_name
        chroot = "service imap-login {\n  chroot =\n}\nservice pop3-login {\n  chroot =\n}\n"
    certfile, keyfile = certificate
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    imap_port, imaps_port, pop3_port = free_port(), free_port(), free_port()
    config = root / "dovecot.conf"
    config.write_text(f"""
protocols = imap pop3
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
default_internal_user = {service_user}
default_login_user = {login_user}
first_valid_uid = {mail_user.pw_uid}
first_valid_gid = {mail_user.pw_gid}
ssl = yes
ssl_cert = <{certfile}
ssl_key = <{keyfile}
auth_mechanisms = plain
disable_plaintext_auth = yes
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={home}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
{chroot}""")
    (home / USER).mkdir()
    if os.getuid() == 0:
        os.chown(home / USER, mail_user.pw_uid, mail_user.pw_gid)
    process = subprocess.Popen([DOVECOT, "-F", "-c", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Dovecot(process, root, imap_port, imaps_port, pop3_port, certfile)
    deadline = time.monotonic() + 15
    for port in (imap_port, imaps_port, pop3_port):
        while True:
            if process.poll() is not None:
                log = root / "dovecot.log"
                detail = log.read_text() if log.exists() else ""
                server.stop()
                raise RuntimeError(f"dovecot exited: {detail}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    server.stop()
                    raise RuntimeError("dovecot did not start listening within 15 s") from None
                time.sleep(0.05)
    return server
