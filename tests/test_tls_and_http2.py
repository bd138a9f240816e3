"""TLS (--https-socket, rustls) and HTTP/2 (ALPN h2 over TLS, h2c with prior
knowledge on --http-socket): real curl, openssl s_client, h2load and the h2
library as clients; certificates made by openssl for each test run."""
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hyperframe.frame
import pytest
import requests

from helpers import APPS, BIN, VENV, free_port, start_nginx, wait_for

TLS_ENV = str(APPS / "tls_env.py")
ECHO_APP = str(APPS / "echo.py")
SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1\n"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def signed(d, name, subject, key_args, ext, ca="ca"):
    """A key made by `openssl key_args...` and a certificate for it that
    `ca` signs."""
    openssl(*key_args, "-out", f"{name}.key", cwd=d)
    openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
    (d / f"{name}.ext").write_text(ext)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA; server certificates with RSA (PKCS#8 and PKCS#1 keys), ECDSA
    (a SEC1 key) and Ed25519 keys; a second RSA one; and a client's."""
    d = tmp_path_factory.mktemp("certs")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
            "-out", "ca.crt", "-days", "2", "-subj", "/CN=oxgate test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=d)
    server = SAN + "extendedKeyUsage=serverAuth\n"
    signed(d, "rsa", "/CN=localhost", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], server)
    signed(d, "rsa2", "/CN=localhost", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], server)
    openssl("rsa", "-in", "rsa.key", "-traditional", "-out", "rsa-pkcs1.key", cwd=d)
    signed(d, "ec", "/CN=localhost", ["ecparam", "-name", "prime256v1", "-genkey", "-noout"], server)
    signed(d, "ed25519", "/CN=localhost", ["genpkey", "-algorithm", "ed25519"], server)
    signed(d, "alice", "/O=Example/CN=alice", ["genpkey", "-algorithm", "ed25519"],
           "extendedKeyUsage=clientAuth\n")
    # A client whose certificate an intermediate CA signed, which it sends
    # along (carol-chain.crt: the leaf, then the intermediate).
    signed(d, "inter", "/CN=oxgate test intermediate", ["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
           "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n")
    signed(d, "carol", "/O=Example/CN=carol", ["genpkey", "-algorithm", "ed25519"],
           "extendedKeyUsage=clientAuth\n", ca="inter")
    (d / "carol-chain.crt").write_text((d / "carol.crt").read_text() + (d / "inter.crt").read_text())
    # A client with a name as a Windows CA writes one: non-ASCII values as
    # BMPString (string_mask=pkix), and attributes OpenSSL has short
    # names for; and a serial whose top bit is set (DER adds a 00 byte).
    (d / "bmp.cnf").write_text("[req]\ndistinguished_name = dn\nstring_mask = pkix\n[dn]\n")
    openssl("genpkey", "-algorithm", "ed25519", "-out", "dave.key", cwd=d)
    openssl("req", "-new", "-config", "bmp.cnf", "-utf8", "-key", "dave.key", "-out", "dave.csr", "-subj",
            "/DC=com/O=Ex/street=1 Main/SN=Müller/GN=Dave/UID=dave42/CN=Dave Müller/emailAddress=d@x.com", cwd=d)
    (d / "dave.ext").write_text("extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", "dave.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "0xAB12",
            "-days", "2", "-out", "dave.crt", "-extfile", "dave.ext", cwd=d)
    # A client certificate from a CA the server does not trust.
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "other.key",
            "-out", "other.crt", "-days", "2", "-subj", "/CN=another CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=d)
    signed(d, "mallory", "/CN=mallory", ["genpkey", "-algorithm", "ed25519"], "extendedKeyUsage=clientAuth\n",
           ca="other")
    # Client certificates that fail in other ways: one the CA signed that
    # expired in 2020 (`openssl ca` sets past dates); self-signed ones, for
    # a client, expired, and for a server only; and mallory's sent with
    # its CA, so that the chain ends in a self-signed certificate.
    (d / "index.txt").write_text("")
    (d / "ca.cnf").write_text("[ca]\ndefault_ca = dflt\n[dflt]\ndatabase = index.txt\nnew_certs_dir = .\n"
                              "serial = ca.srl\ndefault_md = default\npolicy = any\nunique_subject = no\n"
                              "[any]\ncommonName = supplied\n[client]\nextendedKeyUsage = clientAuth\n")
    for name, signer in [("expired", ["-cert", "ca.crt", "-keyfile", "ca.key"]),
                         ("oldself", ["-selfsign", "-keyfile", "oldself.key"])]:
        openssl("genpkey", "-algorithm", "ed25519", "-out", f"{name}.key", cwd=d)
        openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        openssl("ca", "-batch", "-config", "ca.cnf", *signer, "-in", f"{name}.csr", "-out", f"{name}.crt",
                "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-extensions", "client",
                "-notext", cwd=d)
    for name, use in [("selfish", "clientAuth"), ("selfserver", "serverAuth")]:
        openssl("req", "-x509", "-newkey", "ed25519", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
                "-days", "2", "-subj", f"/CN={name}", "-addext", f"extendedKeyUsage={use}", cwd=d)
    (d / "bundled.crt").write_text((d / "mallory.crt").read_text() + (d / "other.crt").read_text())
    (d / "bundled.key").write_text((d / "mallory.key").read_text())
    assert "BEGIN RSA PRIVATE KEY" in (d / "rsa-pkcs1.key").read_text()
    assert "BEGIN EC PRIVATE KEY" in (d / "ec.key").read_text()
    return d


def https(serve, certs, *args, cert="rsa", key=None, extra="", app=TLS_ENV):
    """oxgate with an --https-socket beside its --http-socket; the server,
    with `.tls_port` and `.tls_url` besides `.port` and `.url`."""
    port = free_port()
    spec = f"127.0.0.1:{port},{certs / (cert + '.crt')},{certs / ((key or cert) + '.key')}{extra}"
    s = serve("--https-socket", spec, "--wsgi-file", app, "--processes", "1", *args)
    s.tls_port, s.tls_url = port, f"https://localhost:{port}"
    return s


def curl(*args, certs=None, check=True):
    """curl's output, and the HTTP version it spoke, after a tab."""
    cmd = ["curl", "-sS", "--max-time", "20", "-w", "\t%{http_version}", *args]
    if certs is not None:
        cmd += ["--cacert", str(certs / "ca.crt")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def fetch(*args, certs=None):
    out, version = curl(*args, certs=certs).stdout.rsplit("\t", 1)
    return out, version


def fingerprint(port):
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def fingerprint_of(path):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(path.read_text())).hexdigest()


def serves_only(port, path):
    """Waits until the certificate at `path` is what every connection gets:
    during a graceful reload, the old workers still answer for a moment."""
    want = fingerprint_of(path)
    wait_for(lambda: all(fingerprint(port) == want for _ in range(5)), what=f"{path.name} served")


@pytest.mark.parametrize("cert,key", [("rsa", "rsa"), ("rsa", "rsa-pkcs1"), ("ec", "ec"), ("ed25519", "ed25519")],
                         ids=["rsa-pkcs8", "rsa-pkcs1", "ecdsa-sec1", "ed25519"])
def test_alpn_picks_http2_or_http11_and_the_app_sees_https(serve, certs, cert, key):
    s = https(serve, certs, cert=cert, key=key)
    for flag, version, protocol in [("--http2", "2", "HTTP/2"), ("--http1.1", "1.1", "HTTP/1.1")]:
        out, spoken = fetch(flag, s.tls_url + "/", certs=certs)
        assert spoken == version
        env = json.loads(out)
        assert env["HTTPS"] == "on" and env["wsgi.url_scheme"] == "https" and env["REQUEST_SCHEME"] == "https"
        assert env["SERVER_PROTOCOL"] == protocol
        # HTTP/2's :authority becomes HTTP_HOST, as Host does in HTTP/1.1.
        assert env["HTTP_HOST"] == f"localhost:{s.tls_port}"
        assert env["SERVER_NAME"] == "localhost" and env["SERVER_PORT"] == str(s.tls_port)
        # OpenSSL's names, as under Apache and nginx.
        assert env["SSL_PROTOCOL"] == "TLSv1.3"
        assert env["SSL_CIPHER"] in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
        # No client certificate was asked for: nothing is said of one.
        assert env["SSL_CLIENT_VERIFY"] is None
    assert "https://127.0.0.1:" in s.log()


def test_length_and_chunked_together_are_refused_over_tls(serve, certs):
    """The CL.TE refusal (test_malformed_input.py) holds inside TLS too,
    after a request served on the same connection."""
    s = https(serve, certs)
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", s.tls_port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n"
                    b"POST /p HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                    b"Content-Length: 5\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n")
        out = b""
        while chunk := tls.recv(65536):
            out += chunk
    assert out.count(b"HTTP/1.1 200 ") == 1
    assert out.count(b"HTTP/1.1 400 ") == 1
    assert b"Content-Length and Transfer-Encoding together" in out
    assert b"/smuggled" not in out


def test_h2c_with_prior_knowledge_beside_http11_on_one_http_socket(serve):
    s = serve("--wsgi-file", TLS_ENV)
    out, spoken = fetch("--http2-prior-knowledge", s.url + "/")
    env = json.loads(out)
    assert spoken == "2" and env["SERVER_PROTOCOL"] == "HTTP/2" and env["wsgi.url_scheme"] == "http"
    assert env["HTTPS"] is None and env["HTTP_HOST"] == f"127.0.0.1:{s.port}"
    out, spoken = fetch(s.url + "/")
    assert spoken == "1.1" and json.loads(out)["SERVER_PROTOCOL"] == "HTTP/1.1"
    # An h2c upgrade (HTTP/1.1 with Upgrade: h2c) is not taken: answered in 1.1.
    out, spoken = fetch("--http2", s.url + "/")
    assert spoken == "1.1"
    # The access log writes the protocol as nginx does.
    s.wait_log("(HTTP/2.0 200)")
    s.wait_log("(HTTP/1.1 200)")


LENGTHLESS_APP = """
import json

def application(environ, start_response):
    if environ["PATH_INFO"] == "/spaced":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Spaced", "trail "), ("X-Lead", "\\tlead")])
        return [b"spaced"]
    length = environ.get("CONTENT_LENGTH")
    # As Django reads it: CONTENT_LENGTH bytes, none without it.
    body = environ["wsgi.input"].read(int(length)) if length else b""
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"CONTENT_LENGTH": length, "body": body.decode()}).encode()]
"""


@pytest.mark.parametrize("how", ["http2", "http1-chunked"])
def test_a_body_sent_without_a_length_over_http2_is_given_one_for_the_app(serve, tmp_path, how):
    """A POST over HTTP/2 without content-length (curl -T -): read whole,
    its length is known, and the app is told it, as nginx tells uWSGI.
    Django reads CONTENT_LENGTH, and got no body. A chunked HTTP/1.1 body
    keeps none, as Gunicorn gives it (test_http_request_corpus.py)."""
    (tmp_path / "lengthless.py").write_text(LENGTHLESS_APP)
    s = serve("--wsgi-file", str(tmp_path / "lengthless.py"))
    flags = ["--http2-prior-knowledge"] if how == "http2" else ["-H", "Transfer-Encoding: chunked"]
    out = subprocess.run(["curl", "-sS", "--max-time", "10", *flags, "-T", "-", "-X", "POST", s.url + "/"],
                         input=b"a=1&b=2", capture_output=True, timeout=20)
    assert out.returncode == 0, out
    want = {"CONTENT_LENGTH": "7", "body": "a=1&b=2"} if how == "http2" else {"CONTENT_LENGTH": None, "body": ""}
    assert json.loads(out.stdout) == want


def test_spaces_around_a_header_value_are_not_sent_over_http2(serve, tmp_path):
    """A value with a trailing space (an app's "trail "): nghttp reset the
    stream (RFC 9113 §8.2.1 forbids it); nginx strips such spaces."""
    (tmp_path / "lengthless.py").write_text(LENGTHLESS_APP)
    s = serve("--wsgi-file", str(tmp_path / "lengthless.py"))
    out = subprocess.run(["nghttp", "-v", "-t", "10", s.url + "/spaced"], capture_output=True, text=True, timeout=20)
    assert "x-spaced: trail\n" in out.stdout and "x-lead: lead\n" in out.stdout, out.stdout
    assert "RST_STREAM" not in out.stdout and "spaced" in out.stdout.splitlines()[-1] + out.stdout, out.stdout


def test_the_header_field_limit_holds_over_http2_as_over_http11(serve, certs):
    """--limit-request-fields (100 by default) is hyper's over HTTP/1.1; over
    HTTP/2, which hyper does not count, it was not held at all."""
    s = https(serve, certs)
    # (curl adds Host, User-Agent and Accept.)
    many, few = ([a for i in range(n) for a in ("-H", f"X-H{i}: v")] for n in (110, 90))

    def status(*args):
        """The status and the HTTP version curl spoke."""
        r = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", str(certs / "ca.crt"), "-o", "/dev/null",
                            "-w", "%{http_code} %{http_version}", *args], capture_output=True, text=True)
        return r.stdout

    for version, spoken in (("--http1.1", "1.1"), ("--http2", "2")):
        assert status(version, *many, s.tls_url + "/") == f"431 {spoken}"
        assert status(version, *few, s.tls_url + "/") == f"200 {spoken}"
    # Cookies an HTTP/2 client sends in crumbs count as one field.
    crumbs = [a for i in range(30) for a in ("-H", f"Cookie: c{i}=1")]
    assert status("--http2-prior-knowledge", *few, *crumbs, s.url + "/") == "200 2"


def test_https_on_a_unix_socket_says_port_443(serve, certs, tmp_path):
    sock = tmp_path / "tls.sock"
    serve("--https-socket", f"{sock},{certs / 'rsa.crt'},{certs / 'rsa.key'}", "--wsgi-file", TLS_ENV,
          "--processes", "1", "--http-socket", f"127.0.0.1:{free_port()}")
    out, _ = fetch("--unix-socket", str(sock), "https://localhost/", certs=certs)
    env = json.loads(out)
    assert (env["HTTPS"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("on", "localhost", "443")


def test_http2_off_offers_only_http11(serve, certs):
    s = https(serve, certs, "--http2-off")
    out, spoken = fetch("--http2", s.tls_url + "/", certs=certs)
    assert spoken == "1.1"
    raw = socket.create_connection(("127.0.0.1", s.port))
    raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert raw.recv(1000).startswith(b"HTTP/1.1 505 ")


def s_client(port, *args, cert=None, certs=None):
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", "-ign_eof", *args]
    if certs is not None:
        cmd += ["-CAfile", str(certs / "ca.crt"), "-verify_return_error"]
    if cert:
        cmd += ["-cert", str(certs / f"{cert}.crt"), "-key", str(certs / f"{cert}.key")]
    return subprocess.run(cmd, input=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                          capture_output=True, timeout=20)


def test_tls_versions_and_the_minimum(serve, certs):
    s = https(serve, certs)
    for version, name in [("-tls1_2", b"TLSv1.2"), ("-tls1_3", b"TLSv1.3")]:
        r = s_client(s.tls_port, version, certs=certs)
        assert b"Protocol  : " + name in r.stdout or b"New, " + name in r.stdout, r.stdout[-2000:]
        assert b'"SSL_PROTOCOL": "' + name + b'"' in r.stdout
    strict = https(serve, certs, "--ssl-min-version", "1.3")
    assert s_client(strict.tls_port, "-tls1_2").returncode != 0
    assert s_client(strict.tls_port, "-tls1_3", certs=certs).returncode == 0


def x509_field(cert, *args):
    """`openssl x509 -noout ARGS`'s value (after its `name=`)."""
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", *args],
                         capture_output=True, text=True, check=True).stdout.strip()
    return out.split("=", 1)[1]


def test_client_certificates_required_and_optional(serve, certs):
    ca = certs / "ca.crt"
    required = https(serve, certs, extra=f",,!{ca}")
    r = curl(required.tls_url + "/", certs=certs, check=False)
    assert r.returncode != 0, "a client without a certificate is refused"
    out, _ = fetch("--cert", str(certs / "alice.crt"), "--key", str(certs / "alice.key"), required.tls_url + "/",
                   certs=certs)
    env = json.loads(out)
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_S_DN"] == "CN=alice,O=Example"
    # mod_ssl's issuer, serial, end of validity, and the name asked for.
    assert env["SSL_CLIENT_I_DN"] == "CN=oxgate test CA" and env["SSL_TLS_SNI"] == "localhost"
    # Each as OpenSSL prints it (mod_ssl's and nginx's values).
    assert env["SSL_CLIENT_M_SERIAL"] == x509_field(certs / "alice.crt", "-serial")
    assert env["SSL_CLIENT_V_START"] == x509_field(certs / "alice.crt", "-startdate")
    assert env["SSL_CLIENT_V_END"] == x509_field(certs / "alice.crt", "-enddate")
    # uWSGI's --https names for them: the subject as OpenSSL's one-line form
    # and the certificate's DER (an app moved from uWSGI authorises on
    # these; it saw no certificate).
    assert env["HTTPS_DN"] == x509_field(certs / "alice.crt", "-subject", "-nameopt", "compat") == "/O=Example/CN=alice"
    der = subprocess.run(["openssl", "x509", "-in", str(certs / "alice.crt"), "-outform", "der"],
                         capture_output=True, check=True).stdout
    assert env["HTTPS_CLIENT_CERTIFICATE"].encode("latin-1") == der
    # And uWSGI's --https-export-cert's HTTPS_CC: the certificate in PEM.
    assert env["HTTPS_CC"] == env["SSL_CLIENT_CERT"] == (certs / "alice.crt").read_text()
    # The certificates a client sends after its own: mod_ssl's
    # SSL_CLIENT_CERT_CHAIN_n. (curl's OpenSSL sends the CA after a lone
    # certificate, from --cacert; after carol's it sends the file's.)
    assert env["SSL_CLIENT_CERT_CHAIN_0"] in (None, (certs / "ca.crt").read_text())
    out, _ = fetch("--cert", str(certs / "carol-chain.crt"), "--key", str(certs / "carol.key"),
                   required.tls_url + "/", certs=certs)
    env = json.loads(out)
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS" and env["SSL_CLIENT_I_DN"] == "CN=oxgate test intermediate"
    assert env["SSL_CLIENT_CERT"] == (certs / "carol.crt").read_text()
    assert env["SSL_CLIENT_CERT_CHAIN_0"] == (certs / "inter.crt").read_text()
    assert env["SSL_CLIENT_CERT_CHAIN_1"] is None
    out, _ = fetch("--cert", str(certs / "dave.crt"), "--key", str(certs / "dave.key"), required.tls_url + "/",
                   certs=certs)
    env = json.loads(out)
    # (A WSGI environ's strings are its bytes as Latin-1: PEP 3333.)
    dn = env["SSL_CLIENT_S_DN"].encode("latin-1").decode()
    assert dn == x509_field(certs / "dave.crt", "-subject", "-nameopt", "RFC2253,-esc_msb")
    assert dn.startswith("emailAddress=d@x.com,CN=Dave Müller,UID=dave42,GN=Dave,SN=Müller,")
    assert env["SSL_CLIENT_M_SERIAL"] == "AB12" == x509_field(certs / "dave.crt", "-serial")
    # A certificate no trusted CA signed is refused, as is one whose use is
    # not client authentication.
    # (In TLS 1.3 the client learns of the refusal only when it reads.)
    assert b'"SSL_CLIENT_VERIFY": "SUCCESS"' in s_client(required.tls_port, cert="alice", certs=certs).stdout
    for stranger in ("mallory", "rsa2"):
        r = s_client(required.tls_port, cert=stranger, certs=certs)
        assert b"SSL_CLIENT_VERIFY" not in r.stdout and b"alert" in r.stderr, r.stderr
    r = curl("--cert", str(certs / "mallory.crt"), "--key", str(certs / "mallory.key"), required.tls_url + "/",
             certs=certs, check=False)
    assert r.returncode != 0 and "SSL_CLIENT" not in r.stdout

    optional = https(serve, certs, "--https-client-ca", str(ca))
    env = json.loads(fetch(optional.tls_url + "/", certs=certs)[0])
    assert env["SSL_CLIENT_VERIFY"] == "NONE" and env["SSL_CLIENT_S_DN"] is None
    env = json.loads(fetch("--cert", str(certs / "alice.crt"), "--key", str(certs / "alice.key"),
                           optional.tls_url + "/", certs=certs)[0])
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"

    flagged = https(serve, certs, "--https-client-ca", str(ca), "--https-client-required")
    assert curl(flagged.tls_url + "/", certs=certs, check=False).returncode != 0


# Client certificates the CA does not vouch for, each failing another way.
FAILING_CLIENTS = ("mallory", "rsa2", "expired", "selfish", "oldself", "selfserver", "bundled")


def test_the_https_sockets_ca_field_checks_a_certificate_given_as_uwsgi_does(serve, certs):
    """uWSGI's fifth field without `!` sets OpenSSL's SSL_VERIFY_PEER: no
    certificate is fine, a good one is served, and a bad one fails the
    handshake (it was served, the app told FAILED)."""
    s = https(serve, certs, extra=f",,{certs / 'ca.crt'}")
    assert json.loads(fetch(s.tls_url + "/", certs=certs)[0])["SSL_CLIENT_VERIFY"] == "NONE"
    env = json.loads(fetch("--cert", str(certs / "alice.crt"), "--key", str(certs / "alice.key"), s.tls_url + "/",
                           certs=certs)[0])
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    for stranger in ("mallory", "selfish", "expired"):
        r = curl("--cert", str(certs / f"{stranger}.crt"), "--key", str(certs / f"{stranger}.key"),
                 s.tls_url + "/", certs=certs, check=False)
        assert r.returncode != 0 and "SSL_CLIENT" not in r.stdout, stranger


def test_a_failed_optional_client_certificate_says_why_as_nginx_does(serve, certs, tmp_path):
    """With a certificate asked for but not required, one that fails is
    served with SSL_CLIENT_VERIFY=FAILED:reason (as Apache's
    optional_no_ca serves it), in the words real nginx logs in
    $ssl_client_verify for the same certificate; its names are not given
    as if vouched for. When required, it is refused."""
    ca = certs / "ca.crt"
    port = free_port()
    conf = f"""
events {{}}
http {{
    log_format verify "$ssl_client_verify";
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {certs}/rsa.crt;
        ssl_certificate_key {certs}/rsa.key;
        ssl_client_certificate {ca};
        ssl_verify_client optional_no_ca;
        access_log {tmp_path}/nginx/logs/verify.log verify;
        location / {{ return 200 "$ssl_client_verify"; }}
    }}
}}
"""
    optional = https(serve, certs, "--https-client-ca", str(ca))
    required = https(serve, certs, "--https-client-ca", str(ca), "--https-client-required")
    nginx = start_nginx(tmp_path / "nginx", port, conf, stderr=subprocess.DEVNULL)
    try:
        for n, who in enumerate(FAILING_CLIENTS, 1):
            as_client = ("--cert", str(certs / f"{who}.crt"), "--key", str(certs / f"{who}.key"))
            curl(*as_client, f"https://localhost:{port}/", certs=certs, check=False)
            said = wait_for(lambda: len(lines := (tmp_path / "nginx/logs/verify.log").read_text().splitlines()) == n
                            and lines[-1], what="nginx's log line")
            assert said.startswith("FAILED:"), said
            env = json.loads(fetch(*as_client, optional.tls_url + "/", certs=certs)[0])
            assert env["SSL_CLIENT_VERIFY"] == said, who
            assert env["SSL_CLIENT_S_DN"] is None and env["SSL_CLIENT_CERT"] is None
            r = curl(*as_client, required.tls_url + "/", certs=certs, check=False)
            assert r.returncode != 0 and "SSL_CLIENT" not in r.stdout, who
    finally:
        nginx.terminate()
        nginx.wait()


@pytest.mark.parametrize("fields,says", [
    ("{c}/rsa.crt,{c}/ec.key", "cannot be used together"),
    ("{c}/missing.crt,{c}/rsa.key", "cannot read certificates from"),
    ("{c}/rsa.key,{c}/rsa.key", "holds no PEM certificate"),
    ("{c}/rsa.crt,{c}/rsa.crt", "cannot read a private key"),
    ("{c}/rsa.crt", "three to five comma-separated fields"),
    ("{c}/rsa.crt,{c}/rsa.key,,{c}/missing-ca.crt", "cannot read certificates from"),
])
def test_a_bad_certificate_or_key_stops_the_start_with_the_reason(certs, fields, says):
    spec = f"127.0.0.1:{free_port()}," + fields.format(c=certs)
    r = subprocess.run([BIN, "--https-socket", spec,
                        "--wsgi-file", TLS_ENV], capture_output=True, text=True, timeout=30,
                       cwd=APPS.parent.parent)
    assert r.returncode != 0
    assert says in r.stderr + r.stdout and "--https-socket" in r.stderr + r.stdout


def test_reload_reads_new_certificates_and_keeps_the_old_on_a_bad_one(serve, certs, tmp_path):
    crt, key = tmp_path / "site.crt", tmp_path / "site.key"
    crt.write_bytes((certs / "rsa.crt").read_bytes())
    key.write_bytes((certs / "rsa.key").read_bytes())
    port = free_port()
    pid = tmp_path / "pid"
    # Relative paths are from where oxgate starts, --chdir or not, at the
    # start and at each reload.
    s = serve("--https-socket", f"127.0.0.1:{port},site.crt,site.key", "--wsgi-file", TLS_ENV, "--master",
              "--processes", "2", "--pidfile", str(pid), "--chdir", str(APPS), cwd=tmp_path)
    first = fingerprint(port)
    crt.write_bytes((certs / "rsa2.crt").read_bytes())
    key.write_bytes((certs / "rsa2.key").read_bytes())
    os.kill(s.proc.pid, signal.SIGHUP)
    serves_only(port, certs / "rsa2.crt")
    second = fingerprint_of(certs / "rsa2.crt")
    assert second != first
    # A renewal that wrote a broken file: the reload is refused, and the
    # certificate read before goes on being served.
    crt.write_text("not a certificate\n")
    os.kill(s.proc.pid, signal.SIGHUP)
    s.wait_log("reload refused")
    assert "holds no PEM certificate" in s.log()
    assert fingerprint(port) == second
    out, _ = fetch(f"https://localhost:{port}/", certs=certs)
    assert json.loads(out)["HTTPS"] == "on"


def test_a_reload_to_a_file_naming_a_missing_certificate_is_refused(serve, certs, tmp_path):
    """The new file's certificates are read by the reload's check, as the
    start reads them: one it names that is not there refuses the reload,
    and the old image serves on (the new image could not start, and the
    whole server stopped). --check-config says so too."""
    for name in ("rsa.crt", "rsa.key"):
        (tmp_path / name).write_bytes((certs / name).read_bytes())
    port = free_port()
    ini = tmp_path / "site.ini"
    ini.write_text(f"[uwsgi]\nhttps-socket = 127.0.0.1:{port},rsa.crt,rsa.key\nwsgi-file = {TLS_ENV}\n"
                   "master = true\nprocesses = 1\n")
    s = serve("--ini", str(ini), socket_arg=False, cwd=tmp_path, wait=False)
    def answers():
        try:
            return fingerprint(port)
        except OSError:
            return None
    wait_for(answers, what="the TLS socket")
    ini.write_text(ini.read_text().replace("rsa.crt", "missing.crt"))
    r = subprocess.run([BIN, "--ini", str(ini), "--check-config"], capture_output=True, text=True, timeout=30,
                       cwd=tmp_path)
    assert r.returncode == 1 and "missing.crt" in r.stderr, r.stderr
    os.kill(s.proc.pid, signal.SIGHUP)
    s.wait_log("reload refused")
    assert s.proc.poll() is None
    assert fingerprint(port) == fingerprint_of(certs / "rsa.crt")


def test_h2load_100_streams_on_one_connection_over_tls_and_h2c(serve, certs):
    s = https(serve, certs)
    for url in (s.tls_url + "/", s.url + "/"):
        r = subprocess.run(["h2load", "-n", "3000", "-c", "1", "-m", "100", url], capture_output=True, text=True,
                           timeout=60)
        assert "3000 succeeded, 0 failed, 0 errored" in r.stdout, r.stdout + r.stderr
        assert "Application protocol: h2" in r.stdout or "h2c" in r.stdout


def test_uploads_streams_and_files_over_http2_and_tls(serve, certs, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    blob = os.urandom(3 << 20)
    (files / "blob.bin").write_bytes(blob)
    s = https(serve, certs, "--static-map", f"/files={files}")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(10 << 20))
    want = f"{10 << 20} {hashlib.sha256(upload.read_bytes()).hexdigest()}"
    for how in (["--http2", s.tls_url], ["--http1.1", s.tls_url], ["--http2-prior-knowledge", s.url]):
        flag, base = how
        assert fetch(flag, "--data-binary", f"@{upload}", base + "/upload", certs=certs)[0] == want
        # A body without a length: chunked in 1.1, DATA frames until END_STREAM in 2.
        r = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", str(certs / "ca.crt"), flag, "-T", "-",
                            "-X", "POST", base + "/upload"], input=upload.read_bytes(), capture_output=True)
        assert r.returncode == 0 and r.stdout.decode() == want, r.stderr
        out, _ = fetch(flag, base + "/stream", certs=certs)
        assert out == "".join(f"piece {i}\n" for i in range(1000))
        got = tmp_path / "got.bin"
        fetch(flag, "-o", str(got), base + "/files/blob.bin", certs=certs)
        assert got.read_bytes() == blob
        fetch(flag, "-o", str(got), "-r", "100-199999", base + "/files/blob.bin", certs=certs)
        assert got.read_bytes() == blob[100:200000]


def asgi_https(serve, certs, tmp_path, *args, module="asgi_raw:app"):
    port = free_port()
    s = serve("--home", str(VENV), "--chdir", str(APPS), "--module", module, "--processes", "1",
              "--https-socket", f"127.0.0.1:{port},{certs / 'rsa.crt'},{certs / 'rsa.key'}", *args,
              env={"ASGI_MARKERS": str(tmp_path)})
    s.tls_url = f"https://localhost:{port}"
    return s


def test_asgi_app_over_http2_and_tls(serve, certs, tmp_path):
    s = asgi_https(serve, certs, tmp_path)
    for flag, base, version, scheme in [("--http2", s.tls_url, "2", "https"),
                                        ("--http2-prior-knowledge", s.url, "2", "http"),
                                        ("--http1.1", s.tls_url, "1.1", "https")]:
        scope = json.loads(fetch(flag, base + "/scope", certs=certs)[0])
        assert scope["http_version"] == version and scope["scheme"] == scheme
        assert ["host", base.split("//")[1]] in scope["headers"] or version == "1.1"
        body = os.urandom(1 << 20)
        (tmp_path / "body").write_bytes(body)
        got = tmp_path / "echoed"
        fetch(flag, "--data-binary", f"@{tmp_path / 'body'}", "-o", str(got), base + "/echo", certs=certs)
        assert got.read_bytes() == body
        fetch(flag, "-o", str(got), base + f"/pathsend?{tmp_path / 'body'}", certs=certs)
        assert got.read_bytes() == body
        fetch(flag, "-o", str(got), base + f"/zerocopy?{tmp_path / 'body'}", certs=certs)
        assert got.read_bytes() == b"head:" + body[3:100_003] + b"|mid|" + body[5:] + b"|end"


def h2_events_until(c, done, timeout=10):
    """Every event the client gets until one `done` accepts (that one
    included); none may be the connection's end."""
    seen = []
    deadline = time.monotonic() + timeout
    while not any(done(e) for e in seen):
        assert time.monotonic() < deadline, seen
        events = c.events()
        assert events is not None, seen
        seen += events
    return seen


def test_early_hints_reach_an_http2_client_before_the_response_is_made(serve, certs, tmp_path):
    """Over HTTP/2 an ASGI app may always send 103 Early Hints: HTTP/2 is
    where browsers act on them, and no proxy takes an HTTP/2 103 for the
    final response (--http-early-hints is for HTTP/1.1). The 103 goes out
    at once, while the app still waits to make the response (sent before
    or after http.response.start), on h2c and over TLS alike; the
    connection goes on, and each request has its own."""
    s = asgi_https(serve, certs, tmp_path)
    links = [(":status", "103"), ("link", "</style.css>; rel=preload; as=style"),
             ("link", "</app.js>; rel=preload; as=script")]
    c = H2Client(s.port)
    for n, route in enumerate(["/early-hints", "/early-hints/after", "/early-hints"]):
        marker = tmp_path / f"go{n}"
        sid = c.get(f"{route}?{marker}")
        before = h2_events_until(c, lambda e: isinstance(e, h2.events.InformationalResponseReceived))
        # The app waits for the marker: nothing but the 103 can have come.
        assert not any(isinstance(e, h2.events.ResponseReceived) for e in before), before
        hint = before[-1]
        assert hint.stream_id == sid
        assert [(k.decode(), v.decode()) for k, v in hint.headers] == links, hint.headers
        marker.touch()
        after = h2_events_until(c, lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid)
        head = next(e for e in after if isinstance(e, h2.events.ResponseReceived))
        assert head.stream_id == sid and (b":status", b"200") in head.headers, head.headers
        body = b"".join(e.data for e in after if isinstance(e, h2.events.DataReceived))
        assert body == b"offered=1", body
    marker = tmp_path / "go-tls"
    marker.touch()
    out = subprocess.run(["curl", "-si", "--http2", "--cacert", str(certs / "ca.crt"),
                          s.tls_url + f"/early-hints?{marker}"], capture_output=True, timeout=10).stdout
    assert re.match(rb"HTTP/2 103 ?\r\nlink: </style.css>; rel=preload; as=style\r\n"
                    rb"link: </app.js>; rel=preload; as=script\r\n\r\nHTTP/2 200 ?\r\n", out), out
    assert out.endswith(b"offered=1"), out
    # HTTP/1.1 over TLS: hyper writes those connections alone, so even
    # with --http-early-hints the extension is not offered there.
    t = asgi_https(serve, certs, tmp_path, "--http-early-hints")
    out = subprocess.run(["curl", "-si", "--http1.1", "--cacert", str(certs / "ca.crt"),
                          t.tls_url + f"/early-hints?{marker}"], capture_output=True, timeout=10).stdout
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"offered=0"), out


def test_an_app_hinting_in_a_loop_gets_four_103s_through(serve, certs, tmp_path):
    """HTTP/2 has no bound of its own on the HEADERS frames a server
    queues for a client that reads nothing: a stream passes on four 103s
    at most, and the response follows them."""
    s = asgi_https(serve, certs, tmp_path)
    c = H2Client(s.port)
    sid = c.get("/early-hints?many")
    events = h2_events_until(c, lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid)
    hints = [e for e in events if isinstance(e, h2.events.InformationalResponseReceived)]
    assert len(hints) == 4, events
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert body == b"offered=1", body


@pytest.mark.parametrize("code", ["CANCEL", "NO_ERROR"])
def test_an_http2_upload_the_client_cancels_never_reaches_the_app_as_whole(serve, certs, tmp_path, code):
    """A client that gives up an upload resets its stream (CANCEL, or
    NO_ERROR before it has its answer): the body fails, and the app is never
    handed the part that came as if it were the whole (it gets it as a part,
    then http.disconnect). A NO_ERROR reset ended the body as complete, as
    hyper ends it; only a whole body may end so (RFC 9113 §8.1, a client
    that has its answer early). The connection goes on."""
    s = asgi_https(serve, certs, tmp_path)
    c = H2Client(s.port)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "POST"), (":path", "/received"), (":scheme", "http"),
                              (":authority", "localhost"), ("content-length", "100000")])
    c.conn.send_data(sid, b"x" * 1000)
    c.conn.reset_stream(sid, error_code=getattr(h2.errors.ErrorCodes, code))
    c.flush()
    # The app had what came as a part (an ASGI app gets the body as it
    # comes), then the disconnect.
    notes = tmp_path / "received"
    wait_for(lambda: notes.exists() and notes.read_text().endswith("disconnect\n"), what="the app's disconnect")
    assert "False" not in notes.read_text(), notes.read_text()
    sid = c.get("/scope")
    assert c.until(h2.events.StreamEnded).stream_id == sid

READING_APP = """
import os
def application(environ, start_response):
    try:
        got = "read %d of %s" % (len(environ["wsgi.input"].read()), environ["CONTENT_LENGTH"])
    except Exception as e:
        got = "failed: %s" % type(e).__name__
    with open(os.environ["READ_NOTES"], "a") as f:
        f.write(got + "\\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [got.encode()]
"""


@pytest.mark.parametrize("code", ["CANCEL", "NO_ERROR"])
def test_a_wsgi_app_never_reads_an_http2_upload_given_up_as_whole(serve, tmp_path, code):
    """A WSGI app is never given an upload the client resets before it is
    whole as the whole body (a NO_ERROR reset ended it as complete: Flask
    saved a hundredth of the file)."""
    (tmp_path / "reading.py").write_text(READING_APP)
    notes = tmp_path / "notes"
    s = serve("--wsgi-file", "reading.py", "--processes", "1", cwd=tmp_path, env={"READ_NOTES": str(notes)})
    c = H2Client(s.port)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "POST"), (":path", "/up"), (":scheme", "http"),
                              (":authority", "localhost"), ("content-length", "1000000")])
    c.conn.send_data(sid, b"x" * 10000)
    c.flush()
    time.sleep(0.2)  # (not timing: the app may read before or after the reset; either must fail)
    c.conn.reset_stream(sid, error_code=getattr(h2.errors.ErrorCodes, code))
    c.flush()
    # The body is read ahead of the app here: the request fails before it
    # is called; an app already reading would get the error instead.
    wait_for(lambda: (notes.exists() and notes.read_text()) or "bad request body" in s.log(),
             what="the app's read, or the request's failure")
    assert not notes.exists() or notes.read_text().startswith("failed"), notes.read_text()


def test_asgi_tls_extension_and_wss(serve, certs, tmp_path):
    s = asgi_https(serve, certs, tmp_path, "--https-client-ca", str(certs / "ca.crt"))
    alice = ["--cert", str(certs / "alice.crt"), "--key", str(certs / "alice.key")]
    tls = json.loads(fetch(*alice, s.tls_url + "/scope", certs=certs)[0])["extensions"]["tls"]
    assert tls["tls_version"] == 0x0304 and tls["cipher_suite"] in (0x1301, 0x1302, 0x1303)
    assert tls["client_cert_name"] == "CN=alice,O=Example" and tls["client_cert_error"] is None
    assert tls["client_cert_chain"][0] == (certs / "alice.crt").read_text()
    assert tls["client_cert_chain"][1:] in ([], [(certs / "ca.crt").read_text()])
    # The intermediates the client sent follow the leaf, as the spec's
    # "the client certificate first, then the chain" has it.
    carol = ["--cert", str(certs / "carol-chain.crt"), "--key", str(certs / "carol.key")]
    tls = json.loads(fetch(*carol, s.tls_url + "/scope", certs=certs)[0])["extensions"]["tls"]
    assert tls["client_cert_error"] is None and tls["client_cert_name"] == "CN=carol,O=Example"
    assert tls["client_cert_chain"] == [(certs / "carol.crt").read_text(), (certs / "inter.crt").read_text()]
    tls = json.loads(fetch("--tls-max", "1.2", s.tls_url + "/scope", certs=certs)[0])["extensions"]["tls"]
    assert tls["tls_version"] == 0x0303 and tls["cipher_suite"] in (0xC02F, 0xC030, 0xCCA8)
    assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None
    expired = ["--cert", str(certs / "expired.crt"), "--key", str(certs / "expired.key")]
    tls = json.loads(fetch(*expired, s.tls_url + "/scope", certs=certs)[0])["extensions"]["tls"]
    assert tls["client_cert_error"] == "certificate has expired"
    assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None
    # Cleartext has no tls extension.
    assert "tls" not in json.loads(fetch(s.url + "/scope")[0])["extensions"]

    import asyncio
    import websockets
    ws = asgi_https(serve, certs, tmp_path, module="asgi_ws:app")
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))

    async def scope():
        async with websockets.connect(ws.tls_url.replace("https", "wss") + "/scope", ssl=context) as c:
            return json.loads(await c.recv())
    got = asyncio.run(scope())
    assert got["scheme"] == "wss" and got["extensions"]["tls"]["tls_version"] == 0x0304


def answer_over(flag, url, certs, *args):
    """Status, headers (lower-cased, less those HTTP/2 has no place for or
    that vary) and body of one curl request."""
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", str(certs / "ca.crt"), "-D", "-", flag,
                        *args, url], capture_output=True)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()[1]
    skip = {"date", "server", "connection", "keep-alive", "transfer-encoding"}
    headers = sorted((k.lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:])
                     if k.lower() not in skip)
    return status, headers, body


@pytest.mark.parametrize("app", ["flask", "fastapi"])
def test_an_app_answers_alike_over_http11_h2c_and_h2_over_tls(serve, certs, tmp_path, app):
    if app == "flask":
        s = https(serve, certs, "--home", str(VENV), "--chdir", str(APPS), "--callable", "app",
                  app=str(APPS / "flask_app.py"))
        asks = [("/", []), ("/json?a=1", ["-H", "Content-Type: application/json", "--data", '{"x": [1, 2]}']),
                ("/form", ["-F", "field=v", "-F", f"upload=@{TLS_ENV}"]), ("/stream", []), ("/missing", []),
                ("/fail", [])]
    else:
        port = free_port()
        s = serve("--home", str(VENV), "--chdir", str(APPS), "--module", "asgi_fastapi:app", "--processes", "1",
                  "--https-socket", f"127.0.0.1:{port},{certs / 'rsa.crt'},{certs / 'rsa.key'}")
        s.tls_url = f"https://localhost:{port}"
        asks = [("/", []), ("/items", ["-H", "Content-Type: application/json", "--data", '{"name": "a", "price": 2}']),
                ("/items/7?q=x", []), ("/items/404", []), ("/items/nan", []), ("/form", ["-F", "name=n", "-F", "n=3"]),
                ("/sse", []), ("/text", []), ("/fail", [])]
    for path, args in asks:
        over = [answer_over("--http1.1", s.url + path, certs, *args),
                answer_over("--http2-prior-knowledge", s.url + path, certs, *args),
                answer_over("--http2", s.tls_url + path, certs, *args)]
        if path in ("/sse", "/stream"):
            # A stream the app finished before its head went out is sent
            # whole, with a length, on any protocol: a matter of timing.
            over = [(st, [h for h in hs if h[0] != "content-length"], b) for st, hs, b in over]
        assert over[0] == over[1] == over[2], (path, over)


class H2Client:
    """A raw HTTP/2 client over h2c (the h2 library frames, nothing else)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()

    def flush(self):
        self.sock.sendall(self.conn.data_to_send())

    def get(self, path, end_stream=True, extra=()):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "GET"), (":path", path), (":scheme", "http"),
                                     (":authority", "localhost"), *extra], end_stream=end_stream)
        self.flush()
        return sid

    def events(self):
        data = self.sock.recv(65536)
        if not data:
            return None
        events = self.conn.receive_data(data)
        for e in events:
            if isinstance(e, h2.events.DataReceived):
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        self.flush()
        return events

    def until(self, kind, timeout=10):
        """Reads until an event of `kind` (returned), or the connection ends (None)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events()
            if events is None:
                return None
            for e in events:
                if isinstance(e, kind):
                    return e
        raise AssertionError(f"no {kind}")


def test_a_host_header_naming_another_host_than_the_authority_is_a_400_as_in_nginx(serve):
    """RFC 9113 §8.3.1; the app was told the :authority and the Host header
    was dropped. The same host in both is served."""
    s = serve("--wsgi-file", str(APPS / "tls_env.py"))
    c = H2Client(s.port)
    c.conn.config.validate_outbound_headers = False
    c.get("/", extra=[("host", "other.example")])
    assert dict(c.until(h2.events.ResponseReceived).headers)[b":status"] == b"400"
    c.get("/", extra=[("host", "LOCALHOST")])
    assert dict(c.until(h2.events.ResponseReceived).headers)[b":status"] == b"200"


def test_a_stream_reset_cancels_its_request_and_the_connection_goes_on(serve, certs, tmp_path):
    s = asgi_https(serve, certs, tmp_path)
    c = H2Client(s.port)
    sid = c.get("/forever")
    assert c.until(h2.events.DataReceived).stream_id == sid
    c.conn.reset_stream(sid)
    c.flush()
    marker = tmp_path / "disconnected"
    wait_for(marker.exists, what="the app told of the reset")
    assert marker.read_text() == "http.disconnect"
    sid = c.get("/scope")
    assert c.until(h2.events.StreamEnded).stream_id == sid


def test_an_idle_http2_connection_is_closed_with_a_goaway_even_after_a_stream_reset_before_its_answer(serve):
    s = serve("--home", str(VENV), "--chdir", str(APPS), "--module", "asgi_raw:app", "--socket-timeout", "1")
    c = H2Client(s.port)
    sid = c.get("/sleep?3")
    time.sleep(0.2)
    # Reset while the app has not answered: no response body ever exists.
    c.conn.reset_stream(sid)
    c.flush()
    # Returns once the server closes the connection; raises TimeoutError if
    # it never does. A GOAWAY comes first: a request that crossed the close
    # is known unprocessed, and a client sends it again (RFC 9113 §6.8).
    frames = frames_until_closed(c.sock, timeout=15)
    assert isinstance(frames[-1], hyperframe.frame.GoAwayFrame) and frames[-1].error_code == 0, frames


def test_limits_hold_per_stream_over_http2(serve):
    s = serve("--wsgi-file", TLS_ENV, "--limit-post", "1000", "--buffer-size", "8192")
    r = curl("--http2-prior-knowledge", "--data-binary", "x" * 5000, "-o", "/dev/null", "-w", "%{http_code}",
             s.url + "/upload")
    assert r.stdout.startswith("413"), r.stdout
    # A header block larger than --buffer-size, decoded: refused, never served.
    c = H2Client(s.port)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "localhost"),
                              ("x-big", "y" * 20000)], end_stream=True)
    c.flush()
    ended = c.until((h2.events.ResponseReceived, h2.events.StreamReset, h2.events.ConnectionTerminated))
    if isinstance(ended, h2.events.ResponseReceived):
        assert dict(ended.headers)[b":status"] == b"431"
    # The connection, or a new one, still serves.
    assert fetch("--http2-prior-knowledge", s.url + "/")[1] == "2"


def test_touch_reload_reads_new_certificates(serve, certs, tmp_path):
    crt, key, touch = tmp_path / "site.crt", tmp_path / "site.key", tmp_path / "touch-me"
    crt.write_bytes((certs / "rsa.crt").read_bytes())
    key.write_bytes((certs / "rsa.key").read_bytes())
    touch.write_text("")
    port = free_port()
    serve("--https-socket", f"127.0.0.1:{port},{crt},{key}", "--wsgi-file", TLS_ENV, "--processes", "2",
          "--touch-reload", str(touch))
    first = fingerprint(port)
    crt.write_bytes((certs / "ec.crt").read_bytes())
    key.write_bytes((certs / "ec.key").read_bytes())
    os.utime(touch, (time.time() + 5, time.time() + 5))
    serves_only(port, certs / "ec.crt")
    assert fingerprint_of(certs / "ec.crt") != first


def test_a_certificate_reload_under_load_fails_no_request(serve, certs, tmp_path):
    """Clients that keep HTTP/2 connections over TLS and send request after
    request (curl, 50 URLs a connection, four at once) while the master
    reloads with a new certificate: every request is answered. (h2load
    counts the requests a GOAWAY stops it from sending as failed, where
    curl and browsers send them on a new connection, as RFC 9113 §6.8
    allows: so the load is curl's.)"""
    crt, key = tmp_path / "site.crt", tmp_path / "site.key"
    crt.write_bytes((certs / "ec.crt").read_bytes())
    key.write_bytes((certs / "ec.key").read_bytes())
    port = free_port()
    s = serve("--https-socket", f"127.0.0.1:{port},{crt},{key}", "--wsgi-file", TLS_ENV, "--master",
              "--processes", "2")
    assert fingerprint(port) == fingerprint_of(certs / "ec.crt")
    url = f"https://localhost:{port}/"
    codes, errors = [], []
    deadline = time.monotonic() + 6

    def client():
        while time.monotonic() < deadline:
            r = subprocess.run(["curl", "-sS", "--http2", "--max-time", "20", "--cacert", str(certs / "ca.crt"),
                                "-w", "%{http_code} %{http_version}\n", *["-o", "/dev/null", url] * 50],
                               capture_output=True, text=True)
            codes.extend(r.stdout.split("\n")[:-1])
            if r.returncode != 0:
                errors.append(r.stderr)

    import threading
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    crt.write_bytes((certs / "rsa2.crt").read_bytes())
    key.write_bytes((certs / "rsa2.key").read_bytes())
    os.kill(s.proc.pid, signal.SIGHUP)
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert len(codes) > 200 and set(codes) == {"200 2"}, (len(codes), set(codes))
    s.wait_log("reload")
    serves_only(port, certs / "rsa2.crt")


def test_rapid_reset_closes_the_connection(serve):
    s = serve("--wsgi-file", TLS_ENV)
    c = H2Client(s.port)
    # CVE-2023-44487: streams opened and reset at once, never waited for.
    for _ in range(500):
        sid = c.get("/")
        c.conn.reset_stream(sid)
    try:
        c.flush()
        ended = c.until(h2.events.ConnectionTerminated)
    except (ConnectionResetError, BrokenPipeError):
        ended = None
    assert ended is None or ended.error_code != 0
    # The server is fine, and serves others.
    assert fetch("--http2-prior-knowledge", s.url + "/")[1] == "2"


def frames_until_closed(sock, timeout=20):
    """Every frame the server sends until it closes the connection, parsed
    by hyperframe alone (the h2 library's state machine stops at GOAWAY);
    pings are answered, as a client does."""
    data, frames = b"", []
    sock.settimeout(timeout)
    while chunk := sock.recv(65536):
        new, data = take_frames(data + chunk)
        frames += new
        for frame in new:
            if isinstance(frame, hyperframe.frame.PingFrame) and "ACK" not in frame.flags:
                pong = hyperframe.frame.PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"])
                sock.sendall(pong.serialize())
    return frames


def take_frames(data):
    """The whole frames at the start of `data`, parsed by hyperframe alone,
    and the bytes after them."""
    frames = []
    while len(data) >= 9:
        frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(data[:9]))
        if len(data) < 9 + length:
            break
        frame.parse_body(memoryview(data[9:9 + length]))
        data = data[9 + length:]
        frames.append(frame)
    return frames, data


def test_a_graceful_stop_sends_goaway_and_finishes_open_streams(serve):
    s = serve("--home", str(VENV), "--chdir", str(APPS), "--module", "asgi_raw:app", "--no-master")
    # The port listens before the app is imported: the stop must come once it serves.
    assert h2c_served(s.url + "/") == "2 200"
    c = H2Client(s.port)
    sid = c.get("/sleep?1")
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    frames = frames_until_closed(c.sock)
    goaways = [f for f in frames if isinstance(f, hyperframe.frame.GoAwayFrame)]
    assert goaways and all(f.error_code == 0 for f in goaways)
    data = [f for f in frames if isinstance(f, hyperframe.frame.DataFrame) and f.stream_id == sid]
    assert b"".join(f.data for f in data) == b"slept"
    assert "END_STREAM" in data[-1].flags
    assert s.proc.wait(20) == 0


def test_failed_handshakes_are_summed_up_not_logged_one_by_one(serve, certs):
    """One line a minute, naming the latest reason and client. A connection
    closed before a byte came (a load balancer's TCP health check) is no
    failed handshake: it was logged as "tls handshake eof", and counted."""
    s = https(serve, certs)
    for _ in range(5):
        socket.create_connection(("127.0.0.1", s.tls_port)).close()
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", s.tls_port)) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            raw.recv(100)
    # And the server is fine.
    assert fetch(s.tls_url + "/", certs=certs)[1] == "2"
    lines = [line for line in s.log().splitlines() if "TLS handshake" in line]
    assert len(lines) == 1, lines
    assert "at most one a minute" in lines[0]
    assert lines[0].endswith("plain HTTP sent to the TLS port (answered 400) (from 127.0.0.1)"), lines


def served_certificate(port, name):
    """The SHA-256 of the certificate a client asking for `name` (SNI) gets."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def test_sni_serves_each_name_its_certificate(serve, certs):
    ec = ["ecparam", "-name", "prime256v1", "-genkey", "-noout"]
    signed(certs, "sni-a", "/CN=a.test", ec, "subjectAltName=DNS:a.test\nextendedKeyUsage=serverAuth\n")
    signed(certs, "sni-b", "/CN=b.test", ec, "subjectAltName=DNS:*.b.test\nextendedKeyUsage=serverAuth\n")
    s = https(serve, certs, "--sni", f"a.test,{certs / 'sni-a.crt'},{certs / 'sni-a.key'}",
              "--sni", f"*.B.test,{certs / 'sni-b.crt'},{certs / 'sni-b.key'}")
    for name, want in [("a.test", "sni-a"), ("A.Test", "sni-a"), ("x.b.test", "sni-b"), ("b.test", "rsa"),
                       ("y.x.b.test", "rsa"), ("localhost", "rsa"), ("other.test", "rsa")]:
        assert served_certificate(s.tls_port, name) == fingerprint_of(certs / f"{want}.crt"), name
    # A client that checks the name is satisfied, over HTTP/2 and HTTP/1.1.
    for name in ("a.test", "www.b.test"):
        for flag in ("--http2", "--http1.1"):
            body, _ = fetch(flag, "--resolve", f"{name}:{s.tls_port}:127.0.0.1", f"https://{name}:{s.tls_port}/",
                            certs=certs)
            assert json.loads(body)["HTTP_HOST"] == f"{name}:{s.tls_port}"
    # A key that is not the certificate's, or a missing file, stops the start.
    for bad, says in [(f"a.test,{certs / 'sni-a.crt'},{certs / 'sni-b.key'}", "cannot be used together"),
                      (f"a.test,{certs / 'nope.crt'},{certs / 'sni-a.key'}", "nope.crt"),
                      (f"a.test,{certs / 'sni-a.crt'}", "expected NAME,CERT,KEY")]:
        port = free_port()
        r = subprocess.run([BIN, "--https-socket", f"127.0.0.1:{port},{certs / 'rsa.crt'},{certs / 'rsa.key'}",
                            "--wsgi-file", TLS_ENV, "--sni", bad], capture_output=True, text=True, timeout=20)
        assert r.returncode != 0 and says in r.stderr and "--sni" in r.stderr, (bad, r.stderr)


def test_stats_and_metrics_count_http_versions_handlers_and_failed_handshakes(serve, certs, tmp_path):
    (tmp_path / "a.txt").write_text("static\n")
    sp = free_port()
    s = https(serve, certs, "--static-map", f"/static={tmp_path}", "--stats", f"127.0.0.1:{sp}", "--stats-http")

    def failed_handshakes():
        text = requests.get(f"http://127.0.0.1:{sp}/metrics").text
        return int(re.search(r"^oxgate_tls_handshake_failures_total (\d+)$", text, re.M)[1]), text

    fetch("--http1.0", s.url + "/")
    fetch("--http1.1", s.url + "/")
    fetch("--http2-prior-knowledge", s.url + "/")
    fetch("--http2", s.tls_url + "/", certs=certs)
    assert fetch("--http2", s.tls_url + "/static/a.txt", certs=certs) == ("static\n", "2")
    assert fetch(s.url + "/static/a.txt")[0] == "static\n"
    # The start-up check that the port listens is one already.
    before, _ = failed_handshakes()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", s.tls_port)) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            raw.recv(100)
    # The server counts a failed handshake after its alert is sent.
    failed, text = wait_for(lambda: (lambda n, t: n >= before + 3 and (n, t))(*failed_handshakes()),
                            what="3 more failed handshakes counted")
    assert 'oxgate_http_requests_total{version="1.0"} 1\n' in text
    assert 'oxgate_http_requests_total{version="1.1"} 2\n' in text
    assert 'oxgate_http_requests_total{version="2"} 3\n' in text
    assert 'oxgate_requests_by_handler_total{handler="app"} 4\n' in text
    assert 'oxgate_requests_by_handler_total{handler="static"} 2\n' in text
    assert requests.get(f"http://127.0.0.1:{sp}/").json()["tls_handshake_failures"] == failed


def test_gunicorn_certfile_and_keyfile_serve_https(serve, certs, tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"certfile = '{certs / 'ec.crt'}'\nkeyfile = '{certs / 'ec.key'}'\n"
                    f"ca_certs = '{certs / 'ca.crt'}'\ncert_reqs = 2\nworkers = 1\n")
    s = serve("-c", str(conf), "-b", "127.0.0.1:{port}", "tls_env:application", socket_arg=False, cwd=APPS)
    url = f"https://localhost:{s.port}/"
    # cert_reqs 2 is CERT_REQUIRED.
    assert curl(url, certs=certs, check=False).returncode != 0
    env = json.loads(fetch("--cert", str(certs / "alice.crt"), "--key", str(certs / "alice.key"), url,
                           certs=certs)[0])
    assert env["wsgi.url_scheme"] == "https" and env["SSL_CLIENT_VERIFY"] == "SUCCESS"


@pytest.mark.parametrize("protocols, version", [(None, "1.1"), ("h1", "1.1"), ("h2,h1", "2")])
def test_gunicorn_serves_http2_only_when_http_protocols_names_it(serve, certs, tmp_path, protocols, version):
    """Gunicorn's http_protocols is "h1" unless set: a TLS bind offers no
    h2 (oxgate offered it whatever the file said)."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"certfile = '{certs / 'ec.crt'}'\nkeyfile = '{certs / 'ec.key'}'\nworkers = 1\n"
                    + (f"http_protocols = '{protocols}'\n" if protocols else ""))
    s = serve("-c", str(conf), "-b", "127.0.0.1:{port}", "tls_env:application", socket_arg=False, cwd=APPS)
    assert fetch("--http2", f"https://localhost:{s.port}/", certs=certs)[1] == version


def test_uvicorns_optional_client_certificate_is_checked_when_given(serve, certs):
    """uvicorn's --ssl-cert-reqs 1 (Gunicorn's cert_reqs 1) is Python's
    CERT_OPTIONAL: no certificate is fine, and one given must verify, or
    the handshake fails, as under uvicorn (one from another CA was served,
    the app told FAILED)."""
    s = serve("uvicorn", "tls_env:application", "--interface", "wsgi", "--port", "{port}", "--ssl-certfile", str(certs / "ec.crt"),
              "--ssl-keyfile", str(certs / "ec.key"), "--ssl-ca-certs", str(certs / "ca.crt"),
              "--ssl-cert-reqs", "1", socket_arg=False, cwd=APPS)
    url = f"https://localhost:{s.port}/"
    assert json.loads(fetch(url, certs=certs)[0])["SSL_CLIENT_VERIFY"] in (None, "NONE")
    env = json.loads(fetch("--cert", str(certs / "alice.crt"), "--key", str(certs / "alice.key"), url,
                           certs=certs)[0])
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    refused = curl("--cert", str(certs / "mallory.crt"), "--key", str(certs / "mallory.key"), url,
                   certs=certs, check=False)
    assert refused.returncode != 0, refused


BEHAVIOUR = str(APPS / "behaviour.py")


def h2c_connection(port, window=None):
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    if window is not None:
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    c.sendall(conn.data_to_send())
    return c, conn


def h2c_pump(c, conn, until, seconds, seen):
    """Reads frames for `seconds` at most, until `until()`; their events
    go to `seen`."""
    stop = time.monotonic() + seconds
    while not until() and time.monotonic() < stop:
        c.settimeout(0.2)
        try:
            data = c.recv(65536)
        except socket.timeout:
            continue
        assert data, "the server closed the connection"
        seen.extend(conn.receive_data(data))
        if out := conn.data_to_send():
            c.sendall(out)


def h2c_ended(seen, sid):
    return any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in seen)


def h2c_events(c, conn, until, timeout=20):
    """Events until `until(event)` is true for one of them (then that one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = c.recv(65536)
        if not data:
            return None
        for event in conn.receive_data(data):
            if until(event):
                return event
        c.sendall(conn.data_to_send())
    return None


def test_a_slow_reader_with_a_large_window_gets_the_whole_response_over_http2(serve, tmp_path):
    """A client with a 16 MB window reads a 700 kB response at about 100
    kB/s: the whole of it goes into the kernel at once, and nothing more is
    written. The connection looked idle after two --socket-timeouts and was
    closed, the kernel reset it (the client's window updates unread), and
    the rest was lost; as it goes out, it is not idle."""
    size = 700_000
    (tmp_path / "big.py").write_text(
        "def application(environ, start_response):\n"
        f"    start_response('200 OK', [('Content-Type', 'application/octet-stream')])\n"
        f"    return [b'x' * {size}]\n")
    s = serve("--wsgi-file", str(tmp_path / "big.py"), "--processes", "1", "--socket-timeout", "1")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.connect(("127.0.0.1", s.port))
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16_000_000})
    c.increment_flow_control_window(50_000_000)
    c.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")], end_stream=True)
    sock.sendall(c.data_to_send())
    got, ended, started = 0, False, time.monotonic()
    with sock:
        while not ended and time.monotonic() - started < 20:
            sock.settimeout(5)
            data = sock.recv(4096)  # (a reset fails the test here)
            assert data, f"closed after {got} of {size} bytes"
            for e in c.receive_data(data):
                if isinstance(e, h2.events.DataReceived):
                    got += len(e.data)
                    # Window updates as a browser sends them: still coming
                    # when the connection was closed, they made the reset.
                    if not e.stream_ended and e.data:
                        c.increment_flow_control_window(len(e.data), stream_id=1)
                        c.increment_flow_control_window(len(e.data))
                ended |= isinstance(e, h2.events.StreamEnded)
            if out := c.data_to_send():
                sock.sendall(out)
            time.sleep(max(0.0, got / 100_000 - (time.monotonic() - started)))
    assert ended and got == size, (got, ended)


def test_one_app_thread_answers_each_http2_stream_as_it_is_done(serve, tmp_path):
    """--threads 1 runs the app inline, on the loop that writes every
    stream's response: three quick requests (5 ms each) and one that waits
    for the client, sent together on one connection. The quick answers were
    written only once the last app returned (never, here, until the client
    gave up waiting); as Gunicorn's one thread, each now goes out once the
    next app has to wait for it."""
    gate = tmp_path / "gate"
    (tmp_path / "turns.py").write_text(
        "import os, time\n"
        "def application(environ, start_response):\n"
        "    if environ['PATH_INFO'] == '/gate':\n"
        f"        for _ in range(400):\n"
        f"            if os.path.exists({str(gate)!r}):\n"
        "                break\n"
        "            time.sleep(0.025)\n"
        "    else:\n"
        "        time.sleep(0.005)\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [environ['PATH_INFO'].encode()]\n")
    s = serve("--wsgi-file", str(tmp_path / "turns.py"), "--processes", "1", "--threads", "1")
    sock, c = h2c_connection(s.port)
    for sid, path in [(1, "/a"), (3, "/b"), (5, "/c"), (7, "/gate")]:
        c.send_headers(sid, [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")],
                       end_stream=True)
    sock.sendall(c.data_to_send())
    seen = []
    try:
        with sock:
            quick = lambda: all(h2c_ended(seen, sid) for sid in (1, 3, 5))  # noqa: E731
            h2c_pump(sock, c, lambda: quick() or h2c_ended(seen, 7), 8, seen)
            assert quick() and not h2c_ended(seen, 7), "the quick answers came only after the slow one"
            gate.touch()
            h2c_pump(sock, c, lambda: h2c_ended(seen, 7), 8, seen)
    finally:
        gate.touch()
    assert h2c_ended(seen, 7)


def test_http2_responses_without_a_body_end_with_their_head(serve):
    """HEAD (whose app made a body, for its length), 204 and 304 end with
    their HEADERS frame over HTTP/2 as over HTTP/1.1: no DATA, which a
    client takes for a protocol error."""
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1")
    for method, query, status in [("HEAD", "200", 200), ("GET", "204", 204), ("GET", "304", 304)]:
        c, conn = h2c_connection(s.port)
        conn.send_headers(1, [(":method", method), (":path", f"/status?{query}"), (":scheme", "http"),
                              (":authority", "x")], end_stream=True)
        c.sendall(conn.data_to_send())
        got = []
        end = h2c_events(c, conn, lambda e: got.append(e) or isinstance(
            e, (h2.events.StreamEnded, h2.events.StreamReset, h2.events.ConnectionTerminated)))
        c.close()
        assert isinstance(end, h2.events.StreamEnded), (method, query, got)
        response = next(e for e in got if isinstance(e, h2.events.ResponseReceived))
        assert dict(response.headers)[b":status"] == str(status).encode()
        assert not any(isinstance(e, h2.events.DataReceived) and e.data for e in got), (method, query, got)
        if method == "HEAD":
            assert dict(response.headers)[b"content-length"] == b"5"
    r = curl("-I", "--http2-prior-knowledge", s.url + "/status?200")
    assert r.returncode == 0 and "content-length: 5" in r.stdout.lower()


def test_an_http2_client_that_opens_no_window_is_reset_after_socket_timeout(serve):
    """A client that takes no DATA (a window of 0, never opened) held the
    app's thread for as long as it kept the connection: its stream is now
    reset after --socket-timeout, the app's generator closed, and the
    worker's one thread serves again."""
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1", "--threads", "1", "--socket-timeout", "2")
    c, conn = h2c_connection(s.port, window=0)
    conn.send_headers(1, [(":method", "GET"), (":path", "/big?mb=64"), (":scheme", "http"), (":authority", "x")],
                      end_stream=True)
    c.sendall(conn.data_to_send())
    try:
        reset = h2c_events(c, conn, lambda e: isinstance(e, (h2.events.StreamReset,
                                                             h2.events.ConnectionTerminated)))
        assert isinstance(reset, h2.events.StreamReset) and reset.error_code == h2.errors.ErrorCodes.CANCEL
        assert requests.get(s.url + "/sys", timeout=10).status_code == 200
        s.wait_log("took no data of its response for --socket-timeout (2s)")
    finally:
        c.close()


def test_an_http2_client_that_opens_no_window_on_many_streams_holds_the_thread_for_one_stall(serve):
    """Twelve streams and no window: each pinned one of the worker's two
    threads for a whole --socket-timeout, one after another (six stalls
    of each thread). A second stream reset having taken nothing closes the
    connection: another client is served long before six stalls."""
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1", "--threads", "2", "--socket-timeout", "4")
    c, conn = h2c_connection(s.port, window=0)
    for stream in range(1, 25, 2):
        # A file response (Django's FileResponse, Flask's send_file): its
        # thread stays with it until it is sent.
        conn.send_headers(stream, [(":method", "GET"), (":path", "/file?size=10000&cl=10000"),
                                   (":scheme", "http"), (":authority", "x")], end_stream=True)
    c.sendall(conn.data_to_send())
    try:
        # Two are answered: both threads are theirs.
        heads = []
        h2c_events(c, conn, lambda e: isinstance(e, h2.events.ResponseReceived)
                   and (heads.append(e) or len(heads) == 2))
        # Behind six stalls (24 s) before; one now.
        assert requests.get(s.url + "/sys", timeout=12).status_code == 200
    finally:
        c.close()
    assert s.log().count("took no data of its response") == 1
    s.wait_log("HTTP/2 connection closed: a second stream whose client took none of its response")

def test_an_http2_client_opening_its_window_a_byte_at_a_time_is_cut_after_socket_timeout(serve):
    """A window of one byte a second is not reading: the stream is
    reset after --socket-timeout, and the connection closed (no other
    stream took anything), as a client reading a byte at a time over
    HTTP/1.1 is cut. Each byte counted as progress: it held the worker's
    thread for as long as it went on."""
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1", "--threads", "1", "--socket-timeout", "2")
    c, conn = h2c_connection(s.port, window=0)
    conn.send_headers(1, [(":method", "GET"), (":path", "/blocks?kb=64"), (":scheme", "http"), (":authority", "x")],
                      end_stream=True)
    conn.increment_flow_control_window(1, stream_id=1)
    c.sendall(conn.data_to_send())
    c.settimeout(1)
    ended, deadline = None, time.monotonic() + 10
    try:
        while ended is None and time.monotonic() < deadline:
            try:
                data = c.recv(65536)
            except socket.timeout:
                data = b"-"
            if not data:
                ended = "closed"
                break
            if data != b"-":
                for event in conn.receive_data(data):
                    if isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                        ended = event
            if ended is None:
                conn.increment_flow_control_window(1, stream_id=1)
                c.sendall(conn.data_to_send())
    finally:
        c.close()
    assert ended is not None, "still served a byte at a time after 10 s"
    assert requests.get(s.url + "/sys", timeout=10).status_code == 200
    s.wait_log("took no data of its response for --socket-timeout (2s)")


def test_a_paused_http2_stream_does_not_cut_a_slow_one_beside_it(serve):
    """Stream A takes nothing (a paused video); stream B takes 64 KiB a
    second. A is reset after --socket-timeout; B goes on to its end. Once
    A was reset, every other stream of the connection was given a second
    at most for each window, and B was cut."""
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1", "--threads", "2", "--socket-timeout", "3")
    c, conn = h2c_connection(s.port, window=0)
    conn.send_headers(1, [(":method", "GET"), (":path", "/big?mb=4"), (":scheme", "http"), (":authority", "x")],
                      end_stream=True)
    conn.send_headers(3, [(":method", "GET"), (":path", "/numbered?n=300000"), (":scheme", "http"),
                          (":authority", "x")], end_stream=True)
    c.sendall(conn.data_to_send())
    c.settimeout(0.2)
    got, seen, deadline, next_window = 0, [], time.monotonic() + 20, time.monotonic()
    try:
        while not h2c_ended(seen, 3) and time.monotonic() < deadline:
            if time.monotonic() >= next_window:
                conn.increment_flow_control_window(65536, stream_id=3)
                conn.increment_flow_control_window(65536)
                next_window += 1
            c.sendall(conn.data_to_send())
            try:
                data = c.recv(65536)
            except socket.timeout:
                continue
            assert data, f"the connection was closed: {seen}"
            for event in conn.receive_data(data):
                seen.append(event)
                if isinstance(event, h2.events.DataReceived) and event.stream_id == 3:
                    got += len(event.data)
                assert not (isinstance(event, h2.events.StreamReset) and event.stream_id == 3), (got, seen)
    finally:
        c.close()
    assert h2c_ended(seen, 3) and got == 300000, got
    assert any(isinstance(e, h2.events.StreamReset) and e.stream_id == 1 for e in seen), seen


def test_an_http2_client_that_takes_only_its_first_windows_holds_the_thread_for_one_stall(serve):
    """Ten streams, each given the client's first 64 KiB window and no
    more: that first window was counted as taking data, so each stream
    had a whole --socket-timeout, one after another (20 s of the worker's
    one thread). Windows opened while a stream waits count; the first is
    given, not taken: the second stream reset closes the connection."""
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1", "--threads", "1", "--socket-timeout", "2")
    c, conn = h2c_connection(s.port)
    conn.increment_flow_control_window(1 << 30)
    for stream in range(1, 21, 2):
        conn.send_headers(stream, [(":method", "GET"), (":path", "/big?mb=4"), (":scheme", "http"),
                                   (":authority", "x")], end_stream=True)
    c.sendall(conn.data_to_send())
    c.settimeout(0.5)
    closed, deadline = False, time.monotonic() + 12
    try:
        while not closed and time.monotonic() < deadline:
            try:
                data = c.recv(65536)
            except socket.timeout:
                continue
            if not data:
                closed = True
                break
            closed = any(isinstance(e, h2.events.ConnectionTerminated) for e in conn.receive_data(data))
    finally:
        c.close()
    assert closed, "still open after 12 s"
    s.wait_log("HTTP/2 connection closed: a second stream whose client took none of its response")


def test_a_paused_http2_stream_does_not_close_its_connection_under_a_quiet_one(serve):
    """A stream that took its first 64 KiB and no more (a paused video)
    beside one whose app is still at work (an event stream between
    events): the paused one is reset after --socket-timeout, and the other
    goes on to its end on the same connection. (A first version of the
    connection's close took the quiet one for a client reading nothing.)"""
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1", "--threads", "2", "--socket-timeout", "2")
    c, conn = h2c_connection(s.port)
    conn.increment_flow_control_window(1 << 24)  # room on the connection: stream 1 stalls on its own window
    conn.send_headers(1, [(":method", "GET"), (":path", "/big?mb=4"), (":scheme", "http"), (":authority", "x")],
                      end_stream=True)
    conn.send_headers(3, [(":method", "GET"), (":path", "/slow?first=0&gap=4"), (":scheme", "http"),
                          (":authority", "x")], end_stream=True)
    c.sendall(conn.data_to_send())
    seen, body = [], b""
    try:
        h2c_pump(c, conn, lambda: h2c_ended(seen, 3), 15, seen)
    finally:
        c.close()
    body = b"".join(e.data for e in seen if isinstance(e, h2.events.DataReceived) and e.stream_id == 3)
    assert h2c_ended(seen, 3) and body == b"ab", (body, seen[-3:])
    assert any(isinstance(e, h2.events.StreamReset) and e.stream_id == 1 for e in seen), seen
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in seen), seen


def test_an_http2_client_reading_slowly_but_steadily_is_not_reset(serve):
    """A client that opens 16 KiB of window every half second (32 KB/s, a
    poor mobile link) takes a 1 MiB chunk on and on, as over HTTP/1.1. It
    was reset after --socket-timeout as if it read nothing: h2 was given
    the whole chunk, and its window, opened bit by bit, was not seen."""
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1", "--socket-timeout", "2")
    c, conn = h2c_connection(s.port, window=16384)
    conn.send_headers(1, [(":method", "GET"), (":path", "/big?mb=4"), (":scheme", "http"), (":authority", "x")],
                      end_stream=True)
    c.sendall(conn.data_to_send())
    c.settimeout(0.25)
    got, reset, deadline, next_window = 0, None, time.monotonic() + 5, time.monotonic() + 0.5
    unacknowledged = 0
    try:
        while time.monotonic() < deadline and reset is None:
            try:
                data = c.recv(65536)
            except socket.timeout:
                data = b"-"
            if not data:
                break
            if data != b"-":
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        got += len(event.data)
                        unacknowledged += event.flow_controlled_length
                    elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                        reset = event
            if time.monotonic() >= next_window and unacknowledged:
                conn.acknowledge_received_data(unacknowledged, 1)
                unacknowledged, next_window = 0, next_window + 0.5
            c.sendall(conn.data_to_send())
    finally:
        c.close()
    assert reset is None, (reset, got)
    # Past the 2 s of --socket-timeout, still coming, at the client's pace.
    assert 100_000 < got < 1 << 20, got
    assert "took no data of its response" not in s.log()


@pytest.mark.parametrize("length,first_status", [("5", b"100"), ("10000000", b"413")])
def test_expect_100_continue_over_http2(serve, length, first_status):
    """Answered with a 100 at once; but a body declared over --limit-post
    gets its 413 first, as over HTTP/1.1: the client is not invited to send
    what will be refused (a 100 went out, then the 413)."""
    s = serve("--wsgi-file", ECHO_APP, "--processes", "1", "--limit-post", "1000")
    c, conn = h2c_connection(s.port)
    conn.send_headers(1, [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "x"),
                          ("expect", "100-continue"), ("content-length", length)])
    c.sendall(conn.data_to_send())
    first = h2c_events(c, conn, lambda e: isinstance(e, (h2.events.InformationalResponseReceived,
                                                         h2.events.ResponseReceived)), timeout=5)
    c.close()
    assert dict(first.headers)[b":status"] == first_status, first
    assert isinstance(first, h2.events.InformationalResponseReceived) == (first_status == b"100")


@pytest.mark.parametrize("path,first_status", [("/count", b"100"), ("/", b"200")])
def test_expect_100_continue_over_http2_waits_for_an_asgi_apps_first_read(serve, certs, tmp_path, path,
                                                                           first_status):
    """An ASGI app takes its body as it comes: the 100 goes out at its
    first receive(), as over HTTP/1.1. One that answers without reading
    (a 401, a 405) sends no 100, and the client no body: curl, sent a 100
    at once, pumped a window's worth and failed on the reset that ended
    it, never showing the answer."""
    s = asgi_https(serve, certs, tmp_path)
    c, conn = h2c_connection(s.port)
    conn.send_headers(1, [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "x"),
                          ("expect", "100-continue"), ("content-length", "5")])
    c.sendall(conn.data_to_send())
    first = h2c_events(c, conn, lambda e: isinstance(e, (h2.events.InformationalResponseReceived,
                                                         h2.events.ResponseReceived)), timeout=5)
    c.close()
    assert dict(first.headers)[b":status"] == first_status, first.headers


def unread_apps(status, reason, body):
    """An ASGI `app` and a WSGI `application` that answer without reading
    the request's body."""
    return f"""
async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({{"type": "http.response.start", "status": {status},
                    "headers": [(b"content-length", b"{len(body)}")]}})
        await send({{"type": "http.response.body", "body": {body!r}}})

def application(environ, start_response):
    start_response("{status} {reason}", [("Content-Length", "{len(body)}")])
    return [{body!r}]
"""


REFUSING_APPS = unread_apps(413, "Content Too Large", b"big\n")


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_an_upload_refused_unread_over_http2_gives_curl_the_answer(serve, certs, tmp_path, interface):
    """An app that refuses an upload without reading it (a 413, a 401):
    its body is read on and dropped, as over HTTP/1.1 and as hypercorn
    does, not reset at once after the answer: curl, still sending, failed
    (error 92) without showing it."""
    (tmp_path / "refusing.py").write_text(REFUSING_APPS)
    port = free_port()
    s = serve("--wsgi-file", str(tmp_path / "refusing.py"), "--processes", "1", "--interface", interface,
              "--callable", "app" if interface == "asgi" else "application",
              "--https-socket", f"127.0.0.1:{port},{certs / 'rsa.crt'},{certs / 'rsa.key'}")
    (tmp_path / "big").write_bytes(bytes(4 << 20))
    for flag, base in [("--http2-prior-knowledge", s.url), ("--http2", f"https://localhost:{port}")]:
        r = curl(flag, "-H", "Expect:", "--data-binary", f"@{tmp_path / 'big'}", "-o", "/dev/null",
                 "-w", "%{http_code}\t%{http_version}", base + "/", certs=certs)
        assert r.stdout == "413\t2", r.stdout


def test_a_body_over_limit_post_over_http2_gives_curl_the_413(serve, certs, tmp_path):
    """A declared length over --limit-post: the 413, and the body read on
    and dropped as an app's refusal is. Dropped at once, it reset the
    stream under the answer: curl failed (92; 52, "Empty reply", waiting
    for its 100) without showing the 413."""
    port = free_port()
    s = serve("--wsgi-file", ECHO_APP, "--processes", "1", "--limit-post", "1000000",
              "--https-socket", f"127.0.0.1:{port},{certs / 'rsa.crt'},{certs / 'rsa.key'}")
    (tmp_path / "big").write_bytes(bytes(6_000_000))
    for flag, base in [("--http2-prior-knowledge", s.url), ("--http2", f"https://localhost:{port}")]:
        for expect in ("Expect:", "Expect: 100-continue"):
            r = curl(flag, "-H", expect, "--data-binary", f"@{tmp_path / 'big'}", "-o", "/dev/null",
                     "-w", "%{http_code}\t%{http_version}", base + "/", certs=certs)
            assert r.stdout == "413\t2", (flag, expect, r.stdout)


ACCEPTING_UNREAD_APPS = unread_apps(201, "Created", b"done\n")


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_an_upload_answered_2xx_unread_over_http2_lets_curl_finish_sending(serve, certs, tmp_path, interface):
    """An app that answers 201 without reading a 5 MB upload. Given its
    whole response at once, curl 7.88 read no more frames and never saw the
    windows for the rest of its upload: it spun until killed. The end is now
    held until the rest (read and dropped) is in, without a Content-Length;
    an upload past what is read and dropped (8 MiB) is reset with NO_ERROR,
    which curl reports, with the answer, at once."""
    (tmp_path / "accepting.py").write_text(ACCEPTING_UNREAD_APPS)
    port = free_port()
    s = serve("--wsgi-file", str(tmp_path / "accepting.py"), "--processes", "1", "--interface", interface,
              "--callable", "app" if interface == "asgi" else "application",
              "--https-socket", f"127.0.0.1:{port},{certs / 'rsa.crt'},{certs / 'rsa.key'}")
    (tmp_path / "five").write_bytes(bytes(5_000_000))
    (tmp_path / "twenty").write_bytes(bytes(20_000_000))
    for flag, base in [("--http2-prior-knowledge", s.url), ("--http2", f"https://localhost:{port}")]:
        r = curl(flag, "-H", "Expect:", "--data-binary", f"@{tmp_path / 'five'}", "-w", "%{http_code}",
                 base + "/", certs=certs)
        assert r.stdout == "done\n201", r.stdout
        r = curl(flag, "-H", "Expect:", "--data-binary", f"@{tmp_path / 'twenty'}", "-w", "%{http_code}",
                 base + "/", certs=certs, check=False)
        assert (r.returncode, r.stdout) == (92, "done\n201"), (r.returncode, r.stdout, r.stderr)


def test_a_head_answered_2xx_before_its_upload_is_in_keeps_its_content_length_over_http2(serve, tmp_path):
    """A HEAD with an upload its (ASGI) app answers 201 unread: the end
    waits for the upload, as a GET's does, but its Content-Length (the
    GET's length: no body follows to be read short) is kept; it was
    dropped."""
    (tmp_path / "accepting.py").write_text(ACCEPTING_UNREAD_APPS)
    s = serve("--wsgi-file", str(tmp_path / "accepting.py"), "--processes", "1", "--interface", "asgi",
              "--callable", "app")
    c, conn = h2c_connection(s.port)
    try:
        conn.send_headers(1, [(":method", "HEAD"), (":path", "/"), (":scheme", "http"),
                              (":authority", "localhost"), ("content-length", "20000")])
        conn.send_data(1, bytes(10000))
        c.sendall(conn.data_to_send())
        seen = []
        h2c_pump(c, conn, lambda: any(isinstance(e, h2.events.ResponseReceived) for e in seen), 10, seen)
        head = dict(next(e for e in seen if isinstance(e, h2.events.ResponseReceived)).headers)
        assert (head[b":status"], head.get(b"content-length")) == (b"201", b"5"), head
        conn.send_data(1, bytes(10000), end_stream=True)
        c.sendall(conn.data_to_send())
        h2c_pump(c, conn, lambda: h2c_ended(seen, 1), 10, seen)
        assert h2c_ended(seen, 1)
    finally:
        c.close()


STREAMING_APP = """
import asyncio, os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/events":
        # An event stream whose first event waits for the test's gate.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for _ in range(400):
            if os.path.exists(os.environ["GATE"]):
                break
            await asyncio.sleep(0.025)
        await send({"type": "http.response.body", "body": b"data: 1\\n\\n"})
    elif path == "/redirect":
        await send({"type": "http.response.start", "status": 302, "headers": [(b"location", b"/"), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
"""


def test_http2_streams_beside_an_event_stream_and_a_trickled_upload_are_answered(serve, tmp_path):
    """Answers on a connection whose event stream has sent its head and
    waits for its first event; an answer to an upload of no declared
    length that goes on (a client that ends its side once the answer has
    ended, as gRPC's do) ends at once; a 302 to curl's 5 MB upload leaves
    curl well (it stops sending on a 3xx, as on an error). Each was held in
    this session's first versions of the turns and the held end."""
    gate = tmp_path / "gate"
    (tmp_path / "streaming.py").write_text(STREAMING_APP)
    s = serve("--wsgi-file", str(tmp_path / "streaming.py"), "--interface", "asgi", "--callable", "app",
              "--processes", "1", "--min-body-rate", "0", env={"GATE": str(gate)})
    sock, c = h2c_connection(s.port)

    def request(sid, path, method="GET", end=True):
        c.send_headers(sid, [(":method", method), (":path", path), (":scheme", "http"), (":authority", "x")],
                       end_stream=end)
        sock.sendall(c.data_to_send())

    seen = []

    def pump(until, seconds):
        h2c_pump(sock, c, until, seconds, seen)

    def ended(sid):
        return h2c_ended(seen, sid)

    try:
        with sock:
            request(1, "/events")
            pump(lambda: any(isinstance(e, h2.events.ResponseReceived) for e in seen), 5)
            request(3, "/api")
            request(5, "/api")
            pump(lambda: ended(3) and ended(5), 5)
            assert ended(3) and ended(5) and not ended(1), seen
            request(7, "/api", "POST", end=False)
            for _ in range(25):  # 5 s at most
                c.send_data(7, b"tick\n")
                sock.sendall(c.data_to_send())
                pump(lambda: ended(7), 0.2)
                if ended(7):
                    break
            assert ended(7), seen
    finally:
        gate.touch()
    (tmp_path / "five").write_bytes(bytes(5_000_000))
    r = curl("--http2-prior-knowledge", "-H", "Expect:", "--data-binary", f"@{tmp_path / 'five'}", "-o", "/dev/null",
             "-w", "%{http_code}", s.url + "/redirect")
    assert r.stdout == "302", r.stdout


def test_cookie_crumbs_count_as_the_one_cookie_http_1_1_would_send(serve):
    """A browser sends each cookie as a field of its own over HTTP/2 (RFC
    9113 §8.2.3). Under --buffer-size 8192, 150 cookies (6.4 KB joined)
    were a 431 over HTTP/2, counted 32 bytes a crumb more, and 200 over
    HTTP/1.1."""
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1", "--buffer-size", "8192")
    cookies = [f"c{i}=v{i:033d}" for i in range(150)]
    assert 6000 < len("; ".join(cookies)) < 8192 - 200
    c, conn = h2c_connection(s.port)
    conn.send_headers(1, [(":method", "GET"), (":path", "/sys"), (":scheme", "http"), (":authority", "x")]
                      + [("cookie", cookie) for cookie in cookies], end_stream=True)
    c.sendall(conn.data_to_send())
    got = h2c_events(c, conn, lambda e: isinstance(e, (h2.events.ResponseReceived, h2.events.StreamReset,
                                                       h2.events.ConnectionTerminated)), timeout=5)
    c.close()
    assert isinstance(got, h2.events.ResponseReceived) and dict(got.headers)[b":status"] == b"200", got
    assert requests.get(s.url + "/sys", headers={"Cookie": "; ".join(cookies)}, timeout=10).status_code == 200


def test_an_h2c_preface_split_across_segments_is_still_http2(serve):
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1")
    for cut in (5, 15):
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(PREFACE[:cut])
            time.sleep(0.3)
            c.sendall(PREFACE[cut:] + raw_frame(4, 0, 0, b""))
            data = c.recv(9)
        assert data[3] == 4, (cut, data)  # the server's SETTINGS, not "HTTP/1.1 400"


def test_client_certificates_asked_for_without_a_ca_stop_the_start(certs, tmp_path):
    """Gunicorn's cert_reqs 2 (uvicorn's --ssl-cert-reqs 2) with no CA to
    check against fails closed: served unchecked it would let anyone in."""
    for args in (["gunicorn", "-b", "127.0.0.1:9", "--certfile", str(certs / "ec.crt"), "--keyfile",
                  str(certs / "ec.key"), "--cert-reqs", "2", "tls_env:application"],
                 ["uvicorn", "--port", "9", "--ssl-certfile", str(certs / "ec.crt"), "--ssl-keyfile",
                  str(certs / "ec.key"), "--ssl-cert-reqs", "2", "tls_env:application"]):
        r = subprocess.run([BIN, *args, "--print-config"] if args[0] == "gunicorn" else [BIN, *args],
                           capture_output=True, text=True, timeout=30, cwd=APPS)
        assert r.returncode != 0, (args, r.stdout[-300:])
        assert "no ca_certs" in r.stderr, r.stderr


def test_a_tls12_cipher_list_leaves_tls13_on_and_alpn_takes_http10(serve, certs):
    """As OpenSSL, whose cipher string is for TLS 1.2: a list of TLS 1.2
    suites (Mozilla's intermediate) does not turn TLS 1.3 off. A client
    offering ALPN http/1.0 alone is served, as by nginx."""
    s = https(serve, certs, cert="ec", extra=",TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
    said = lambda *args: s_client(s.tls_port, *args, certs=certs).stdout.decode(errors="replace")
    out = said("-tls1_3")
    assert "TLSv1.3" in out, out[-500:]
    out = said("-tls1_2")
    assert "ECDHE-ECDSA-AES128-GCM-SHA256" in out, out[-500:]
    out = said("-alpn", "http/1.0")
    assert "ALPN protocol: http/1.0" in out, out[-500:]


def test_an_encrypted_key_is_named_as_such(certs, tmp_path):
    subprocess.run(["openssl", "pkey", "-in", str(certs / "ec.key"), "-aes256", "-passout", "pass:x",
                    "-out", str(tmp_path / "enc.key")], check=True, capture_output=True)
    spec = f"127.0.0.1:{free_port()},{certs / 'ec.crt'},{tmp_path / 'enc.key'}"
    r = subprocess.run([BIN, "--https-socket", spec, "--wsgi-file", TLS_ENV], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and "is encrypted" in r.stderr and "openssl pkey" in r.stderr, r.stderr


# The classes of cases h2spec runs (RFC 9113), hand-written with
# hyperframe and hpack, since h2spec is not packaged here: each broken
# frame ends the connection with the error code the RFC names (or, for a
# malformed request, resets its stream), and the server serves on.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frames(port, frames, preface=PREFACE, timeout=10):
    """Sends the preface, an empty SETTINGS, then `frames` (objects or raw
    bytes); returns every frame the server sent until it closed or went
    quiet for a second after a GOAWAY."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = preface + hyperframe.frame.SettingsFrame(0).serialize()
    out += b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames)
    try:
        sock.sendall(out)
    except (BrokenPipeError, ConnectionResetError):
        pass
    data, got = b"", []
    sock.settimeout(timeout)
    try:
        while chunk := sock.recv(65536):
            new, data = take_frames(data + chunk)
            got += new
            if any(isinstance(f, hyperframe.frame.GoAwayFrame) for f in new):
                sock.settimeout(1)
    except (ConnectionResetError, TimeoutError, socket.timeout):
        pass
    finally:
        sock.close()
    return got


def h2c_served(url):
    """The HTTP version and status of a request over h2c (curl's `fetch`
    gives the version only, whatever the status)."""
    return subprocess.run(["curl", "-sS", "--max-time", "20", "--http2-prior-knowledge", "-o", "/dev/null",
                           "-w", "%{http_version} %{http_code}", url], capture_output=True, text=True).stdout


def goaway_code(frames):
    codes = [f.error_code for f in frames if isinstance(f, hyperframe.frame.GoAwayFrame)]
    return codes[-1] if codes else None


def headers_block(headers):
    import hpack
    return hpack.Encoder().encode(headers)


GET = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "localhost")]
PROTOCOL_ERROR, FRAME_SIZE_ERROR = 0x1, 0x6
# A frame the h2 crate cannot load (a SETTINGS or PING of the wrong size, a
# window over 2^31 - 1, a header block HPACK cannot decode) ends the
# connection as the RFC says, but always with PROTOCOL_ERROR, where h2spec
# expects FRAME_SIZE_ERROR, FLOW_CONTROL_ERROR or COMPRESSION_ERROR: the
# error is the same, its code less precise (docs/tls-http2.md).
H2_LOAD_ERROR = PROTOCOL_ERROR


def raw_frame(kind, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


H2SPEC_CONNECTION_ERRORS = {
    # 3.4: a preface that is not HTTP/2's.
    "3.4 invalid preface": ([hyperframe.frame.HeadersFrame(1, headers_block(GET), flags=["END_HEADERS", "END_STREAM"])],
                            b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", None),
    # 4.2: a DATA frame over SETTINGS_MAX_FRAME_SIZE (16,384 until changed).
    "4.2 frame too large": ([hyperframe.frame.HeadersFrame(1, headers_block(GET), flags=["END_HEADERS"]),
                             raw_frame(0x0, 0x1, 1, b"x" * 16385)], PREFACE, FRAME_SIZE_ERROR),
    # 5.1.1: a client opens an even-numbered stream.
    "5.1.1 even stream id": ([hyperframe.frame.HeadersFrame(2, headers_block(GET),
                                                            flags=["END_HEADERS", "END_STREAM"])],
                             PREFACE, PROTOCOL_ERROR),
    # 5.1.1: a stream id lower than one already opened.
    "5.1.1 stream id going down": ([hyperframe.frame.HeadersFrame(5, headers_block(GET),
                                                                  flags=["END_HEADERS", "END_STREAM"]),
                                    hyperframe.frame.HeadersFrame(3, headers_block(GET),
                                                                  flags=["END_HEADERS", "END_STREAM"])],
                                   PREFACE, PROTOCOL_ERROR),
    # 6.5: a SETTINGS ACK with a payload.
    "6.5 settings ack with payload": ([raw_frame(0x4, 0x1, 0, b"\x00\x03\x00\x00\x00\x64")], PREFACE,
                                      H2_LOAD_ERROR),
    # 6.5.2: SETTINGS_ENABLE_PUSH other than 0 or 1.
    "6.5.2 enable push 2": ([raw_frame(0x4, 0x0, 0, b"\x00\x02\x00\x00\x00\x02")], PREFACE, PROTOCOL_ERROR),
    # 6.5.2: SETTINGS_INITIAL_WINDOW_SIZE over 2^31 - 1.
    "6.5.2 window too large": ([raw_frame(0x4, 0x0, 0, b"\x00\x04\x80\x00\x00\x00")], PREFACE,
                               H2_LOAD_ERROR),
    # 6.5.2: SETTINGS_MAX_FRAME_SIZE under 16,384.
    "6.5.2 max frame size too small": ([raw_frame(0x4, 0x0, 0, b"\x00\x05\x00\x00\x10\x00")], PREFACE,
                                       PROTOCOL_ERROR),
    # 6.7: a PING whose payload is not 8 bytes.
    "6.7 ping of 6 bytes": ([raw_frame(0x6, 0x0, 0, b"\x00" * 6)], PREFACE, H2_LOAD_ERROR),
    # 6.9: a WINDOW_UPDATE of 0 on the connection.
    "6.9 window update of 0": ([raw_frame(0x8, 0x0, 0, b"\x00\x00\x00\x00")], PREFACE, PROTOCOL_ERROR),
    # 6.10: a CONTINUATION with no HEADERS before it.
    "6.10 stray continuation": ([raw_frame(0x9, 0x4, 1, headers_block(GET))], PREFACE, PROTOCOL_ERROR),
    # 4.3: a header block the HPACK decoder cannot read.
    "4.3 broken hpack": ([raw_frame(0x1, 0x5, 1, b"\xff\xff\xff\xff\xff\xff")], PREFACE, H2_LOAD_ERROR),
}


@pytest.mark.parametrize("case", list(H2SPEC_CONNECTION_ERRORS))
def test_h2spec_connection_errors(serve, case):
    frames, preface, code = H2SPEC_CONNECTION_ERRORS[case]
    s = serve("--wsgi-file", TLS_ENV)
    got = h2_frames(s.port, frames, preface=preface)
    if code is None:
        # A connection that never was HTTP/2: closed, nothing served.
        assert not any(isinstance(f, hyperframe.frame.HeadersFrame) for f in got), got
    else:
        assert goaway_code(got) == code, (case, got)
    assert h2c_served(s.url + "/") == "2 200"


@pytest.mark.parametrize("headers", [
    [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "localhost"), ("Upper", "x")],
    [*GET, ("connection", "keep-alive")],
    [(":method", "GET"), ("x-a", "1"), (":path", "/"), (":scheme", "http"), (":authority", "localhost")],
    [(":method", "GET"), (":scheme", "http"), (":authority", "localhost")],
    [*GET, ("te", "gzip")],
], ids=["uppercase name", "connection header", "pseudo-header after a field", "no :path", "te other than trailers"])
def test_h2spec_malformed_requests_are_never_served(serve, headers):
    """8.2 and 8.3: a malformed request is a stream error (RST_STREAM
    PROTOCOL_ERROR) or a 400, and never reaches the app."""
    s = serve("--wsgi-file", TLS_ENV)
    block = headers_block(headers)
    got = h2_frames(s.port, [hyperframe.frame.HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]),
                             hyperframe.frame.PingFrame(0, opaque_data=b"12345678")], timeout=3)
    resets = [f for f in got if isinstance(f, hyperframe.frame.RstStreamFrame) and f.stream_id == 1]
    answered = [f for f in got if isinstance(f, hyperframe.frame.HeadersFrame) and f.stream_id == 1]
    assert resets or goaway_code(got) == PROTOCOL_ERROR or answered, got
    if resets:
        assert resets[0].error_code == PROTOCOL_ERROR
    for f in answered:
        import hpack
        status = dict(hpack.Decoder().decode(f.data))[":status"]
        assert status.startswith("4"), status
    assert h2c_served(s.url + "/") == "2 200"


def test_continuation_flood_and_hpack_bomb_are_cut_off(serve):
    """A header block that never ends (CONTINUATION frames without
    END_HEADERS) and an HPACK bomb (one 4 KB field indexed, then named
    10,000 times: 40 MB decoded from 14 KB) are refused without the server
    holding them, and it serves on."""
    s = serve("--wsgi-file", TLS_ENV, "--processes", "1")
    worker = s.wait_workers(1)[0]
    before = s.rss_kb(pid=worker)
    junk = headers_block([("x-flood", "y" * 1000)])
    flood = [hyperframe.frame.HeadersFrame(1, headers_block(GET), flags=[])]
    flood += [raw_frame(0x9, 0x0, 1, junk) for _ in range(5000)]
    got = h2_frames(s.port, flood)
    assert goaway_code(got) not in (None, 0) or not got or any(
        isinstance(f, hyperframe.frame.RstStreamFrame) for f in got), got
    import hpack
    first = hpack.Encoder().encode([*GET, ("x-bomb", "a" * 4000)])
    # The bomb field is the newest entry of the dynamic table: index 62.
    bomb = first + b"\xbe" * 10000
    got = h2_frames(s.port, [hyperframe.frame.HeadersFrame(1, bomb, flags=["END_HEADERS", "END_STREAM"])])
    statuses = [dict(hpack.Decoder().decode(f.data)).get(":status") for f in got
                if isinstance(f, hyperframe.frame.HeadersFrame)]
    assert "200" not in statuses, statuses
    assert h2c_served(s.url + "/") == "2 200"
    assert s.rss_kb(pid=worker) - before < 20_000, "the worker held what it was sent"


@pytest.mark.parametrize("query", ["", "?bad"])
def test_asgi_trailers_over_http2(serve, tmp_path, query):
    """Over HTTP/2 the scope always offers http.response.trailers, and they
    go out as a HEADERS frame ending the stream; fields no trailer may
    carry (upgrade, content-length, te) are left out, rather than reset
    the stream."""
    s = serve("--home", str(VENV), "--chdir", str(APPS), "--module", "asgi_raw:app", "--processes", "1",
              env={"ASGI_MARKERS": str(tmp_path)})
    c = H2Client(s.port)
    sid = c.get("/trailers" + query)
    body, trailers = b"", None
    deadline = time.monotonic() + 10
    while trailers is None and time.monotonic() < deadline:
        events = c.events()
        assert events is not None, "the connection ended"
        for e in events:
            assert not isinstance(e, h2.events.StreamReset), e
            if isinstance(e, h2.events.DataReceived):
                body += e.data
            elif isinstance(e, h2.events.TrailersReceived):
                assert e.stream_id == sid
                trailers = dict(e.headers)
    assert body == b"offered=1;end"
    assert trailers == {b"x-checksum": b"abc123", b"x-count": b"2"}, trailers


def test_pending_http2_requests_are_bounded_across_connections(serve, app_dir):
    """--http2-max-pending: past the worker's bound, counted over all its
    HTTP/2 connections, a new stream is answered 503 with Retry-After at
    once, and counted in the stats and metrics; the ones within it are
    served, and the bound frees as they end."""
    # On Python threads, so that the event loop reads the other
    # connections while the app sleeps.
    sp = free_port()
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--threads", "2",
              "--http2-max-pending", "2", "--stats", f"127.0.0.1:{sp}", "--stats-http")
    assert requests.get(f"http://127.0.0.1:{sp}/", timeout=10).json()["http2_streams_refused"] == 0
    a, b = H2Client(s.port), H2Client(s.port)
    slow = [a.get("/sleep?2"), b.get("/sleep?2")]
    time.sleep(0.5)
    c = H2Client(s.port)
    c.get("/")
    refused = c.until(h2.events.ResponseReceived)
    headers = dict(refused.headers)
    assert headers[b":status"] == b"503" and headers[b"retry-after"] == b"1", headers
    assert requests.get(f"http://127.0.0.1:{sp}/", timeout=10).json()["http2_streams_refused"] == 1
    assert "oxgate_http2_streams_refused_total 1\n" in requests.get(f"http://127.0.0.1:{sp}/metrics", timeout=10).text
    for client, sid in zip((a, b), slow):
        answered = client.until(h2.events.ResponseReceived)
        assert answered.stream_id == sid and dict(answered.headers)[b":status"] == b"200"
    # Both slow ones are done: a new stream is served again.
    wait_for(lambda: h2c_served(s.url + "/") == "2 200", what="a stream served again")


def test_an_upload_its_app_has_not_read_yet_does_not_hold_up_the_others(serve, tmp_path):
    """HTTP/2: a stream whose app has not read its body holds its own
    window of the connection's, no more; another stream's upload on the
    same connection goes on (it waited, then got 408)."""
    import h2.config
    import h2.connection
    import h2.events
    (tmp_path / "up.py").write_text(
        "import time\n"
        "def application(environ, start_response):\n"
        "    time.sleep(float(environ['QUERY_STRING'] or 0))\n"
        "    n = len(environ['wsgi.input'].read())\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [str(n).encode()]\n")
    s = serve("--wsgi-file", str(tmp_path / "up.py"), "--processes", "1", "--threads", "4")
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    sock.sendall(c.data_to_send())
    sent = {1: 0, 3: 0}

    def push(sid, total):
        while (n := min(c.local_flow_control_window(sid), c.max_outbound_frame_size, total - sent[sid])) > 0:
            c.send_data(sid, b"x" * n, end_stream=sent[sid] + n >= total)
            sent[sid] += n
        if out := c.data_to_send():
            sock.sendall(out)

    def pump(seconds):
        events, until = [], time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                break
            assert data, "the server closed the connection"
            events += c.receive_data(data)
            if out := c.data_to_send():
                sock.sendall(out)
        return events

    def post(sid, path, size):
        c.send_headers(sid, [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "x"),
                             ("content-length", str(size))])
        sock.sendall(c.data_to_send())

    with sock:
        pump(0.2)
        # A: 3 MB to an app that reads it in 4 s.
        post(1, "/a?4", 3_000_000)
        started = time.monotonic()
        while time.monotonic() - started < 1:
            push(1, 3_000_000)
            pump(0.05)
        # B: 50 kB to an app that reads it at once.
        post(3, "/b", 50_000)
        answered = None
        while answered is None and time.monotonic() - started < 3.5:
            push(3, 50_000)
            for e in pump(0.1):
                if isinstance(e, h2.events.ResponseReceived) and e.stream_id == 3:
                    answered = dict(e.headers)[b":status"]
        assert answered == b"200", (answered, sent)


def test_uploads_waiting_for_the_app_thread_do_not_stall_the_one_it_reads(serve, tmp_path):
    """HTTP/2: eight 8 MB uploads at once on one connection to a worker
    with one app thread. Those waiting for the thread each hold a
    stream's window; four of them held the whole connection's, and the
    upload the app was reading stalled (h2load finished nothing)."""
    (tmp_path / "count.py").write_text(
        "def application(environ, start_response):\n"
        "    n = len(environ['wsgi.input'].read())\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [str(n).encode()]\n")
    (tmp_path / "big").write_bytes(b"x" * 8_000_000)
    s = serve("--wsgi-file", str(tmp_path / "count.py"), "--processes", "1")
    r = subprocess.run(["h2load", "-d", str(tmp_path / "big"), "-n", "12", "-c", "1", "-m", "8", "-N", "10",
                        s.url + "/"], capture_output=True, text=True, timeout=60)
    assert "12 succeeded, 0 failed, 0 errored, 0 timeout" in r.stdout, r.stdout + r.stderr
    assert s.log().count("POST / => generated 7 bytes") == 12


def test_plain_http_sent_to_the_https_port_gets_a_400_that_says_so(serve, certs):
    """As nginx answers it, rather than a TLS alert that curl shows as
    "Received HTTP/0.9"; TLS clients on the same port are served."""
    s = https(serve, certs)
    r = requests.get(f"http://127.0.0.1:{s.tls_port}/", timeout=10)
    assert (r.status_code, r.text) == (400, "The plain HTTP request was sent to HTTPS port\n")
    out, _ = fetch(s.tls_url + "/", certs=certs)
    assert json.loads(out)["HTTPS"] == "on"
