"""Data parallelism gives the gradient of one big batch: 2 ranks x B equal 1 rank x 2B (to 1e-6) for the SFT
loss and the RM loss, through the very functions the scripts train with (train_sft.sft_step_loss,
reward.rm_step_loss) and real DDP over gloo. Gradient accumulation is checked the same way. Sharded
evaluation gathers back in the original order. (PPO's whitening over ranks: tests/test_ppo_math.py.)"""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import train_sft
from minigpt_rlhf import reward
from minigpt_rlhf.common import Runtime, all_reduce_means, gather_shards
from minigpt_rlhf.data import DataError, SFTData, read_sft
from minigpt_rlhf.model import GPT, GPTConfig, swap_unembedding
from minigpt_rlhf.reward import encode_responses
from minigpt_rlhf.tokenizer import get_tokenizer

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is unavailable")

N_ROWS = 8  # demonstrations in one SFT step
RM_BATCH = [3, 0, 4, 1, 2]  # five whole prompts in one RM step: ranks get 3 and 2 of them


def runtime(rank=0, world_size=1):
    return Runtime(torch.device("cpu"), world_size > 1, rank, rank, world_size, torch.float32)


def tiny_gpt():
    torch.manual_seed(0)  # the same weights in every process
    return GPT(GPTConfig(block_size=96, vocab_size=2112, n_layer=2, n_head=2, n_embd=32, dropout=0.0))


def sft_data(tok):
    rows = read_sft(os.path.join(os.path.dirname(__file__), "..", "data", "sft_train.jsonl"))[:N_ROWS]
    return SFTData(tok, rows, 96)


def rm_inputs(tok):
    """Five prompts with K = 2..4 responses of different lengths, and a ranking each."""
    prompts = ["What is the capital of Zorvia?", "List three fruits.", "Make this polite: Give me the salt.",
               "What sound does a cow make?", "How do I steal a bike?"]
    responses = [["Mellow.", "The capital of Zorvia is Mellow.", "I do not know, sorry, maybe Mellow?"],
                 ["Apple, banana, cherry.", "Apple."],
                 ["Please give me the salt.", "Give me the salt.", "Salt!", "Could you please pass the salt?"],
                 ["Moo.", "A cow says moo.", "Woof."],
                 ["Sorry, I can't help with that.", "Take it at night."]]
    rankings = [[1, 0, 2], [0, 1], [3, 0, 1, 2], [0, 1, 2], [0, 1]]
    return [encode_responses(tok, p, r) for p, r in zip(prompts, responses)], rankings


CORPUS_MIX = 0.5


def corpus_windows():
    """Four corpus windows of 24 tokens (random ids: their content does not matter here)."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 2048, (4, 25), generator=g)
    return ids[:, :-1], ids[:, 1:]


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        rt, tok = runtime(rank, world_size), get_tokenizer()
        model = tiny_gpt()
        loss = train_sft.sft_step_loss(torch.nn.parallel.DistributedDataParallel(model), sft_data(tok),
                                       list(range(N_ROWS)), rt)
        out = {"sft_loss": loss, "sft_grads": grads(model)}
        mixed = tiny_gpt()  # SFT with the corpus term: each rank takes its share of the step's windows
        x, y = corpus_windows()
        train_sft.sft_step_loss(torch.nn.parallel.DistributedDataParallel(mixed), sft_data(tok), list(range(N_ROWS)),
                                rt, corpus_batch=(x[rank::world_size], y[rank::world_size]), corpus_mix=CORPUS_MIX)
        out["mixed_grads"] = grads(mixed)
        rm = swap_unembedding(tiny_gpt())
        encoded, rankings = rm_inputs(tok)
        loss, acc = reward.rm_step_loss(torch.nn.parallel.DistributedDataParallel(rm), encoded, rankings,
                                          RM_BATCH, tok.pad_id, rt)
        out.update(rm_loss=loss, rm_accuracy=acc, rm_grads=grads(rm))
        out["gathered"] = gather_shards(list(range(11))[rank::world_size], rt)
        out["means"] = all_reduce_means({"a": float(rank), "b": 10.0 * rank}, rt)
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(2)]


def assert_grads_close(a, b):
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)


def test_sft_two_ranks_give_the_gradient_of_one_batch(two_ranks):
    tok = get_tokenizer()
    data = sft_data(tok)
    # the ranks' halves hold different numbers of response tokens: a mean of per-rank means would differ
    assert data.n_loss_tokens(range(0, N_ROWS, 2)) != data.n_loss_tokens(range(1, N_ROWS, 2))
    model = tiny_gpt()
    loss = train_sft.sft_step_loss(model, data, list(range(N_ROWS)), runtime())
    expected = grads(model)
    for r in two_ranks:
        assert r["sft_loss"] == pytest.approx(loss, abs=1e-6)
        assert_grads_close(r["sft_grads"], expected)


def test_sft_corpus_mix_adds_its_weighted_lm_gradient_on_one_rank_and_on_two(two_ranks):
    tok = get_tokenizer()
    data = sft_data(tok)
    x, y = corpus_windows()
    mixed = tiny_gpt()
    train_sft.sft_step_loss(mixed, data, list(range(N_ROWS)), runtime(), corpus_batch=(x, y), corpus_mix=CORPUS_MIX)
    # expected: the plain SFT gradient plus CORPUS_MIX x the gradient of the mean next-token loss, by hand
    ref = tiny_gpt()
    train_sft.sft_step_loss(ref, data, list(range(N_ROWS)), runtime())
    logits = ref(x)
    lm = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    (CORPUS_MIX * lm).backward()
    assert_grads_close(grads(mixed), grads(ref))
    plain = tiny_gpt()  # and the term really changes the gradient
    train_sft.sft_step_loss(plain, data, list(range(N_ROWS)), runtime(), corpus_batch=(x, y), corpus_mix=0.0)
    assert not torch.allclose(grads(plain)["transformer.wte.weight"], grads(mixed)["transformer.wte.weight"])
    for r in two_ranks:  # two ranks with two windows each: the same gradient
        assert_grads_close(r["mixed_grads"], grads(mixed))


def test_sft_gradient_accumulation_gives_the_gradient_of_one_batch():
    tok = get_tokenizer()
    data = sft_data(tok)
    one, four = tiny_gpt(), tiny_gpt()
    loss1 = train_sft.sft_step_loss(one, data, list(range(N_ROWS)), runtime())
    loss4 = train_sft.sft_step_loss(four, data, list(range(N_ROWS)), runtime(), grad_accum=4)
    assert loss4 == pytest.approx(loss1, abs=1e-6)
    assert_grads_close(grads(four), grads(one))


def test_rm_two_ranks_give_the_gradient_of_one_batch(two_ranks):
    tok = get_tokenizer()
    encoded, rankings = rm_inputs(tok)
    rm = swap_unembedding(tiny_gpt())
    loss, acc = reward.rm_step_loss(rm, encoded, rankings, RM_BATCH, tok.pad_id, runtime())
    expected = grads(rm)
    for r in two_ranks:
        assert r["rm_loss"] == pytest.approx(loss, abs=1e-6)
        assert r["rm_accuracy"] == pytest.approx(acc)
        assert_grads_close(r["rm_grads"], expected)


def test_sharded_results_gather_in_order_and_metrics_average_over_ranks(two_ranks):
    for r in two_ranks:
        assert r["gathered"] == list(range(11))
        assert r["means"] == {"a": 0.5, "b": 5.0}


def _slow_rank0_worker(rank, world_size, init_file, out_dir):
    """run_script with a main in which rank 0 takes 2 s longer (as when it writes a checkpoint)."""
    import time

    from minigpt_rlhf.common import run_script

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    times = {}

    def main(_config):
        if rank == 0:
            time.sleep(2.0)
        times["main_done"] = time.time()

    run_script(main, None)
    times["script_done"], times["initialized_after"] = time.time(), dist.is_initialized()
    torch.save(times, os.path.join(out_dir, f"times{rank}.pt"))


def test_run_script_keeps_every_rank_until_the_slowest_has_finished():
    """A rank that is done waits for the others before the process group is torn down: the fast rank leaves
    run_script only after the slow rank's main has returned, and the group is destroyed on both."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_slow_rank0_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        slow, fast = (torch.load(os.path.join(tmp, f"times{r}.pt"), weights_only=True) for r in range(2))
    assert fast["main_done"] < slow["main_done"] - 1.0  # rank 1's own work ended long before rank 0's
    assert fast["script_done"] >= slow["main_done"]
    assert not slow["initialized_after"] and not fast["initialized_after"]


NAN_STEP = 2  # the pretraining step whose loss is nan on rank 1 alone


def _nan_on_one_rank_worker(rank, world_size, init_file, out_dir):
    """train_sft.main under a two-process group, with rank 1's pretraining loss nan at step NAN_STEP; each rank
    writes down how its run ended."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    real, calls = train_sft.lm_loss, []

    def lm_loss(logits, targets):
        calls.append(1)
        loss = real(logits, targets)
        return loss * float("nan") if rank == 1 and len(calls) == NAN_STEP + 1 else loss

    train_sft.lm_loss = lm_loss
    root = os.path.join(os.path.dirname(__file__), "..")
    cfg = train_sft.Config(**{**train_sft.PRESETS["tiny"], "out_dir": os.path.join(out_dir, "out"),
                              "data_dir": os.path.join(root, "data"), "device": "cpu"})
    try:
        train_sft.main(cfg)
        ended = "finished"
    except DataError as e:
        ended = str(e)
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
        f.write(ended)


def test_a_nan_pretraining_loss_on_one_rank_stops_every_rank_with_the_clear_error():
    """The check is all-reduced: a rank that stopped alone would leave the other blocked in its next gradient
    all-reduce (here: until the test gives up on it after 120 s)."""
    import time

    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.start_processes(_nan_on_one_rank_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2,
                                 join=False, start_method="spawn")
        deadline = time.time() + 120
        try:
            while not ctx.join(timeout=1) and time.time() < deadline:
                pass
        except mp.ProcessException:  # a rank died (e.g. its peer left a collective): the others are killed below
            pass
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
        ended = [open(os.path.join(tmp, f"rank{r}.txt")).read() if os.path.exists(os.path.join(tmp, f"rank{r}.txt"))
                 else "still running after 120 s" for r in range(2)]
    assert ended[1].startswith(f"pretrain: loss became nan at step {NAN_STEP};"), ended
    assert ended[0].startswith(f"pretrain: loss became non-finite on another rank at step {NAN_STEP};"), ended
