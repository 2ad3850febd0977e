"""A sweep continues its finished runs after an upgrade added config keys: a key missing from a run's config.yaml
counts at its default (what the run computed with), as on --resume; a key that differs is still stale."""

from __future__ import annotations

from types import SimpleNamespace

import yaml
from conftest import tiny_tree

from fedranklite.config.files import validate
from fedranklite.study.sweep.state import _stale


def _folder_with(tmp_path, saved: dict):
    folder = tmp_path / "out" / "cell" / "seed0"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    return SimpleNamespace(output_dir=tmp_path / "out"), "cell/seed0"


def test_keys_a_newer_version_added_at_their_defaults_are_not_stale(tmp_path):
    config = validate(tiny_tree(tmp_path)).to_dict()
    older = yaml.safe_load(yaml.safe_dump(config))
    del older["training"]["proximal_mu"]  # a run made before these keys existed
    del older["training"]["logit_adjustment"]
    del older["training"]["freeze_head"]
    del older["federation"]["server_optimizer"]
    plan, folder = _folder_with(tmp_path, older)
    assert _stale(plan, SimpleNamespace(folder=folder, config=config)) == []

    changed = validate(tiny_tree(tmp_path, training={"proximal_mu": 0.1})).to_dict()
    assert _stale(plan, SimpleNamespace(folder=folder, config=changed)) == ["training.proximal_mu"]
