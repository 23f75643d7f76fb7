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
