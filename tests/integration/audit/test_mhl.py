"""ASC MHL generations written into as_unit folder deliveries, read back with the
ascmhl library and checked with lxml."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import xxhash
from ascmhl.history import MHLHistory
from lxml import etree

from ketter.audit.chain import AuditChain
from ketter.config import load_config
from ketter.jobs.lease import LeaseKeeper
from ketter.jobs.runner import JobRunner
from ketter.jobs.submit import submit_path
from ketter.runtime.signals import Shutdown
from ketter.store.rows import JobRow
from ketter.store.sqlite import open_job_store

NS = "urn:ASC:MHL:v2.0"
DIR_NS = "urn:ASC:MHL:DIRECTORY:v2.0"
# The ascmhl 1.2 wheel ships no XSD and tests never fetch one: vendored from
# its sdist (tests/data/ascmhl/README.md).
XSD = str(Path(__file__).resolve().parents[2] / "data" / "ascmhl" / "ASCMHL.xsd")

FILES = {"A001C001.mov": b"a" * 4000, "sound/A001.wav": b"b" * 300,
         "reports/notes é.txt": b"c" * 10}


class Alerts:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None, str]] = []

    def notify(self, kind: str, route: str | None, message: str) -> None:
        self.sent.append((kind, route, message))


@pytest.fixture
def deliver(tmp_path: Path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    cfg = tmp_path / "ketter.yaml"
    cfg.write_text(f"""
state_dir: {tmp_path}/state
node: mhl-node
routes:
  - {{name: cam, source: in, destination: out, folders: as_unit, package_min_files: 0}}
""", encoding="utf-8")
    config = load_config(str(cfg))
    store = open_job_store(config.db_path, AuditChain(node="mhl-node"))
    alerts = Alerts()
    runner = JobRunner(config, store=store, shutdown=Shutdown(),
                       keeper=LeaseKeeper(config, Shutdown(), store=store), notifier=alerts)

    def run(folder: Path) -> JobRow:
        (result,) = submit_path(store, config, config.route("cam"), os.fsencode(folder),
                                now=1e9)
        runner.handle(result.job_id)
        return store.get_job(result.job_id)

    run.alerts = alerts  # type: ignore[attr-defined]
    run.store = store  # type: ignore[attr-defined]
    yield run
    store.close()


def make_roll(root: Path) -> Path:
    roll = root / "in" / "A001"
    for rel, data in FILES.items():
        (roll / rel).parent.mkdir(parents=True, exist_ok=True)
        (roll / rel).write_bytes(data)
    return roll


def mhl_files(folder: Path) -> list[Path]:
    return sorted((folder / "ascmhl").glob("*.mhl"))


def test_generation_1_in_a_delivered_folder(tmp_path: Path, deliver) -> None:
    job = deliver(make_roll(tmp_path))
    assert job.state == "completed", job.error
    out = tmp_path / "out" / "A001"
    (gen,) = mhl_files(out)
    assert gen.name.startswith("0001_A001_") and gen.name.endswith("Z.mhl")
    history = MHLHistory.load_from_path(str(out))
    assert history.latest_generation_number() == 1
    hash_list = history.hash_lists[0]
    assert hash_list.process_info.process == "transfer"  # the parser keeps a str
    assert hash_list.creator_info.host_name == "mhl-node"
    entries = {m.path: {e.hash_format: (e.hash_string, e.action) for e in m.hash_entries}
               for m in hash_list.media_hashes}
    assert set(entries) == set(FILES)
    for rel, data in FILES.items():
        assert entries[rel]["xxh64"] == (xxhash.xxh64(data).hexdigest(), "original")
        assert entries[rel]["xxh128"] == (xxhash.xxh3_128(data).hexdigest(), "original")

    tree = etree.parse(str(gen))
    root = tree.getroot()
    assert root.tag == f"{{{NS}}}hashlist" and root.get("version") == "2.0"
    for name in ("creatorinfo", "processinfo", "hashes"):
        assert root.find(f"{{{NS}}}{name}") is not None
    assert root.findtext(f"{{{NS}}}processinfo/{{{NS}}}process") == "transfer"
    hashes = root.findall(f"{{{NS}}}hashes/{{{NS}}}hash")
    assert len(hashes) == len(FILES)
    assert all(h.find(f"{{{NS}}}xxh64") is not None for h in hashes)
    chain_xml = etree.parse(str(out / "ascmhl" / "ascmhl_chain.xml")).getroot()
    assert chain_xml.tag == f"{{{DIR_NS}}}ascmhldirectory"
    (entry,) = chain_xml.findall(f"{{{DIR_NS}}}hashlist")
    assert entry.get("sequencenr") == "1"
    assert entry.findtext(f"{{{DIR_NS}}}path") == gen.name


def test_generation_validates_against_xsd(tmp_path: Path, deliver) -> None:
    deliver(make_roll(tmp_path))
    (gen,) = mhl_files(tmp_path / "out" / "A001")
    schema = etree.XMLSchema(etree.parse(XSD))
    schema.assertValid(etree.parse(str(gen)))


def test_existing_history_is_continued(tmp_path: Path, deliver) -> None:
    roll = make_roll(tmp_path)
    first = deliver(roll)  # stands for the camera offload's generation 1
    assert first.state == "completed", first.error
    second_source = tmp_path / "in" / "A001-again"
    shutil.copytree(tmp_path / "out" / "A001", second_source)
    job = deliver(second_source)
    assert job.state == "completed", job.error
    out = tmp_path / "out" / "A001-again"
    gens = mhl_files(out)
    assert [g.name[:5] for g in gens] == ["0001_", "0002_"]
    assert gens[1].name.startswith("0002_A001-again_")
    history = MHLHistory.load_from_path(str(out))
    assert history.latest_generation_number() == 2
    actions = {e.action for m in history.hash_lists[1].media_hashes for e in m.hash_entries}
    assert actions == {"verified"}
    assert all("ascmhl" not in m.path for m in history.hash_lists[1].media_hashes)


def test_media_that_disagrees_with_its_history_is_not_delivered(tmp_path: Path,
                                                                deliver) -> None:
    deliver(make_roll(tmp_path))
    source = tmp_path / "in" / "A002"
    shutil.copytree(tmp_path / "out" / "A001", source)
    (source / "A001C001.mov").write_bytes(b"tampered" * 10)
    job = deliver(source)
    assert job.state == "failed"
    assert "do not match their ascmhl/ history: A001C001.mov" in job.error
    assert not (tmp_path / "out" / "A002").exists()
    assert [k for k, _, _ in deliver.alerts.sent] == ["verify_mismatch", "job_failed"]
    # The route's counters (/metrics): one verify failure, one failed transfer.
    totals = {(c.route, c.name): c.value for c in deliver.store.counter_totals()}
    assert totals[("cam", "verify_failures")] == 1
    assert totals[("cam", "transfers.failed")] == 1
    assert totals[("cam", "transfers.completed")] == 1  # A001, delivered first


def test_route_option_off_writes_no_mhl(tmp_path: Path) -> None:
    cfg = tmp_path / "k.yaml"
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    cfg.write_text(f"""
state_dir: {tmp_path}/state
routes:
  - {{name: cam, source: in, destination: out, folders: as_unit, mhl: false}}
""", encoding="utf-8")
    config = load_config(str(cfg))
    store = open_job_store(config.db_path, AuditChain(node=config.node))
    try:
        runner = JobRunner(config, store=store, shutdown=Shutdown(),
                           keeper=LeaseKeeper(config, Shutdown(), store=store))
        (result,) = submit_path(store, config, config.route("cam"),
                                os.fsencode(make_roll(tmp_path)), now=1e9)
        runner.handle(result.job_id)
        assert store.get_job(result.job_id).state == "completed"
        assert not (tmp_path / "out" / "A001" / "ascmhl").exists()
    finally:
        store.close()
