"""Rank shares of a global batch are the single-process batch (eim.training.sampler)."""



# --- pieces, in one process --------------------------------------------------------------------
def test_rank_shares_of_a_global_batch_are_the_single_process_batch():
    from eim.training.sampler import EpochBatches

    n, b, total = 13, 3, 12  # global batch 6: two full batches and a short one (1 row) per epoch
    one = list(EpochBatches(n, 2 * b, seed=5, total=total))
    ranks = [list(EpochBatches(n, b, seed=5, total=total, world=2, rank=r)) for r in range(2)]
    for i, batch in enumerate(one):
        shares = [ranks[r][i] for r in range(2)]
        real = [j for s in shares for j in s if j < n]
        assert real == batch
        if len(batch) == 1:  # rank 1's share is empty: one padding row (index n + j)
            assert shares[1] == [n + batch[0]]
        else:
            assert all(len(s) >= len(batch) // 2 for s in shares)
    # resuming at micro-batch 4 continues the same sequence
    assert list(EpochBatches(n, b, seed=5, total=total, start=4, world=2, rank=1)) == ranks[1][4:]


def test_modality_length_batches_are_llavas_and_the_same_for_every_process_count():
    """``train.group_by: modality_length``: each global batch holds one modality, longest first, but
    the last (the two modalities' remainders); the global batches do not depend on the process count,
    and a resumed sampler continues the same sequence."""
    from eim.training.sampler import EpochBatches, modality_length_order

    lengths = [(-1) ** (i % 3 == 0) * (1 + (7 * i) % 11) for i in range(29)]  # a third text-only (< 0)
    n, b, total = len(lengths), 3, 20
    one = list(EpochBatches(n, 2 * b, seed=5, total=total, lengths=lengths))
    ranks = [list(EpochBatches(n, b, seed=5, total=total, world=2, rank=r, lengths=lengths)) for r in range(2)]
    for i, batch in enumerate(one):
        assert [j for r in range(2) for j in ranks[r][i] if j < n] == batch
    import torch

    order = modality_length_order(lengths, 6, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(n))
    tail = len(order) - (len([i for i in lengths if i > 0]) % 6 + len([i for i in lengths if i < 0]) % 6)
    for batch in (order[k : k + 6] for k in range(0, tail, 6)):
        assert len({lengths[i] > 0 for i in batch}) == 1  # one modality
        assert [abs(lengths[i]) for i in batch] == sorted((abs(lengths[i]) for i in batch), reverse=True)
    assert order[tail:] == sorted(order[tail:])  # the remainders, in index order, close the epoch
    assert list(EpochBatches(n, b, seed=5, total=total, start=7, world=2, rank=0, lengths=lengths)) == ranks[0][7:]
