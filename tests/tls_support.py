"""A certificate authority of the test's own, and certificates it signs, made with the openssl command."""

import subprocess
from types import SimpleNamespace


def openssl(*args, cwd):
    """Run one openssl command in `cwd`."""
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(workdir, name="carweb-test-ca"):
    """A self-signed CA: (certificate, key) paths."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = workdir / f"{name}.crt", workdir / f"{name}.key"
    openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}"),
        *("-keyout", str(key), "-out", str(cert)),
        cwd=workdir,
    )
    return SimpleNamespace(cert=cert, key=key, dir=workdir)


def outside_address():
    """An IPv4 address of this machine that is not loopback (127.0.0.2, still not 127.0.0.1, without a network)."""
    result = subprocess.run(["hostname", "-I"], capture_output=True, text=True)
    found = [a for a in result.stdout.split() if "." in a and not a.startswith("127.")]
    return found[0] if found else "127.0.0.2"


def issue(ca, common_name, server=False, addresses=("127.0.0.1",)):
    """A certificate for `common_name` signed by `ca`: (certificate, key) paths (a server one names `addresses`)."""
    stem = ca.dir / common_name.replace("/", "_")
    key, csr, cert, ext = (stem.with_suffix(s) for s in (".key", ".csr", ".crt", ".ext"))
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={common_name}",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        cwd=ca.dir,
    )
    names = ",".join(f"IP:{address}" for address in addresses) + ",DNS:localhost"
    ext.write_text(f"subjectAltName={names}\n" if server else "extendedKeyUsage=clientAuth\n")
    openssl(
        *("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial"),
        *("-days", "2", "-out", str(cert), "-extfile", str(ext)),
        cwd=ca.dir,
    )
    return cert, key
