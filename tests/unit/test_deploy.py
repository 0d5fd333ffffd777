"""`fiberwatch deploy`: site list, password hashes, ACLs, broker configs, the CLI."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from fiberwatch.cli import main
from fiberwatch.deploy import acl, broker_conf, generate, passwd
from fiberwatch.deploy.spec import (
    CLOUD_USERS,
    SERVICE_UNITS,
    Sizing,
    SpecError,
    load_spec,
    parse_spec,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "mosquitto"
SPEC = {"cloud": {"host": "cloud.example"},
        "site": [{"name": "s1", "host": "site.example", "gateways": ["a", "b"]}]}


def test_password_hash_is_mosquittos_format() -> None:
    line = passwd.hash_password("pw", salt=b"\x00" * 12)
    assert line.startswith("$7$101$AAAAAAAAAAAAAAAA$") and passwd.verify("pw", line)
    assert not passwd.verify("other", line) and not passwd.verify("pw", "$6$x$y$z")


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="no mosquitto_passwd")
def test_a_mosquitto_passwd_line_verifies(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(f), "u", "s3cret"], check=True)
    assert passwd.verify("s3cret", f.read_text().strip().split(":", 1)[1])


def test_a_gateway_may_touch_only_its_own_topics() -> None:
    spec = parse_spec(SPEC)
    text = acl.site_acl(spec.sites[0])
    block = text.split("user s1.a\n")[1].split("\n\n")[0]
    assert all("fiberwatch/v1/s1/a/" in line for line in block.splitlines())
    assert "topic write fiberwatch/v1/s1/a/events" in block
    assert "topic read fiberwatch/v1/s1/a/model" in block
    assert "topic write fiberwatch/v1/s1/a/model\n" not in block + "\n" and "#" not in block
    bridge = acl.cloud_acl(spec).split("user bridge.s1\n")[1]
    assert "fiberwatch/v1/s1/+/events" in bridge and "/s2/" not in bridge


def test_bad_site_lists_are_refused(tmp_path: Path) -> None:
    for bad in ({"site": []}, {"site": [{"name": "a/b", "gateways": ["g"]}]},
                {"site": [{"name": "s", "gateways": []}]},
                {"site": [{"name": "s", "gateways": ["g", "g"]}]},
                {"site": [{"name": "s", "gateways": ["g"]}, {"name": "s", "gateways": ["h"]}]},
                {"site": [{"name": "s", "gateways": ["g"], "port": 0}]},
                {**SPEC, "sizing": {"health_interval_s": 0}}, {**SPEC, "sizing": {"x": 1}}):
        with pytest.raises((ValueError, TypeError)):
            parse_spec(bad)
    f = tmp_path / "sites.toml"
    f.write_text("[[site]]\nname = 's'\n")
    with pytest.raises(SpecError, match="sites.toml"):
        load_spec(f)


def test_queues_hold_a_day_of_messages() -> None:
    n = broker_conf.queue_limit(Sizing(health_interval_s=5, events_per_gateway_day=5000), 3)
    assert n >= 3 * (86400 // 5 + 5000) and n % 10000 == 0


def test_the_shipped_templates_are_what_the_generator_writes(tmp_path: Path) -> None:
    sites = SHIPPED / "sites.example.toml"
    assert main(["deploy", "acl", "--sites", str(sites), "--out", str(tmp_path)]) == 0
    assert main(["deploy", "broker", "--template", "--sites", str(sites), "--out",
                 str(tmp_path)]) == 0
    for rel in ("cloud/acl", "cloud/mosquitto.conf", "site-demo/acl",
                "site-demo/mosquitto.conf"):
        assert (SHIPPED / rel).read_text() == (tmp_path / rel).read_text(), rel
    conf = (SHIPPED / "site-demo" / "mosquitto.conf").read_text()
    for line in ("allow_anonymous false", "use_username_as_clientid true", "persistence true",
                 "cleansession false", "bridge_cafile", "topic fiberwatch/v1/demo/+/events out 1",
                 f"remote_password {broker_conf.SECRET_PLACEHOLDER}"):
        assert line in conf
    assert not list(SHIPPED.rglob("*.key")) and not list(SHIPPED.rglob("passwd"))


def test_deploy_all_writes_private_files_and_keeps_secrets(tmp_path: Path) -> None:
    sites = tmp_path / "sites.toml"
    sites.write_text('[[site]]\nname = "s1"\ngateways = ["a"]\n')
    out = tmp_path / "out"
    argv = ["deploy", "all", "--sites", str(sites), "--out", str(out)]
    assert main(argv) == 0
    lay = generate.Layout(out)
    private = [lay.ca.key, out / "site-s1" / "passwd", out / "site-s1" / "mosquitto.conf",
               out / "site-s1" / "certs" / "server.key", lay.client_dir("s1.a") / "password"]
    for f in private:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    pw, ca = lay.password("s1.a"), lay.ca.cert.read_bytes()
    users = [line.split(":")[0] for line in (out / "site-s1" / "passwd").read_text().split()]
    assert users == ["s1.a", "s1.a.raw", "s1.a.interrogator"]
    assert passwd.verify(pw, (out / "site-s1" / "passwd").read_text().split()[1].split(":")[1])
    assert lay.password("bridge.s1") in (out / "site-s1" / "mosquitto.conf").read_text()
    assert main(argv) == 0  # again: nothing installed changes
    assert lay.password("s1.a") == pw and lay.ca.cert.read_bytes() == ca
    assert main([*argv, "--rotate"]) == 0
    assert lay.password("s1.a") != pw and lay.ca.cert.read_bytes() != ca


def test_deploy_creds_names_each_service_units_login(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Every cloud service with a shipped unit (alerting, labels): its login is written, the
    command says where its password goes, and the unit reads it from there as that login."""
    sites = tmp_path / "sites.toml"
    sites.write_text('[[site]]\nname = "s1"\ngateways = ["a"]\n')
    out = tmp_path / "out"
    assert main(["deploy", "creds", "--sites", str(sites), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    lay = generate.Layout(out)
    assert set(SERVICE_UNITS) == {"alerting", "labels"} <= set(CLOUD_USERS)
    for user, unit in SERVICE_UNITS.items():
        target = f"/etc/fiberwatch/mqtt/{user}.password"
        assert f"{lay.client_dir(user) / 'password'} -> {target} ({unit})" in said
        assert lay.password(user)
        text = (ROOT / "deploy" / "systemd" / unit).read_text()
        assert f"LoadCredential=mqtt.password:{target}\n" in text
        assert f" --mqtt-username {user} " in text
    users = [ln.split(":")[0] for ln in (out / "cloud" / "passwd").read_text().split()]
    assert "labels" in users


def test_deploy_broker_before_creds_is_a_usage_error(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    sites = tmp_path / "sites.toml"
    sites.write_text('[[site]]\nname = "s1"\ngateways = ["a"]\n')
    assert main(["deploy", "broker", "--sites", str(sites), "--out", str(tmp_path / "o")]) == 2
    assert "deploy creds" in capsys.readouterr().err


def test_the_alerting_login_reads_events_and_writes_only_alerts() -> None:
    spec = parse_spec(SPEC)
    text = acl.cloud_acl(spec)
    block = text.split("user alerting\n")[1].split("\n\n")[0].splitlines()
    assert block == ["topic read fiberwatch/v1/+/+/events", "topic write fiberwatch/v1/alerts/#"]
    viewer = text.split("user viewer\n")[1].split("\n\n")[0].splitlines()
    assert "topic read fiberwatch/v1/alerts/#" in viewer
    assert not any(line.startswith("topic write") for line in viewer)
    assert "alerting" in generate.client_groups(spec)  # its password, certificate and folder
    assert acl.alerting_rules() in acl.single_acl(spec)  # the demo's broker has it too


def test_ingest_workers_get_logins_that_read_only_feature_summaries(tmp_path: Path) -> None:
    sites = tmp_path / "sites.toml"
    sites.write_text('[[site]]\nname = "s1"\ngateways = ["a"]\n')
    out = tmp_path / "out"
    assert main(["deploy", "all", "--sites", str(sites), "--out", str(out),
                 "--ingest-workers", "2"]) == 0
    lay = generate.Layout(out)
    users = [ln.split(":")[0] for ln in (out / "cloud" / "passwd").read_text().split()]
    assert {"ingest", "ingest-f1", "ingest-f2"} <= set(users) and "ingest-f3" not in users
    assert len({lay.password(u) for u in ("ingest", "ingest-f1", "ingest-f2")}) == 3
    assert (lay.client_dir("ingest-f2") / "client.crt").is_file()
    text = (out / "cloud" / "acl").read_text()
    block = text.split("user ingest-f1\n", 1)[1].split("\n\n", 1)[0]
    assert block == "topic read fiberwatch/v1/+/+/features/+"
    # the site list can say it too; a bad count is refused
    spec = parse_spec({**SPEC, "cloud": {"host": "c", "ingest_workers": 3}})
    assert "user ingest-f3\n" in acl.cloud_acl(spec)
    with pytest.raises(ValueError, match="ingest_workers"):
        parse_spec({**SPEC, "cloud": {"host": "c", "ingest_workers": -1}})
