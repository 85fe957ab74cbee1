"""``neukonfig certs``: a deployment's certificate authority and the two sides' certificates,
for mutual TLS on the tensor link (``neukonfig.tls``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from neukonfig.errors import NeukonfigError
from neukonfig.tls import CLOUD_NAME, DEFAULT_DAYS, make_certificates


def cmd_certs(args: argparse.Namespace) -> int:
    out = Path(args.out)
    hosts = [host.strip() for host in args.cloud_hosts.split(",") if host.strip()]
    try:
        written = make_certificates(out, cloud_hosts=hosts, days=args.days)
    except FileExistsError as error:
        raise NeukonfigError(str(error)) from None
    names = ", ".join([CLOUD_NAME, *hosts])
    print(f"wrote a new CA to {written['ca']} (keep {out / 'ca-key.pem'} off both hosts)")
    print(f"  {written['cloud']}/  the cloud host's: server certificate for {names}")
    print(f"  {written['edge']}/  the edge host's: client certificate")
    print(f"valid for {args.days} days; docs/containers.md says where each directory goes")
    return 0


def add_certs_command(commands: argparse._SubParsersAction) -> None:
    certs = commands.add_parser(
        "certs", help="make the CA and certificates for mutual TLS between edge and cloud"
    )
    certs.add_argument("--out", required=True, help="a new directory for the CA and both sides")
    certs.add_argument(
        "--cloud-hosts",
        default="",
        help="comma list of the cloud host's names and addresses, also put in its certificate "
        "(for tools like curl; neukonfig itself checks the name "
        f"{CLOUD_NAME})",
    )
    certs.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity in days")
    certs.set_defaults(handler=cmd_certs)
