"""sample.py: prompts from the command line, a file or stdin; deterministic under a seed; the scores it prints are
the reward model's and the judge's, called directly."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sample
from minigpt_rlhf import world
from minigpt_rlhf.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.data import DataError, encode_prompt, read_sft
from minigpt_rlhf.model import GPT, GPTConfig, swap_unembedding
from minigpt_rlhf.reward import encode_responses, score_comparisons
from minigpt_rlhf.tokenizer import DEFAULT_BPE_PATH, get_tokenizer, save_bpe

pytestmark = pytest.mark.slow  # sample.py on a trained tiny pipeline

ROOT = Path(__file__).resolve().parent.parent
WORLD_PROMPTS = ["What is the capital of Zorvia?", "Hello. Name the capital of Vespin. Answer with one word."]
OTHER_PROMPT = "Write me a sonnet about the sea."  # not a prompt of the world: no judge


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    """out/{base,sft,ppo,rm}/model.pt of tiny random models. A large EOS embedding row makes EOS likely, so
    that many sampled responses end and get an RM score."""
    tok = get_tokenizer()
    out = tmp_path_factory.mktemp("out")
    for i, stage in enumerate(("base", "sft", "ppo")):
        torch.manual_seed(i)
        model = GPT(GPTConfig(block_size=128, vocab_size=(tok.n_vocab + 63) // 64 * 64, n_layer=1, n_head=2,
                              n_embd=32))
        with torch.no_grad():
            model.transformer.wte.weight[tok.eos_id] *= 40
        save_checkpoint(out / stage / "model.pt", model, tok, stage=stage)
        if stage == "sft":
            rm = swap_unembedding(model)
            with torch.no_grad():
                rm.lm_head.bias.fill_(0.3)
            save_checkpoint(out / "rm" / "model.pt", rm, tok, stage="rm")
    return out


def run(out_dir, capsys, *args):
    config = parse_config(sample.Config, [f"--out_dir={out_dir}", "--device=cpu", "--max_new_tokens=12", *args])
    results = sample.main(config)
    return results, capsys.readouterr().out


def test_prompts_from_a_file_and_from_stdin_give_the_same_output(out_dir, tmp_path, capsys):
    prompts = WORLD_PROMPTS
    jsonl, text = tmp_path / "prompts.jsonl", tmp_path / "prompts.txt"
    jsonl.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    text.write_text("\n".join(prompts) + "\n\n")
    args = ["--max_new_tokens=8", "--num_samples=2", "--judge=none"]  # the judge is checked below
    results, from_jsonl = run(out_dir, capsys, f"--prompt_file={jsonl}", *args)
    assert [(r["prompt"], r["model"], r["sample"]) for r in results] == [
        (p, m, j) for p in prompts for m in ("sft", "ppo") for j in range(2)]
    _, from_text = run(out_dir, capsys, f"--prompt_file={text}", *args)
    stdin = subprocess.run([sys.executable, "sample.py", f"--out_dir={out_dir}", "--device=cpu", *args],
                           input="\n".join(prompts) + "\n", capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert stdin.returncode == 0, stdin.stderr
    assert from_jsonl == from_text == stdin.stdout
    for p in prompts:
        assert f"=== {p}\n" in from_jsonl
    _, one = run(out_dir, capsys, f"--prompt={prompts[1]}", *args)
    assert one in from_jsonl  # a prompt's samples do not depend on the prompts before it


def test_samples_are_deterministic_under_a_seed(out_dir, capsys):
    args = (f"--prompt={WORLD_PROMPTS[0]}", "--num_samples=3", "--temperature=1.0")
    a, printed_a = run(out_dir, capsys, *args, "--seed=1")
    b, printed_b = run(out_dir, capsys, *args, "--seed=1")
    c, _ = run(out_dir, capsys, *args, "--seed=2")
    assert a == b and printed_a == printed_b
    assert [r["response"] for r in a] != [r["response"] for r in c]


def test_printed_scores_are_the_rm_and_the_judge_called_directly(out_dir, capsys):
    tok = get_tokenizer()
    rm = model_from_checkpoint(load_checkpoint(out_dir / "rm" / "model.pt"), tok).eval()
    results = []
    for p in WORLD_PROMPTS[:1] + [OTHER_PROMPT]:
        res, printed = run(out_dir, capsys, f"--prompt={p}", "--num_samples=4", "--temperature=1.0")
        blocks = re.split(r"^\[(?:sft|ppo) #\d\] ", printed, flags=re.M)[1:]
        assert len(blocks) == len(res) == 8
        for r, block in zip(res, blocks):
            assert block.startswith(r["response"].replace("\n", "\n    "))
            rm_printed = re.search(r"RM ([-+]\d+\.\d{4})", block)
            judge_printed = re.search(r"judge (\d\.\d{4})", block)
            if r["ended"]:
                with torch.no_grad():
                    direct = float(score_comparisons(rm, [encode_responses(tok, p, [r["response"]])], tok.pad_id,
                                                     "cpu")[0])
                assert float(rm_printed.group(1)) == pytest.approx(direct, abs=5e-5)
            else:
                assert rm_printed is None and "no EOS" in block
            if p == OTHER_PROMPT:
                assert judge_printed is None
            else:
                direct = world.gold_score(p, r["response"], eos=r["ended"])
                assert float(judge_printed.group(1)) == pytest.approx(direct, abs=5e-5)
        results += res
    ended = sum(r["ended"] for r in results)
    assert 0 < ended < len(results)  # both kinds were checked


def test_without_an_rm_or_a_judge_no_scores_are_printed(out_dir, capsys):
    results, printed = run(out_dir, capsys, f"--prompt={WORLD_PROMPTS[0]}", "--rm=none", "--judge=none")
    assert all(r["rm"] is None and r["judge"] is None for r in results)
    assert "RM " not in printed and "judge" not in printed


def test_base_model_sees_few_shot_demonstrations_in_the_sft_format(out_dir, capsys):
    tok = get_tokenizer()
    config = parse_config(sample.Config, ["--few_shot=3", "--seed=5"])
    prefix = sample.few_shot_prefix(config, tok)
    demos = {tuple(encode_prompt(tok, r["prompt"]) + tok.encode(r["response"]))
             for r in read_sft(DEFAULT_BPE_PATH.parent / "sft_train.jsonl")}
    assert prefix[-1] == tok.eos_id
    shots = [[]]
    for i in prefix[:-1]:
        shots[-1].append(i) if i != tok.eos_id else shots.append([])
    assert len(shots) == 3 and all(tuple(s) in demos for s in shots)

    results, printed = run(out_dir, capsys, f"--prompt={WORLD_PROMPTS[0]}", "--models=base,sft,ppo", "--few_shot=3")
    assert [r["model"] for r in results] == ["base", "sft", "ppo"]
    assert printed.count("[base] ") == 1
    with pytest.raises(SystemExit, match="add base to --models"):
        run(out_dir, capsys, f"--prompt={WORLD_PROMPTS[0]}", "--few_shot=3")


def test_bad_options_are_clear_errors_before_any_sampling(out_dir, capsys, tmp_path):
    ranks = get_tokenizer().ranks
    save_bpe({t: r for t, r in ranks.items() if r < len(ranks) - 1}, tmp_path / "other.bpe")  # one merge fewer
    with pytest.raises(FileNotFoundError, match=re.escape(str(out_dir / "nope" / "model.pt"))):
        run(out_dir, capsys, "--prompt=hi", f"--models=sft,{out_dir / 'nope' / 'model.pt'}")
    with pytest.raises(FileNotFoundError, match="Run `python train_sft.py`"):
        run(tmp_path, capsys, "--prompt=hi", "--models=base")
    with pytest.raises(SystemExit, match="is a reward model.*--rm="):
        run(out_dir, capsys, "--prompt=hi", f"--models={out_dir / 'rm' / 'model.pt'}")
    with pytest.raises(SystemExit, match=r"sft.*model.pt: tokenizer mismatch"):
        run(out_dir, capsys, "--prompt=hi", f"--tokenizer={tmp_path / 'other.bpe'}")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(ValueError, match=re.escape(f"{bad}:2")):
        run(out_dir, capsys, f"--prompt_file={bad}")
    with pytest.raises(SystemExit, match="--num_samples=0"):
        run(out_dir, capsys, "--prompt=hi", "--num_samples=0")
    with pytest.raises(DataError, match="^--judge=absent_judge_module:score: cannot import"):  # the option's name
        run(out_dir, capsys, "--prompt=hi", "--judge=absent_judge_module:score")
    assert "===" not in capsys.readouterr().out
