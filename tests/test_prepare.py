"""`explorer prepare` is reproducible, seeded, and every run names the weights it started from."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from explorer.model.load import ModelLoadError, model_fingerprint
from explorer.prepare import tiny
from explorer.prepare.specs import resolve_spec

pytestmark = pytest.mark.integration

#: a preparation of a few steps: the same code path as the real one, in seconds
SHORT = dict(base_steps=12, aligned_steps=6, warmup=3)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_same_seed_gives_identical_weights_and_a_recorded_hash(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    infos = []
    for root in ("a", "b"):
        monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / root))
        paths = tiny.prepare(settings=tiny.TinySettings(seed=3, **SHORT), evaluate_models=False)
        infos.append(json.loads((Path(paths["dir"]) / "prepare.json").read_text()))
        for which in ("base", "aligned"):  # the recorded hash is the file's
            assert infos[-1]["weights_sha256"][which] == _sha(Path(paths[which]) / "model.safetensors")
    assert infos[0]["weights_sha256"] == infos[1]["weights_sha256"]
    assert infos[0]["seed"] == 3 and infos[0]["threads"] == tiny.PREPARE_THREADS
    assert torch.get_num_threads() == threads                 # the caller's setting is restored
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_seed_is_part_of_the_cache_key_and_of_the_initialisation(tmp_path):
    from explorer.data.sample import sample_data_dir

    d = sample_data_dir()
    assert tiny.cache_dir_for(tiny.TinySettings(seed=0), d) != tiny.cache_dir_for(tiny.TinySettings(seed=1), d)
    tok = tiny.train_tokenizer(["a b c", "d e f"])
    w0 = tiny.build_model(tok, tiny.TinySettings(seed=0)).model.embed_tokens.weight
    w1 = tiny.build_model(tok, tiny.TinySettings(seed=1)).model.embed_tokens.weight
    assert not torch.equal(w0, w1)


def test_model_spec_names_a_preparation(monkeypatch, tmp_path):
    asked = []

    def fake_prepared(data_dir=None, seed=0):  # records which preparation the spec asked for
        asked.append(seed)
        return {"base": str(tmp_path / f"b{seed}"), "aligned": str(tmp_path / f"a{seed}"), "dir": str(tmp_path)}

    monkeypatch.setattr(tiny, "ensure_prepared", fake_prepared)
    assert resolve_spec("tiny:aligned@2") == tmp_path / "a2"
    assert resolve_spec("tiny:base") == tmp_path / "b0"
    assert asked == [2, 0]
    for bad in ("tiny:aligned@x", "tiny:other", "tiny:aligned@-1"):
        with pytest.raises(ModelLoadError, match="tiny:aligned@1"):
            resolve_spec(bad)
    assert asked == [2, 0]  # a bad spec prepares nothing


def test_every_run_records_the_weights_it_started_from(short_config, tiny_paths):
    from explorer.train.recipe import run

    run_dir = run(short_config("method=sft", "optim.max_steps=1", "eval.final_n=4"))
    manifest = json.loads((run_dir / "run.json").read_text())
    fp = manifest["model_fingerprint"]
    # and the CPU its floats came from (one-thread training differs across instruction sets)
    import torch

    assert manifest["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert manifest["cpu"]["threads"] >= 1 and isinstance(manifest["cpu"]["model"], str)
    aligned = Path(tiny_paths["aligned"])
    assert fp["model_path"] == str(aligned)
    assert fp["weights_sha256"] == _sha(aligned / "model.safetensors")
    assert fp["preparation_seed"] == 0
    assert fp == model_fingerprint(aligned)


def test_concurrent_preparers_train_once(tmp_path, monkeypatch):
    """Two workers (test processes, torchrun ranks) asking for the same unprepared world: one trains,
    the other waits for it and reuses its folder instead of training into it at the same time."""
    import threading
    import time

    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path))
    calls = []

    def slow_prepare(out, paths, data_dir, settings, evaluate_models):
        calls.append(out)
        time.sleep(0.5)  # long enough for the second worker to arrive while the first trains
        (out / "prepare.json").write_text("{}")

    monkeypatch.setattr(tiny, "_prepare", slow_prepare)
    results = []
    workers = [threading.Thread(target=lambda: results.append(tiny.prepare(settings=tiny.TinySettings(seed=5))))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(calls) == 1
    assert len(results) == 2 and results[0] == results[1]
