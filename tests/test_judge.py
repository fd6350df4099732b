"""The judge and labeler interfaces (judge.py), the data-file lookup, and the report's RM score read on the
sampled token ids."""

import pytest
import torch

from minigpt_rlhf import world
from minigpt_rlhf.data import DataError, data_file, encode_prompt
from minigpt_rlhf.evaluate import response_report, rm_scores
from minigpt_rlhf.judge import is_world_prompt, load_scorer, resolve_judge, resolve_labeler
from minigpt_rlhf.model import GPT, GPTConfig, swap_unembedding
from minigpt_rlhf.tokenizer import get_tokenizer

WORLD_PROMPTS = [r["prompt"] for r in world.generate_world(seed=3, scale=0.02).splits["eval"][:5]]


def test_auto_picks_the_gold_labeler_only_when_every_prompt_is_a_world_prompt(capsys):
    assert all(is_world_prompt(p) for p in WORLD_PROMPTS) and not is_world_prompt("Add 2 and 3.")
    judge = resolve_judge("auto", WORLD_PROMPTS)
    p = WORLD_PROMPTS[0]
    assert judge.name == "world" and judge.score(p, "Yes.", False) == world.gold_score(p, "Yes.", eos=False)
    assert resolve_judge("auto", WORLD_PROMPTS + ["Add 2 and 3."]) is None
    assert resolve_judge("none", WORLD_PROMPTS) is None
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "gold labeler" in lines[0] and "1 of 6 prompts are not world prompts" in lines[1]
    assert resolve_labeler("auto", WORLD_PROMPTS).name == "world"
    with pytest.raises(DataError, match="--labeler=module:function"):
        resolve_labeler("auto", ["Add 2 and 3."])


def test_a_users_score_function_loads_from_a_file_or_a_module(tmp_path, monkeypatch):
    source = "def score(prompt, response):\n    return len(response) - len(prompt)\n"
    (tmp_path / "judges_for_test.py").write_text(source)
    by_file = resolve_judge(f"{tmp_path / 'judges_for_test.py'}:score", [])
    monkeypatch.syspath_prepend(str(tmp_path))
    by_module = resolve_labeler("judges_for_test:score", ["Add 2 and 3."])
    for scorer in (by_file, by_module):
        assert scorer.score("Add 2 and 3.", "The sum is 5.", ended=False) == 13.0 - 12.0  # the lengths, counted by hand
        assert scorer.family({"prompt": "Add 2 and 3."}) == "all"
        assert scorer.family({"prompt": "Add 2 and 3.", "family": "math"}) == "math"


@pytest.mark.parametrize("spec, message", [
    ("judges_absent_module:score", "cannot import 'judges_absent_module'"),
    ("{tmp}/j.py:nothing", "has no function 'nothing'"),
    ("{tmp}/absent.py:score", "absent.py not found"),
    ("score", "expected auto, none, module:function"),
])
def test_a_bad_judge_spec_is_a_clear_error_naming_the_option(tmp_path, spec, message):
    (tmp_path / "j.py").write_text("def score(prompt, response):\n    return 1.0\n")
    with pytest.raises(DataError, match=f"--judge=.*{message}"):
        load_scorer(spec.format(tmp=tmp_path), "judge")


def test_a_score_that_is_not_a_finite_number_is_a_clear_error(tmp_path):
    (tmp_path / "j.py").write_text("def text(prompt, response):\n    return 'good'\n"
                                   "def nan(prompt, response):\n    return float('nan')\n")
    with pytest.raises(DataError, match="must return a number, got str"):
        load_scorer(f"{tmp_path / 'j.py'}:text", "judge").score("p", "r")
    with pytest.raises(DataError, match="returned nan"):
        load_scorer(f"{tmp_path / 'j.py'}:nan", "judge").score("p", "r")


def test_response_report_averages_the_judges_scores_per_family():
    from minigpt_rlhf.judge import Scorer

    judge = Scorer("len", lambda prompt, response: float(len(response)))
    samples = [{"prompt": "a", "family": "x", "response": "12", "ended": True, "n_tokens": 2},
               {"prompt": "b", "family": "x", "response": "1234", "ended": False, "n_tokens": 5},
               {"prompt": "c", "family": "y", "response": "1", "ended": True, "n_tokens": 2}]
    rep = response_report(samples, judge)
    assert rep == {"eos_rate": 2 / 3, "mean_response_tokens": 3.0, "gold_score_mean": 7 / 3,
                   "gold_score_by_family": {"x": 3.0, "y": 1.0}}
    assert response_report(samples) == {"eos_rate": 2 / 3, "mean_response_tokens": 3.0}


def test_rm_score_is_read_on_the_sampled_ids_not_on_retokenised_text():
    tok = get_tokenizer()
    torch.manual_seed(0)
    rm = swap_unembedding(GPT(GPTConfig(block_size=64, vocab_size=tok.n_vocab, n_layer=1, n_head=2, n_embd=32))).eval()
    prompt, text = "Name a fruit.", " The banana is yellow"
    canonical = tok.encode(text)
    as_bytes = [i for ch in text.encode() for i in tok.encode(bytes([ch]).decode())]  # the same text, byte by byte
    assert tok.decode(as_bytes) == text and as_bytes != canonical
    samples = [{"prompt": prompt, "response": text, "ended": True, "response_ids": ids + [tok.eos_id]}
               for ids in (canonical, as_bytes)]
    samples.append({"prompt": prompt, "response": text, "ended": False, "response_ids": canonical})
    scores = rm_scores(rm, tok, samples)

    def direct(ids):  # one unpadded forward; the reward is the scalar at the last token, the EOS
        x = torch.tensor([encode_prompt(tok, prompt) + ids + [tok.eos_id]])
        with torch.no_grad():
            return float(rm(x)[0, -1])

    assert scores[0] == pytest.approx(direct(canonical), abs=1e-5)
    assert scores[1] == pytest.approx(direct(as_bytes), abs=1e-5) and scores[1] != pytest.approx(scores[0])
    assert scores[2] is None  # an unfinished response has no RM score


def test_a_data_file_comes_from_its_option_or_the_data_dir(tmp_path):
    class Cfg:
        data_dir, corpus, sft_train = str(tmp_path), "", ""

    (tmp_path / "sft_train.jsonl").write_text("{}\n")
    assert data_file(Cfg, "sft_train", "sft_train.jsonl", "SFT") == str(tmp_path / "sft_train.jsonl")
    assert data_file(Cfg, "corpus", "corpus_train.txt") is None  # optional here, and absent
    with pytest.raises(FileNotFoundError, match=r"--corpus: .* not found \(pretraining needs it\); pass --corpus=FILE"):
        data_file(Cfg, "corpus", "corpus_train.txt", "pretraining")
    Cfg.corpus = str(tmp_path / "sft_train.jsonl")
    assert data_file(Cfg, "corpus", "corpus_train.txt", "pretraining") == Cfg.corpus
