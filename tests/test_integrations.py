"""explorer inside TRL's SFTTrainer and transformers' Trainer (explorer/integrations, docs/trl.md).

- DualSelect and random through SFTTrainer decide what `explorer run` decides with the same seed and
  settings: the same keep/drop and weights at every step, the same reference refreshes, per-sample losses
  within 1e-4 -- with the recipe's optimiser (torch AdamW, no weight decay) and schedule (recipe_scheduler),
  bf16 off (TRL's SFTConfig turns it on by default). Also with gradient accumulation (the weighted mean over
  the accumulated global batch), with the plain Trainer, and under `accelerate launch` with 2 CPU processes.
- LoRA through peft_config: only the adapter trains; the run folder is complete.
- ExplorerCallback records an ordinary SFTTrainer run without changing it: the same final weights as
  the run without it; its per-sample losses give the loss the Trainer logged.
- Clear errors: packing with a method, a dataset without ids with strict.
- The README's "In your TRL script" example runs as it is.
The runs are short (64 samples, 4 steps, 2-prompt evaluations); each side uses one thread.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from explorer.runs import reader, schema

pytestmark = pytest.mark.integration

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
import _trl_run  # noqa: E402

DUALSELECT = {"warmup_steps": 1, "refresh": "every_n_steps", "refresh_every": 2, "ref_cap": 48}


def recipe_overrides(method: str, mcfg: dict) -> list[str]:
    return [f"{k}={v}" for k, v in _trl_run.SHORT.items()] + ["progress=false", f"method={method}"] + \
        [f"method.{k}={v}" for k, v in mcfg.items()]


@pytest.fixture(scope="module")
def recipe_runs(tiny_paths, tmp_path_factory):
    """`explorer run` of random and DualSelect with the settings the trainer side uses (one thread)."""
    from explorer.config import load_config
    from explorer.train.recipe import run

    out = tmp_path_factory.mktemp("recipe")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {m: run(load_config(None, [f"runs_dir={out}", *recipe_overrides(m, c)]))
                for m, c in (("random", {}), ("dualselect", DUALSELECT))}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_same_decisions(recipe_dir: Path, trainer_dir: Path, loss_tol: float = 1e-4) -> None:
    a, b = reader.decisions(recipe_dir), reader.decisions(trainer_dir)
    assert len(a) == len(b) == 64
    m = a.merge(b, on=["step", "sample_id"], suffixes=("_r", "_t"))
    assert len(m) == len(a), "the trainer's batches hold other samples than the recipe's"
    assert (m.kept_r == m.kept_t).all()
    assert (m.weight_r == m.weight_t).all()
    assert (m.loss_r - m.loss_t).abs().max() < loss_tol
    sa, sb = reader.steps(recipe_dir), reader.steps(trainer_dir)
    assert list(sa.step) == list(sb.step) == [0, 1, 2, 3]
    assert sa.lr.tolist() == pytest.approx(sb.lr.tolist(), rel=1e-9)     # the recipe's schedule, step by step
    assert sa.n_kept.tolist() == sb.n_kept.tolist()


@pytest.mark.parametrize("method", ["random", "dualselect"])
def test_sfttrainer_decides_as_explorer_run(method, recipe_runs, tmp_path, one_thread):
    trainer = _trl_run.train(str(tmp_path), method, 16, 1, DUALSELECT if method == "dualselect" else {})
    d = trainer._explorer.recipe.writer.run_dir
    m = reader.manifest(d)
    assert m["status"] == schema.STATUS_COMPLETE and m["method"] == method
    assert m["trainer"]["class"] == "trl.SFTTrainer" and m["config"]["optim"]["batch_size"] == 16
    assert_same_decisions(recipe_runs[method], d)
    if method == "dualselect":
        cols = ["refresh_id", "step", "sample_id", "selected", "rank"]
        ra, rb = reader.refreshes(recipe_runs[method]), reader.refreshes(d)
        assert len(ra) > 0 and ra["refresh_id"].nunique() >= 2
        key = ["refresh_id", "sample_id"]
        assert ra[cols].sort_values(key).reset_index(drop=True).equals(rb[cols].sort_values(key).reset_index(drop=True))
    # what the dashboard's runs page and the report scripts read
    row = reader.list_runs(tmp_path).iloc[0]
    assert row["status"] == schema.STATUS_COMPLETE and row["step"] == 4
    assert set(reader.sample_stats(d).sample_id) == set(reader.decisions(d).sample_id)
    assert sorted(reader.metrics(d).step.unique()) == [0, 4]


def test_gradient_accumulation_weights_over_the_accumulated_global_batch(recipe_runs, tmp_path, one_thread):
    # 2 micro-batches of 8: the method decides over the 16 and each micro-batch's loss divides by the global
    # Σ w -- the recipe's step on 16 samples, to float rounding of the split forward
    trainer = _trl_run.train(str(tmp_path), "random", 8, 2, {})
    assert trainer.args.gradient_accumulation_steps == 2
    assert_same_decisions(recipe_runs["random"], trainer._explorer.recipe.writer.run_dir)


def test_the_plain_trainer_decides_as_explorer_run(recipe_runs, tmp_path, tiny_paths, one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from explorer.config import load_config
    from explorer.integrations import Trainer, recipe_scheduler

    cfg = load_config(None, [f"{k}={v}" for k, v in _trl_run.SHORT.items()])
    model = AutoModelForCausalLM.from_pretrained(tiny_paths["aligned"])
    tok = AutoTokenizer.from_pretrained(tiny_paths["aligned"])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, num_train_epochs=1,
                             learning_rate=2e-4, warmup_steps=1, lr_scheduler_type="linear", seed=0, use_cpu=True,
                             report_to=[], save_strategy="no", disable_tqdm=True)
    t = Trainer(model=model, args=args, train_dataset=_trl_run.dataset_of_mix(cfg), processing_class=tok,
                optimizers=(opt, recipe_scheduler(opt, 4, 1, "linear", 0.0)), method="random",
                explorer={"runs_dir": str(tmp_path), "eval.final_n": 2, "eval.max_new_tokens": 2, "data.max_length": 64})
    t.train()
    d = t._explorer.recipe.writer.run_dir
    assert reader.manifest(d)["trainer"]["class"] == "transformers.Trainer"
    assert_same_decisions(recipe_runs["random"], d)


def test_lora_through_peft_config_trains_only_the_adapter(tmp_path, tiny_paths, one_thread):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_paths["aligned"]).state_dict()
    trainer = _trl_run.train(str(tmp_path), "dualselect", 16, 1, DUALSELECT, lora=True)
    d = trainer._explorer.recipe.writer.run_dir
    m = reader.manifest(d)
    assert m["status"] == schema.STATUS_COMPLETE and m["config"]["model"]["lora"] is True
    trained = {n: p for n, p in trainer.model.named_parameters()}
    lora = [n for n in trained if "lora_" in n]
    assert lora and all(trained[n].requires_grad for n in lora)
    assert not any(p.requires_grad for n, p in trained.items() if "lora_" not in n)
    frozen = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p
              for n, p in trained.items() if "lora_" not in n}
    assert set(frozen) <= set(base) and len(frozen) >= len(trained) - len(lora)
    assert all(torch.equal(base[n], p) for n, p in frozen.items())      # the base weights did not move
    assert any(trained[n].abs().sum() > 0 for n in lora if "lora_B" in n)   # lora_B starts at 0: it trained
    dec = reader.decisions(d)
    assert len(dec) == 64 and 0 < dec.kept.mean() < 1 and len(reader.refreshes(d)) > 0


@pytest.mark.slow
def test_accelerate_launch_with_two_cpu_processes_decides_as_one(recipe_runs, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(TESTS / "_trl_run.py"), str(tmp_path), "random", "8", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    (d,) = tmp_path.glob("trl-random-*")
    m = reader.manifest(d)
    assert m["world_size"] == 2 and m["backend"] == "gloo" and m["trainer"]["world_size"] == 2
    assert_same_decisions(recipe_runs["random"], d)
    assert not reader.decisions(d).duplicated(["step", "sample_id"]).any()


def test_the_callback_records_an_ordinary_run_without_changing_it(tmp_path, tiny_paths, one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from explorer.config import load_config
    from explorer.integrations import ExplorerCallback

    cfg = load_config(None, [f"{k}={v}" for k, v in _trl_run.SHORT.items()])
    ds = _trl_run.dataset_of_mix(cfg).remove_columns(["sample_id", "provenance"])   # an ordinary dataset

    def fine_tune(callbacks):
        model, tok = (AutoModelForCausalLM.from_pretrained(tiny_paths["aligned"]),
                      AutoTokenizer.from_pretrained(tiny_paths["aligned"]))
        args = SFTConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, num_train_epochs=1,
                         bf16=False, use_cpu=True, report_to=[], save_strategy="no", logging_steps=1,
                         disable_tqdm=True, max_length=64)
        t = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=callbacks)
        t.train()
        return t

    cb = ExplorerCallback(runs_dir=str(tmp_path / "runs"), eval={"final_n": 2, "max_new_tokens": 2})
    with_cb, without = fine_tune([cb]), fine_tune(None)
    for a, b in zip(with_cb.model.parameters(), without.model.parameters()):
        assert torch.equal(a, b)
    d = cb.recipe.writer.run_dir
    assert reader.manifest(d)["status"] == schema.STATUS_COMPLETE
    dec, steps = reader.decisions(d), reader.steps(d)
    assert len(steps) == 4 and len(dec) == 64 and dec.sample_id.nunique() == 64
    logged = [h["loss"] for h in with_cb.state.log_history if "loss" in h]
    for s, g in dec.groupby("step"):   # the Trainer's loss is the mean over the batch's supervised tokens
        assert (g.loss * g.n_tokens).sum() / g.n_tokens.sum() == pytest.approx(logged[s], rel=1e-5)
    lrs = [h["learning_rate"] for h in with_cb.state.log_history if "learning_rate" in h]
    assert steps.lr.tolist() == pytest.approx(lrs, rel=1e-9)
    samples = reader.samples(d).set_index("sample_id")
    assert set(dec.sample_id) <= set(samples.index) and samples.loc[dec.sample_id.iloc[0], "response"]
    assert sorted(reader.metrics(d).step.unique()) == [0, 4]


def test_what_cannot_work_fails_naming_the_setting(tmp_path, tiny_paths):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from explorer.integrations import SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_paths["aligned"])
    tok = AutoTokenizer.from_pretrained(tiny_paths["aligned"])
    rows = [{"prompt": f"what is {i} plus 1", "completion": str(i + 1)} for i in range(8)]

    def make(ds, explorer=None, **args):
        a = SFTConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], bf16=False, **args)
        return SFTTrainer(model=model, args=a, train_dataset=ds, processing_class=tok, method="dualselect",
                          explorer=explorer)

    with_ids = Dataset.from_list([{"sample_id": f"s{i}", **r} for i, r in enumerate(rows)])
    with pytest.raises(ValueError, match=r"SFTConfig\.packing = True .*expected packing=False"):
        make(with_ids, packing=True)
    with pytest.raises(ValueError, match=r"no sample_id or id column.*id_field"):
        make(Dataset.from_list(rows))
    t = make(Dataset.from_list(rows), explorer={"data.id_field": "none"})          # positions, when asked for
    assert [r.sample_id for r in t._explorer.records][:2] == ["row-00000", "row-00001"]
    with pytest.raises(ValueError, match=r"explorer settings optim.lr: the Trainer decides"):
        make(with_ids, explorer={"optim.lr": 1e-3})


def test_the_readme_example_runs_as_it_is(tmp_path, tiny_paths, monkeypatch, one_thread):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## In your TRL script", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md [In your TRL script]", "exec"), {"__name__": "__readme__"})
    (d,) = (tmp_path / "runs").iterdir()
    m = reader.manifest(d)
    assert m["status"] == schema.STATUS_COMPLETE and m["method"] == "dualselect"
    assert len(reader.decisions(d)) > 0
