"""`stemsplit batch --shard K/N`: deterministic, disjoint parts that cover every file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from stemsplit.errors import UsageError
from stemsplit.plan import BatchItem, collect_inputs
from stemsplit.shards import Shard, parse_shard, relative_path, shard_items
from tests.checkpoints import make_album, tone_file


def items_of(names: list[str], root: str = "/music") -> list[BatchItem]:
    return [BatchItem(Path(root) / name, str(Path(name).parent).replace(".", ""))
            for name in names]


def test_parts_are_disjoint_cover_everything_and_balance():
    names = [f"disc{d}/track{t:02d}.flac" for d in range(3) for t in range(17)] + ["a.wav"]
    items = items_of(names)
    for count in (1, 2, 3, 7, 52, 60):
        parts = [shard_items(items, Shard(index, count)) for index in range(1, count + 1)]
        seen = [item.path for part in parts for item in part]
        assert len(seen) == len(set(seen)) == len(items)
        assert {len(part) for part in parts} <= {len(items) // count, -(-len(items) // count)}


def test_parts_do_not_depend_on_listing_order_or_mount_point():
    names = [f"cd {d}/{t:02d} song.wav" for d in range(2) for t in range(9)]
    listed = items_of(names, "/mnt/nfs/album")
    shuffled = items_of(names, "/lustre/u/album")
    random.Random(4).shuffle(shuffled)
    for index in (1, 2, 3):
        ours = [relative_path(item) for item in shard_items(listed, Shard(index, 3))]
        theirs = [relative_path(item) for item in shard_items(shuffled, Shard(index, 3))]
        assert ours == theirs
    assert [relative_path(i) for i in shard_items(listed, Shard(1, 3))][:2] == \
        ["cd 0/00 song.wav", "cd 0/03 song.wav"]  # the i-th of the sorted list: i mod 3 + 1


def test_parse_shard_accepts_k_of_n_only():
    assert parse_shard("3/8") == Shard(3, 8) and str(parse_shard(" 1 / 1 ")) == "1/1"
    for bad in ("0/4", "5/4", "1/0", "x", "1-4", "-1/4", "2/", ""):
        with pytest.raises(UsageError):
            parse_shard(bad)


def test_cli_shards_split_an_album_between_runs(run_cli, tmp_path):
    make_album(tmp_path / "album")
    every = {relative_path(item) for item in collect_inputs([str(tmp_path / "album")])}
    written: dict[str, set[str]] = {}
    for index in (1, 2):
        run = run_cli("batch", "album", "-o", "out", "--json", "--shard", f"{index}/2", "-q")
        records = [json.loads(line) for line in run.stdout.decode().splitlines()]
        written[index] = {str(Path(r["input"]).relative_to("album").as_posix()) for r in records}
        assert run.returncode == (1 if "broken.mp3" in written[index] else 0), run.stderr
    assert written[1].isdisjoint(written[2]) and written[1] | written[2] == every
    assert len(list((tmp_path / "out" / "htdemucs").rglob("*.wav"))) == 4 * 4


def test_cli_shard_errors_and_an_empty_part(run_cli, tmp_path):
    tone_file(tmp_path / "one" / "a.wav")
    bad = run_cli("batch", "one", "--shard", "4/3")
    assert bad.returncode == 2 and bad.stderr.decode().startswith("error: --shard 4/3")
    empty = run_cli("batch", "one", "-o", "out", "--shard", "2/3")
    assert empty.returncode == 0 and b"shard 2/3: no files" in empty.stderr
    assert not (tmp_path / "out").exists() and empty.stdout == b""
