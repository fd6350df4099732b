"""Every stage on a user's own files (not the instruction world): their own tokenizer, with no judge and with
a judge module they wrote, comparisons from a pairwise file or collected by their own labeler, and GPT-2
weights from a local folder."""

import json
import random
import statistics

import pytest

import train_ppo
import train_rm
import train_sft
from minigpt_rlhf import tokenizer as tokmod
from minigpt_rlhf.checkpoint import load_checkpoint, model_from_checkpoint
from minigpt_rlhf.comparisons import split_comparisons
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.data import DataError
from minigpt_rlhf.judge import is_world_prompt
from minigpt_rlhf.tokenizer import get_tokenizer

pytestmark = pytest.mark.slow  # every stage on the user's own files, end to end

WORDS = ["apple", "river", "candle", "garden", "pencil", "window", "marble", "lantern", "violin", "pepper",
         "café", "naïve", "東京", "größe"]


def task(rng: random.Random) -> tuple[str, str, str]:
    """(prompt, a good response, a bad response) of an ordinary instruction."""
    w, a, b = rng.choice(WORDS), rng.randint(1, 50), rng.randint(1, 50)
    return rng.choice([
        (f"Spell the word {w} backwards.", f"{w[::-1]}", f"{w}"),
        (f"How many letters are in the word {w}?", f"There are {len(w)} letters.", "Many letters."),
        (f"Add {a} and {b}.", f"{a + b}.", f"{a * b}."),
        (f"Write the word {w} in capital letters.", w.upper(), w.lower()),
    ])


def write_user_dataset(folder, seed: int = 0, corpus: bool = True):
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def jsonl(name, rows):
        (folder / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

    tasks = [task(rng) for _ in range(140)]
    jsonl("sft_train.jsonl", [{"prompt": p, "response": good} for p, good, _ in tasks[:60]])
    jsonl("sft_val.jsonl", [{"prompt": p, "response": good} for p, good, _ in tasks[60:70]])
    jsonl("eval_prompts.jsonl", [{"prompt": p} for p, _, _ in tasks[70:78]])
    jsonl("ppo_prompts.jsonl", [{"prompt": p} for p, _, _ in tasks[78:108]])
    jsonl("rm_prompts.jsonl", [{"prompt": p} for p, _, _ in tasks[108:120]])
    jsonl("comparisons.jsonl", [{"prompt": p, "chosen": good, "rejected": bad} for p, good, bad in tasks[120:140]])
    if corpus:  # no corpus_val.txt: it is optional
        docs = [f"The word {w} has {len(w)} letters. Backwards it reads {w[::-1]}. In capitals: {w.upper()}."
                for w in WORDS] + [f"{a} plus {b} is {a + b}." for a in range(1, 40, 3) for b in range(1, 40, 7)]
        (folder / "corpus_train.txt").write_text("\n\n".join(docs * 3) + "\n", encoding="utf-8")
    return [p for p, _, _ in tasks]


JUDGE_SOURCE = '''
import json

def score(prompt, response):
    """How many distinct vowels the response uses, out of five; each call is recorded next to this file."""
    s = len(set(response.lower()) & set("aeiou")) / 5
    with open(__file__ + ".calls", "a", encoding="utf-8") as f:
        f.write(json.dumps([prompt, response, s]) + "\\n")
    return s
'''


def vowels(response: str) -> float:  # the judge's formula, written again
    return sum(v in response.lower() for v in "aeiou") / 5


def run(script, args):
    return script.main(parse_config(script.Config, args + ["--preset=tiny", "--device=cpu"], script.PRESETS))


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    prompts = write_user_dataset(root / "data")
    bpe = root / "mine.bpe"
    tokmod.main([str(root / "data" / "corpus_train.txt"), str(root / "data" / "sft_train.jsonl"),
                 f"--out={bpe}", "--vocab_size=400"])
    (root / "my_judge.py").write_text(JUDGE_SOURCE)
    common = [f"--data_dir={root / 'data'}", f"--tokenizer={bpe}"]
    results = {}
    # without a judge; the RM trains on the pairwise file
    out = root / "none"
    results["none"] = (out, [run(train_sft, common + [f"--out_dir={out}", "--judge=none"]),
                             run(train_rm, common + [f"--out_dir={out}", "--judge=none",
                                                     f"--comparisons={root / 'data' / 'comparisons.jsonl'}"]),
                             run(train_ppo, common + [f"--out_dir={out}", "--judge=none"])])
    # the user's judge, which also labels the comparisons train_rm.py collects on rm_prompts.jsonl
    out, judge = root / "judged", f"--judge={root / 'my_judge.py'}:score"
    sft = run(train_sft, common + [f"--out_dir={out}", judge])
    rm = run(train_rm, common + [f"--out_dir={out}", judge, f"--labeler={root / 'my_judge.py'}:score"])
    calls_before_ppo = len((root / "my_judge.py.calls").read_text().splitlines())
    ppo = run(train_ppo, common + [f"--out_dir={out}", judge])
    results["judged"] = (out, [sft, rm, ppo])
    return root, prompts, bpe, results, calls_before_ppo


def test_the_dataset_is_not_the_world(user):
    _, prompts, _, _, _ = user
    assert not any(is_world_prompt(p) for p in prompts)


@pytest.mark.parametrize("variant", ["none", "judged"])
def test_every_stage_writes_its_checkpoint_and_eval(user, variant):
    _, _, _, results, _ = user
    out, returned = results[variant]
    for stage, result in zip(("sft", "rm", "ppo"), returned):
        assert (out / stage / "model.pt").is_file()
        ev = json.loads((out / stage / "eval.json").read_text())
        assert ev["judge"] == ("none" if variant == "none" else result["judge"]) != "world"
        assert ev.keys() == {k for k in result}  # what main returns is what it wrote
    sft, rm, ppo = (json.loads((out / s / "eval.json").read_text()) for s in ("sft", "rm", "ppo"))
    assert sft["sft_val_loss"] < sft["sft_val_loss_before"]
    assert "corpus_val_loss" not in sft and "pretrain_loss_ppo" not in ppo  # no corpus_val.txt: not reported
    assert 0.0 <= rm["accuracy_vs_labels"] <= 1.0
    for key in ("rm_score_sft", "rm_score_ppo", "kl_from_sft", "eos_rate_ppo", "response_tokens_ppo",
                "rm_win_rate_vs_sft", "rm_win_rate_ci95"):
        assert key in ppo
    lo, hi = ppo["rm_win_rate_ci95"]
    assert 0.0 <= lo <= ppo["rm_win_rate_vs_sft"] <= hi <= 1.0
    log = [json.loads(line) for line in (out / "ppo" / "log.jsonl").read_text().splitlines()]
    judged = variant == "judged"
    # the tiny preset keeps the default's later rounds: they need a labeler, which only the judged RM has
    assert [row["round"] for row in log if "round" in row] == ([2] if judged else [])
    assert len(log) == 2 and {"rm_score", "kl", "response_len", "eos_rate"} <= log[0].keys()
    for key in ("gold_score_mean", "demonstration_gold_score_mean"):
        assert (key in sft) == judged
    assert ("accuracy_vs_gold" in rm) == judged and ("win_rate_vs_sft" in ppo) == judged
    assert ("gold_score" in log[0]) == judged


def test_without_a_judge_the_rm_trains_on_the_pairwise_file(user):
    root, _, _, results, _ = user
    rm = results["none"][1][1]
    n = len((root / "data" / "comparisons.jsonl").read_text().splitlines())
    n_val = max(1, int(n * train_rm.PRESETS["tiny"]["val_fraction"]))  # one pair per pairwise line
    assert (rm["n_train_prompts"], rm["n_val_prompts"], rm["n_val_pairs"]) == (n - n_val, n_val, n_val)
    assert not (results["none"][0] / "rm" / "comparisons.jsonl").exists()


def test_the_users_judge_scores_appear_in_every_report(user):
    root, _, _, results, calls_before_ppo = user
    out, (sft, rm, ppo) = results["judged"]
    demos = [json.loads(line) for line in (root / "data" / "sft_val.jsonl").read_text().splitlines()]
    assert sft["demonstration_gold_score_mean"] == pytest.approx(statistics.mean(vowels(d["response"]) for d in demos))
    calls = [json.loads(line) for line in (root / "my_judge.py.calls").read_text().splitlines()]
    assert all(s == pytest.approx(vowels(r)) for _, r, s in calls)
    # PPO's calls: 2 iterations x 8 rollouts, with round 2 between them (the labeler, the same file, ranks the
    # policy's samples; the judge scores the RM's held-out responses); the sharpening control, each temperature's
    # samples of the control prompts; the final evaluation: the base model's samples (it pretrained here, so the
    # report compares it too), SFT's, SFT's at its best temperature, PPO_R1's, PPO's; then the demonstrations (DEMOS)
    ppo_calls = calls[calls_before_ppo:]
    round_new = [json.loads(line) for line in (out / "ppo" / "round_comparisons.jsonl").read_text().splitlines()]
    rm_comparisons = [json.loads(line) for line in (out / "rm" / "comparisons.jsonl").read_text().splitlines()]
    _, val = split_comparisons(rm_comparisons, train_rm.PRESETS["tiny"]["val_fraction"], train_rm.Config.seed)
    n_round = sum(len(c["responses"]) for c in round_new + val)
    labeled = ppo_calls[8: 8 + n_round]
    assert [r for _, r, _ in labeled] == [r for c in round_new + val for r in c["responses"]]
    ppo_calls = ppo_calls[:8] + ppo_calls[8 + n_round:]
    n = ppo["n_eval_prompts"] * ppo["samples_per_prompt"]
    n_control = len(ppo["sft_temperature_scores"]) * ppo["n_control_prompts"] * ppo["samples_per_prompt"]
    demos_train = (root / "data" / "sft_train.jsonl").read_text().splitlines()
    models = ("base", "sft", "sft_best_t", "ppo_round1", "ppo")  # with rounds, PPO_R1: the policy after round 1
    assert len(ppo_calls) == 2 * 8 + n_control + len(models) * n + len(demos_train) and "gold_score_base" in ppo
    control = ppo_calls[16: 16 + n_control]
    per_t = n_control // len(ppo["sft_temperature_scores"])
    for i, score in enumerate(ppo["sft_temperature_scores"].values()):
        assert score == pytest.approx(statistics.mean(s for _, _, s in control[i * per_t: (i + 1) * per_t]))
    evaluation = ppo_calls[16 + n_control: 16 + n_control + len(models) * n]
    for i, name in enumerate(models):
        mean = statistics.mean(s for _, _, s in evaluation[i * n: (i + 1) * n])
        assert ppo[f"gold_score_{name}"] == pytest.approx(mean)
    demo_mean = statistics.mean(s for _, _, s in ppo_calls[-len(demos_train):])
    assert ppo["demonstration_gold_score_mean"] == pytest.approx(demo_mean)
    log = [json.loads(line) for line in (out / "ppo" / "log.jsonl").read_text().splitlines()]
    assert log[0]["gold_score"] == pytest.approx(statistics.mean(s for _, _, s in ppo_calls[:8]))
    lo, hi = ppo["win_rate_ci95"]
    assert 0.0 <= lo <= ppo["win_rate_vs_sft"] <= hi <= 1.0
    assert 0.0 <= rm["accuracy_vs_gold"] <= 1.0


def test_the_users_labeler_ranks_the_comparisons_train_rm_collects(user):
    root, _, _, results, _ = user
    out = results["judged"][0]
    rows = [json.loads(line) for line in (out / "rm" / "comparisons.jsonl").read_text().splitlines()]
    prompts = {json.loads(line)["prompt"] for line in (root / "data" / "rm_prompts.jsonl").read_text().splitlines()}
    assert rows and all(r["prompt"] in prompts for r in rows)
    for r in rows:
        assert sorted(r["ranking"]) == list(range(len(r["responses"]))) and len(r["responses"]) >= 2


def test_a_trained_tokenizer_round_trips_unicode_and_is_stored_in_every_checkpoint(user):
    _, _, bpe, results, _ = user
    tok = get_tokenizer(str(bpe))
    rng = random.Random(1)
    alphabet = [chr(c) for c in [*range(32, 127), *range(0xA0, 0x250), *range(0x3040, 0x30FF), *range(0x4E00, 0x4E80),
                                 *range(0x1F600, 0x1F650), 0x0301, 0x200D, 0xFEFF, 0x0A, 0x09]]
    for _ in range(50):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
        assert tok.decode(tok.encode(text)) == text
    assert tok.identity() != get_tokenizer().identity()
    for variant in ("none", "judged"):
        out = results[variant][0]
        for stage in ("sft", "rm", "ppo"):
            ckpt = load_checkpoint(out / stage / "model.pt")
            assert ckpt["tokenizer"] == tok.identity()
            with pytest.raises(ValueError, match="tokenizer mismatch"):
                model_from_checkpoint(ckpt, get_tokenizer(), where=str(out / stage / "model.pt"))


def test_a_file_only_some_runs_need_is_required_only_then(tmp_path):
    write_user_dataset(tmp_path / "data", corpus=False)
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"--corpus: .*corpus_train.txt not found \(pretraining"):
        run(train_sft, [f"--data_dir={tmp_path / 'data'}", f"--out_dir={out}"])
    assert not out.exists()  # found before any work
    # a file given by its own option; one given but absent is an error even where it would be optional
    (tmp_path / "text.txt").write_text("Some text to pretrain on. " * 200)
    with pytest.raises(FileNotFoundError, match=r"--corpus_val: .*nowhere.txt not found"):
        run(train_sft, [f"--data_dir={tmp_path / 'data'}", f"--corpus={tmp_path / 'text.txt'}",
                        f"--corpus_val={tmp_path / 'nowhere.txt'}", f"--out_dir={out}"])
    assert not out.exists()
    # with --init_from no corpus is needed: test_gpt2_from_a_local_folder_fine_tunes_on_the_users_data


def test_collecting_needs_rm_prompts_and_a_labeler_for_a_users_prompts(user, tmp_path):
    root, _, bpe, results, _ = user
    sft = results["none"][0] / "sft" / "model.pt"
    common = [f"--data_dir={root / 'data'}", f"--tokenizer={bpe}", f"--sft_checkpoint={sft}", f"--out_dir={tmp_path}"]
    with pytest.raises(DataError, match="--labeler=module:function"):
        run(train_rm, common)  # --labeler=auto, and these are not world prompts
    with pytest.raises(FileNotFoundError, match="--rm_prompts: .* not found \\(collecting comparisons"):
        run(train_rm, common + [f"--rm_prompts={tmp_path / 'absent.jsonl'}"])


def test_gpt2_from_a_local_folder_fine_tunes_on_the_users_data(tmp_path):
    transformers = pytest.importorskip("transformers")
    write_user_dataset(tmp_path / "data", corpus=False)
    folder = tmp_path / "gpt2"
    # GPT-2's vocabulary files under Hugging Face's names: 256 byte symbols, a few merges, then EOS
    from tests.test_tokenizer import gpt2_byte_symbols

    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("e", "r"), ("Ġ", "w")]
    encoder = {sym: i for i, sym in enumerate(gpt2_byte_symbols())}
    for a, b in merges:
        encoder[a + b] = len(encoder)
    encoder["<|endoftext|>"] = len(encoder)
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(encoder), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    cfg = transformers.GPT2Config(vocab_size=len(encoder), n_positions=128, n_embd=32, n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(folder)
    out = tmp_path / "out"
    result = run(train_sft, [f"--data_dir={tmp_path / 'data'}", f"--out_dir={out}", f"--init_from=gpt2:{folder}",
                             f"--tokenizer=gpt2:{folder}", "--judge=none", "--lr=3e-3", "--corpus_mix=0"])
    assert result["sft_val_loss"] < result["sft_val_loss_before"]
    ckpt = load_checkpoint(out / "sft" / "model.pt")
    assert ckpt["tokenizer"] == get_tokenizer(f"gpt2:{folder}").identity()
    assert ckpt["model_config"]["n_layer"] == 2 and ckpt["model_config"]["block_size"] == 128
    assert not (out / "base").exists()  # no pretraining: it starts from the GPT-2 weights
