"""Real git servers on 127.0.0.1 for the network tests, started and stopped by the tests.

``git daemon`` (git://, with receive-pack for status pushes), ``git http-backend`` behind
lighttpd with basic auth over TLS (https://), and OpenSSH's sshd on a high port with a
throwaway host key and a ``git-shell`` forced command (ssh://). Plus a TCP relay that
cuts a connection after N bytes, to lose the hub in the middle of a fetch. Every
server listens on loopback only, on a port the kernel picked as free.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from support.git import run, ssh_keygen

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def binary(name: str, *dirs: str) -> str | None:
    """The path of a server binary, or None when its Debian package is not installed."""
    found = shutil.which(name)
    for d in dirs:
        if found is None and os.access(Path(d) / name, os.X_OK):
            found = str(Path(d) / name)
    return found


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            out = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"server exited ({proc.returncode}): {out}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on {port} after {timeout}s")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Hub:
    """The fleet's bare repository on the server side, fed by a publisher with git push."""

    def __init__(self, root: Path) -> None:
        self.base = root
        self.path = root / "fleet.git"
        run("git", "init", "-q", "--bare", "-b", "main", self.path)

    def publish(self, publisher, ref: str = "main", force: bool = False) -> None:
        args = ["push", "-q", *(["--force"] if force else []), str(self.path),
                f"{ref}:refs/heads/main"]
        publisher.git(*args)

    def ref(self, name: str) -> str | None:
        proc = run("git", "--git-dir", self.path, "rev-parse", "-q", "--verify", name,
                   check=False)
        return proc.stdout.decode().strip() or None

    def refs(self, prefix: str = "refs/heads/status/") -> dict[str, str]:
        out = run("git", "--git-dir", self.path, "for-each-ref",
                  "--format=%(refname) %(objectname)", prefix).stdout.decode()
        return dict(line.split() for line in out.splitlines())


class GitDaemon:
    """``git daemon`` serving ``hub.base`` on loopback, with receive-pack enabled."""

    def __init__(self, hub: Hub, port: int | None = None) -> None:
        self.hub = hub
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"git://{LOOPBACK}:{self.port}/fleet.git"

    def start(self) -> GitDaemon:
        self.proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
             "--informative-errors", "--max-connections=0", f"--base-path={self.hub.base}",
             f"--listen={LOOPBACK}", f"--port={self.port}", str(self.hub.base)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_listening(self.port, self.proc)
        return self

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None


class Relay:
    """A TCP relay to ``port`` that forwards ``budget`` bytes server->client, then cuts.

    Stands in for a link that drops in the middle of a transfer; ``budget=None`` relays
    everything. Threads, loopback only.
    """

    def __init__(self, port: int, budget: int | None = None) -> None:
        self.target = port
        self.budget = budget
        self.sent = 0
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((LOOPBACK, self.target))
            except OSError:
                client.close()  # the server is down: so is the relayed link
                continue
            threading.Thread(target=self._pump, args=(client, upstream, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                if counted and self.budget is not None:
                    data = data[: max(0, self.budget - self.sent)]
                    self.sent += len(data)
                    if not data:
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()


class Lighttpd:
    """lighttpd running ``git http-backend`` as CGI, basic auth, TLS with a test CA."""

    def __init__(self, hub: Hub, workdir: Path, user: str, password: str) -> None:
        self.hub = hub
        self.dir = workdir
        self.port = free_port()
        self.user = user
        self.password = password
        self.proc: subprocess.Popen | None = None
        self.ca_file = workdir / "ca.pem"

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/git/fleet.git"

    def start(self) -> Lighttpd:
        self.dir.mkdir(parents=True, exist_ok=True)
        pem = self.dir / "server.pem"
        make_tls(self.ca_file, pem, "localhost")
        users = self.dir / "users"
        users.write_text(f"{self.user}:{self.password}\n")
        backend = Path(run("git", "--exec-path").stdout.decode().strip()) / "git-http-backend"
        conf = self.dir / "lighttpd.conf"
        conf.write_text(f'''
server.modules = ("mod_alias", "mod_setenv", "mod_cgi", "mod_auth", "mod_authn_file",
                  "mod_openssl")
server.document-root = "{self.dir}"
server.bind = "{LOOPBACK}"
server.port = {self.port}
server.errorlog = "{self.dir}/error.log"
server.pid-file = "{self.dir}/lighttpd.pid"
server.max-worker = 0
ssl.engine = "enable"
ssl.pemfile = "{pem}"
alias.url = ("/git/" => "{backend}/")
$HTTP["url"] =~ "^/git/" {{
    cgi.assign = ("" => "")
    setenv.set-environment = ("GIT_PROJECT_ROOT" => "{self.hub.base}",
                              "GIT_HTTP_EXPORT_ALL" => "1",
                              "GIT_CONFIG_NOSYSTEM" => "1",
                              "HOME" => "{self.dir}")
}}
auth.backend = "plain"
auth.backend.plain.userfile = "{users}"
auth.require = ("/git/" => ("method" => "basic", "realm" => "giter hub",
                            "require" => "valid-user"))
''')
        exe = binary("lighttpd", "/usr/sbin")
        assert exe is not None
        self.proc = subprocess.Popen([exe, "-D", "-f", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_listening(self.port, self.proc)
        return self

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None


def make_tls(ca_path: Path, server_pem: Path, hostname: str) -> None:
    """A throwaway CA (``ca_path``) and a server key + certificate signed by it."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "giter test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
        + cert.public_bytes(serialization.Encoding.PEM))
    server_pem.chmod(0o600)


class Sshd:
    """OpenSSH's sshd on a high loopback port, for one user key, forced into git-shell.

    Throwaway host key; allows only the user running the tests (root on CI: permitted
    with this key only, by this config only); every session runs
    ``git-shell -c "$SSH_ORIGINAL_COMMAND"``, so the key can fetch and push and
    nothing else.
    """

    def __init__(self, workdir: Path, user_key: Path) -> None:
        self.dir = workdir
        self.user_key = user_key
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = workdir / "ssh_host_ed25519_key"
        self.proc: subprocess.Popen | None = None

    def url(self, repo: Path) -> str:
        return f"ssh://{self.user}@{LOOPBACK}:{self.port}{repo}"

    def known_hosts_line(self, host_key_pub: Path | None = None) -> str:
        pub = Path(f"{host_key_pub or self.host_key}.pub").read_text().split()
        return f"[{LOOPBACK}]:{self.port} {pub[0]} {pub[1]}\n"

    def start(self) -> Sshd:
        self.dir.mkdir(parents=True, exist_ok=True)
        ssh_keygen(self.host_key)
        shell = binary("git-shell", "/usr/bin")
        pub = Path(f"{self.user_key}.pub").read_text().strip()
        auth = self.dir / "authorized_keys"
        auth.write_text(f'restrict,command="{shell} -c \\"$SSH_ORIGINAL_COMMAND\\"" {pub}\n')
        auth.chmod(0o600)
        if os.geteuid() == 0:
            # sshd's privilege-separation directory, normally made by its systemd unit.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        conf = self.dir / "sshd_config"
        conf.write_text(f"""
Port {self.port}
ListenAddress {LOOPBACK}
HostKey {self.host_key}
PidFile none
AuthorizedKeysFile {auth}
AllowUsers {self.user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AcceptEnv GIT_PROTOCOL
""")
        exe = binary("sshd", "/usr/sbin")
        assert exe is not None
        self.proc = subprocess.Popen([exe, "-D", "-e", "-f", str(conf)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_listening(self.port, self.proc)
        return self

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None


class Gitolite:
    """gitolite3 behind OpenSSH's sshd on a high loopback port, as a throwaway unix user.

    The test creates the user (``useradd``, home in a fresh folder under /tmp), runs
    ``gitolite setup`` as that user with an admin key, and starts sshd with that user's
    ``~/.ssh/authorized_keys``, which gitolite writes (one forced ``gitolite-shell <user>``
    line per key). Needs root; ``stop`` removes the user and its home.
    """

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.user = f"gth{os.getpid() % 100000}x{int(time.time() * 1000) % 10000}"
        self.home = Path("/tmp") / f"giter-{self.user}"
        self.admin_key = workdir / "admin"
        self.host_key = workdir / "ssh_host_ed25519_key"
        self.proc: subprocess.Popen | None = None
        self.log: list[tuple[float, str]] = []  # (arrival time, sshd log line)
        self._made_user = False

    @staticmethod
    def missing() -> str | None:
        """Why this machine cannot run the hub, or None."""
        if os.geteuid() != 0:
            return "gitolite tests create a unix user: run as root (CI does)"
        if binary("gitolite", "/usr/bin") is None or binary("sshd", "/usr/sbin") is None:
            return ("gitolite3 or openssh-server not installed (Debian: gitolite3, "
                    "openssh-server; scripts/test installs them)")
        return None

    def url(self, repo: str) -> str:
        return f"ssh://{self.user}@{LOOPBACK}:{self.port}/{repo}"

    def known_hosts_line(self) -> str:
        pub = Path(f"{self.host_key}.pub").read_text().split()
        return f"[{LOOPBACK}]:{self.port} {pub[0]} {pub[1]}\n"

    def ssh_command(self, key: Path) -> str:
        """A ``GIT_SSH_COMMAND`` for real git, logging in with ``key``."""
        known = self.dir / "known_hosts"
        known.write_text(self.known_hosts_line())
        return (f"ssh -F /dev/null -i {key} -o IdentitiesOnly=yes -o BatchMode=yes "
                f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known}")

    def git(self, key: Path, *args: str | os.PathLike, check: bool = True
            ) -> subprocess.CompletedProcess:
        """Real git talking to the hub with ``key``."""
        env = {**os.environ, "GIT_SSH_COMMAND": self.ssh_command(key)}
        proc = subprocess.run(["git", *map(str, args)], env=env, capture_output=True,
                              check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"git {args} failed: {proc.stderr.decode(errors='replace')}")
        return proc

    def _as_user(self, *args: str) -> None:
        import pwd

        pw = pwd.getpwnam(self.user)
        env = {"HOME": str(self.home), "PATH": "/usr/bin:/bin", "USER": self.user,
               "LANG": "C"}
        proc = subprocess.run(list(args), user=pw.pw_uid, group=pw.pw_gid, env=env,
                              cwd=self.home, capture_output=True, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"{args} as {self.user} failed: {proc.stderr.decode()}")

    def start(self, sshd_args: tuple[str, ...] = ()) -> Gitolite:
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.home, ignore_errors=True)
        run("useradd", "--system", "--home-dir", self.home, "--create-home", "--shell",
            "/bin/sh", "--password", "*", self.user)
        self._made_user = True
        self.home.chmod(0o755)
        ssh_keygen(self.admin_key)
        admin_pub = self.home / "admin.pub"
        shutil.copy(f"{self.admin_key}.pub", admin_pub)
        os.chmod(admin_pub, 0o644)
        self._as_user(binary("gitolite", "/usr/bin") or "gitolite", "setup", "-pk",
                      str(admin_pub))
        ssh_keygen(self.host_key)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        conf = self.dir / "sshd_config"
        conf.write_text(f"""
Port {self.port}
ListenAddress {LOOPBACK}
HostKey {self.host_key}
PidFile none
AuthorizedKeysFile {self.home}/.ssh/authorized_keys
AllowUsers {self.user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AcceptEnv GIT_PROTOCOL
MaxStartups 200:30:400
LogLevel VERBOSE
""")
        exe = binary("sshd", "/usr/sbin")
        assert exe is not None
        self.proc = subprocess.Popen([exe, "-D", "-e", "-f", str(conf), *sshd_args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_listening(self.port, self.proc)
        threading.Thread(target=self._read_log, daemon=True).start()
        return self

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.log.append((time.monotonic(), raw.decode(errors="replace").rstrip()))

    def admin_clone(self, dest: Path) -> Path:
        self.git(self.admin_key, "clone", "-q", self.url("gitolite-admin"), dest)
        for key, value in (("user.name", "Hub Admin"), ("user.email", "admin@example.invalid"),
                           ("commit.gpgsign", "false")):
            run("git", "-C", dest, "config", key, value)
        return dest

    def push_admin(self, admin: Path, message: str = "giter fleet") -> None:
        """Commit and push the admin tree: gitolite compiles the rules and keys."""
        run("git", "-C", admin, "add", "-A")
        run("git", "-C", admin, "commit", "-q", "--allow-empty", "-m", message)
        self.git(self.admin_key, "-C", admin, "push", "-q", "origin", "HEAD:master")

    def repo_path(self, repo: str) -> Path:
        return self.home / "repositories" / f"{repo}.git"

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None
        if self._made_user:
            run("userdel", self.user, check=False)
            self._made_user = False
        shutil.rmtree(self.home, ignore_errors=True)
