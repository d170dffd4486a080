"""The ``course doctor`` command (the checks are in :mod:`course.doctor`).

Registered in ``course.cli`` with ``main.add_command(doctor_command)``. It needs no setting
at all: on a configuration that does not even load, it lists what is wrong and stops there.
"""

from __future__ import annotations

import ipaddress
import os

import click

from course.config import ConfigError, Settings, load_settings, unknown_variables
from course.doctor import AREAS, Finding, Level, run_checks

TITLES = {
    "config": "Configuration",
    "database": "Database",
    "smtp": "SMTP relay",
    "content": "Templates and lessons",
    "dns": "DNS (SPF, DKIM, DMARC, MX)",
}
LABELS = {Level.OK: "OK", Level.WARN: "WARNING", Level.FAIL: "PROBLEM"}
WIDTH = max(len(label) for label in LABELS.values())


def parse_nameserver(value: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` as an address and a port (53 if not given)."""
    text = value.strip()
    port_text = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r} is not IP, IP:PORT or [IPv6]:PORT")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if port_text == "":
        return address, 53
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{port_text!r} is not a port number")
    return address, int(port_text)


def _nameserver(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    if value is None:
        return None
    try:
        return parse_nameserver(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _recipient(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    local, at, domain = value.strip().rpartition("@")
    if not at or not local or "." not in domain or any(c in value for c in " <>\r\n\t"):
        raise click.BadParameter(f"{value!r} is not an email address")
    return value.strip()


def _settings() -> tuple[Settings | None, list[Finding]]:
    """The settings the command runs with: a test's (the context's ``obj``), else the
    environment's. A configuration that does not load comes back as findings."""
    from course.runtime import CourseState

    obj = click.get_current_context().find_root().obj
    if isinstance(obj, CourseState):
        return obj.settings, []
    try:
        settings = load_settings()
    except ConfigError as exc:
        return None, [
            Finding(
                "config",
                Level.FAIL,
                line,
                "correct this variable in the environment the app runs with; `course config` "
                "shows the effective settings",
            )
            for line in str(exc).splitlines()
        ]
    typos = [
        Finding(
            "config",
            Level.WARN,
            f"{name} is not a setting and is ignored",
            f"did you mean {close}?" if close else "remove it",
        )
        for name, close in unknown_variables(os.environ)
    ]
    return settings, typos


def print_findings(findings: list[Finding]) -> None:
    """Grouped by area: one line per finding, a warning's or problem's fix under it."""
    for area in AREAS:
        found = [f for f in findings if f.area == area]
        if not found:
            continue
        click.echo(TITLES[area])
        for finding in found:
            label = LABELS[finding.level]
            click.echo(f"  {label.ljust(WIDTH)}  {finding.what}")
            if finding.fix and finding.level is not Level.OK:
                indent = " " * (WIDTH + 4)
                fix = finding.fix.replace("\n", "\n" + indent + "  ")
                click.echo(f"{indent}Fix: {fix}")
        click.echo("")


@click.command("doctor")
@click.option(
    "--nameserver",
    metavar="IP[:PORT]",
    callback=_nameserver,
    help="Ask this DNS server instead of this machine's resolver (e.g. 1.1.1.1).",
)
@click.option("--no-smtp", is_flag=True, help="Do not connect to the SMTP relay.")
@click.option("--no-dns", is_flag=True, help="Do not look up SPF, DKIM, DMARC and MX records.")
@click.option(
    "--to",
    "recipient",
    metavar="ADDRESS",
    callback=_recipient,
    help="Recipient of the relay's test envelope (default: postmaster@<From domain>). "
    "Nothing is sent.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 120),
    default=5.0,
    show_default=True,
    help="Seconds to wait for each answer from the network.",
)
def doctor_command(
    nameserver: tuple[str, int] | None,
    no_smtp: bool,
    no_dns: bool,
    recipient: str | None,
    timeout: float,
) -> None:
    """Check the setup: settings, database, mail relay, lessons and DNS (SPF, DKIM, DMARC,
    MX), and say how to fix each problem. Exit code 1 if there is a problem.

    The relay gets a test envelope (MAIL FROM, RCPT TO, then RSET): no mail is sent.
    """
    settings, findings = _settings()
    if settings is not None:
        findings += run_checks(
            settings,
            nameserver=nameserver[0] if nameserver else None,
            port=nameserver[1] if nameserver else 53,
            smtp=not no_smtp,
            dns=not no_dns,
            timeout=timeout,
            probe_recipient=recipient,
        )
    print_findings(findings)
    problems = sum(f.level is Level.FAIL for f in findings)
    warnings = sum(f.level is Level.WARN for f in findings)
    if settings is None:
        click.echo("The configuration does not load; nothing else was checked.")
    if problems:
        click.echo(
            f"{problems} problem(s) and {warnings} warning(s). Fix the problems, then run "
            "`course doctor` again."
        )
        click.get_current_context().exit(1)
    elif warnings:
        click.echo(f"No problems; {warnings} warning(s) worth a look.")
    else:
        click.echo("Everything checked is in order.")
